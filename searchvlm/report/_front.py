"""The Pareto-front figure: `FrontInfo` (computed once from a sweep) drawn as PNG and HTML.

FLOPs ratio on x (lower is better), synergy gain on y (higher is better). Failed, pruned
and incomplete trials are never dropped: they sit on a dotted "failed" band below the
lowest synergy gain, at their FLOPs ratio when known (else the right edge); with no such
trial there is no band. Both drawings mark the knee (what `export` picks by default) with
a star and every point with more than one seed carries its standard error as an error bar;
the HTML draws each preset with its own marker and legend entry, and its hover gives the
trial number and id, per-task gains, accuracy and NLL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from searchvlm.objectives.pareto import is_valid, knee
from searchvlm.report._canvas import new_axes, plotly_js, save, slug
from searchvlm.report._summary import Sweep, Volume, confirmed_seeds, fmt, one_seed, policy_summary
from searchvlm.schema.results import TrialRow
from searchvlm.schema.trial_result import gen_gain_text

__all__ = ["FrontInfo", "Points", "front_html", "front_info", "front_png"]


@dataclass(frozen=True)
class Points:
    """Trials as drawn: positions (failed ones on the band), error bars, hover fields and
    each point's preset (`""` for none), in table order."""

    x: list[float]
    y: list[float]
    stderr: list[float]
    hover: list[list[str]]
    presets: list[str]

    def __len__(self) -> int:
        return len(self.x)

    def of_preset(self, name: str) -> Points:
        """The points of preset `name`."""
        keep = [i for i, p in enumerate(self.presets) if p == name]
        columns = (self.x, self.y, self.stderr, self.hover, self.presets)
        return Points(*([column[i] for i in keep] for column in columns))


@dataclass(frozen=True)
class FrontInfo:
    """What the front figure shows, for every backend: the title, the three groups (front,
    dominated, failed), the trials with a preset, the knee (none or one point) and its
    legend label, the y of the failed band and the hypervolume reference point."""

    title: str
    front: Points
    dominated: Points
    failed: Points
    presets: Points
    knee: Points
    knee_label: str
    band: float
    ref: tuple[float, float]

    @property
    def preset_names(self) -> list[str]:
        """The presets in order of appearance."""
        return list(dict.fromkeys(self.presets.presets))


def _failed_band(rows: Sequence[TrialRow]) -> tuple[float, float]:
    """(y of the failed band, x for failed trials with unknown FLOPs)."""
    ys = [float(r["synergy_gain"]) for r in rows if is_valid(r)]
    xs = [x for r in rows if (x := r.value("flops_ratio")) is not None]
    lo, hi = (min(ys), max(ys)) if ys else (0.0, 0.0)
    span = max(hi - lo, 0.05)
    return lo - 0.15 * span, max(xs + [1.0])


def _hover(r: TrialRow, failed: bool) -> list[str]:
    """Hover fields: id, number, preset, s.e. (or status: error), und/gen gain, und acc, gen NLL, policy."""
    error = f"{r.status}: {str(r.get('error') or '')[:120]}"
    third = error if failed else fmt(r.get("synergy_gain_stderr"), ".4f")
    return [r.trial_id, str(r.get("number", "?")), r.preset or "no preset", third,
            fmt(r.get("und_gain"), "+.4f"), gen_gain_text(r, missing="–"), fmt(r.get("und_acc"), ".4f"),
            fmt(r.get("gen_nll"), ".4f"), policy_summary(r)]  # fmt: skip


def _points(rows: Sequence[TrialRow], band: tuple[float, float], failed: bool = False,
            noise: float = 0.0) -> Points:  # fmt: skip
    """Plot points; a one-seed point (no s.e.) carries the sweep's seed noise `noise` as its bar."""
    xs = [r.value("flops_ratio") for r in rows]
    return Points(
        x=[band[1] if x is None else x for x in xs],
        y=[float(r["synergy_gain"]) if is_valid(r) else band[0] for r in rows],
        stderr=[r.value("synergy_gain_stderr") or (0.0 if failed else noise) for r in rows],
        hover=[_hover(r, failed) for r in rows],
        presets=[r.preset for r in rows],
    )


def front_info(s: Sweep, hv: Volume) -> FrontInfo:
    """The front figure of a sweep read once; `hv`: `hypervolume(s.rows, ref)`."""
    (volume, ref), rows, on = hv, s.rows, {id(r) for r in s.front}
    band = _failed_band(rows)
    seeds = confirmed_seeds(rows)
    what = "trials" if seeds is None else f"confirmed policies (seeds {','.join(map(str, seeds))})"
    k = knee(s.front) if s.front else None
    noise = s.noise.sd if s.noise and one_seed(rows) else 0.0
    title = f"{s.name}: {len(s.front)} on the front of {len(rows)} {what}, HV {volume:.4g}"
    if noise:
        title += f"\nbars: one seed's noise, SD {noise:.3f} ({s.noise.source}); confirm before reading differences"
    return FrontInfo(
        title=title,
        front=_points(s.front, band, noise=noise),
        dominated=_points([r for r in rows if is_valid(r) and id(r) not in on], band, noise=noise),
        failed=_points([r for r in rows if not is_valid(r)], band, failed=True),
        presets=_points([r for r in rows if r.preset], band),
        knee=_points([k] if k is not None else [], band),
        knee_label="" if k is None else f"knee, export default (#{k.get('number', '?')})",
        band=band[0],
        ref=ref,
    )


# --------------------------------------------------------------------------- PNG


def front_png(info: FrontInfo, path: Path) -> Path:
    """The front as a PNG (matplotlib)."""
    fig, ax = new_axes()
    _png_trials(ax, info)
    _png_presets(ax, info.presets)
    if len(info.knee):
        (x,), (y,) = info.knee.x, info.knee.y
        ax.scatter([x], [y], marker="*", s=320, color="gold", edgecolors="black", lw=0.8, zorder=6,
                   label=info.knee_label)  # fmt: skip
        ax.annotate("knee", (x, y), xytext=(-6, -14), textcoords="offset points", fontsize=8, ha="right")
    ax.scatter([info.ref[0]], [info.ref[1]], marker="*", s=80, color="C1", label="hypervolume reference", zorder=3)
    ax.set_xlabel("training FLOPs ratio (lower is better)")
    ax.set_ylabel("synergy gain (higher is better)")
    ax.set_title(info.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return save(fig, path)


def _png_trials(ax: Any, info: FrontInfo) -> None:
    d, f = info.dominated, info.front
    ax.errorbar(d.x, d.y, yerr=d.stderr, fmt="o", ms=5, color="0.7", ecolor="0.85", capsize=2,
                label=f"dominated ({len(d)})")  # fmt: skip
    ax.plot(f.x, f.y, drawstyle="steps-post", color="C0", lw=1.5, alpha=0.8)
    ax.errorbar(f.x, f.y, yerr=f.stderr, fmt="o", ms=7, color="C0", ecolor="C0", capsize=3,
                label=f"Pareto front ({len(f)})", zorder=3)  # fmt: skip
    if not len(info.failed):  # no band for failures that did not happen
        return
    ax.scatter(info.failed.x, info.failed.y, marker="x", color="0.45", label=f"failed / pruned ({len(info.failed)})",
               zorder=2)  # fmt: skip
    ax.axhline(info.band, ls=":", color="0.6", lw=1)
    ax.annotate("failed / pruned", (0.01, info.band), xycoords=("axes fraction", "data"), xytext=(0, 3),
                textcoords="offset points", fontsize=7, color="0.4")  # fmt: skip


def _png_presets(ax: Any, p: Points) -> None:
    if not len(p):
        return
    ax.scatter(p.x, p.y, s=90, facecolors="none", edgecolors="C3", lw=1, zorder=4, label="literature preset")
    for name, xi, yi in zip(p.presets, p.x, p.y):
        ax.annotate(name, (xi, yi), xytext=(4, 4), textcoords="offset points", fontsize=8, color="C3")


# --------------------------------------------------------------------------- HTML


_HOVER = (
    "trial #%{customdata[1]} · %{customdata[0]} (%{customdata[2]})<br>FLOPs ratio %{x:.3f}<br>"
    "synergy gain %{y:+.4f} ± %{customdata[3]}<br>und gain %{customdata[4]} · gen gain %{customdata[5]}<br>"
    "und acc %{customdata[6]} · gen NLL %{customdata[7]}<br>%{customdata[8]}<extra>%{fullData.name}</extra>"
)
_HOVER_FAILED = (
    "trial #%{customdata[1]} · %{customdata[0]} (%{customdata[2]})<br>%{customdata[3]}<br>%{customdata[8]}"
    "<extra>%{fullData.name}</extra>"
)
#: plotly symbols for presets, one per preset in order of appearance (open: the point shows through)
_PRESET_SYMBOLS = ("diamond-open", "square-open", "triangle-up-open", "pentagon-open", "hexagon-open",
                   "triangle-down-open", "cross-open", "hourglass-open", "bowtie-open", "star-square-open")  # fmt: skip
_PRESET_RED = "#d62728"


def _trace(kind: str, p: Points, label: str | None = None, errors: bool = True, **style: Any) -> Any:
    """A scatter of `p` (uid `kind`; legend `label (n)` unless `name=` is given) with the hover."""
    import plotly.graph_objects as go

    failed = kind == "failed"
    style.setdefault("name", f"{label or kind} ({len(p)})")
    return go.Scatter(
        x=p.x,
        y=p.y,
        uid=kind,
        customdata=p.hover,
        hovertemplate=_HOVER_FAILED if failed else _HOVER,
        error_y=dict(type="data", array=p.stderr, visible=True) if errors and not failed else None,
        **style,
    )


def _html_traces(info: FrontInfo) -> list[Any]:
    traces = [
        _trace("dominated", info.dominated, label="dominated", mode="markers", marker=dict(color="#b0b0b0", size=8)),
        _trace("front", info.front, label="Pareto front", mode="lines+markers",
               line=dict(shape="hv", color="#1f77b4"), marker=dict(color="#1f77b4", size=11)),
    ]  # fmt: skip
    if len(info.failed):  # no failed trace, band or label when nothing failed
        traces.append(_trace("failed", info.failed, label="failed / pruned", mode="markers",
                             marker=dict(color="#707070", symbol="x", size=9)))  # fmt: skip
    traces += [
        _trace(f"preset-{slug(n)}", info.presets.of_preset(n), name=f"preset {n}", errors=False,
               mode="markers+text", text=[n], textposition="top right", textfont=dict(color=_PRESET_RED),
               marker=dict(symbol=_PRESET_SYMBOLS[i % len(_PRESET_SYMBOLS)], size=17, color=_PRESET_RED,
                           line=dict(width=2)))
        for i, n in enumerate(info.preset_names)
    ]  # fmt: skip
    if len(info.knee):
        star = dict(symbol="star", size=22, color="gold", line=dict(color="black", width=1))
        traces.append(_trace("knee", info.knee, name=info.knee_label, errors=False, mode="markers", marker=star))
    return traces


def front_html(info: FrontInfo, path: Path) -> Path:
    """The front as interactive HTML (plotly; loads the plotly.min.js beside it, offline)."""
    import plotly.graph_objects as go

    fig = go.Figure(_html_traces(info))
    if len(info.failed):
        fig.add_hline(y=info.band, line=dict(dash="dot", color="#999"), annotation_text="failed / pruned")
    fig.add_annotation(x=info.ref[0], y=info.ref[1], text="HV reference", showarrow=True, arrowhead=2)
    fig.update_layout(
        title=info.title,
        xaxis_title="training FLOPs ratio (lower is better)",
        yaxis_title="synergy gain (higher is better)",
        template="plotly_white",
        hovermode="closest",
    )
    plotly_js(path.parent)
    fig.write_html(path, include_plotlyjs="directory", full_html=True, div_id="pareto-front")
    return path

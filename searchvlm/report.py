"""Sweep reports: Pareto-front plots (PNG, interactive HTML), hypervolume history, importance.

L4 module. matplotlib (object API, Agg canvas, no pyplot state), plotly and optuna are
imported inside the functions that draw, so `front_table` / `pareto_summary` stay light.
The drawing functions never log to MLflow: they return file paths, and `pareto_report`
(the `pareto` command) hands them to the tracking module.

Plots put FLOPs ratio on x (lower is better) and synergy gain on y (higher is better).
Failed, pruned and incomplete trials are never dropped: they sit on a dotted "failed"
band below the lowest synergy gain, at their FLOPs ratio when known (else the right edge);
with no such trial there is no band. Both fronts mark the knee (what `export` picks by
default) with a star; the HTML draws each preset with its own marker and legend entry, and
its hover gives the trial number and id, per-task gains, accuracy and NLL.
Every point with more than one seed carries its standard error as an error bar, and the
front is computed on the means. When `searchvlm confirm` has written `confirmed.csv`, the
front, knee, hypervolume and plots use the confirmed policies' fresh-seed numbers (the
summary says `numbers: confirmed`); the hypervolume history stays the search's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from searchvlm.errors import COMMAND_LINE, ConfigError, warn_damaged
from searchvlm.pareto import (
    Row,
    default_ref_source,
    finite_number,
    front,
    hypervolume,
    hypervolume_history,
    is_valid,
    knee,
    near_front,
    per_seed,
    pooled_seed_sd,
    ties,
)
from searchvlm.results import (
    CONFIRMED_FILE,
    OBJECTIVE_COLUMNS,
    SWEEP_FILE,
    TRIALS_FILE,
    ranking_rows,
    read_confirmed,
    read_meta,
    read_trials,
    resolve_run_dir,
    store_problem,
    sweep_tracking_uri,
    with_confirmed,
)

log = logging.getLogger(__name__)

#: fewest COMPLETE Optuna trials for a PED-ANOVA importance chart
MIN_IMPORTANCE_TRIALS = 10
STUDY_FILE = "optuna.db"

__all__ = [
    "MIN_IMPORTANCE_TRIALS",
    "ExportReport",
    "ParetoReport",
    "export_report",
    "front_table",
    "importance_plots",
    "pareto_plots",
    "pareto_report",
    "pareto_summary",
    "plots_current",
    "policy_picture",
    "policy_png",
    "policy_summary",
    "summary_metrics",
]


# --------------------------------------------------------------------------- data


def _runs(values: Sequence[float]) -> str:
    """Run-length text of a keep list: `1 0×3` for [1, 0, 0, 0]."""
    out: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        out.append(f"{values[i]:.2g}" + (f"×{j - i + 1}" if j > i else ""))
        i = j + 1
    return " ".join(out)


def policy_summary(policy_json: str | None) -> str:
    """One line: per task mode, selector and keep ratios (run-length); sharing; tied."""
    if not policy_json:
        return "(no policy recorded)"
    try:
        p = json.loads(policy_json)
        parts = [
            f"{t[:3]} {p[t]['mode']}/{p[t]['selector']} keep {_runs(p[t]['keep'])}"
            for t in ("understanding", "generation")
        ]
        sh = p.get("sharing", {})
        parts.append(f"qkv {sh.get('qkv', 'shared')}, mlp {sh.get('mlp', 'shared')}")
    except (json.JSONDecodeError, KeyError, TypeError):
        return "(unreadable policy)"
    return " · ".join(parts) + (" · tied" if p.get("tie_schedules") else "")


def _num(value: Any) -> float | None:
    """JSON-safe float: None for missing or non-finite values (numpy scalars accepted)."""
    return finite_number(value)


def _fmt(value: Any, spec: str = ".3f") -> str:
    v = _num(value)
    return "–" if v is None else format(v, spec)


def _ties(rows: Sequence[Row]) -> dict[str, list[str]]:
    return ties(rows, default_se=pooled_seed_sd(rows))


def _numbers_of(ids: list[str], rows: Sequence[Row]) -> str:
    num = {str(r["trial_id"]): r.get("number") for r in rows}
    return " ".join(f"#{num.get(i, i)}" for i in ids)


def front_table(rows: Sequence[Row]) -> list[dict[str, str]]:
    """Rows of the front (by FLOPs) as display strings; keys are the column headers.
    `ties`: the front points whose synergy this one's is within 2 paired standard errors
    of; `seeds`: how many seeds the numbers average (`confirmed` marks fresh-seed numbers)."""
    return _front_cells(front(rows), _ties(rows))


def _front_cells(fr: Sequence[Row], tie: dict[str, list[str]]) -> list[dict[str, str]]:
    """`front_table` of a front already computed, with its ties."""
    knee_id = knee(fr)["trial_id"] if fr else None
    return [
        {
            "trial": str(r["trial_id"]),
            "#": str(r.get("number", "")),
            "preset": r.get("preset") or "",
            "FLOPs ratio": _fmt(r["flops_ratio"]),
            "synergy gain": _fmt(r["synergy_gain"], "+.4f"),
            "± s.e.": _fmt(r.get("synergy_gain_stderr"), ".4f"),
            "vs dense": _fmt(r.get("synergy_vs_dense"), "+.4f"),
            "seeds": f"{len(_seeds(r))}{' confirmed' if r.get('confirmed') else ''}",
            "ties": _numbers_of(tie.get(str(r["trial_id"]), []), fr),
            "und gain": _fmt(r.get("und_gain"), "+.4f"),
            "gen gain": _fmt(r.get("gen_gain"), "+.4f"),
            "knee": "*" if r["trial_id"] == knee_id else "",
            "policy": policy_summary(r.get("policy_json")),
        }
        for r in fr
    ]


def _counts(rows: Sequence[Row]) -> dict[str, int]:
    out = {"ok": 0, "failed": 0, "pruned": 0, "incomplete": 0}
    for r in rows:
        status = r.get("status")
        out["ok" if is_valid(r) else status if status in ("failed", "pruned") else "incomplete"] += 1
    return out


def _seeds(r: Row) -> list[int]:
    try:
        seeds = json.loads(r.get("seeds") or "[]") if isinstance(r.get("seeds"), str) else r.get("seeds")
    except json.JSONDecodeError:
        return []
    return [int(s) for s in seeds or []]


def _summary_row(r: Row, tie: dict[str, list[str]] | None = None) -> dict[str, Any]:
    keys = [c for c in OBJECTIVE_COLUMNS if not c.endswith(("_iso", "fidelity"))]
    out: dict[str, Any] = {
        "trial_id": r["trial_id"],
        "number": None if _num(r.get("number")) is None else int(r["number"]),
        "preset": r.get("preset") or None,
    }
    out.update({k: _num(r.get(k)) for k in keys})
    by_seed = per_seed(r)
    out.update(
        confirmed=bool(r.get("confirmed")),
        seeds=_seeds(r),
        synergy_per_seed=[by_seed[s] for s in _seeds(r) if s in by_seed],
        search_synergy_gain=_num(r.get("search_synergy_gain")) if r.get("confirmed") else _num(r.get("synergy_gain")),
        ties=list((tie or {}).get(str(r["trial_id"]), [])),
    )  # fmt: skip
    out["policy"] = policy_summary(r.get("policy_json"))
    return out


@dataclass(frozen=True)
class _Sweep:
    """A sweep read once: its folder and name, trials.csv as the search wrote it (counts,
    hypervolume history), the rows a front is ranked on (confirmed numbers when they exist)
    and that front."""

    run: Path
    name: str
    search: list[Row]
    rows: list[Row]
    front: list[Row]


def _read_sweep(run: Path) -> _Sweep:
    confirmed = read_confirmed(run / CONFIRMED_FILE)
    search = read_trials(run / TRIALS_FILE)
    rows = ranking_rows(with_confirmed(search, confirmed))
    name = read_meta(run / SWEEP_FILE).name if (run / SWEEP_FILE).exists() else run.name
    return _Sweep(run, name, search, rows, front(rows))


def _confirmed_seeds(rows: Sequence[Row]) -> list[int] | None:
    confirmed = [r for r in rows if r.get("confirmed")]
    return _seeds(confirmed[0]) if confirmed else None


def pareto_summary(
    run_dir: str | Path, ref: Sequence[float] | None = None, runs_dir: str | Path = "runs"
) -> dict[str, Any]:
    """JSON-ready summary: counts, front rows (each with its standard error, seeds, ties and
    `confirmed` flag), near-front, knee, hypervolume, reference point, history. `numbers`
    says whether the front is read from confirmed (fresh-seed) or search numbers."""
    s = _read_sweep(resolve_run_dir(run_dir, runs_dir))
    return _summary(s, ref, hypervolume(s.rows, ref), _ties(s.rows))


def _summary(
    s: _Sweep, ref: Sequence[float] | None, hv: tuple[float, tuple[float, float]], tie: dict[str, list[str]]
) -> dict[str, Any]:
    """`pareto_summary` of a sweep read once; `hv`: `hypervolume(s.rows, ref)`, `tie`: `_ties(s.rows)`."""
    (hv, ref_nat), rows, fr, search = hv, s.rows, s.front, s.search
    seeds = _confirmed_seeds(rows)
    sd = pooled_seed_sd(rows)
    return {
        "sweep": s.name,
        "run_dir": str(s.run),
        "trials": len(search),
        "counts": _counts(search),
        "numbers": "confirmed" if seeds is not None else "search",
        "confirmed_seeds": seeds,
        "confirmed_policies": len(rows) if seeds is not None else 0,
        "ref": {"flops_ratio": ref_nat[0], "synergy_gain": ref_nat[1]},
        "ref_is_default": ref is None,
        "ref_source": "user" if ref is not None else default_ref_source(rows),
        "hypervolume": hv,
        "knee": knee(fr)["trial_id"] if fr else None,
        "front": [_summary_row(r, tie) for r in fr],
        "near_front": [str(r["trial_id"]) for r in near_front(rows, default_se=sd)],
        "history": [{"number": n, "hypervolume": h} for n, h in hypervolume_history(search, ref_nat)],
    }


def summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The numbers of a `pareto_summary` that the sweep's MLflow parent run carries:
    `hypervolume`, `front_size`, `knee_flops_ratio`, `knee_synergy_gain` (the trial `export`
    picks by default; absent when the front is empty), `trials` and `trials_<status>`."""
    out: dict[str, float] = {"hypervolume": summary["hypervolume"], "front_size": len(summary["front"]),
                             "trials": summary["trials"]}  # fmt: skip
    out.update({f"trials_{k}": v for k, v in summary["counts"].items()})
    knee_row = next((r for r in summary["front"] if r["trial_id"] == summary["knee"]), None)
    if knee_row is not None:
        out.update(knee_flops_ratio=knee_row["flops_ratio"], knee_synergy_gain=knee_row["synergy_gain"])
    return out


# --------------------------------------------------------------------------- geometry


def _groups(rows: Sequence[Row], fr: Sequence[Row]) -> dict[str, list[Row]]:
    """The rows split into the front `fr` (computed once by the caller), dominated and failed."""
    on = {id(r) for r in fr}
    return {
        "front": list(fr),
        "dominated": [r for r in rows if is_valid(r) and id(r) not in on],
        "failed": [r for r in rows if not is_valid(r)],
    }


def _failed_band(rows: Sequence[Row]) -> tuple[float, float]:
    """(y of the failed band, x for failed trials with unknown FLOPs)."""
    ys = [float(r["synergy_gain"]) for r in rows if is_valid(r)]
    xs = [float(r["flops_ratio"]) for r in rows if _num(r.get("flops_ratio")) is not None]
    lo, hi = (min(ys), max(ys)) if ys else (0.0, 0.0)
    span = max(hi - lo, 0.05)
    return lo - 0.15 * span, max(xs + [1.0])


def _xy(rows: Sequence[Row], band: tuple[float, float]) -> tuple[list[float], list[float]]:
    xs = [_num(r.get("flops_ratio")) for r in rows]
    return [band[1] if x is None else x for x in xs], [
        float(r["synergy_gain"]) if is_valid(r) else band[0] for r in rows
    ]


def _stderr(rows: Sequence[Row]) -> list[float]:
    return [_num(r.get("synergy_gain_stderr")) or 0.0 for r in rows]


# --------------------------------------------------------------------------- PNG front


def _new_axes(figsize: tuple[float, float] = (7.5, 5.0)) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=120, layout="constrained")
    return fig, fig.add_subplot()


def _draw_trials(ax: Any, g: dict[str, list[Row]], band: tuple[float, float]) -> None:
    x, y = _xy(g["dominated"], band)
    ax.errorbar(
        x,
        y,
        yerr=_stderr(g["dominated"]),
        fmt="o",
        ms=5,
        color="0.7",
        ecolor="0.85",
        capsize=2,
        label=f"dominated ({len(x)})",
    )
    x, y = _xy(g["front"], band)
    ax.plot(x, y, drawstyle="steps-post", color="C0", lw=1.5, alpha=0.8)
    ax.errorbar(
        x,
        y,
        yerr=_stderr(g["front"]),
        fmt="o",
        ms=7,
        color="C0",
        ecolor="C0",
        capsize=3,
        label=f"Pareto front ({len(x)})",
        zorder=3,
    )
    if not g["failed"]:  # no band for failures that did not happen
        return
    x, y = _xy(g["failed"], band)
    ax.scatter(x, y, marker="x", color="0.45", label=f"failed / pruned ({len(x)})", zorder=2)
    ax.axhline(band[0], ls=":", color="0.6", lw=1)
    ax.annotate(
        "failed / pruned",
        (0.01, band[0]),
        xycoords=("axes fraction", "data"),
        xytext=(0, 3),
        textcoords="offset points",
        fontsize=7,
        color="0.4",
    )


def _knee_of(g: dict[str, list[Row]]) -> Row | None:
    """The front's knee: the trial `export` picks by default (`--rule knee`)."""
    return knee(g["front"]) if g["front"] else None


def _knee_label(r: Row) -> str:
    return f"knee, export default (#{r.get('number', '?')})"


def _mark_knee(ax: Any, g: dict[str, list[Row]], band: tuple[float, float]) -> None:
    k = _knee_of(g)
    if k is None:
        return
    (x,), (y,) = _xy([k], band)
    ax.scatter([x], [y], marker="*", s=320, color="gold", edgecolors="black", lw=0.8, zorder=6,
               label=_knee_label(k))  # fmt: skip
    ax.annotate("knee", (x, y), xytext=(-6, -14), textcoords="offset points", fontsize=8, ha="right")


def _label_presets(ax: Any, rows: Sequence[Row], band: tuple[float, float]) -> None:
    named = [r for r in rows if r.get("preset")]
    if not named:
        return
    x, y = _xy(named, band)
    ax.scatter(x, y, s=90, facecolors="none", edgecolors="C3", lw=1, zorder=4, label="literature preset")
    for r, xi, yi in zip(named, x, y):
        ax.annotate(
            str(r["preset"]),
            (xi, yi),
            xytext=(4, 4),
            textcoords="offset points",
            fontsize=8,
            color="C3",
        )


def _what(rows: Sequence[Row]) -> str:
    seeds = _confirmed_seeds(rows)
    return "trials" if seeds is None else f"confirmed policies (seeds {','.join(map(str, seeds))})"


def _front_png(
    rows: Sequence[Row], fr: Sequence[Row], path: Path, name: str, ref: tuple[float, float], hv: float
) -> Path:
    g, band = _groups(rows, fr), _failed_band(rows)
    fig, ax = _new_axes()
    _draw_trials(ax, g, band)
    _label_presets(ax, rows, band)
    _mark_knee(ax, g, band)
    ax.scatter([ref[0]], [ref[1]], marker="*", s=80, color="C1", label="hypervolume reference", zorder=3)
    ax.set_xlabel("training FLOPs ratio (lower is better)")
    ax.set_ylabel("synergy gain (higher is better)")
    ax.set_title(f"{name}: {len(g['front'])} on the front of {len(rows)} {_what(rows)}, HV {hv:.4g}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.savefig(path)
    return path


# --------------------------------------------------------------------------- HTML front


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
PLOTLY_JS = "plotly.min.js"


def _custom(rows: Sequence[Row], failed: bool) -> list[list[str]]:
    """Hover fields: id, number, preset, s.e. (or status: error), und/gen gain, und acc, gen NLL, policy."""
    third = (
        (lambda r: f"{r.get('status')}: {str(r.get('error') or '')[:120]}")
        if failed
        else (lambda r: _fmt(r.get("synergy_gain_stderr"), ".4f"))
    )
    return [
        [
            str(r["trial_id"]),
            str(r.get("number", "?")),
            r.get("preset") or "no preset",
            third(r),
            _fmt(r.get("und_gain"), "+.4f"),
            _fmt(r.get("gen_gain"), "+.4f"),
            _fmt(r.get("und_acc"), ".4f"),
            _fmt(r.get("gen_nll"), ".4f"),
            policy_summary(r.get("policy_json")),
        ]
        for r in rows
    ]


def _trace(kind: str, rows: Sequence[Row], band: tuple[float, float], label: str | None = None,
           errors: bool = True, **style: Any) -> Any:  # fmt: skip
    """A scatter of `rows` (uid `kind`; legend `label (n)` unless `name=` is given) with the hover."""
    import plotly.graph_objects as go

    x, y = _xy(rows, band)
    failed = kind == "failed"
    style.setdefault("name", f"{label or kind} ({len(rows)})")
    return go.Scatter(
        x=x,
        y=y,
        uid=kind,
        customdata=_custom(rows, failed),
        hovertemplate=_HOVER_FAILED if failed else _HOVER,
        error_y=dict(type="data", array=_stderr(rows), visible=True) if errors and not failed else None,
        **style,
    )


def _preset_traces(rows: Sequence[Row], band: tuple[float, float]) -> list[Any]:
    """One trace per preset (legend entry, distinct open marker, name beside it)."""
    names = list(dict.fromkeys(str(r["preset"]) for r in rows if r.get("preset")))
    return [
        _trace(f"preset-{_slug(n)}", [r for r in rows if r.get("preset") == n], band, name=f"preset {n}",
               errors=False, mode="markers+text", text=[n], textposition="top right", textfont=dict(color="#d62728"),
               marker=dict(symbol=_PRESET_SYMBOLS[i % len(_PRESET_SYMBOLS)], size=17, color="#d62728",
                           line=dict(width=2)))
        for i, n in enumerate(names)
    ]  # fmt: skip


def _knee_trace(g: dict[str, list[Row]], band: tuple[float, float]) -> list[Any]:
    k = _knee_of(g)
    if k is None:
        return []
    return [_trace("knee", [k], band, name=_knee_label(k), errors=False, mode="markers",
                   marker=dict(symbol="star", size=22, color="gold", line=dict(color="black", width=1)))]  # fmt: skip


def _front_html(
    rows: Sequence[Row], fr: Sequence[Row], path: Path, name: str, ref: tuple[float, float], hv: float
) -> Path:
    import plotly.graph_objects as go

    g, band = _groups(rows, fr), _failed_band(rows)
    traces = [
        _trace("dominated", g["dominated"], band, label="dominated", mode="markers",
               marker=dict(color="#b0b0b0", size=8)),
        _trace("front", g["front"], band, label="Pareto front", mode="lines+markers",
               line=dict(shape="hv", color="#1f77b4"), marker=dict(color="#1f77b4", size=11)),
    ]  # fmt: skip
    if g["failed"]:  # no failed trace, band or label when nothing failed
        traces.append(_trace("failed", g["failed"], band, label="failed / pruned", mode="markers",
                             marker=dict(color="#707070", symbol="x", size=9)))  # fmt: skip
    fig = go.Figure([*traces, *_preset_traces(rows, band), *_knee_trace(g, band)])
    if g["failed"]:
        fig.add_hline(y=band[0], line=dict(dash="dot", color="#999"), annotation_text="failed / pruned")
    fig.add_annotation(x=ref[0], y=ref[1], text="HV reference", showarrow=True, arrowhead=2)
    fig.update_layout(
        title=f"{name}: {len(g['front'])} on the front of {len(rows)} {_what(rows)}, HV {hv:.4g}",
        xaxis_title="training FLOPs ratio (lower is better)",
        yaxis_title="synergy gain (higher is better)",
        template="plotly_white",
        hovermode="closest",
    )
    _plotly_js(path.parent)
    fig.write_html(path, include_plotlyjs="directory", full_html=True, div_id="pareto-front")
    return path


def _plotly_js(folder: Path) -> Path:
    """One plotly.min.js beside the HTML reports (`include_plotlyjs="directory"`: offline, one
    copy per folder); replaced when it is not this plotly's bundle (plotly keeps any file)."""
    from plotly.offline import get_plotlyjs

    path = folder / PLOTLY_JS
    bundle = get_plotlyjs()
    if not path.exists() or path.stat().st_size != len(bundle.encode()):
        path.write_text(bundle, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- history, importance


def _history_png(rows: Sequence[Row], path: Path, name: str, ref: tuple[float, float]) -> Path:
    hist = hypervolume_history(rows, ref)
    fig, ax = _new_axes((7.0, 4.0))
    if hist:
        nums, hvs = zip(*hist)
        ax.step(nums, hvs, where="post", color="C0")
        ax.plot(nums, hvs, "o", ms=3, color="C0")
    ax.set_xlabel("trial number")
    ax.set_ylabel("hypervolume")
    ax.set_title(f"{name}: hypervolume (ref: FLOPs ratio {ref[0]:g}, synergy gain {ref[1]:+.4g})")
    ax.grid(alpha=0.3)
    fig.savefig(path)
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "objective"


def _load_study(db: Path, study_name: str) -> tuple[Any, str | None]:
    import optuna

    from sqlalchemy.exc import SQLAlchemyError

    storage = f"sqlite:///{db}"
    try:
        return optuna.load_study(study_name=study_name, storage=storage), None
    except SQLAlchemyError as err:  # damaged past its table list
        return None, f"{db}: not a readable Optuna study ({str(err).splitlines()[0]}); parameter importance skipped"
    except KeyError:
        names = optuna.get_all_study_names(storage)
        return (
            None,
            f"no study {study_name!r} in {db} (studies: {names}); parameter importance skipped",
        )


def _metric_names(study: Any, run_dir: Path) -> list[str]:
    """The study's metric names; for a study made before sweeps named them, the objectives
    recorded in `sweep.json`; `objective_<i>` only when neither says."""
    if study.metric_names:
        return list(study.metric_names)
    meta = read_meta(run_dir / SWEEP_FILE) if (run_dir / SWEEP_FILE).exists() else None
    recorded = [o.get("name", "") for o in meta.objectives] if meta else []
    if len(recorded) == len(study.directions) and all(recorded):
        return recorded
    return [f"objective_{i}" for i in range(len(study.directions))]


def _importance_png(imp: dict[str, float], path: Path, title: str) -> Path:
    items = sorted(imp.items(), key=lambda kv: kv[1])
    fig, ax = _new_axes((7.0, 0.8 + 0.3 * max(1, len(items))))
    ax.barh([k for k, _ in items], [v for _, v in items], color="C0")
    ax.set_xlabel("PED-ANOVA importance (normalised)")
    ax.set_title(title, fontsize=10)
    fig.savefig(path)
    return path


def importance_plots(run_dir: str | Path, out_dir: str | Path, study_name: str) -> tuple[dict[str, Path], str | None]:
    """PED-ANOVA importance per objective of `runs/<sweep>/optuna.db` as PNG bar charts.

    Returns `({"importance_<metric>": path}, None)`, or `({}, reason)` when the study is
    missing or has fewer than MIN_IMPORTANCE_TRIALS complete trials. The target quantile
    is `clip(5 / n, 0.1, 0.5)` so at least ~5 trials form the "good" set (Optuna's advice).
    """
    db = Path(run_dir) / STUDY_FILE
    if not db.exists():
        return {}, f"no Optuna study at {db}; parameter importance skipped"
    problem = store_problem(db, "studies")
    if problem is not None:  # the front needs only trials.csv: say so and go on
        warn_damaged(db, "", f"{problem}; parameter importance skipped (the front is read from {TRIALS_FILE})")
        return {}, None
    study, reason = _load_study(db, study_name)
    if study is None:
        return {}, reason
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    n = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if n < MIN_IMPORTANCE_TRIALS:
        return {}, (f"study {study_name!r} has {n} complete trials (< {MIN_IMPORTANCE_TRIALS}); importance skipped")
    names = _metric_names(study, Path(run_dir))
    evaluator = PedAnovaImportanceEvaluator(target_quantile=min(0.5, max(0.1, 5 / n)))
    out: dict[str, Path] = {}
    for i, (metric, direction) in enumerate(zip(names, study.directions)):
        sign = 1.0 if direction == StudyDirection.MINIMIZE else -1.0
        with warnings.catch_warnings():  # Optuna warns that `target` is minimised: ours is signed
            warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes")
            imp = get_param_importances(study, evaluator=evaluator, target=lambda t, i=i, s=sign: s * t.values[i])
        if imp:
            path = Path(out_dir) / f"importance_{_slug(metric)}.png"
            out[f"importance_{_slug(metric)}"] = _importance_png(
                imp,
                path,
                f"{study_name}: what reaches the best {metric} ({direction.name.lower()}, n={n})",
            )
    return out, None if out else f"study {study_name!r} has no parameters to rank"


def pareto_plots(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    ref: Sequence[float] | None = None,
    runs_dir: str | Path = "runs",
) -> dict[str, Path]:
    """Write the sweep's report files; returns `{name: path}` for the tracking module to log.

    Keys: `front_png`, `front_html` (interactive; loads `plotly_js`, the one plotly.min.js
    beside it, so it works offline), `plotly_js`, `hypervolume_png`, and
    `importance_<metric>` per objective when the Optuna study allows it (otherwise the
    reason is logged as a warning). `out_dir` defaults to `<run_dir>/report`. Both fronts
    mark the knee (the trial `export` picks by default). A stamp of the inputs is written
    beside them: `plots_current` then answers without drawing anything.
    """
    run = resolve_run_dir(run_dir, runs_dir)
    s = _read_sweep(run)
    return _draw(s, _report_dir(run, out_dir), hypervolume(s.rows, ref), _inputs_key(run, ref))


def _report_dir(run: Path, out_dir: str | Path | None) -> Path:
    return Path(out_dir) if out_dir is not None else run / "report"


def _draw(s: _Sweep, out: Path, hv: tuple[float, tuple[float, float]], key: str) -> dict[str, Path]:
    """`pareto_plots` of a sweep read once; `hv`: `hypervolume(s.rows, ref)`, `key`: the inputs stamp."""
    (hv, ref_nat), rows, name = hv, s.rows, s.name
    out.mkdir(parents=True, exist_ok=True)
    html = _front_html(rows, s.front, out / "pareto_front.html", name, ref_nat, hv)
    paths = {
        "front_png": _front_png(rows, s.front, out / "pareto_front.png", name, ref_nat, hv),
        "front_html": html,
        "plotly_js": html.parent / PLOTLY_JS,
        "hypervolume_png": _history_png(s.search, out / "hypervolume_history.png", name, ref_nat),
    }
    extra, reason = importance_plots(s.run, out, name)
    if reason:
        log.warning(reason)
    paths = {**paths, **extra}
    _write_stamp(out, key, paths)
    return paths


# --------------------------------------------------------------------------- up-to-date check

STAMP_FILE = ".inputs.json"  # in the report folder: what the plots were drawn from
_INPUT_FILES = (TRIALS_FILE, CONFIRMED_FILE, SWEEP_FILE)


def _inputs_key(run: Path, ref: Sequence[float] | None) -> str:
    """SHA-256 of what the plots show: trials.csv, confirmed.csv, sweep.json (a few kB to
    read), the reference point and the package version (a new version may draw differently)."""
    from searchvlm import __version__

    h = hashlib.sha256(f"{__version__}|{None if ref is None else [float(v) for v in ref]}".encode())
    for name in _INPUT_FILES:
        h.update(f"|{name}|".encode())
        h.update((run / name).read_bytes() if (run / name).exists() else b"-")
    return h.hexdigest()


def _write_stamp(out: Path, key: str, paths: dict[str, Path]) -> None:
    data = {"inputs_sha256": key, "files": {k: p.name for k, p in paths.items()}}
    (out / STAMP_FILE).write_text(json.dumps(data, indent=1) + "\n")


def plots_current(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    ref: Sequence[float] | None = None,
    runs_dir: str | Path = "runs",
) -> dict[str, Path] | None:
    """The report files `pareto_plots` wrote, when its inputs (trials.csv, confirmed.csv,
    sweep.json, `ref`) are unchanged since and every file is still there; else None (draw
    again). Reads a few kB: `pareto` uses it to skip redrawing and re-logging."""
    run = resolve_run_dir(run_dir, runs_dir)
    return _stamped(_report_dir(run, out_dir), _inputs_key(run, ref))


def _stamped(out: Path, key: str) -> dict[str, Path] | None:
    """The files of `out`'s stamp when it was written for inputs `key` and all still exist."""
    try:
        stamp = json.loads((out / STAMP_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    paths = {k: out / v for k, v in stamp.get("files", {}).items()}
    if stamp.get("inputs_sha256") != key or not paths or not all(p.exists() for p in paths.values()):
        return None
    return paths


# --------------------------------------------------------------------------- the `pareto` command


@dataclass(frozen=True)
class ParetoReport:
    """What `pareto_report` produced: the JSON summary (`pareto_summary`), the front as table
    cells (`front_table`), the report files and whether they were already current."""

    summary: dict[str, Any]
    table: list[dict[str, str]]
    plots: dict[str, Path] = field(default_factory=dict)
    plots_unchanged: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The summary with the plot paths (`pareto --json`)."""
        return {**self.summary, "plots": {k: str(v) for k, v in self.plots.items()},
                "plots_unchanged": self.plots_unchanged}  # fmt: skip


def pareto_report(
    run_dir: str | Path,
    ref: Sequence[float] | None = None,
    runs_dir: str | Path = "runs",
    *,
    plots: bool = True,
    force: bool = False,
) -> ParetoReport:
    """The `pareto` command: a sweep's summary, front table and plots from one read of its
    tables (one front, one hypervolume). Plots are drawn, and logged with the summary metrics
    to the sweep's MLflow parent run, only when the inputs changed since they were drawn
    (`plots_current`) or with `force`; `plots=False` reads only: nothing is written or logged."""
    run = resolve_run_dir(run_dir, runs_dir)
    key = _inputs_key(run, ref)  # before reading: a table changed meanwhile is redrawn next time
    s = _read_sweep(run)
    hv, tie = hypervolume(s.rows, ref), _ties(s.rows)
    summary = _summary(s, ref, hv, tie)
    paths = _stamped(_report_dir(run, None), key) if plots and not force else None
    unchanged = paths is not None
    if plots and not unchanged:
        paths = _draw(s, _report_dir(run, None), hv, key)
        _log_report(summary, paths)
    return ParetoReport(summary, _front_cells(s.front, tie), paths or {}, unchanged)


def _log_report(summary: dict[str, Any], paths: dict[str, Path]) -> None:
    """Log the plots and the summary metrics to the sweep's MLflow parent run when the
    sweep recorded one (in the store beside it when `runs/` was moved)."""
    run_dir = Path(summary["run_dir"])
    if not (run_dir / SWEEP_FILE).exists():
        return
    meta = read_meta(run_dir / SWEEP_FILE)
    uri = sweep_tracking_uri(meta, run_dir)
    if not (uri and meta.parent_run_id):
        return
    store = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    problem = store_problem(store, "runs") if store is not None else None
    if problem is not None:  # the report is written; only its MLflow copy is skipped
        warn_damaged(store, "", f"{problem}; the report was not logged to MLflow")
        return
    from searchvlm.tracking import log_report

    log_report(uri, run_dir.parent, meta.parent_run_id, list(paths.values()), summary_metrics(summary),
               summary["trials"])  # fmt: skip


# --------------------------------------------------------------------------- a policy


def policy_png(policy: Any, path: str | Path, title: str | None = None) -> Path:
    """A picture of one policy: keep ratio per layer (rows) and task (columns) as a heatmap,
    each cell labelled with its ratio; mode and selector under each task, sharing (q/k/v,
    MLP, scope) and `tie_schedules` in the title. `policy` is a `ReductionPolicy`."""
    import numpy as np
    from matplotlib import colormaps

    tasks = ("understanding", "generation")
    keep = np.array([policy.task(t).keep for t in tasks], dtype=float).T  # (L, 2): layers x task
    n = keep.shape[0]
    fig, ax = _new_axes((5.2, 1.6 + 0.32 * n))
    im = ax.imshow(keep, vmin=0.0, vmax=1.0, cmap=colormaps["viridis"], aspect="auto")
    for (layer, col), v in np.ndenumerate(keep):
        ax.text(col, layer, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white" if v < 0.6 else "black")
    ax.set_xticks(range(len(tasks)), [f"{t}\n{policy.task(t).mode} / {policy.task(t).selector}" for t in tasks])
    ax.set_yticks(range(n), [str(i) for i in range(n)])
    ax.set_ylabel("layer")
    ax.set_xlabel("task (mode / selector)")
    sh = policy.sharing
    scope = "all layers" if sh.scope is None else f"layers {','.join(map(str, sh.scope))}"
    head = title or f"policy {policy.name or '(unnamed)'}"
    ax.set_title(f"{head}\nsharing: qkv {sh.qkv}, mlp {sh.mlp} ({scope})"
                 f"{' · tied schedules' if policy.tie_schedules else ''}", fontsize=9)  # fmt: skip
    fig.colorbar(im, ax=ax, label="keep ratio (image tokens computed)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _png_beside(policy_file: Path) -> Path:
    """`policy.json` -> `policy.png` (a file already named .png gets `.png` appended)."""
    if not policy_file.name:  # "" or "/": no file to be beside
        raise ConfigError(COMMAND_LINE, "POLICY_FILE", str(policy_file), "not a policy file name")
    if policy_file.suffix == ".png":
        return policy_file.with_name(policy_file.name + ".png")
    return policy_file.with_suffix(".png")


def policy_picture(policy_file: str | Path, png: str | Path | None = None) -> Path:
    """The `show` command: `policy_png` of a policy file (exported, or a bare explicit policy),
    titled by its provenance, written to `png` (default: beside the file, `.png`)."""
    from searchvlm.errors import load_json
    from searchvlm.policy import load_policy

    policy_file = Path(policy_file)
    png = Path(png) if png else _png_beside(policy_file)
    policy = load_policy(policy_file)
    data = load_json(policy_file)
    prov = data.get("provenance", {}) if isinstance(data, dict) else {}
    title = (f"{prov.get('sweep')} trial #{prov.get('trial_number')} ({prov.get('trial_id')})"
             if prov.get("sweep") else f"{policy_file.name}{f' ({policy.name})' if policy.name else ''}")  # fmt: skip
    return policy_png(policy, png, title)


# --------------------------------------------------------------------------- the `export` command


@dataclass(frozen=True)
class ExportReport:
    """What `export_report` wrote: the policy file, its picture, and the file's provenance."""

    path: Path
    picture: Path
    provenance: dict[str, Any]


def export_report(
    run_dir: str | Path,
    rule: str = "knee",
    max_flops: float | None = None,
    min_synergy: float | None = None,
    out_path: str | Path = "policy.json",
    runs_dir: str | Path = "runs",
    *,
    trial: str | int | None = None,
    force: bool = False,
) -> ExportReport:
    """The `export` command: `searchvlm.export.export_policy` (same arguments), then the
    policy's picture beside the file (`policy_picture`: policy.json -> policy.png)."""
    from searchvlm.export import export_policy

    path = export_policy(run_dir, rule, max_flops, min_synergy, out_path, runs_dir, trial=trial, force=force)
    provenance = json.loads(path.read_text())["provenance"]
    try:
        picture = policy_picture(path)
    except OSError as err:  # the policy file is written; say which file failed
        raise ConfigError(COMMAND_LINE, "--output", str(_png_beside(path)),
                          f"cannot write the picture ({err.strerror or err})") from None  # fmt: skip
    return ExportReport(path, picture, provenance)

"""`reproduce`: the study's Table 3 on our proxy — literature presets side by side.

L4 module. Runs every literature preset with the space's seeds through `run_trial` (the
isolated baselines are trained once and cached, then reused by every row), and writes the
table as Markdown and CSV (plus `table3.json`, every row's per-seed record). Every row is
also compared with the dense unified row on the same seeds: the paired difference of
synergy (and of each task's gain) with its paired standard error, and a paired t-test
whose p-values are Holm-corrected over the rows; † marks a difference that survives at 5%.
MLflow logging goes through `searchvlm.tracking`.
"""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from searchvlm.config import TrialConfig
from searchvlm.errors import COMMAND_LINE, ConfigError
from searchvlm.metrics import REGISTRY as METRIC_ROWS
from searchvlm.metrics import MetricInfo
from searchvlm.presets import PRESETS, REGISTRY, preset
from searchvlm.search import DecisionSettings
from searchvlm.trial_result import TrialResult, last_round_text

if TYPE_CHECKING:
    from searchvlm.space import SearchSpace

__all__ = [
    "ALPHA",
    "COLUMNS",
    "ROWS",
    "ReproduceRequest",
    "TABLE3_METRICS",
    "Table3",
    "holm",
    "reproduce",
    "reproduce_config",
    "run_reproduce",
]

# (row label, preset name) in the order of the study's Table 3: the preset registry's order
ROWS: tuple[tuple[str, str], ...] = tuple((p.label, p.name) for p in REGISTRY.values())
#: the metrics Table 3 shows, registration order (`searchvlm.metrics`: a row's `table3` header)
TABLE3_METRICS: tuple[MetricInfo, ...] = tuple(m for m in METRIC_ROWS.values() if m.table3 is not None)
# table3.csv's columns in the study's Table 3 order (a file format, not TrialResult's field
# order; the `*_vs_dense_stderr` and `p_holm` columns are this table's own)
COLUMNS = (
    "model",
    "preset",
    "status",
    *(m.name for m in TABLE3_METRICS),
    "flops_ratio",
    "und_gain",
    "und_gain_stderr",
    "gen_gain",
    "gen_gain_stderr",
    "synergy_gain",
    "synergy_gain_stderr",
    "und_gain_vs_dense",
    "und_gain_vs_dense_stderr",
    "gen_gain_vs_dense",
    "gen_gain_vs_dense_stderr",
    "synergy_vs_dense",
    "synergy_vs_dense_stderr",
    "p_holm",
    "synergy_vs_dense_lower",
    "verdict",
)
ALPHA = 0.05


@dataclass
class Table3:
    rows: list[dict]
    files: dict[str, Path] = field(default_factory=dict)  # md, csv, json: where `reproduce` wrote it

    def markdown(self) -> str:
        head = (
            f"| model | {' | '.join(m.table3 for m in TABLE3_METRICS)} | FLOPs | g_U | g_G | synergy | "
            "Δg_U vs dense | Δg_G vs dense | Δsynergy vs dense | p (Holm) | lower bound | vs −δ |"
        )
        lines = [head, "|---" * (head.count("|") - 1) + "|"]
        for r in self.rows:
            lines.append(
                f"| {r['model']} | {' | '.join(_f(r.get(m.name)) for m in TABLE3_METRICS)} | "
                f"{_f(r['flops_ratio'], '.2f')}× | {_pmf(r, 'und_gain')} | {_pmf(r, 'gen_gain')} | "
                f"{_pmf(r, 'synergy_gain')} | {_pmf(r, 'und_gain_vs_dense')} | {_pmf(r, 'gen_gain_vs_dense')} | "
                f"{_pmf(r, 'synergy_vs_dense')}{_dagger(r)} | {_f(r.get('p_holm'))} | "
                f"{_f(r.get('synergy_vs_dense_lower'), '+.3f')} | {r.get('verdict') or '–'} |"
            )
        return "\n".join(lines) + "\n" + self._last_rounds()

    def _last_rounds(self) -> str:
        """A note naming each row's runs scored at the last round (at `synergy.at: best`: still
        improving when training stopped, so a gain on them is a gain at this budget)."""
        late = [r for r in self.rows if r.get("at_last_round")]
        if not late:
            return ""
        lines = [f"- {r['model']}: {r['at_last_round']}" for r in late]
        steps = sorted({r["last_step"] for r in late})
        return (f"\nRuns scored at their last round (step {', '.join(map(str, steps))}; seeds of each run; with "
                "`synergy.at: best` still improving when training stopped, so their gains are gains at this "
                "budget, not at convergence):\n\n" + "\n".join(lines) + "\n")  # fmt: skip

    def csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({c: r.get(c) for c in COLUMNS} for r in self.rows)
        return buf.getvalue()


def _f(value, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def _pm(se) -> str:
    return "" if se is None else f" ± {se:.3f}"


def _pmf(row: dict, key: str) -> str:
    return _f(row.get(key), "+.3f") + ("" if row.get(key) is None else _pm(row.get(f"{key}_stderr")))


def _dagger(row: dict) -> str:
    p = row.get("p_holm")
    return " †" if p is not None and p < ALPHA else ""


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def _paired(result: TrialResult, dense: TrialResult, key: str) -> tuple[list[float], list[float]] | None:
    """`key` of the row and of dense, seed by seed (sorted seeds); None unless both ran the same seeds."""
    mine = {p["seed"]: p[key] for p in result.per_seed}
    ref = {p["seed"]: p[key] for p in dense.per_seed}
    if result.status != "ok" or dense.status != "ok" or set(mine) != set(ref) or not mine:
        return None
    return [mine[s] for s in sorted(mine)], [ref[s] for s in sorted(mine)]


_VS_DENSE = {"und_gain": "und_gain_vs_dense", "gen_gain": "gen_gain_vs_dense", "synergy_gain": "synergy_vs_dense"}


def _against_dense(rows: list[dict], results: dict[str, TrialResult], margin: DecisionSettings | None = None) -> None:
    """Fill each row's paired differences against the dense row, Holm-corrected p, and with
    a `margin` each row's non-inferiority verdict (`noninferiority.row_verdicts`, as `confirm`'s)."""
    from scipy import stats

    from searchvlm.synergy import paired_difference

    dense = results.get("dense")
    if dense is None:
        return
    tested, synergy_diffs = [], {}
    for row in rows:
        if row["preset"] not in results or row["preset"] == "dense":
            continue
        paired = {key: _paired(results[row["preset"]], dense, key) for key in _VS_DENSE}
        for key, pair in paired.items():
            if pair:
                row[_VS_DENSE[key]], row[f"{_VS_DENSE[key]}_stderr"] = paired_difference(*pair)
        diffs = [a - b for a, b in zip(*paired["synergy_gain"])] if paired["synergy_gain"] else []
        if len(diffs) > 1 and any(d != diffs[0] for d in diffs):
            tested.append((row, float(stats.ttest_1samp(diffs, 0.0).pvalue)))
        synergy_diffs[row["preset"]] = diffs
    for (row, _), p in zip(tested, holm([p for _, p in tested])):
        row["p_holm"] = p
    if margin is not None:
        _verdicts(rows, synergy_diffs, margin)


def _verdicts(rows: list[dict], diffs: dict[str, list[float]], margin: DecisionSettings) -> None:
    """Each row's verdict at the space's `decision:` margin (delta, alpha)."""
    from searchvlm.noninferiority import row_verdicts

    flops = {r["preset"]: r.get("flops_ratio") or float("nan") for r in rows}
    tests = row_verdicts(diffs, flops, margin.delta, margin.alpha)
    for row in rows:
        t = tests.get(row["preset"])
        if t is not None:
            row["synergy_vs_dense_lower"], row["verdict"] = t.lower, t.state.replace("_", "-")


def _isolated_rows(first: TrialResult) -> list[dict]:
    """U-only and G-only rows come from the (cached) isolated baselines of any trial: each
    shows its task's metrics."""
    rows = []
    for model, task in (("U-only (isolated)", "understanding"), ("G-only (isolated)", "generation")):
        iso = {m.name: getattr(first, m.iso, None) for m in TABLE3_METRICS if m.task == task}
        rows.append({"model": model, "preset": "isolated", "status": first.status, **iso, "flops_ratio": 1.0})
    return [{c: r.get(c) for c in COLUMNS} for r in rows]


def _row(label: str, name: str, result: TrialResult) -> dict:
    row = {c: getattr(result, c, None) for c in COLUMNS if c not in ("model", "preset", "status")}
    late = last_round_text(result.per_seed, result.steps_done) if result.status == "ok" else ""
    return {"model": label, "preset": name, "status": result.status, **row, "last_step": result.steps_done,
            "at_last_round": late}  # fmt: skip


def reproduce(
    base: TrialConfig,
    out_dir: str | Path,
    presets: list[str] | None = None,
    on_result: Callable[[str, TrialResult], None] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    margin: DecisionSettings | None = None,
) -> Table3:
    """Run the literature presets on `base` (its model, data, training, seeds) and write
    `table3.md` and `table3.csv` into `out_dir` (with `margin`, each row's verdict against
    dense). `progress(phase, step, steps)` hears every
    evaluation round of every run, the phase named `<preset> (<k> of <n>): <run>`."""
    from searchvlm.trial import run_trial

    wanted = [(label, name) for label, name in ROWS if presets is None or name in presets]
    rows, results = [], {}
    for k, (label, name) in enumerate(wanted, 1):
        config = base.model_copy(update={"policy": preset(name, base.model.num_layers), "name": name})
        tag = f"{name} ({k} of {len(wanted)})"
        step = None if progress is None else functools.partial(_tagged, progress, tag)
        result = run_trial(config, progress=step)
        results[name] = result
        rows.append(_row(label, name, result))
        if on_result:
            on_result(name, result)
    _against_dense(rows, results, margin)
    first = next(iter(results.values()), None)
    table = Table3((_isolated_rows(first) if first else []) + rows)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table.files = {"md": out / "table3.md", "csv": out / "table3.csv", "json": out / "table3.json"}
    table.files["md"].write_text(table.markdown())
    table.files["csv"].write_text(table.csv())
    table.files["json"].write_text(
        json.dumps({name: r.model_dump(mode="json", exclude={"policy"}) for name, r in results.items()}, indent=1)
    )
    return table


@dataclass(frozen=True)
class ReproduceRequest:
    """What `run_reproduce` puts side by side: `presets` (default every literature preset),
    on `seeds` (default the space's), with `overrides` (`key.path=value`, `--set`) applied
    to the space file."""

    presets: Sequence[str] | None = None
    seeds: list[int] | None = None
    overrides: Sequence[str] | None = None


def _tagged(progress: Callable[[str, int, int], None], tag: str, phase: str, step: int, steps: int) -> None:
    progress(f"{tag}: {phase}", step, steps)


def reproduce_config(
    space_file: str | Path, request: ReproduceRequest = ReproduceRequest(), runs_dir: str | Path = "runs"
) -> TrialConfig:
    """The base trial config `run_reproduce` runs every preset on: the space's (after the
    request's `overrides`), baselines cached under `<runs_dir>/cache`, its `seeds` if given;
    unknown `presets` are a ConfigError."""
    from searchvlm.space import load_space

    return _base_config(load_space(space_file, request.overrides), request, runs_dir)


def _base_config(space: SearchSpace, request: ReproduceRequest, runs_dir: str | Path) -> TrialConfig:
    presets, seeds = request.presets, request.seeds
    unknown = [p for p in presets or [] if p not in PRESETS]
    if unknown:
        raise ConfigError(COMMAND_LINE, "--presets", unknown, f"valid presets: {', '.join(PRESETS)}")
    for name in presets or PRESETS:  # before any training: a preset the depth refuses stops nothing half way
        try:
            preset(name, space.model.num_layers)
        except ValueError as err:
            raise ConfigError(COMMAND_LINE, "--presets", name,
                              f"does not fit model.num_layers = {space.model.num_layers}: {err}") from None  # fmt: skip
    base = space.trial_config(None, name="reproduce")
    base = base.model_copy(update={"cache_dir": str(Path(runs_dir) / "cache")})
    return base.model_copy(update={"seeds": seeds}) if seeds else base


def run_reproduce(
    space_file: str | Path,
    request: ReproduceRequest = ReproduceRequest(),
    *,
    out_dir: str | Path | None = None,
    runs_dir: str | Path = "runs",
    tracking_uri: str | None = None,
    on_result: Callable[[str, TrialResult], None] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Table3:
    """The `reproduce` command: `reproduce` on the space's `reproduce_config` for `request`,
    written to `out_dir` (default `<runs_dir>/reproduce-<space>`) and logged to MLflow
    (`tracking_uri`, default the sqlite store under `runs_dir`)."""
    from searchvlm.space import load_space
    from searchvlm.tracking import default_uri, log_table

    space = load_space(space_file, request.overrides)  # once: the base config and the margin
    base = _base_config(space, request, runs_dir)
    presets = request.presets
    name = f"reproduce-{Path(space_file).stem}"
    table = reproduce(base, Path(out_dir) if out_dir else Path(runs_dir) / name,
                      list(presets) if presets else None, on_result, progress, space.decision)  # fmt: skip
    log_table(tracking_uri or default_uri(runs_dir), runs_dir, name, [table.files["md"], table.files["csv"]],
              table.rows)  # fmt: skip
    return table

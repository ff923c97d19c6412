"""`reproduce`: the study's Table 3 on our proxy — literature presets side by side.

L4 module. Runs every literature preset with the space's seeds through `run_trial` (the
isolated baselines are trained once and cached, then reused by every row), and writes the
table as Markdown and CSV (plus `table3.json`, every row's per-seed records); a row is a
`Table3Row`, typed as the CSV's columns. Every row is
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
from typing import TYPE_CHECKING, Any, Callable

from pydantic import Field, create_model

from searchvlm._strict import Frozen
from searchvlm.config import TrialConfig
from searchvlm.errors import COMMAND_LINE, ConfigError
from searchvlm.metrics import REGISTRY as METRIC_ROWS
from searchvlm.metrics import MetricInfo
from searchvlm.presets import PRESETS, REGISTRY, preset
from searchvlm.search import DecisionSettings
from searchvlm.trial_result import TrialResult, TrialStatus, last_round_text

if TYPE_CHECKING:
    from searchvlm.space import SearchSpace

__all__ = [
    "ALPHA",
    "COLUMNS",
    "ROWS",
    "ReproduceRequest",
    "TABLE3_METRICS",
    "Table3",
    "Table3Row",
    "holm",
    "reproduce",
    "reproduce_config",
    "run_reproduce",
]

# (row label, preset name) in the order of the study's Table 3: the preset registry's order
ROWS: tuple[tuple[str, str], ...] = tuple((p.label, p.name) for p in REGISTRY.values())
#: the metrics Table 3 shows, registration order (`searchvlm.metrics`: a row's `table3` header)
TABLE3_METRICS: tuple[MetricInfo, ...] = tuple(m for m in METRIC_ROWS.values() if m.table3 is not None)
ALPHA = 0.05


class _RowHead(Frozen):
    model: str = Field(description="the row's label (the study's Table 3 name)")
    preset: str = Field(description="the preset trained ('isolated' for the U-only and G-only rows)")
    status: TrialStatus = Field(description="the trial's status (the isolated rows: their baselines' trial's)")


#: the Table 3 metrics' columns (each row's mean over seeds; the isolated rows: their task's baseline's)
_Row = create_model("_Row", __base__=_RowHead, __module__=__name__,
                    **{m.name: (float | None, Field(None, description=m.doc)) for m in TABLE3_METRICS})  # fmt: skip


def _number(description: str) -> Any:
    return Field(None, description=description)


class Table3Row(_Row):
    """One row of Table 3, its fields in table3.csv's column order (the study's Table 3 order,
    a file format, not TrialResult's field order): the trial's numbers, then this table's own
    (the `*_vs_dense_stderr`, `p_holm`, the lower bound and verdict), then what the note below
    the table reads (not columns). A name the table does not have is refused."""

    flops_ratio: float | None = _number("the policy's training FLOPs / the dense model's")
    und_gain: float | None = _number("g_U, mean over seeds")
    und_gain_stderr: float | None = _number("its standard error over seeds")
    gen_gain: float | None = _number("g_G, mean over seeds")
    gen_gain_stderr: float | None = _number("its standard error over seeds")
    synergy_gain: float | None = _number("synergy gain, mean over seeds")
    synergy_gain_stderr: float | None = _number("its standard error over seeds")
    und_gain_vs_dense: float | None = _number("g_U minus the dense row's, mean of the per-seed differences")
    und_gain_vs_dense_stderr: float | None = _number("its paired standard error")
    gen_gain_vs_dense: float | None = _number("g_G minus the dense row's, mean of the per-seed differences")
    gen_gain_vs_dense_stderr: float | None = _number("its paired standard error")
    synergy_vs_dense: float | None = _number("synergy minus the dense row's, mean of the per-seed differences")
    synergy_vs_dense_stderr: float | None = _number("its paired standard error")
    p_holm: float | None = _number("paired t-test of synergy_vs_dense against 0, Holm-corrected over the rows")
    synergy_vs_dense_lower: float | None = _number("the lower confidence bound at the space's decision margin")
    verdict: str | None = _number("non-inferior | inferior | undecided at the decision margin")
    last_step: int | None = _number("steps trained (None on the isolated rows; not a column)")
    at_last_round: str | None = _number("the runs scored at their last round (`last_round_text`; not a column)")


#: the fields of a row that are not table3.csv columns (the note below the table reads them)
_NOTE_FIELDS = ("last_step", "at_last_round")
#: table3.csv's columns, in order
COLUMNS: tuple[str, ...] = tuple(f for f in Table3Row.model_fields if f not in _NOTE_FIELDS)


@dataclass
class Table3:
    rows: list[Table3Row]
    files: dict[str, Path] = field(default_factory=dict)  # md, csv, json: where `reproduce` wrote it

    def markdown(self) -> str:
        head = (
            f"| model | {' | '.join(m.table3 for m in TABLE3_METRICS)} | FLOPs | g_U | g_G | synergy | "
            "Δg_U vs dense | Δg_G vs dense | Δsynergy vs dense | p (Holm) | lower bound | vs −δ |"
        )
        lines = [head, "|---" * (head.count("|") - 1) + "|"]
        for r in self.rows:
            lines.append(
                f"| {r.model} | {' | '.join(_f(getattr(r, m.name)) for m in TABLE3_METRICS)} | "
                f"{_f(r.flops_ratio, '.2f')}× | {_pmf(r, 'und_gain')} | {_pmf(r, 'gen_gain')} | "
                f"{_pmf(r, 'synergy_gain')} | {_pmf(r, 'und_gain_vs_dense')} | {_pmf(r, 'gen_gain_vs_dense')} | "
                f"{_pmf(r, 'synergy_vs_dense')}{_dagger(r)} | {_f(r.p_holm)} | "
                f"{_f(r.synergy_vs_dense_lower, '+.3f')} | {r.verdict or '–'} |"
            )
        return "\n".join(lines) + "\n" + self._last_rounds()

    def _last_rounds(self) -> str:
        """A note naming each row's runs scored at the last round (at `synergy.at: best`: still
        improving when training stopped, so a gain on them is a gain at this budget)."""
        late = [r for r in self.rows if r.at_last_round]
        if not late:
            return ""
        lines = [f"- {r.model}: {r.at_last_round}" for r in late]
        steps = sorted({r.last_step for r in late})
        return (f"\nRuns scored at their last round (step {', '.join(map(str, steps))}; seeds of each run; with "
                "`synergy.at: best` still improving when training stopped, so their gains are gains at this "
                "budget, not at convergence):\n\n" + "\n".join(lines) + "\n")  # fmt: skip

    def csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({c: getattr(r, c) for c in COLUMNS} for r in self.rows)
        return buf.getvalue()

    def flat(self) -> list[dict[str, Any]]:
        """Every row as a flat dict of its fields (what MLflow logs: `tracking.log_table`)."""
        return [r.model_dump() for r in self.rows]


def _f(value, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def _pm(se) -> str:
    return "" if se is None else f" ± {se:.3f}"


def _pmf(row: Table3Row, key: str) -> str:
    value = getattr(row, key)
    return _f(value, "+.3f") + ("" if value is None else _pm(getattr(row, f"{key}_stderr")))


def _dagger(row: Table3Row) -> str:
    p = row.p_holm
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
    mine = {p.seed: getattr(p, key) for p in result.per_seed}
    ref = {p.seed: getattr(p, key) for p in dense.per_seed}
    if result.status != "ok" or dense.status != "ok" or set(mine) != set(ref) or not mine:
        return None
    return [mine[s] for s in sorted(mine)], [ref[s] for s in sorted(mine)]


_VS_DENSE = {"und_gain": "und_gain_vs_dense", "gen_gain": "gen_gain_vs_dense", "synergy_gain": "synergy_vs_dense"}


def _against_dense(
    rows: list[Table3Row], results: dict[str, TrialResult], margin: DecisionSettings | None = None
) -> list[Table3Row]:
    """`rows` with each row's paired differences against the dense row, Holm-corrected p, and
    with a `margin` each row's non-inferiority verdict (`noninferiority.row_verdicts`, as `confirm`'s)."""
    from scipy import stats

    from searchvlm.synergy import paired_difference

    dense = results.get("dense")
    if dense is None:
        return rows
    updates: list[dict[str, Any]] = [{} for _ in rows]
    tested, synergy_diffs = [], {}
    for row, update in zip(rows, updates):
        if row.preset not in results or row.preset == "dense":
            continue
        paired = {key: _paired(results[row.preset], dense, key) for key in _VS_DENSE}
        for key, pair in paired.items():
            if pair:
                update[_VS_DENSE[key]], update[f"{_VS_DENSE[key]}_stderr"] = paired_difference(*pair)
        diffs = [a - b for a, b in zip(*paired["synergy_gain"])] if paired["synergy_gain"] else []
        if len(diffs) > 1 and any(d != diffs[0] for d in diffs):
            tested.append((update, float(stats.ttest_1samp(diffs, 0.0).pvalue)))
        synergy_diffs[row.preset] = diffs
    for (update, _), p in zip(tested, holm([p for _, p in tested])):
        update["p_holm"] = p
    if margin is not None:
        _verdicts(rows, updates, synergy_diffs, margin)
    return [Table3Row.model_validate({**row.model_dump(), **update}) for row, update in zip(rows, updates)]


def _verdicts(
    rows: list[Table3Row], updates: list[dict[str, Any]], diffs: dict[str, list[float]], margin: DecisionSettings
) -> None:
    """Each row's verdict at the space's `decision:` margin (delta, alpha), into its `updates`."""
    from searchvlm.noninferiority import row_verdicts

    flops = {r.preset: r.flops_ratio or float("nan") for r in rows}
    tests = row_verdicts(diffs, flops, margin.delta, margin.alpha)
    for row, update in zip(rows, updates):
        t = tests.get(row.preset)
        if t is not None:
            update.update(synergy_vs_dense_lower=t.lower, verdict=t.state.replace("_", "-"))


def _isolated_rows(first: TrialResult) -> list[Table3Row]:
    """U-only and G-only rows come from the (cached) isolated baselines of any trial: each
    shows its task's metrics."""
    rows = []
    for model, task in (("U-only (isolated)", "understanding"), ("G-only (isolated)", "generation")):
        iso = {m.name: getattr(first, m.iso, None) for m in TABLE3_METRICS if m.task == task}
        rows.append(Table3Row(model=model, preset="isolated", status=first.status, **iso, flops_ratio=1.0))
    return rows


def _row(label: str, name: str, result: TrialResult) -> Table3Row:
    row = {c: getattr(result, c, None) for c in COLUMNS if c not in ("model", "preset", "status")}
    late = last_round_text(result.per_seed, result.steps_done) if result.status == "ok" else ""
    return Table3Row(model=label, preset=name, status=result.status, **row, last_step=result.steps_done,
                     at_last_round=late)  # fmt: skip


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
    rows = _against_dense(rows, results, margin)
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
              table.flat())  # fmt: skip
    return table

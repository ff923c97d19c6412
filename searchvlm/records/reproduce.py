"""`reproduce`: the study's Table 3 on our proxy — literature presets side by side.

L4 module. Runs every literature preset with the space's seeds through `run_trial` (the
isolated baselines are trained once and cached, then reused by every row), and writes the
table as Markdown and CSV (plus `table3.json`, every row's per-seed records); a row is a
`Table3Row`, typed as the CSV's columns. Every row is
also compared with the dense unified row on the same seeds: the paired difference of
synergy (and of each task's gain) with its paired standard error, and a paired t-test
whose p-values are Holm-corrected over the rows; † marks a difference that survives at 5%.
With the space's `decision:` margin each row also gets a non-inferiority verdict
(`searchvlm.objectives.noninferiority`, the statistics of `searchvlm decide`). MLflow logging goes
through `searchvlm.tracking`.

Until decided (`max_seeds`, `reproduce --max-seeds N`): the rows start on the given seeds
(n0 of them) and seeds are added in `decide`'s looks (`noninferiority.look_schedule`: n0,
doubling, ending at N; the seeds after the given ones are the integers after the largest)
only to the rows still undecided, every run one seed paired with the dense joint model of
that seed (`synergy.vs_dense`, cached, so dense has every seed any row uses). Each look of
each of the m rows is tested at alpha / (m * number of looks)
(`noninferiority.sequential_verdicts`: Bonferroni over rows and looks, as `decide` takes
alpha / looks; no alpha spending), so the chance that any verdict is wrong stays at most
alpha. A row stops when decided or at N seeds (`stopped`: decided | cap | failed). Every
(row, seed) run is recorded in `table3_race.json` (`decide`'s race-file form, with the plan
fixed before the first seed) as it finishes: a rerun retrains nothing recorded, and one
with another plan on the same seeds is refused.
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

from searchvlm.schema._strict import Frozen
from searchvlm.schema.config import TrialConfig
from searchvlm.schema.errors import COMMAND_LINE, ConfigError
from searchvlm.schema.metrics import REGISTRY as METRIC_ROWS
from searchvlm.schema.metrics import MetricInfo
from searchvlm.schema.policy.presets import PRESETS, REGISTRY, preset
from searchvlm.schema.search import DecisionSettings
from searchvlm.schema.trial_result import TrialResult, TrialStatus, last_round_text

if TYPE_CHECKING:
    from searchvlm.objectives.noninferiority import CandidateTest
    from searchvlm.records.decide import Records
    from searchvlm.schema.space import SearchSpace

__all__ = [
    "ALPHA",
    "COLUMNS",
    "RACE_FILE",
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
#: the metrics Table 3 shows, registration order (`searchvlm.schema.metrics`: a row's `table3` header)
TABLE3_METRICS: tuple[MetricInfo, ...] = tuple(m for m in METRIC_ROWS.values() if m.table3 is not None)
ALPHA = 0.05
#: `reproduce --max-seeds`'s per-(row, seed) records and plan (`searchvlm.records.decide.Records`' form)
RACE_FILE = "table3_race.json"


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
    seeds: str | None = _number("the seeds the row ran, a JSON list")
    stopped: str | None = _number("until decided (`--max-seeds`): decided | cap | failed")
    seeds_needed: int | None = _number("stopped at the cap: the paired seeds a decision would need (80% power)")
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
    trained: int | None = None  # until decided: (row, seed) runs this call trained
    reused: int | None = None  # and found recorded in table3_race.json

    def markdown(self) -> str:
        head = (
            f"| model | {' | '.join(m.table3 for m in TABLE3_METRICS)} | FLOPs | g_U | g_G | synergy | "
            "Δg_U vs dense | Δg_G vs dense | Δsynergy vs dense | p (Holm) | lower bound | vs −δ | seeds |"
        )
        lines = [head, "|---" * (head.count("|") - 1) + "|"]
        for r in self.rows:
            lines.append(
                f"| {r.model} | {' | '.join(_f(getattr(r, m.name)) for m in TABLE3_METRICS)} | "
                f"{_f(r.flops_ratio, '.2f')}× | {_pmf(r, 'und_gain')} | {_pmf(r, 'gen_gain')} | "
                f"{_pmf(r, 'synergy_gain')} | {_pmf(r, 'und_gain_vs_dense')} | {_pmf(r, 'gen_gain_vs_dense')} | "
                f"{_pmf(r, 'synergy_vs_dense')}{_dagger(r)} | {_f(r.p_holm)} | "
                f"{_f(r.synergy_vs_dense_lower, '+.3f')} | {r.verdict or '–'} | {_seeds(r)} |"
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


def _seeds(row: Table3Row) -> str:
    """A row's seed count, with why it stopped where it did not stop decided (`10 (cap, ~23
    needed)`, `4 (failed)`)."""
    if not row.seeds:
        return "–"
    n, why = len(json.loads(row.seeds)), row.stopped
    if why == "cap" and row.seeds_needed:
        return f"{n} (cap, ~{row.seeds_needed} needed)"
    return f"{n} ({why})" if why in ("cap", "failed") else str(n)


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
    """`key` of the row and of dense, seed by seed (the row's seeds, sorted); None unless dense
    ran every seed the row ran."""
    mine = {p.seed: getattr(p, key) for p in result.per_seed}
    ref = {p.seed: getattr(p, key) for p in dense.per_seed}  # until decided: dense has every row's seeds
    if result.status != "ok" or dense.status != "ok" or not set(mine) <= set(ref) or not mine:
        return None
    return [mine[s] for s in sorted(mine)], [ref[s] for s in sorted(mine)]


_VS_DENSE = {"und_gain": "und_gain_vs_dense", "gen_gain": "gen_gain_vs_dense", "synergy_gain": "synergy_vs_dense"}


def _against_dense(
    rows: list[Table3Row], results: dict[str, TrialResult], margin: DecisionSettings | None = None
) -> list[Table3Row]:
    """`rows` with each row's paired differences against the dense row, Holm-corrected p, and
    with a `margin` each row's non-inferiority verdict (`noninferiority.row_verdicts`, as `confirm`'s)."""
    from scipy import stats

    from searchvlm.objectives.synergy import paired_difference

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
    from searchvlm.objectives.noninferiority import row_verdicts

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
    row = {c: getattr(result, c, None) for c in COLUMNS if c not in ("model", "preset", "status", "seeds")}
    late = last_round_text(result.per_seed, result.steps_done) if result.status == "ok" else ""
    return Table3Row(model=label, preset=name, status=result.status, **row, seeds=json.dumps(result.seeds),
                     last_step=result.steps_done, at_last_round=late)  # fmt: skip


def reproduce(
    base: TrialConfig,
    out_dir: str | Path,
    presets: list[str] | None = None,
    on_result: Callable[[str, TrialResult], None] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    margin: DecisionSettings | None = None,
    max_seeds: int | None = None,
) -> Table3:
    """Run the literature presets on `base` (its model, data, training, seeds) and write
    `table3.md` and `table3.csv` into `out_dir` (with `margin`, each row's verdict against
    dense; with `max_seeds` too, until each row is decided or has `max_seeds` seeds: see the
    module docstring). `progress(phase, step, steps)` hears every
    evaluation round of every run, the phase named `<preset> (<k> of <n>): <run>`."""
    from searchvlm.train.trial import run_trial

    wanted = [(label, name) for label, name in ROWS if presets is None or name in presets]
    results: dict[str, TrialResult] = {}
    if max_seeds is None:
        for k, (_, name) in enumerate(wanted, 1):
            config = base.model_copy(update={"policy": preset(name, base.model.num_layers), "name": name})
            tag = f"{name} ({k} of {len(wanted)})"
            step = None if progress is None else functools.partial(_tagged, progress, tag)
            results[name] = run_trial(config, progress=step)
            if on_result:
                on_result(name, results[name])
    else:  # dense is every row's reference: always a row
        wanted = [r for r in ROWS if r[1] == "dense"] + [r for r in wanted if r[1] != "dense"]
        results, tests, runs = _until_decided(base, Path(out_dir), wanted, progress, margin, max_seeds)
        for name, result in results.items():
            if on_result:
                on_result(name, result)
    rows = [_row(label, name, results[name]) for label, name in wanted]
    if max_seeds is None:
        rows = _against_dense(rows, results, margin)
    else:
        # dense against itself (its runs paired through `synergy.vs_dense`): no comparison
        none = {f"{c}{e}": None for c in _VS_DENSE.values() for e in ("", "_stderr")}
        rows = [r.model_copy(update=none) if r.preset == "dense" else r for r in rows]
        rows = _against_dense(rows, results)  # the differences and p; the verdicts are the sequential ones
        rows = _sequential_verdicts(rows, tests, margin, _seed_plan(base.seeds, max_seeds)[1])  # type: ignore[arg-type]
    first = next(iter(results.values()), None)
    table = Table3((_isolated_rows(first) if first else []) + rows)
    if max_seeds is not None:
        table.trained, table.reused = runs.trained, runs.reused
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table.files = {"md": out / "table3.md", "csv": out / "table3.csv", "json": out / "table3.json"}
    table.files["md"].write_text(table.markdown())
    table.files["csv"].write_text(table.csv())
    table.files["json"].write_text(
        json.dumps({name: r.model_dump(mode="json", exclude={"policy"}) for name, r in results.items()}, indent=1)
    )
    return table


def check_max_seeds(seeds: Sequence[int], max_seeds: int, margin: DecisionSettings | None) -> None:
    """`--max-seeds` with the rows' first seeds and the space's margin, before any training."""
    if margin is None:
        raise ConfigError(COMMAND_LINE, "--max-seeds", max_seeds, "running rows until decided needs a margin: add "
                          "a `decision:` section with delta to the space (or --set decision.delta=...)")  # fmt: skip
    if len(seeds) < 2:
        raise ConfigError(COMMAND_LINE, "--max-seeds", max_seeds, f"the rows start on {len(seeds)} seed(s): "
                          "a paired bound needs at least 2 (--seeds)")  # fmt: skip
    if max_seeds < len(seeds):
        raise ConfigError(COMMAND_LINE, "--max-seeds", max_seeds,
                          f"below the {len(seeds)} seeds the rows start on (--seeds)")  # fmt: skip


def _seed_plan(given: Sequence[int], max_seeds: int) -> tuple[list[int], list[int]]:
    """(every seed a row may take, in order: the given ones, then the integers after the
    largest; the looks: `decide`'s, the given count doubling up to `max_seeds`)."""
    from searchvlm.objectives.noninferiority import look_schedule

    extra = range(max(given) + 1, max(given) + 1 + max_seeds - len(given))
    return [*given, *extra], look_schedule(len(given), max_seeds)


class _SeedRuns:
    """`reproduce --max-seeds`' `sample(row, n)` for `noninferiority.run_looks`: the row's and
    dense's runs on the first n seeds, one seed per run, each paired with the dense joint
    model of its seed (`synergy.vs_dense`: cached, and what the dense row reads), recorded
    in table3_race.json as it finishes; what is recorded is not trained again."""

    def __init__(self, base: TrialConfig, seeds: list[int], records: Records,
                 progress: Callable[[str, int, int], None] | None) -> None:  # fmt: skip
        synergy = base.synergy.model_copy(update={"vs_dense": True})
        self.base, self.seeds, self.records = base.model_copy(update={"synergy": synergy}), seeds, records
        self.progress = progress
        self.asked: dict[str, int] = {}  # row -> the most seeds asked for
        self.trained, self.reused = 0, 0  # (row, seed) runs trained by this call / found recorded
        self._seen: set[tuple[str, int]] = set()

    def __call__(self, name: str, n: int) -> list[float] | None:
        want = self.seeds[:n]
        if not self.ensure("dense", want):  # dense first: every seed a row takes
            return None
        if not self.ensure(name, want):
            return None
        return [float(self.records.ok(name, s)["synergy_vs_dense"]) for s in want]  # type: ignore[index]

    def ensure(self, name: str, seeds: list[int]) -> bool:
        """Train `name` on each of `seeds` not recorded ok, in order; False at the first that fails."""
        from searchvlm.train.trial import run_trial

        self.asked[name] = max(self.asked.get(name, 0), len(seeds))
        for seed in seeds:
            if self.records.ok(name, seed) is not None:
                self.reused += (name, seed) not in self._seen
                self._seen.add((name, seed))
                continue
            policy = preset(name, self.base.model.num_layers)
            config = self.base.model_copy(update={"policy": policy, "name": name, "seeds": [seed]})
            tag = f"{name} (seed {seed})"
            step = None if self.progress is None else functools.partial(_tagged, self.progress, tag)
            result = run_trial(config, progress=step)
            vs = result.per_seed[0].synergy_vs_dense if result.per_seed else None
            dump = result.model_dump(mode="json", exclude={"policy"})
            self.records.put({"trial_id": name, "seed": seed, "status": result.status, "error": result.error or "",
                              "synergy_vs_dense": vs, "result": dump})  # fmt: skip
            self._seen.add((name, seed))
            self.trained += 1
            if result.status != "ok":
                return False
        return True

    def result(self, name: str) -> TrialResult:
        """`name` on the seeds it was asked for (its first failed run where one failed), as one trial."""
        from searchvlm.train.trial import combine_seeds

        want = self.seeds[: self.asked.get(name, 0)]
        runs = [TrialResult.model_validate(r["result"]) for s in want if (r := self.records.data.get((name, s)))]
        if not runs:
            return TrialResult(status="failed", error="not trained: the dense row's run on its seeds failed",
                               seeds=want)  # fmt: skip
        return combine_seeds(runs)


def _until_decided(base: TrialConfig, out: Path, wanted: list[tuple[str, str]],
                   progress: Callable[[str, int, int], None] | None, margin: DecisionSettings | None,
                   max_seeds: int) -> tuple[dict[str, TrialResult], dict[str, CandidateTest], _SeedRuns]:  # fmt: skip
    """Every wanted row's result and (each row but dense) its `CandidateTest`, run until
    decided or at `max_seeds` seeds (the module docstring)."""
    from searchvlm.objectives.noninferiority import sequential_level, sequential_verdicts
    from searchvlm.records.decide import Records

    check_max_seeds(base.seeds, max_seeds, margin)
    assert margin is not None
    seeds, looks = _seed_plan(base.seeds, max_seeds)
    order = [name for _, name in wanted if name != "dense"]
    out.mkdir(parents=True, exist_ok=True)
    records = Records(out, RACE_FILE)
    records.settle({"delta": margin.delta, "alpha": margin.alpha, "looks": looks, "seeds": seeds, "rows": order,
                    "level_per_look": sequential_level(margin.alpha, len(order), looks)})  # fmt: skip
    runs = _SeedRuns(base, seeds, records, progress)
    tests = sequential_verdicts([(name, float("nan")) for name in order], runs, margin.delta, margin.alpha, looks)
    if not order:  # dense alone: its first seeds
        runs.ensure("dense", seeds[: looks[0]])
    return {name: runs.result(name) for _, name in wanted}, tests, runs


def _sequential_verdicts(rows: list[Table3Row], tests: dict[str, CandidateTest], margin: DecisionSettings,
                         looks: list[int]) -> list[Table3Row]:  # fmt: skip
    """`rows` with each row's verdict from its sequential test, why it stopped, and (stopped at
    the cap) the paired seeds a decision would need (`noninferiority.seeds_needed`, as `decide` says it)."""
    from searchvlm.objectives.noninferiority import seeds_needed, sequential_level

    level = sequential_level(margin.alpha, len(tests), looks)
    out = []
    for row in rows:
        t = tests.get(row.preset)
        if t is None:
            out.append(row)
            continue
        ok = row.status == "ok" and t.seeds > 0
        update: dict[str, Any] = {
            "stopped": "decided" if t.state != "undecided" else "cap" if ok and t.seeds == looks[-1] else "failed"
        }
        if ok:
            update["synergy_vs_dense_lower"], update["verdict"] = t.lower, t.state.replace("_", "-")
            if update["stopped"] == "cap" and t.sd is not None:
                update["seeds_needed"] = seeds_needed(t.sd, margin.delta, level)
        out.append(row.model_copy(update=update))
    return out


@dataclass(frozen=True)
class ReproduceRequest:
    """What `run_reproduce` puts side by side: `presets` (default every literature preset),
    on `seeds` (default the space's), with `overrides` (`key.path=value`, `--set`) applied
    to the space file; with `max_seeds`, each row until decided or at that many seeds
    (`reproduce`'s module docstring)."""

    presets: Sequence[str] | None = None
    seeds: list[int] | None = None
    overrides: Sequence[str] | None = None
    max_seeds: int | None = None


def _tagged(progress: Callable[[str, int, int], None], tag: str, phase: str, step: int, steps: int) -> None:
    progress(f"{tag}: {phase}", step, steps)


def reproduce_config(
    space_file: str | Path, request: ReproduceRequest = ReproduceRequest(), runs_dir: str | Path = "runs"
) -> TrialConfig:
    """The base trial config `run_reproduce` runs every preset on: the space's (after the
    request's `overrides`), baselines cached under `<runs_dir>/cache`, its `seeds` if given;
    unknown `presets` are a ConfigError."""
    from searchvlm.schema.space import load_space

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
    base = base.model_copy(update={"seeds": seeds}) if seeds else base
    if request.max_seeds is not None:
        check_max_seeds(base.seeds, request.max_seeds, space.decision)
    return base


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
    from searchvlm.schema.space import load_space
    from searchvlm.tracking import default_uri, log_table

    space = load_space(space_file, request.overrides)  # once: the base config and the margin
    base = _base_config(space, request, runs_dir)
    presets = request.presets
    name = f"reproduce-{Path(space_file).stem}"
    table = reproduce(base, Path(out_dir) if out_dir else Path(runs_dir) / name,
                      list(presets) if presets else None, on_result, progress, space.decision,
                      request.max_seeds)  # fmt: skip
    log_table(tracking_uri or default_uri(runs_dir), runs_dir, name, [table.files["md"], table.files["csv"]],
              table.flat())  # fmt: skip
    return table

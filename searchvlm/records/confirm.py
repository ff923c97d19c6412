"""Confirmation: retrain a sweep's front and near-front on fresh seeds, paired with dense.

L4 module (trains through `searchvlm.train.trial`, logs through `searchvlm.tracking`). A sweep's
numbers carry the winner's curse: the front is where the noise happened to be kind.
`confirm(run)` takes the front and every point within 2 paired standard errors of it
(`searchvlm.objectives.pareto.confirm_candidates`; `top` caps the count), trains each on fresh seeds
with `synergy.vs_dense` (the dense joint model on the same seeds, cached, so each seed's
difference against dense is paired), and writes `runs/<sweep>/confirmed.csv`, one row per
policy, rewritten atomically after each one. Run again, it skips every policy already
confirmed on those seeds and retrains only what is missing (or failed): an interrupted
confirmation loses nothing and repeats nothing. `pareto` and `export` then read the
confirmed numbers (`searchvlm.schema.results.with_confirmed`).

Every row records the CPU model its numbers were measured on (`cpu`). A confirmation whose
earlier rows were measured on another CPU type than this machine is refused before it trains
anything (numbers from two CPU types differ more than seeds do, and confirmed.csv's rows are
read together: by the verdicts, `pareto` and `export`); a row whose cached dense or isolated
runs trained on another CPU type is kept and flagged (`ConfirmSummary.cpu_problem`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from searchvlm.objectives.pareto import confirm_candidates, pooled_seed_sd
from searchvlm.schema._host import machine, mixed_cpus
from searchvlm.schema.config import TrialConfig
from searchvlm.schema.errors import COMMAND_LINE, ConfigError
from searchvlm.schema.policy import ReductionPolicy
from searchvlm.schema.results import (
    CONFIRMED_FILE,
    OBJECTIVE_COLUMNS,
    SWEEP_FILE,
    TRIALS_FILE,
    SweepMeta,
    TrialRow,
    read_confirmed,
    read_meta,
    read_trials,
    resolve_run_dir,
    write_confirmed,
)
from searchvlm.schema.space import SearchSpace, load_space
from searchvlm.schema.trial_result import TrialResult

__all__ = ["ConfirmSummary", "confirm", "default_seeds", "paired_config", "run_confirm", "run_space", "train_paired"]

#: fresh seeds used when none are given
DEFAULT_NEW_SEEDS = 3
OnRow = Callable[[dict[str, Any]], None]


@dataclass
class ConfirmSummary:
    """What a confirmation left behind: every confirmed row (this run's and earlier ones)."""

    run_dir: Path
    seeds: list[int]
    rows: list[dict[str, Any]]
    trained: list[str] = field(default_factory=list)  # trial ids confirmed by this call
    skipped: list[str] = field(default_factory=list)  # already in confirmed.csv
    noise: str = ""  # how the near-front's standard errors were obtained
    margin: tuple[float, float] | None = None  # the space's decision (delta, alpha) the verdicts use
    verdicts: dict[str, Any] = field(default_factory=dict)  # trial id -> noninferiority.CandidateTest
    cpu_problem: str | None = None  # rows measured on different CPU types (`_host.mixed_cpus`)

    @property
    def path(self) -> Path:
        return self.run_dir / CONFIRMED_FILE


def default_seeds(space: SearchSpace, n: int = DEFAULT_NEW_SEEDS) -> list[int]:
    """`n` seeds after the largest seed the sweep trained with."""
    top = max(space.seeds)
    return list(range(top + 1, top + 1 + n))


def run_space(run_dir: Path, meta: SweepMeta) -> SearchSpace:
    """The space the sweep ran (its copy in the run folder, else the recorded path), checked
    against the hash sweep.json recorded (at its current samples and concurrency, which an
    extension changes): a file changed or damaged since is refused, naming it, as `--resume`
    refuses it, rather than confirming under another configuration."""
    copy = run_dir / Path(meta.space_path).name
    path = copy if copy.exists() else Path(meta.space_path)
    space = load_space(path)
    as_run = meta.as_run(space)
    if not as_run.hash_matches(meta.space_hash):
        raise ConfigError(path, "", f"hash {as_run.space_hash()}",
                          f"differs from the space sweep {run_dir.name!r} ran (hash {meta.space_hash}): the file "
                          "was changed or damaged since the sweep; restore it, or start a new sweep")  # fmt: skip
    return space


def _check_seeds(seeds: list[int], space: SearchSpace, done: list[TrialRow], path: Path) -> None:
    reused = sorted(set(seeds) & set(space.seeds))
    if reused:
        raise ConfigError(COMMAND_LINE, "--seeds", ",".join(map(str, seeds)),
                          f"seeds {reused} trained the sweep itself; confirmation needs fresh seeds "
                          f"(e.g. {','.join(map(str, default_seeds(space)))})")  # fmt: skip
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ConfigError(COMMAND_LINE, "--seeds", seeds, "give distinct seeds, at least one")
    for row in done:
        if row.seeds != seeds:
            theirs = ",".join(map(str, row.seeds))
            raise ConfigError(path, f"trial {row.trial_id}.seeds", row["seeds"],
                              f"confirmed on other seeds than {seeds}; rerun with --seeds {theirs} "
                              "or move the file away")  # fmt: skip


def _check_cpu(done: list[TrialRow], path: Path) -> None:
    """Refuse to add rows measured here to rows measured on another CPU type."""
    here = machine()
    for row in done:
        if row.status == "ok" and mixed_cpus({"here": here, row.trial_id: row.get("cpu")}):
            raise ConfigError(path, f"trial {row.trial_id}.cpu", row.get("cpu"),
                              f"was measured on another CPU type than this machine ({here}), and numbers from "
                              "different CPU types are not comparable: confirm on that machine, or move the "
                              "file away to confirm every row here")  # fmt: skip


def _candidates(rows: list[dict[str, Any]], top: int | None) -> tuple[list[dict[str, Any]], str]:
    """Front and near-front of the trained (non-repeat) trials, and how their noise is known."""
    trained = [r for r in rows if not r.get("duplicate_of")]
    sd = pooled_seed_sd(trained)
    if any(r.get("synergy_gain_stderr") is not None for r in trained):
        noise = "per-trial standard errors" + (f" (pooled seed SD {sd:.4f} for single-seed points)" if sd else "")
    else:
        noise = "no standard errors in the search (one seed): the near-front is the front itself"
    return confirm_candidates(trained, top, default_se=sd), noise


def _policy(row: dict[str, Any], trials: Path) -> ReductionPolicy:
    if not row.get("policy_json"):
        raise ConfigError(trials, f"trial {row['trial_id']}.policy_json", "", "no policy recorded to confirm")
    return ReductionPolicy.model_validate_json(row["policy_json"])


def _per_seed(result: TrialResult, key: str) -> str:
    return json.dumps([getattr(p, key) for p in result.per_seed]) if result.per_seed else ""


def confirmed_row(row: dict[str, Any], result: TrialResult, seeds: list[int]) -> dict[str, Any]:
    """One confirmed.csv row: the trial, the fresh seeds, per-seed gains, means ± stderr,
    the paired difference against dense ± stderr, and the shrinkage from the search."""
    out: dict[str, Any] = {c: getattr(result, c) for c in OBJECTIVE_COLUMNS}
    search = row.get("synergy_gain")
    shrink = None if search is None or result.synergy_gain is None else result.synergy_gain - search
    out.update(
        trial_id=row["trial_id"], number=int(row["number"]), preset=row.get("preset") or "",
        status=result.status, error=result.error or "", seeds=json.dumps(seeds),
        synergy_per_seed=_per_seed(result, "synergy_gain"), und_gain_per_seed=_per_seed(result, "und_gain"),
        gen_gain_per_seed=_per_seed(result, "gen_gain"), vs_dense_per_seed=_per_seed(result, "synergy_vs_dense"),
        search_synergy_gain=search, search_synergy_gain_stderr=row.get("synergy_gain_stderr"),
        shrinkage=shrink, train_seconds=result.train_seconds, policy_json=row.get("policy_json") or "",
        confirmed_at=dt.datetime.now().isoformat(timespec="seconds"), cpu=result.cpu or "",
    )  # fmt: skip
    return out


def paired_config(space: SearchSpace, policy: ReductionPolicy, name: str, seeds: list[int], cache: Path) -> TrialConfig:
    """The trial config of `policy` on `seeds` with the space's fixed sections, paired with
    dense (`synergy.vs_dense`): what `train_paired` trains and its references' cache keys."""
    config = space.trial_config(policy, name=name, cache_dir=cache)
    synergy = config.synergy.model_copy(update={"vs_dense": True})
    return config.model_copy(update={"seeds": list(seeds), "synergy": synergy})


def train_paired(space: SearchSpace, policy: ReductionPolicy, name: str, seeds: list[int], cache: Path) -> TrialResult:
    """`policy` trained on `seeds` with the space's fixed sections, paired with dense (`synergy.vs_dense`)."""
    from searchvlm.train.trial import run_trial

    return run_trial(paired_config(space, policy, name, seeds, cache))


def _log(meta: SweepMeta, tracking_uri: str | None, row: dict[str, Any] | None, path: Path | None) -> None:
    """A confirmed row's numbers (step = trial number) and the file, on the sweep's parent run."""
    uri = tracking_uri or meta.tracking_uri
    if not (uri and meta.parent_run_id):
        return
    from searchvlm.tracking import log_artifacts, log_confirmed

    if row is not None:
        log_confirmed(uri, meta.parent_run_id, row)
    if path is not None:
        log_artifacts(uri, meta.parent_run_id, [path], "confirm")


def run_confirm(
    run: str | Path,
    seeds: list[int] | None = None,
    top: int | None = None,
    runs_dir: str | Path = "runs",
    tracking_uri: str | None = None,
    on_row: OnRow | None = None,
) -> ConfirmSummary:
    """Retrain the front and near-front of sweep `run` on fresh `seeds` (default: the 3
    after the sweep's), paired with dense; write and return the confirmed rows (see the
    module docstring). `top` caps how many policies are confirmed; `on_row` is called with
    each row as it is written."""
    if top is not None and top < 1:
        raise ConfigError(COMMAND_LINE, "--top", top, "must be at least 1")
    run_dir = resolve_run_dir(run, runs_dir)
    meta = read_meta(run_dir / SWEEP_FILE)
    space = run_space(run_dir, meta)
    seeds = list(seeds) if seeds else default_seeds(space)
    path = run_dir / CONFIRMED_FILE
    existing = {r["trial_id"]: r for r in read_confirmed(path, strict=True)}  # rewritten below
    _check_seeds(seeds, space, list(existing.values()), path)
    _check_cpu(list(existing.values()), path)
    trials = run_dir / TRIALS_FILE
    candidates, noise = _candidates(read_trials(trials, strict=True), top)  # a lost row may be the front
    summary = ConfirmSummary(run_dir, seeds, list(existing.values()), noise=noise)
    cache = meta.cache_path(run_dir)
    for row in candidates:
        tid = str(row["trial_id"])
        if existing.get(tid, {}).get("status") == "ok":
            summary.skipped.append(tid)
            continue
        result = train_paired(space, _policy(row, trials), f"confirm-{tid}", seeds, cache)
        existing[tid] = confirmed_row(row, result, seeds)
        write_confirmed(path, list(existing.values()))  # each row as it finishes
        summary.trained.append(tid)
        _log(meta, tracking_uri, existing[tid], None)
        if on_row:
            on_row(existing[tid])
    summary.rows = sorted(existing.values(), key=lambda r: int(r["number"]))
    summary.cpu_problem = mixed_cpus({str(r["trial_id"]): r.get("cpu") for r in summary.rows})
    _verdicts(summary, space)
    if summary.trained:
        _log(meta, tracking_uri, None, path)
    return summary


def _verdicts(summary: ConfirmSummary, space: SearchSpace) -> None:
    """Each confirmed row's verdict against dense at the space's `decision:` margin, as
    `reproduce` labels Table 3 (`noninferiority.row_verdicts`)."""
    if space.decision is None:
        return
    from searchvlm.objectives.noninferiority import row_verdicts

    rows = [TrialRow.of(r) for r in summary.rows if r.get("status") == "ok"]
    diffs = {r.trial_id: [v for v in r.per_seed_values("vs_dense_per_seed") if v is not None] for r in rows}
    flops = {r.trial_id: float(r.get("flops_ratio") or "nan") for r in rows}
    summary.margin = (space.decision.delta, space.decision.alpha)
    summary.verdicts = row_verdicts(diffs, flops, *summary.margin)


#: the earlier name; the façade exports only `run_confirm` (`searchvlm.records.confirm` is this module)
confirm = run_confirm

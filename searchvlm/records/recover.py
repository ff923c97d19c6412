"""Checking a sweep's trials table against its Optuna study and MLflow runs, and rebuilding
the rows it lost from them (`searchvlm runs --check NAME [--repair]`).

L4 module: the study is read with optuna (read-only), MLflow through `searchvlm.tracking`.
trials.csv is the complete record while it is whole; when it was cut or edited, the study
(trial ids, numbers, states, the two objectives, sampled parameters) and MLflow (status,
error, every final metric, the policy) still hold the lost trials. A rebuilt row holds
what they hold; the repaired table is written atomically, the damaged one kept beside it.
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from searchvlm.schema.errors import DamagedFile
from searchvlm.schema.policy import ReductionPolicy
from searchvlm.schema.results import (
    METRIC_COLUMNS,
    STUDY_FILE,
    SWEEP_FILE,
    TRIALS_FILE,
    TrialRun,
    read_meta,
    read_trials,
    resolve_run_dir,
    store_problem,
    sweep_tracking_uri,
    trial_row,
    write_trials,
)
from searchvlm.schema.trial_result import TrialResult

__all__ = ["RecordCheck", "check_run", "repair_run"]

_STATE = {"COMPLETE": "ok", "FAIL": "failed", "PRUNED": "pruned"}


@dataclass
class RecordCheck:
    """What `check_run` found: the trial ids of each record and what is wrong with them."""

    run_dir: Path
    table: dict[str, str]  # trial id -> status, trials.csv's intact rows
    study: dict[str, dict[str, Any]] | None  # trial id -> record; None when unreadable
    mlflow: dict[str, dict[str, Any]] | None
    problems: list[str] = field(default_factory=list)  # damaged files, unreadable stores
    repaired: list[str] = field(default_factory=list)  # trial ids `repair_run` rebuilt

    @property
    def missing(self) -> list[str]:
        """Trials the study or MLflow holds and the table lacks."""
        held = set(self.study or {}) | set(self.mlflow or {})
        return sorted(held - set(self.table) - set(self.repaired))

    @property
    def mismatched(self) -> list[str]:
        """Trials whose status differs between the table and the study or MLflow."""
        out = []
        for tid, status in self.table.items():
            other = [r.get("status") for r in ((self.study or {}).get(tid), (self.mlflow or {}).get(tid)) if r]
            if any(s and s != status for s in other):
                out.append(tid)
        return out

    @property
    def ok(self) -> bool:
        return not (self.problems or self.missing or self.mismatched)

    def lines(self) -> list[str]:
        """One line per finding, the counts first."""
        count = lambda d: "unreadable" if d is None else f"{len(d)} trials"  # noqa: E731
        head = f"{self.run_dir / TRIALS_FILE}: {len(self.table)} trials; {STUDY_FILE}: {count(self.study)}; "
        out = [head + f"MLflow: {count(self.mlflow)}"]
        out += self.problems
        if self.missing:
            out.append(f"missing from {TRIALS_FILE}: {', '.join(self.missing)} (--repair rebuilds them)")
        if self.mismatched:
            out.append(f"status differs from the study or MLflow: {', '.join(self.mismatched)}")
        if self.repaired:
            out.append(f"rebuilt {len(self.repaired)} rows: {', '.join(self.repaired)}")
        return out


def check_run(run: str | Path, runs_dir: str | Path = "runs") -> RecordCheck:
    """Compare sweep `run`'s trials.csv with its Optuna study and its MLflow runs."""
    check, _ = _check(resolve_run_dir(run, runs_dir))
    return check


def repair_run(run: str | Path, runs_dir: str | Path = "runs") -> RecordCheck:
    """`check_run`, then rebuild every missing row from the study and MLflow and write the
    table atomically (the damaged file kept as `trials.csv.damaged`). Nothing is written
    when nothing is missing or damaged."""
    run_dir = resolve_run_dir(run, runs_dir)
    check, rows = _check(run_dir)
    table = run_dir / TRIALS_FILE
    damaged = any(p.startswith(str(table)) for p in check.problems)
    policies = _policies(run_dir, check.missing) if check.mlflow else {}
    held = lambda tid: {**(check.mlflow or {}).get(tid, {}), "policy_json": policies.get(tid, "")}  # noqa: E731
    records = [((check.study or {}).get(tid, {}), held(tid), tid) for tid in check.missing]
    rebuilt = [_row(tid, st, ml, _seeds(run_dir)) for st, ml, tid in records if _number(st, ml) is not None]
    if not rebuilt and not damaged:
        return check
    if table.exists():
        shutil.copy2(table, table.with_name(TRIALS_FILE + ".damaged"))
    write_trials(table, rows + rebuilt)
    check.repaired = [r["trial_id"] for r in rebuilt]
    check.problems = [p for p in check.problems if not p.startswith(str(table))]
    return check


def _check(run_dir: Path) -> tuple[RecordCheck, list[dict[str, Any]]]:
    problems: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DamagedFile)
        rows = _table(run_dir, problems)
    problems += [str(w.message) for w in caught if issubclass(w.category, DamagedFile)]
    study = _study(run_dir, problems)
    mlflow = _mlflow(run_dir, problems)
    return RecordCheck(run_dir, {r["trial_id"]: r["status"] for r in rows}, study, mlflow, problems), rows


def _table(run_dir: Path, problems: list[str]) -> list[dict[str, Any]]:
    from searchvlm.schema.errors import ConfigError

    try:
        return read_trials(run_dir / TRIALS_FILE)
    except ConfigError as err:
        problems.append(str(err))
        return []


def _study(run_dir: Path, problems: list[str]) -> dict[str, dict[str, Any]] | None:
    db = run_dir / STUDY_FILE
    problem = store_problem(db, "studies")
    if problem is not None:
        problems.append(f"{db}: {problem}")
        return None
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{db}"
    try:
        name = read_meta(run_dir / SWEEP_FILE).name if (run_dir / SWEEP_FILE).exists() else run_dir.name
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        names = list(study.metric_names or ["flops_ratio", "synergy_gain"])
    except (KeyError, SQLAlchemyError, ValueError) as err:
        problems.append(f"{db}: not a readable study of this sweep ({str(err).splitlines()[0]})")
        return None
    return {t.user_attrs["searchvlm_trial_id"]: _study_record(t, names) for t in trials
            if t.user_attrs.get("searchvlm_trial_id") and t.state.name in _STATE}  # fmt: skip


def _study_record(trial: Any, names: list[str]) -> dict[str, Any]:
    values = dict(zip(names, trial.values)) if trial.values else {}
    iso = lambda t: t.isoformat(timespec="seconds") if t else ""  # noqa: E731
    return {"number": trial.number, "status": _STATE[trial.state.name], "preset": trial.user_attrs.get("preset"),
            "error": trial.user_attrs.get("error"), "duplicate_of": trial.user_attrs.get("duplicate_of"),
            "params": dict(trial.params), **values, "start_time": iso(trial.datetime_start),
            "end_time": iso(trial.datetime_complete)}  # fmt: skip


def _mlflow(run_dir: Path, problems: list[str]) -> dict[str, dict[str, Any]] | None:
    from searchvlm.schema.errors import ConfigError

    try:
        meta = read_meta(run_dir / SWEEP_FILE)
    except ConfigError as err:
        problems.append(str(err))
        return None
    uri = sweep_tracking_uri(meta, run_dir)
    if not (uri and meta.parent_run_id):
        problems.append(f"{run_dir / SWEEP_FILE}: records no MLflow parent run")
        return None
    if uri.startswith("sqlite:///"):
        problem = store_problem(uri.removeprefix("sqlite:///"), "runs")
        if problem is not None:
            problems.append(f"{uri.removeprefix('sqlite:///')}: {problem}")
            return None
    from searchvlm.tracking import trial_records

    try:
        return {r["trial_id"]: r for r in trial_records(uri, meta.parent_run_id) if r["status"] in _STATE.values()}
    except Exception as err:  # noqa: BLE001 - any store failure is a finding, not a crash
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        problems.append(f"{uri}: MLflow runs unreadable ({reason})")
        return None


def _policies(run_dir: Path, ids: list[str]) -> dict[str, str]:
    """The logged policy of each of the trials `ids` (MLflow's policy.json)."""
    from searchvlm.tracking import trial_records

    meta = read_meta(run_dir / SWEEP_FILE)
    records = trial_records(sweep_tracking_uri(meta, run_dir) or "", meta.parent_run_id or "", set(ids))
    return {r["trial_id"]: r.get("policy_json", "") for r in records if r["trial_id"] in ids}


def _seeds(run_dir: Path) -> list[int]:
    """The seeds every trial of the sweep trained on (its space copy), [] when unknown."""
    from searchvlm.schema.errors import ConfigError
    from searchvlm.schema.space import load_space

    try:
        meta = read_meta(run_dir / SWEEP_FILE)
        return list(load_space(run_dir / Path(meta.space_path).name).seeds)
    except ConfigError:
        return []


def _number(study: dict[str, Any], mlflow: dict[str, Any]) -> int | None:
    """The trial's Optuna number (the study's, else MLflow's tag); None when neither holds it."""
    if study.get("number") is not None:
        return int(study["number"])
    tag = str(mlflow.get("number") or "")
    return int(tag) if tag.isdigit() else None


def _row(tid: str, study: dict[str, Any], mlflow: dict[str, Any], seeds: list[int]) -> dict[str, Any]:
    """A trials.csv row from what the study and MLflow hold (MLflow's numbers first)."""
    metrics = {k: mlflow.get(k, study.get(k)) for k in METRIC_COLUMNS}
    metrics["steps_done"] = int(metrics["steps_done"] or 0)
    metrics["train_seconds"] = float(metrics["train_seconds"] or 0.0)
    policy = mlflow.get("policy_json") or ""
    result = TrialResult(status=mlflow.get("status") or study.get("status") or "failed",
                         error=mlflow.get("error") or study.get("error"), seeds=seeds,
                         policy=ReductionPolicy.model_validate_json(policy) if policy else None,
                         **{k: v for k, v in metrics.items() if v is not None})  # fmt: skip
    preset = study.get("preset") or mlflow.get("preset")
    run = TrialRun(start_time=mlflow.get("start_time") or study.get("start_time", ""),
                   end_time=mlflow.get("end_time") or study.get("end_time", ""),
                   duplicate_of=mlflow.get("duplicate_of") or study.get("duplicate_of"))  # fmt: skip
    return trial_row(result, tid, _number(study, mlflow) or 0, preset, study.get("params"), run)

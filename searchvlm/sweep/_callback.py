"""The driver-side record of a sweep: trials table, MLflow runs and the live view.

A Ray Tune `Callback` runs in the driver process, so it is the single writer of
`trials.csv` (rewritten atomically after every finished trial) and of MLflow (parent run
per sweep, child run per trial, looked up by `trial_id` on resume). Runtime state is
created in `setup()` and dropped when pickled (Tune pickles callbacks into `tuner.pkl`
and restores them on `Tuner.restore`).

The Python warnings a trial raised in its worker, on whichever node (`_trainable` sends them
with its reports), reach the driver here once: each text printed once per sweep (`warning:
t0003 (id) on node IP: ...`), every (trial, text) pair one line in sweep.log, and a trial's
warnings as its MLflow child run's `warnings` tag.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial

from searchvlm.schema.results import (
    PLACEMENT_COLUMNS,
    SWEEP_FILE,
    TRIALS_FILE,
    TrialRun,
    read_meta,
    read_trials,
    trial_row,
    write_meta,
    write_trials,
)
from searchvlm.schema.space import SearchSpace
from searchvlm.schema.trial_result import ROUND_METRICS, TrialResult
from searchvlm.tracking import Tracker

from ._keys import DUPLICATE_OF, NUMBER_KEY, PRESET_ATTR, REUSE_ATTR, WARNINGS_KEY
from ._logs import LOG_FILE
from ._progress import LiveView
from ._trainable import REPLAYED, config_policy, row_result, trial_name

log = logging.getLogger(__name__)
_INTERMEDIATE = ROUND_METRICS  # what `run_trial` reports after every evaluation round


class SweepCallback(Callback):
    """Writes trials.csv and MLflow from the driver; drives the live progress view."""

    def __init__(self, run_dir: Path, space: SearchSpace, tracking_uri: str, runs_dir: Path,
                 progress: bool) -> None:  # fmt: skip
        self.run_dir, self.space, self.uri = Path(run_dir), space, tracking_uri
        self.runs_dir, self.progress = Path(runs_dir), progress
        self._reset()

    def _reset(self) -> None:
        self.tracker: Tracker | None = None
        self.rows: dict[str, dict[str, Any]] = {}
        self.started: dict[str, str] = {}
        self.view: LiveView | None = None
        self.warned: dict[str, list[str]] = {}  # trial id -> the warnings it sent (in order)
        self.printed: set[str] = set()  # warning texts already on stderr

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(tracker=None, rows={}, started={}, view=None, warned={}, printed=set())
        return state

    # ---- lifecycle

    def setup(self, **info: Any) -> None:
        table = self.run_dir / TRIALS_FILE
        self.rows = {r["trial_id"]: r for r in read_trials(table, strict=True)} if table.exists() else {}  # rewritten
        meta = read_meta(self.run_dir / SWEEP_FILE)
        self.tracker = Tracker(self.uri, self.runs_dir)
        params = {"space_hash": meta.space_hash, "samples": self.space.search.samples,
                  "sampler": self.space.search.sampler, "scheduler": self.space.search.scheduler.kind}  # fmt: skip
        space_copy = self.run_dir / Path(meta.space_path).name
        parent = self.tracker.start_sweep(meta.name, space_copy, params, meta.parent_run_id)
        if parent != meta.parent_run_id:
            write_meta(self.run_dir / SWEEP_FILE, meta.model_copy(update={"parent_run_id": parent}))
        if self.progress:
            self.view = LiveView(meta.name, self.space.search.samples)
            self.view.start(list(self.rows.values()))

    def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        if self.view is not None:
            self.view.update(list(self.rows.values()), _running(trials), force=False)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        for t in trials:  # reconcile: a finished trial must never be missing from the table
            final = (t.last_result or {}).get("final")
            if t.status == Trial.TERMINATED and final and t.trial_id not in self.rows:
                self._record(t, trials=trials)  # (trials cut off by an interruption have no final result)
        if self.view is not None:
            self.view.stop(list(self.rows.values()))
        if self.tracker is not None:
            self._log_summary()
            done = all(t.status in (Trial.TERMINATED, Trial.ERROR) for t in trials)
            self.tracker.end_sweep("FINISHED" if done else "KILLED")

    def _log_summary(self) -> None:
        """Hypervolume, front size, knee and counts on the parent run (a failure only warns:
        the table is written and the sweep's result stands)."""
        from searchvlm.report import pareto_summary, summary_metrics

        try:
            summary = pareto_summary(self.run_dir)
        except Exception:  # noqa: BLE001 - a summary must never fail the sweep
            log.warning("sweep summary for MLflow failed", exc_info=True)
            return
        self.tracker.log_summary(summary_metrics(summary), summary["trials"])

    # ---- trials

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._child(trial)
        if self.view is not None:
            running = len(set(_running(trials)) | {trial.trial_id})
            self.view.trial_started(list(self.rows.values()), _label(trial), running)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict,
                        **info: Any) -> None:  # fmt: skip
        self._warnings(trial, result)
        if result.get("final") or "step" not in result:
            return
        metrics = {k: result[k] for k in _INTERMEDIATE if k in result}
        self.tracker.log_round(self._child(trial), int(result["step"]), metrics)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._record(trial, trials=trials)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._record(trial, error=_error_text(trial), trials=trials)

    def _warnings(self, trial: Trial, result: dict) -> None:
        """The warnings this report carries, new for the trial: on stderr (a text once per
        sweep: the same warning from every trial is one line) and in sweep.log (every one)."""
        lines = [w for w in result.get(WARNINGS_KEY) or () if w not in self.warned.get(trial.trial_id, ())]
        if not lines:
            return
        self.warned.setdefault(trial.trial_id, []).extend(lines)
        node = result.get(PLACEMENT_COLUMNS[0])
        where = f"{_label(trial)}" + (f" on node {node}" if node else "")
        stamp = dt.datetime.now().isoformat(sep=" ", timespec="milliseconds").replace(".", ",")
        with (self.run_dir / LOG_FILE).open("a", encoding="utf-8") as f:
            f.writelines(f"{stamp} WARNING searchvlm.train.trial: {where}: {w}\n" for w in lines)
        for w in lines:
            if w not in self.printed:
                self.printed.add(w)
                print(f"warning: {where}: {w}", file=sys.stderr, flush=True)

    def _child(self, trial: Trial) -> str:
        if trial.trial_id not in self.started:
            params, tags = self._params(trial)
            run_id = self.tracker.child(trial.trial_id, _label(trial), params, tags)
            self.started[trial.trial_id] = run_id
        return self.started[trial.trial_id]

    def _params(self, trial: Trial) -> tuple[dict[str, Any], dict[str, str]]:
        cfg = trial.config
        tags = {"optuna_number": str(cfg.get(NUMBER_KEY, "")), "preset": str(cfg.get(PRESET_ATTR) or "")}
        if cfg.get(DUPLICATE_OF):
            tags[DUPLICATE_OF] = str(cfg[DUPLICATE_OF])
        try:
            params: dict[str, Any] = config_policy(self.space, cfg).flat_params()
        except ValueError:
            params = {}
        params.update({f"param.{k}": v for k, v in _sampled(cfg).items()})
        return params, tags

    def _record(self, trial: Trial, error: str | None = None, trials: list[Trial] | None = None) -> None:
        if (trial.last_result or {}).get(REPLAYED) and trial.trial_id in self.rows:
            self._reclose(trial)  # recorded before a hard kill: the row stands
            return
        result = _trial_result(trial, self.space, error)
        run_id = self._child(trial)
        cfg = trial.config
        where = {c: str(v) for c in PLACEMENT_COLUMNS if (v := (trial.last_result or {}).get(c))}
        row = trial_row(
            result, trial.trial_id, int(cfg.get(NUMBER_KEY, len(self.rows))), cfg.get(PRESET_ATTR),
            {k: v for k, v in _sampled(cfg).items() if k != PRESET_ATTR},
            TrialRun(start_time=_iso(getattr(trial, "start_time", None)), end_time=_iso(None),
                     duplicate_of=cfg.get(DUPLICATE_OF), placement=where),
        )  # fmt: skip
        self.rows[trial.trial_id] = row
        write_trials(self.run_dir / TRIALS_FILE, list(self.rows.values()))
        tags = dict(where)
        if self.warned.get(trial.trial_id):  # what the trial warned, as its child run's tag
            tags["warnings"] = "\n".join(self.warned[trial.trial_id])[:4000]
        self.tracker.finish_trial(run_id, result, result.policy.model_dump_json(indent=2) if result.policy else None,
                                  tags=tags)  # fmt: skip
        if self.view is not None:
            running = len([t for t in _running(trials) if t != trial.trial_id]) if trials else 0
            self.view.trial_finished(list(self.rows.values()), _label(trial), row, running)

    def _reclose(self, trial: Trial) -> None:
        """Finish the MLflow child from the table row if the kill came before that write."""
        run_id, row = self._child(trial), self.rows[trial.trial_id]
        if self.tracker.is_open(run_id):
            where = {c: row[c] for c in PLACEMENT_COLUMNS if row.get(c)}
            self.tracker.finish_trial(run_id, row_result(row), row.get("policy_json") or None, tags=where)


def _sampled(config: dict[str, Any]) -> dict[str, Any]:
    """A trial config without the sweep's bookkeeping keys (number, reuse)."""
    return {k: v for k, v in config.items() if k not in (NUMBER_KEY, DUPLICATE_OF, REUSE_ATTR)}


def _trial_result(trial: Trial, space: SearchSpace, error: str | None) -> TrialResult:
    """Final result, or a `pruned` result from the last intermediate round, or `failed`."""
    last = trial.last_result or {}
    if error is None and last.get("final") and last.get("result_json"):
        result = TrialResult.model_validate_json(last["result_json"])
        if result.policy is None:
            result = result.model_copy(update={"policy": _policy(space, trial.config)})
        return result
    fields = {k: last.get(k) for k in _INTERMEDIATE if isinstance(last.get(k), (int, float))}
    status = "failed" if error is not None else "pruned"
    return TrialResult(status=status, error=error, steps_done=int(last.get("step", 0) or 0),
                       policy=_policy(space, trial.config), **fields)  # fmt: skip


def _policy(space: SearchSpace, config: dict[str, Any]) -> Any:
    try:
        return config_policy(space, config)
    except ValueError:
        return None


def _error_text(trial: Trial) -> str:
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text() if path else ""
    except OSError:
        text = ""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "ray trial error")[:2000]


def _label(trial: Trial) -> str:
    """`t0002 (a1b2c3d4_00002)`, `t0001-himix (a1b2c3d4_00001)`: the MLflow child run's
    name (Optuna number, preset, and the trial id of trials.csv, the `trial_id` tag and the
    Optuna user attr `searchvlm_trial_id`), also the live view's label."""
    return f"{trial_name(trial.config)} ({trial.trial_id})"


def _running(trials: list[Trial]) -> list[str]:
    return [t.trial_id for t in trials if t.status == Trial.RUNNING]


def _iso(ts: Any) -> str:
    when = dt.datetime.fromtimestamp(ts) if isinstance(ts, (int, float)) else dt.datetime.now()
    return when.isoformat(timespec="seconds")

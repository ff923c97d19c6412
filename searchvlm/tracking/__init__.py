"""MLflow tracking of sweeps: one parent run per sweep, one child run per trial.

L4 module, the only one importing mlflow. The sweep driver is the only writer (a Ray
callback calls these methods in the driver process; trials never touch MLflow), which
keeps a SQLite backend free of lock contention. Every call goes through a bounded
exponential back-off for transient errors (a restarting server, a locked database);
writes that still fail are buffered in order and delivered on the next write or at
`end_sweep`, so an outage longer than the back-off loses nothing.
Children are found again by their `trial_id` tag, so a resumed sweep never duplicates one.

Metric keys: a child logs each evaluation round's validation values under their plain
names (`synergy_gain`, step = training step) and the trial's final (test) values under
`test_<name>` (`test_synergy_gain`), so a chart never mixes the two. The parent run gets
summary metrics (`hypervolume`, `front_size`, `knee_flops_ratio`, ...) when a sweep ends
and when `pareto` reads it (`log_summary`).

The experiment is tagged `mlflow.experimentKind = custom_model_development` (MLflow 3's
UI otherwise files an experiment without traces under GenAI). Artifact locations: MLflow
stores absolute ones only (`create_experiment` resolves a relative location against the
working directory, and each run copies its experiment's location into its own
`artifact_uri`), so a relative location is impossible. Instead the default store keeps
artifacts beside itself (`<runs-dir>/mlartifacts`), and when a `Tracker` opens a sqlite
store whose runs folder has moved it rewrites the recorded locations to the folder the
store is in now (`relocate_artifacts`): moving `runs/` keeps every artifact link once
any searchvlm command has opened it.
"""

from __future__ import annotations

from searchvlm.tracking._logs import (
    CONFIRM_METRICS,
    delete_sweep_runs,
    log_analysis,
    log_artifacts,
    log_confirmed,
    log_decision,
    log_report,
    log_summary,
    log_table,
    trial_records,
)
from searchvlm.tracking._store import (
    ARTIFACTS_DIR,
    EXPERIMENT,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    RESULT_METRICS,
    TEST_PREFIX,
    default_uri,
    final_key,
    relocate_artifacts,
    retry,
    summary_batch,
)
from searchvlm.tracking._tracker import Tracker

__all__ = [
    "ARTIFACTS_DIR",
    "CONFIRM_METRICS",
    "EXPERIMENT",
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "RESULT_METRICS",
    "TEST_PREFIX",
    "Tracker",
    "default_uri",
    "delete_sweep_runs",
    "final_key",
    "log_analysis",
    "log_artifacts",
    "log_confirmed",
    "log_decision",
    "log_report",
    "log_summary",
    "log_table",
    "relocate_artifacts",
    "retry",
    "summary_batch",
    "trial_records",
]

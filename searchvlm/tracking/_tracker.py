"""The sweep's writer (L4, inside `searchvlm.tracking`): `Tracker` opens the experiment,
the sweep's parent run and one child run per trial, and buffers writes through an outage.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from searchvlm.schema.trial_result import TrialResult
from searchvlm.tracking._store import (
    ARTIFACTS_DIR,
    EXPERIMENT,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    PENDING,
    RESULT_METRICS,
    RUN_STATUS,
    as_params,
    final_key,
    is_number,
    log,
    permanent,
    provenance,
    relocate_artifacts,
    retry,
    store_lock,
    summary_batch,
)


class Tracker:
    """Writes one sweep's runs. Create it in the driver only."""

    def __init__(self, uri: str, runs_dir: str | Path, experiment: str = EXPERIMENT) -> None:
        self.uri = uri
        if uri.startswith("http"):  # bound MLflow's own HTTP retries (default: minutes per call)
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        self._backlog: list[tuple[Callable[..., Any], tuple]] = []
        with store_lock(uri):  # two sweeps starting on one fresh sqlite store race in alembic
            self.client = MlflowClient(tracking_uri=uri)
            self.experiment_id = retry(self._experiment, experiment, Path(runs_dir).resolve())
        self.parent_id: str | None = None
        self._children: dict[str, str] = {}

    def _experiment(self, name: str, runs_dir: Path) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.tags.get(EXPERIMENT_KIND_TAG) is None:  # made by an older searchvlm
                self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            relocate_artifacts(self.uri, runs_dir, exp.experiment_id, exp.artifact_location)
            return exp.experiment_id
        location = (runs_dir / ARTIFACTS_DIR).as_uri() if self.uri.startswith("sqlite") else None
        try:
            return self.client.create_experiment(name, artifact_location=location,
                                                 tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})  # fmt: skip
        except MlflowException as err:  # another sweep created it since the lookup
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return self.client.get_experiment_by_name(name).experiment_id

    # ---- parent

    def start_sweep(self, name: str, space_file: Path, params: dict[str, Any],
                    parent_run_id: str | None = None) -> str:  # fmt: skip
        """Open (or, on resume, re-open) the sweep's parent run; returns its id."""
        if parent_run_id:
            retry(self.client.update_run, parent_run_id, status="RUNNING")
            self.parent_id = parent_run_id
            return parent_run_id
        tags = {MLFLOW_RUN_NAME: name, "sweep": name, "kind": "sweep", **provenance()}
        run = retry(self.client.create_run, self.experiment_id, tags=tags, run_name=name)
        self.parent_id = run.info.run_id
        retry(self.client.log_batch, self.parent_id, params=as_params(params))
        retry(self.client.log_artifact, self.parent_id, str(space_file))
        return self.parent_id

    def log_summary(self, metrics: dict[str, float], step: int) -> None:
        """Summary metrics of the sweep on its parent run (see `summary_batch`)."""
        if self.parent_id:
            self._write(self.client.log_batch, self.parent_id, summary_batch(metrics, step))

    def end_sweep(self, status: str = "FINISHED") -> None:
        """Close the parent run after delivering every buffered write (about 2 min of patience)."""
        if self.parent_id:
            self._backlog.append((self.client.set_terminated, (self.parent_id, status)))
        if not self.flush(tries=9):
            log.error("mlflow %s unreachable: %d buffered writes not delivered", self.uri, len(self._backlog))

    # ---- buffered writes

    def _write(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Run a write after any buffered ones; if MLflow stays unreachable past the back-off,
        keep it (in order) for the next write or `end_sweep`. True when delivered."""
        self._backlog.append((fn, args))
        return self.flush(tries=6 if len(self._backlog) == 1 else 1)  # in an outage: one probe

    def flush(self, tries: int = 6) -> bool:
        """Deliver buffered writes in order; stops at the first one that still fails."""
        while self._backlog:
            fn, args = self._backlog[0]
            try:
                retry(fn, *args, tries=tries)
            except Exception as err:  # noqa: BLE001 - permanent errors propagate, as before
                if permanent(err):
                    self._backlog.pop(0)
                    raise
                log.warning("mlflow unreachable (%s): %d writes buffered", err, len(self._backlog))
                return False
            self._backlog.pop(0)
        return True

    def _on_run(self, run_id: str, method: str, *args: Any, **kw: Any) -> Any:
        """Call `client.<method>(run_id, ...)`, resolving a child created while buffered."""
        real = self._children.get(run_id[len(PENDING) :], run_id) if run_id.startswith(PENDING) else run_id
        return getattr(self.client, method)(real, *args, **kw)

    # ---- children

    def child(self, trial_id: str, name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        """The child run of a trial: found by its `trial_id` tag, else created."""
        if trial_id in self._children:
            return self._children[trial_id]
        if self._write(self._open_child, trial_id, name, params, tags):
            return self._children[trial_id]
        return f"{PENDING}{trial_id}"  # created when MLflow is back; later writes resolve it

    def _open_child(self, trial_id: str, name: str, params: dict[str, Any], tags: dict[str, str]) -> None:
        """Find, adopt or create the child (idempotent: safe to repeat after a failure)."""
        run_id = self._find_child(trial_id) or self._adopt(trial_id, tags.get("optuna_number", ""))
        if run_id is None:
            all_tags = {MLFLOW_PARENT_RUN_ID: self.parent_id or "", MLFLOW_RUN_NAME: name,
                        "trial_id": trial_id, "status": "running", **tags}  # fmt: skip
            run_id = self.client.create_run(self.experiment_id, tags=all_tags, run_name=name).info.run_id
            self.client.log_batch(run_id, params=as_params(params))
        self._children[trial_id] = run_id

    def _find_child(self, trial_id: str) -> str | None:
        runs = self.client.search_runs(  # inside `_open_child`, which the caller retries
            [self.experiment_id],
            filter_string=f"tags.trial_id = '{trial_id}' and tags.`{MLFLOW_PARENT_RUN_ID}` = '{self.parent_id}'",
            max_results=2,
        )
        return runs[0].info.run_id if runs else None

    def _adopt(self, trial_id: str, number: str) -> str | None:
        """A child a killed driver left `running` for the same Optuna trial (resumed under
        a new Tune trial id): re-tagged and reused, never duplicated."""
        if not number:
            return None
        flt = (f"tags.optuna_number = '{number}' and tags.status = 'running' and "
               f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{self.parent_id}'")  # fmt: skip
        runs = self.client.search_runs([self.experiment_id], filter_string=flt, max_results=2)
        if not runs:
            return None
        self.client.set_tag(runs[0].info.run_id, "trial_id", trial_id)
        return runs[0].info.run_id

    def is_open(self, run_id: str) -> bool:
        """Has the child not been finished yet (its terminal state is the last write)?"""
        return retry(self._on_run, run_id, "get_run").info.status == "RUNNING"

    def log_round(self, run_id: str, step: int, metrics: dict[str, Any]) -> None:
        """Intermediate metrics of one evaluation round."""
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if is_number(v)]
        if batch:
            self._write(self._on_run, run_id, "log_batch", batch)

    def finish_trial(self, run_id: str, result: TrialResult, policy_json: str | None,
                     tags: dict[str, str] | None = None) -> None:  # fmt: skip
        """Final objectives (`test_<name>`), the explicit policy artifact, status tag, terminal
        state; `tags`: more tags (where the trial ran: node, gpu_ids, device); tag `cpu`: the CPU
        model(s) its numbers were measured on (`TrialResult.cpu`)."""
        now = int(time.time() * 1000)
        step = result.steps_done
        metrics = [Metric(final_key(k), float(getattr(result, k)), now, step)
                   for k in RESULT_METRICS if is_number(getattr(result, k))]  # fmt: skip
        run_tags = [RunTag("status", result.status), *(RunTag(k, str(v)) for k, v in (tags or {}).items())]
        if result.error:
            run_tags.append(RunTag("error", result.error[:4000]))
        if result.cpu:
            run_tags.append(RunTag("cpu", result.cpu))
        self._write(self._on_run, run_id, "log_batch", metrics, (), run_tags)
        if policy_json:
            self._write(self._on_run, run_id, "log_text", policy_json, "policy.json")
        self._write(self._on_run, run_id, "set_terminated", RUN_STATUS.get(result.status, "FINISHED"))

    def children(self) -> list[Any]:
        """Every child run of this sweep's parent (for tests and reports)."""
        flt = f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{self.parent_id}'"
        return retry(self.client.search_runs, [self.experiment_id], filter_string=flt, max_results=5000)

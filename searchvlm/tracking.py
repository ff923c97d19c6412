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

import contextlib
import fcntl
import importlib.metadata
import logging
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, TypeVar

from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from searchvlm.config import TrialResult
from searchvlm.results import METRIC_COLUMNS

log = logging.getLogger(__name__)
T = TypeVar("T")

EXPERIMENT = "searchvlm"
#: MLflow 3's experiment kind tag; `custom_model_development` = a classic ML experiment
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
ARTIFACTS_DIR = "mlartifacts"  # the default store's artifact root, beside mlflow.db
TEST_PREFIX = "test_"  # final (test) values of a trial: `test_synergy_gain`
PENDING = "pending:"  # run id placeholder of a child whose creation is buffered
RESULT_METRICS = METRIC_COLUMNS
_PERMANENT = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
              "BAD_REQUEST", "INVALID_STATE", "PERMISSION_DENIED"}  # fmt: skip
_MLFLOW_STATUS = {"ok": "FINISHED", "failed": "FAILED", "pruned": "KILLED"}


def default_uri(runs_dir: str | Path) -> str:
    """`sqlite:///<absolute runs_dir>/mlflow.db`."""
    path = Path(runs_dir).resolve() / "mlflow.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def retry(fn: Callable[..., T], *args: Any, tries: int = 6, base: float = 0.5, **kw: Any) -> T:
    """Call `fn`, retrying transient failures with back-off 0.5, 1, 2, 4, 8 s (bounded)."""
    for attempt in range(tries):
        try:
            return fn(*args, **kw)
        except Exception as err:  # noqa: BLE001 - classified below, re-raised when permanent
            if _permanent(err) or attempt == tries - 1:
                raise
            delay = base * 2**attempt
            log.warning("mlflow %s failed (%s); retrying in %.1fs", fn.__name__, err, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """An exclusive file lock beside a sqlite store (schema creation and migration are not
    safe across processes); no-op for other stores."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock = Path(uri.removeprefix("sqlite:///") + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _permanent(err: Exception) -> bool:
    return isinstance(err, MlflowException) and err.error_code in _PERMANENT


class Tracker:
    """Writes one sweep's runs. Create it in the driver only."""

    def __init__(self, uri: str, runs_dir: str | Path, experiment: str = EXPERIMENT) -> None:
        self.uri = uri
        if uri.startswith("http"):  # bound MLflow's own HTTP retries (default: minutes per call)
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        self._backlog: list[tuple[Callable[..., Any], tuple]] = []
        with _store_lock(uri):  # two sweeps starting on one fresh sqlite store race in alembic
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
        tags = {MLFLOW_RUN_NAME: name, "sweep": name, "kind": "sweep", **_provenance()}
        run = retry(self.client.create_run, self.experiment_id, tags=tags, run_name=name)
        self.parent_id = run.info.run_id
        retry(self.client.log_batch, self.parent_id, params=_params(params))
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
                if _permanent(err):
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
            self.client.log_batch(run_id, params=_params(params))
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
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if _number(v)]
        if batch:
            self._write(self._on_run, run_id, "log_batch", batch)

    def finish_trial(self, run_id: str, result: TrialResult, policy_json: str | None,
                     tags: dict[str, str] | None = None) -> None:  # fmt: skip
        """Final objectives (`test_<name>`), the explicit policy artifact, status tag, terminal
        state; `tags`: more tags (where the trial ran: node, gpu_ids, device)."""
        now = int(time.time() * 1000)
        step = result.steps_done
        metrics = [Metric(final_key(k), float(getattr(result, k)), now, step)
                   for k in RESULT_METRICS if _number(getattr(result, k))]  # fmt: skip
        run_tags = [RunTag("status", result.status), *(RunTag(k, str(v)) for k, v in (tags or {}).items())]
        if result.error:
            run_tags.append(RunTag("error", result.error[:4000]))
        self._write(self._on_run, run_id, "log_batch", metrics, (), run_tags)
        if policy_json:
            self._write(self._on_run, run_id, "log_text", policy_json, "policy.json")
        self._write(self._on_run, run_id, "set_terminated", _MLFLOW_STATUS.get(result.status, "FINISHED"))

    def children(self) -> list[Any]:
        """Every child run of this sweep's parent (for tests and reports)."""
        flt = f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{self.parent_id}'"
        return retry(self.client.search_runs, [self.experiment_id], filter_string=flt, max_results=5000)


def final_key(name: str) -> str:
    """The MLflow key of a trial's final value: `test_<name>` for the result metrics (test
    scores and the objectives), the plain name for bookkeeping (`train_seconds`, `steps_done`)."""
    return name if name in ("train_seconds", "steps_done") else f"{TEST_PREFIX}{name}"


def summary_batch(metrics: dict[str, Any], step: int) -> list[Metric]:
    """Parent-run metrics at `step` (the number of trials recorded), finite numbers only."""
    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in metrics.items() if _number(v)]


def log_summary(uri: str, run_id: str, metrics: dict[str, Any], step: int) -> None:
    """Summary metrics on an existing run (the sweep's parent run, from `pareto`)."""
    batch = summary_batch(metrics, step)
    if batch:
        retry(MlflowClient(tracking_uri=uri).log_batch, run_id, metrics=batch)


def relocate_artifacts(uri: str, runs_dir: str | Path, experiment_id: str, location: str | None) -> bool:
    """After `runs/` moved: point the experiment and its runs at `<runs_dir>/mlartifacts`.

    Only for the default store (`<runs_dir>/mlflow.db`) whose experiment's location is some
    `.../mlartifacts` folder other than the one beside it (a location elsewhere is left alone).
    MLflow has no API to change a location, so this rewrites the two columns that hold
    it (`experiments.artifact_location`, `runs.artifact_uri`, stable since MLflow 1.x) in
    one transaction. Returns True when something was rewritten."""
    if not (uri.startswith("sqlite:///") and location and location.startswith("file://")):
        return False
    db = Path(uri.removeprefix("sqlite:///")).resolve()
    if db != Path(runs_dir).resolve() / "mlflow.db" or not db.exists():
        return False
    new = (db.parent / ARTIFACTS_DIR).as_uri()
    old = location.rstrip("/")
    if old == new or not old.endswith(f"/{ARTIFACTS_DIR}"):
        return False
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (new, int(experiment_id)))
        con.execute("UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) "
                    "WHERE experiment_id = ? AND substr(artifact_uri, 1, ?) = ?",
                    (new, len(old) + 1, int(experiment_id), len(old), old))  # fmt: skip
    log.warning("runs folder moved: MLflow artifact locations rewritten from %s to %s", old, new)
    return True


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def _params(params: dict[str, Any]) -> list[Param]:
    return [Param(str(k), str(v)[:6000]) for k, v in params.items()]


def _provenance() -> dict[str, str]:
    """Command line, git commit, package versions: tags of the parent run."""
    tags = {"command": " ".join(sys.argv)[:4000], "git_commit": _git_commit()}
    for pkg in ("searchvlm", "torch", "ray", "optuna", "mlflow", "transformers"):
        try:
            tags[f"version.{pkg}"] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            tags[f"version.{pkg}"] = "not installed"
    return tags


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def log_artifacts(uri: str, run_id: str, paths: list[Path], artifact_path: str | None = None) -> None:
    """Attach files (plots, tables) to an existing run, e.g. the sweep's parent run."""
    client = MlflowClient(tracking_uri=uri)
    for path in paths:
        retry(client.log_artifact, run_id, str(path), artifact_path)


def log_report(uri: str, runs_dir: str | Path, run_id: str, paths: list[Path], metrics: dict[str, Any],
               step: int) -> None:  # fmt: skip
    """`pareto`'s output on the sweep's parent run: the report files under `report/` and
    the summary metrics at `step`. Opening the store through a `Tracker` also relocates the
    artifact links of a moved runs folder. plotly.min.js (4.8 MB, the same for every
    report) is logged once per run, not again."""
    tracker = Tracker(uri, runs_dir)
    logged = {Path(f.path).name for f in retry(tracker.client.list_artifacts, run_id, "report")}
    todo = [p for p in paths if not (p.name == "plotly.min.js" and p.name in logged)]
    log_artifacts(uri, run_id, todo, "report")
    log_summary(uri, run_id, metrics, step)


def delete_sweep_runs(uri: str, parent_run_id: str) -> int:
    """Delete a sweep's MLflow runs: every child of `parent_run_id`, then the parent
    (MLflow's soft delete; `mlflow gc` purges them). Returns how many runs were deleted;
    0 when the store does not know the parent."""
    client = MlflowClient(tracking_uri=uri)
    try:
        parent = retry(client.get_run, parent_run_id)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return 0
        raise
    flt = f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'"
    children = retry(client.search_runs, [parent.info.experiment_id], filter_string=flt,
                     run_view_type=ViewType.ALL, max_results=50000)  # fmt: skip
    live = [r for r in [*children, parent] if r.info.lifecycle_stage != "deleted"]
    for run in live:
        retry(client.delete_run, run.info.run_id)
    return len(live)


CONFIRM_METRICS = ("flops_ratio", "synergy_gain", "synergy_gain_stderr", "synergy_vs_dense",
                   "synergy_vs_dense_stderr", "und_gain", "gen_gain", "search_synergy_gain", "shrinkage")  # fmt: skip


def log_confirmed(uri: str, run_id: str, row: dict[str, Any]) -> None:
    """One confirmed policy (`searchvlm confirm`) on the sweep's parent run: metrics
    `confirmed.<name>` at step = the trial's number, and a `confirmed.<number>` tag naming
    the trial and its seeds."""
    client = MlflowClient(tracking_uri=uri)
    now, step = int(time.time() * 1000), int(row["number"])
    metrics = [Metric(f"confirmed.{k}", float(row[k]), now, step) for k in CONFIRM_METRICS if _number(row.get(k))]
    tags = [RunTag(f"confirmed.{step}", f"trial {row['trial_id']} seeds {row['seeds']} status {row['status']}")]
    retry(client.log_batch, run_id, metrics=metrics, tags=tags)


def log_table(uri: str, runs_dir: str | Path, name: str, files: list[Path], rows: list[dict]) -> str:
    """One run holding a side-by-side table (`reproduce`): files as artifacts, one metric
    per row and column (`<preset>.<column>`). Returns the run id."""
    tracker = Tracker(uri, runs_dir)
    run = retry(
        tracker.client.create_run,
        tracker.experiment_id,
        tags={MLFLOW_RUN_NAME: name, "kind": "reproduce"},
        run_name=name,
    )
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(f"{r['preset'] if r['preset'] != 'isolated' else r['model'].split()[0]}.{k}", float(v), now, 0)
               for r in rows for k, v in r.items() if _number(v)]  # fmt: skip
    if metrics:
        retry(tracker.client.log_batch, run_id, metrics=metrics)
    log_artifacts(uri, run_id, files)
    retry(tracker.client.set_terminated, run_id, "FINISHED")
    return run_id


def log_analysis(uri: str, runs_dir: str | Path, name: str, alpha: dict[str, dict[str, list[float]]],
                 files: list[Path]) -> str:  # fmt: skip
    """One run holding an attention analysis (`searchvlm analyze`): metric
    `alpha.<task>.<segment>` with step = layer (0-based), the JSON and plots as artifacts."""
    tracker = Tracker(uri, runs_dir)
    client = tracker.client
    run = retry(client.create_run, tracker.experiment_id, tags={MLFLOW_RUN_NAME: name, "kind": "analysis"},
                run_name=name)  # fmt: skip
    now = int(time.time() * 1000)
    metrics = [Metric(f"alpha.{task}.{seg}", float(v), now, layer) for task, curves in alpha.items()
               for seg, vals in curves.items() for layer, v in enumerate(vals)]  # fmt: skip
    retry(client.log_batch, run.info.run_id, metrics=metrics)
    log_artifacts(uri, run.info.run_id, files)
    retry(client.set_terminated, run.info.run_id, "FINISHED")
    return run.info.run_id


def trial_records(uri: str, parent_run_id: str, policies: Collection[str] = ()) -> list[dict[str, Any]]:
    """What MLflow holds of a sweep's trials, one plain record per child run of
    `parent_run_id` (for `searchvlm runs --check`): `trial_id`, `status`, `error`, `preset`,
    `number` (the Optuna number), `duplicate_of`, `start_time`, `end_time`, the final result
    metrics by their trials.csv names, and for the trial ids in `policies` `policy_json`
    (the logged policy.json, "" when there is none)."""
    client = MlflowClient(tracking_uri=uri)
    parent = retry(client.get_run, parent_run_id, tries=2)
    flt = f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'"
    runs = retry(client.search_runs, [parent.info.experiment_id], filter_string=flt, max_results=50000, tries=2)
    records = [_trial_record(run) for run in runs if run.data.tags.get("trial_id")]
    for record, run in zip(records, [r for r in runs if r.data.tags.get("trial_id")]):
        if record["trial_id"] in policies:
            record["policy_json"] = _policy_text(client, run.info.run_id)
    return records


def _iso(ms: int | None) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000).isoformat(timespec="seconds") if ms else ""


def _trial_record(run: Any) -> dict[str, Any]:
    tags, metrics = run.data.tags, run.data.metrics
    return {"trial_id": tags["trial_id"], "status": tags.get("status", ""), "error": tags.get("error"),
            "preset": tags.get("preset") or None, "number": tags.get("optuna_number", ""),
            "duplicate_of": tags.get("duplicate_of"), "start_time": _iso(run.info.start_time),
            "end_time": _iso(run.info.end_time),
            **{k: metrics[final_key(k)] for k in RESULT_METRICS if final_key(k) in metrics}}  # fmt: skip


def _policy_text(client: MlflowClient, run_id: str) -> str:
    import tempfile

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bar per file on stderr
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return Path(client.download_artifacts(run_id, "policy.json", tmp)).read_text()
        except (MlflowException, OSError):
            return ""

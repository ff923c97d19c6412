"""The MLflow store as searchvlm uses it (L4, inside `searchvlm.tracking`): names and keys,
the default sqlite store, bounded retries of transient errors, the lock around schema
creation, artifact relocation after `runs/` moved, and the small converters every writer uses.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import logging
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from searchvlm.schema._host import machine
from searchvlm.schema.results import METRIC_COLUMNS

log = logging.getLogger("searchvlm.tracking")
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
RUN_STATUS = {"ok": "FINISHED", "failed": "FAILED", "pruned": "KILLED"}


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
            if permanent(err) or attempt == tries - 1:
                raise
            delay = base * 2**attempt
            log.warning("mlflow %s failed (%s); retrying in %.1fs", fn.__name__, err, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
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


def permanent(err: Exception) -> bool:
    return isinstance(err, MlflowException) and err.error_code in _PERMANENT


def final_key(name: str) -> str:
    """The MLflow key of a trial's final value: `test_<name>` for the result metrics (test
    scores and the objectives), the plain name for bookkeeping (`train_seconds`, `steps_done`)."""
    return name if name in ("train_seconds", "steps_done") else f"{TEST_PREFIX}{name}"


def summary_batch(metrics: dict[str, Any], step: int) -> list[Metric]:
    """Parent-run metrics at `step` (the number of trials recorded), finite numbers only."""
    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in metrics.items() if is_number(v)]


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


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def as_params(params: dict[str, Any]) -> list[Param]:
    return [Param(str(k), str(v)[:6000]) for k, v in params.items()]


def provenance() -> dict[str, str]:
    """Command line, git commit, this machine's CPU model, package versions: tags of the parent run."""
    tags = {"command": " ".join(sys.argv)[:4000], "git_commit": _git_commit(), "cpu": machine()}
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

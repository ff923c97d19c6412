"""Where Tune keeps a sweep's experiment state (L4; in `searchvlm.records`, below the sweep that
writes it and beside `runs`, whose `rm` deletes it; no Ray): `runs/<sweep>/ray/`
by default, or `--storage URI`: a path every node shares (`file://` or a plain path) or an
S3-compatible bucket (`s3://bucket/prefix`, through pyarrow), holding one folder per sweep.

The driver's own records (trials.csv, sweep.json, the study, MLflow) stay in the sweep's
folder; only Tune's state (tuner.pkl, experiment state, each trial's results) moves.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from searchvlm.schema._storage_uri import check_storage
from searchvlm.schema.errors import COMMAND_LINE, ConfigError

__all__ = ["RAY_DIR", "TUNER_FILE", "TuneState", "check_storage", "tune_state"]

RAY_DIR = "ray"  # Tune's experiment folder inside the sweep's (no --storage)
TUNER_FILE = "tuner.pkl"  # Tune's saved Tuner: a restorable experiment has one


@dataclass(frozen=True)
class TuneState:
    """A sweep's Tune experiment: `storage_path` and `name` for `RunConfig`, the experiment's
    `path` for `Tuner.restore` / `can_restore`, and the pyarrow `filesystem` to pass with them
    (None: Tune resolves `storage_path` itself). `uri`: `--storage` as recorded (the sweep's
    folder without it)."""

    storage_path: str
    name: str
    filesystem: Any
    uri: str

    @property
    def shown(self) -> str:
        """The experiment's place, to print."""
        return f"{self.uri}/{self.name}"

    @property
    def path(self) -> str:
        return f"{self.storage_path.rstrip('/')}/{self.name}"

    @property
    def local(self) -> bool:
        return self.filesystem is None and "://" not in self.storage_path

    def fs_and_path(self) -> tuple[Any, str]:
        """The pyarrow filesystem and the experiment's path on it."""
        import pyarrow.fs

        if self.filesystem is not None:
            return self.filesystem, self.path
        return pyarrow.fs.FileSystem.from_uri(self.path)

    def read_tuner(self) -> bytes | None:
        """Tune's saved Tuner (tuner.pkl), or None where there is none. An unreachable store
        is a ConfigError naming --storage."""
        import pyarrow.fs

        if self.local:
            file = Path(self.path) / TUNER_FILE
            return file.read_bytes() if file.is_file() else None
        try:
            fs, path = self.fs_and_path()
            file = f"{path}/{TUNER_FILE}"
            if fs.get_file_info(file).type != pyarrow.fs.FileType.File:
                return None
            with fs.open_input_stream(file) as stream:
                return stream.read()
        except OSError as err:
            raise ConfigError(COMMAND_LINE, "--storage", self.uri, f"cannot be read ({_first_line(err)})") from None

    @property
    def removal_command(self) -> str:
        """The shell command that deletes this experiment (for a user who deletes it by hand)."""
        if not self.shown.startswith("s3://"):
            return f"rm -r {shlex.quote(self.path)}"
        endpoint = _endpoint()
        return f"aws s3 rm --recursive {shlex.quote(self.shown + '/')}" + (
            f" --endpoint-url {shlex.quote(endpoint)}" if endpoint else "")  # fmt: skip

    def remove(self, source: str | Path) -> bool:
        """Delete this sweep's experiment from its storage (only `<storage>/<sweep>`, never the
        storage itself); False when there was none. A store that refuses it is a ConfigError
        (`source`: the sweep.json that names it) carrying the command to do it by hand."""
        import pyarrow.fs

        try:
            fs, path = self.fs_and_path()
            if fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
                return False
            fs.delete_dir(path)
        except OSError as err:
            raise ConfigError(source, "storage", self.uri,
                              f"Tune's state at {self.shown} cannot be deleted ({_first_line(err)}); nothing was "
                              f"deleted: delete it with `{self.removal_command}`, then run rm with --keep-storage"
                              ) from None  # fmt: skip
        return True

    def prepare(self) -> None:
        """A new sweep's storage is writable (its folder made): else one ConfigError, before Ray starts."""
        try:
            fs, path = self.fs_and_path()
            fs.create_dir(path, recursive=True)
        except OSError as err:
            raise ConfigError(COMMAND_LINE, "--storage", self.uri,
                              f"cannot be written ({_first_line(err)})") from None  # fmt: skip


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def tune_state(run_dir: Path, storage: str | None) -> TuneState:
    """The Tune experiment of the sweep in `run_dir`: `<run_dir>/ray` without `storage`, else
    `<storage>/<sweep name>` (`storage` as `check_storage` returns it)."""
    if storage is None:
        return TuneState(str(run_dir), RAY_DIR, None, str(run_dir))
    if not storage.startswith("s3://"):
        return TuneState(storage, run_dir.name, None, storage)
    path, fs = _s3(storage)
    return TuneState(path, run_dir.name, fs, storage)


def _s3(uri: str) -> tuple[str, Any]:
    """`s3://bucket/prefix` as Tune's storage: with `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`
    set (an S3-compatible server: MinIO, Ceph, moto), a pyarrow S3FileSystem on that endpoint
    and the path without its scheme; else the URI, which pyarrow resolves with the standard
    AWS variables and files."""
    endpoint = _endpoint()
    if not endpoint:
        return uri, None
    import pyarrow.fs

    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    fs = pyarrow.fs.S3FileSystem(endpoint_override=parts.netloc, scheme=parts.scheme or "https", region=region)
    return uri.removeprefix("s3://"), fs


def _endpoint() -> str | None:
    """The S3-compatible server the AWS variables name (None: AWS itself)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None

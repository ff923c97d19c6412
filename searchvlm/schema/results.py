"""The on-disk record of a sweep: `runs/<sweep>/trials.csv` rows and `sweep.json` metadata.

L0 module (stdlib + pydantic): the sweep driver writes these, `pareto`/`export`/`report`
read them, so both sides share one definition of the columns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import math
import numbers
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from searchvlm.schema._tables import atomic_write, read_table, write_table
from searchvlm.schema.errors import COMMAND_LINE, ConfigError
from searchvlm.schema.trial_result import REACHED_METRICS, TrialResult

if TYPE_CHECKING:
    from searchvlm.schema.space import SearchSpace

__all__ = [
    "CONFIRMED_FILE",
    "CONFIRM_COLUMNS",
    "CONFIRM_NUMBERS",
    "DECISION_FILE",
    "DECISION_SCHEMA",
    "METRIC_COLUMNS",
    "OBJECTIVE_COLUMNS",
    "PER_SEED_COLUMNS",
    "PLACEMENT_COLUMNS",
    "STUDY_FILE",
    "SWEEP_FILE",
    "SweepMeta",
    "TRIALS_FILE",
    "TRIAL_COLUMNS",
    "TrialRow",
    "TrialRun",
    "check_unlocked",
    "finite_number",
    "load_ranked",
    "lock_path",
    "ranking_rows",
    "read_confirmed",
    "read_decision",
    "read_meta",
    "read_trials",
    "resolve_run_dir",
    "store_problem",
    "sweep_lock",
    "sweep_tracking_uri",
    "trial_row",
    "with_confirmed",
    "write_confirmed",
    "write_meta",
    "write_trials",
]

TRIALS_FILE = "trials.csv"
SWEEP_FILE = "sweep.json"
STUDY_FILE = "optuna.db"  # the sweep's Optuna study (SQLite)


def lock_path(run_dir: Path) -> Path:
    """The lock of the sweep in `run_dir` (`sweep_lock`): a file beside the folder, so that it
    exists before the folder does. Never deleted (a driver could hold the old file while another
    locked a new one); a hidden file, never listed as a sweep."""
    return run_dir.parent / f".{run_dir.name}.lock"


@contextlib.contextmanager
def sweep_lock(run_dir: Path, key: str, then: str) -> Iterator[None]:
    """Hold the sweep's exclusive lock: a driver while it starts, resumes or extends the sweep,
    `rm` while it removes it. Another holder stops this one with a ConfigError on `key` naming
    it (pid, host, since when) and what to do (`then`). An `flock`, released when the holder
    ends however it ends; the file is close-on-exec, so processes that exec (Ray's, subprocesses)
    do not hold it, but a child forked without exec would until it exits. On a network disk it
    holds only as far as the file system honours locks."""
    import os
    import socket

    path = lock_path(run_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+")
    except OSError as err:
        raise ConfigError(COMMAND_LINE, key, run_dir.name, f"cannot open the sweep's lock {path}: {err}") from None
    with fh:
        _take(fh, run_dir, key, then)
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} since {dt.datetime.now():%Y-%m-%d %H:%M:%S}")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()  # a later refusal names no one who has left
            fh.flush()


def check_unlocked(run_dir: Path, key: str, then: str) -> None:
    """Stop (as `sweep_lock` would) when a holder has the sweep's lock now, creating nothing: a
    check that can come before anything of a sweep is written, its folder included."""
    try:
        fh = open(lock_path(run_dir))
    except FileNotFoundError:
        return
    except OSError as err:
        raise ConfigError(COMMAND_LINE, key, run_dir.name, f"cannot read the sweep's lock: {err}") from None
    with fh:
        _take(fh, run_dir, key, then)


def _take(fh: Any, run_dir: Path, key: str, then: str) -> None:
    """`flock` the open lock file `fh` exclusively, or raise the ConfigError naming its holder."""
    import fcntl

    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        raise ConfigError(COMMAND_LINE, key, run_dir.name,
                          f"sweep {run_dir} is running ({holder}; lock {fh.name}): {then}") from None  # fmt: skip
    except OSError as err:
        raise ConfigError(COMMAND_LINE, key, run_dir.name,
                          f"cannot lock {fh.name} ({err}): no locks on this file system") from None  # fmt: skip


OBJECTIVE_COLUMNS = REACHED_METRICS  # what a trial reached (exported as a policy file's `objectives`)
METRIC_COLUMNS = (*OBJECTIVE_COLUMNS, "train_seconds", "steps_done")
#: where a trial ran: its Ray node's IP, the GPU ids Ray gave it ("0", "0,1"; "" for none), its torch device
PLACEMENT_COLUMNS = ("node", "gpu_ids", "device")
TRIAL_COLUMNS = (
    "trial_id",
    "number",
    "status",
    "error",
    "preset",
    "duplicate_of",
    *METRIC_COLUMNS,
    "seeds",
    "synergy_per_seed",
    "policy_json",
    "params_json",
    "start_time",
    "end_time",
    *PLACEMENT_COLUMNS,
    "cpu",  # the CPU model(s) its numbers were measured on (TrialResult.cpu)
)


class SweepMeta(BaseModel):
    """`runs/<sweep>/sweep.json`: what a sweep was, for pareto/export/provenance."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="sweep name (its folder under the runs directory)")
    space_path: str = Field(description="absolute path of the space file the sweep started from")
    space_hash: str = Field(description="16-hex digest of the resolved space (SearchSpace.space_hash)")
    package_version: str = Field(description="searchvlm version that ran the sweep")
    model: dict[str, Any] = Field(description="the model config trials were trained with")
    objectives: list[dict[str, str]] = Field(default_factory=list, description="the space's objectives: {name, mode}")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI of the sweep")
    parent_run_id: str | None = Field(None, description="MLflow parent run of the sweep")
    created: str | None = Field(None, description="start time, ISO 8601 (local time, seconds)")
    cache_dir: str | None = Field(
        None, description="the baseline cache the sweep used (`--cache-dir`); None: cache/ beside the sweep's folder"
    )
    storage: str | None = Field(
        None,
        description="where Tune keeps the sweep's state (`--storage`: an absolute path or s3://bucket/prefix, "
        "holding a folder named after the sweep); None: ray/ in the sweep's folder",
    )

    def cache_path(self, run_dir: Path) -> Path:
        """The baseline cache of this sweep (run in `run_dir`): `confirm` and `decide` read it too."""
        return Path(self.cache_dir) if self.cache_dir else run_dir.parent / "cache"

    def as_run(self, space: SearchSpace) -> SearchSpace:
        """`space` at the samples and concurrency this sweep records (an extension or
        `--samples` / `--concurrency` changes them after its file was written): the space
        whose hash `space_hash` is, when the file is the one the sweep ran."""
        recorded = getattr(self, "search", None) or {}
        return space.with_search(samples=recorded.get("samples"), concurrency=recorded.get("concurrency"))


def finite_number(value: Any) -> float | None:
    """`value` as a Python float when it is a finite real number (numpy scalars too), else None."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)  # np.bool_ is no Real
    return float(value) if real and math.isfinite(value) else None


def _json_list(text: Any) -> list[Any]:
    """A list cell (JSON text, or a list already): [] when empty, unreadable or not a list."""
    if isinstance(text, (list, tuple)):
        return list(text)
    if not isinstance(text, str) or not text.strip():
        return []
    try:
        out = json.loads(text)
    except json.JSONDecodeError:
        return []
    return out if isinstance(out, list) else []


def _json_object(text: Any) -> dict[str, Any] | None:
    """An object cell (JSON text, or a dict already); None when empty or not a JSON object."""
    if isinstance(text, Mapping):
        return dict(text)
    try:
        out = json.loads(text) if isinstance(text, str) and text else None
    except json.JSONDecodeError:
        return None
    return out if isinstance(out, dict) else None


@dataclass(frozen=True, eq=False)
class TrialRow(Mapping[str, Any]):
    """One row of `trials.csv` or `confirmed.csv`, its JSON cells decoded once (`of`).

    The typed attributes are what readers use; as a mapping it is still the row's columns
    as read (numbers as floats or None, `number` an int, JSON cells as their text), which
    is what a table rewritten from it writes back, and it equals a dict of those columns.
    Cells that do not decode read as empty (`seeds` [], `policy` None), as they always have."""

    cells: Mapping[str, Any]
    #: the seeds the row's numbers average, and each one's synergy gain in that order
    #: (None where a seed's is missing or not finite)
    seeds: list[int]
    synergy_per_seed: list[float | None]
    #: `policy_json` decoded (the explicit policy's JSON object); None when there is none or
    #: it is unreadable (`policy_text` tells the two apart)
    policy: dict[str, Any] | None

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> TrialRow:
        """`row` decoded (a TrialRow as it is): the one place a row's JSON cells are read."""
        if isinstance(row, TrialRow):
            return row
        try:
            seeds = [int(s) for s in _json_list(row.get("seeds"))]
        except (TypeError, ValueError):
            seeds = []
        per_seed = [finite_number(v) for v in _json_list(row.get("synergy_per_seed"))]
        return cls(dict(row), seeds, per_seed, _json_object(row.get("policy_json")))

    def __getitem__(self, column: str) -> Any:
        return self.cells[column]

    def __iter__(self) -> Iterator[str]:
        return iter(self.cells)

    def __len__(self) -> int:
        return len(self.cells)

    def __repr__(self) -> str:
        return f"TrialRow({dict(self.cells)!r})"

    @property
    def trial_id(self) -> str:
        return str(self.cells.get("trial_id", ""))

    @property
    def number(self) -> int | None:
        n = self.cells.get("number")
        return n if isinstance(n, int) else None

    @property
    def status(self) -> str:
        return self.cells.get("status") or ""

    @property
    def preset(self) -> str:
        return self.cells.get("preset") or ""

    @property
    def duplicate_of(self) -> str:
        return self.cells.get("duplicate_of") or ""

    @property
    def confirmed(self) -> bool:
        """Numbers from `confirmed.csv` (fresh seeds) in place of the search's (`with_confirmed`)."""
        return bool(self.cells.get("confirmed"))

    @property
    def policy_text(self) -> str:
        return self.cells.get("policy_json") or ""

    def value(self, column: str) -> float | None:
        """A number column (`METRIC_COLUMNS`, `CONFIRM_NUMBERS`) as a finite float, else None."""
        return finite_number(self.cells.get(column))

    def per_seed_values(self, column: str) -> list[float | None]:
        """A per-seed JSON list column (`PER_SEED_COLUMNS`), in `seeds` order; None where a
        seed's value is missing or not finite."""
        return [finite_number(v) for v in _json_list(self.cells.get(column))]


def sweep_tracking_uri(meta: SweepMeta, run_dir: str | Path) -> str | None:
    """The MLflow store of a sweep: the URI `sweep.json` recorded, except that a default
    store (`sqlite:///<runs-dir>/mlflow.db`) that is no longer there, while one exists in
    the folder the sweep is in now, means `runs/` was moved: the store beside it."""
    uri = meta.tracking_uri
    if not uri or not uri.startswith("sqlite:///") or not uri.endswith("/mlflow.db"):
        return uri
    here = Path(run_dir).resolve().parent / "mlflow.db"
    if not Path(uri.removeprefix("sqlite:///")).exists() and here.exists():
        return f"sqlite:///{here}"
    return uri


@dataclass(frozen=True)
class TrialRun:
    """How a trial ran, as its trials-table row records it: start and end (ISO 8601 text),
    the trial whose result it reused (`duplicate_of`: the same computation, see
    `searchvlm.schema.identity`) and where it ran (`placement`: the `PLACEMENT_COLUMNS`, missing
    ones empty)."""

    start_time: str = ""
    end_time: str = ""
    duplicate_of: str | None = None
    placement: dict[str, str] | None = None


def trial_row(
    result: TrialResult,
    trial_id: str,
    number: int,
    preset: str | None = None,
    params: dict[str, Any] | None = None,
    run: TrialRun = TrialRun(),
) -> dict[str, Any]:
    """One trials-table row (every field of the result, the explicit policy as JSON, `run`'s
    cells); `synergy_per_seed` lists each seed's synergy gain in `seeds` order (for paired
    comparisons)."""
    row: dict[str, Any] = {c: getattr(result, c) for c in METRIC_COLUMNS}
    row.update(
        trial_id=trial_id,
        number=number,
        status=result.status,
        error=result.error or "",
        preset=preset or "",
        duplicate_of=run.duplicate_of or "",
        seeds=json.dumps(result.seeds),
        synergy_per_seed=json.dumps([p.synergy_gain for p in result.per_seed]) if result.per_seed else "",
        policy_json=result.policy.model_dump_json() if result.policy else "",
        params_json=json.dumps(params or {}, sort_keys=True, default=str),
        start_time=run.start_time,
        end_time=run.end_time,
        cpu=result.cpu or "",
    )
    row.update({c: (run.placement or {}).get(c) or "" for c in PLACEMENT_COLUMNS})
    return {c: row[c] for c in TRIAL_COLUMNS}


def write_trials(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write the whole table atomically (a crash never leaves a half-written file)."""
    write_table(path, rows, TRIAL_COLUMNS)


def _parse(column: str, text: str) -> Any:
    if text == "":
        return None if column in METRIC_COLUMNS else ""
    if column in METRIC_COLUMNS:
        return float(text)
    if column == "number":
        return int(text)
    return text


def read_trials(path: str | Path, strict: bool = False) -> list[TrialRow]:
    """Rows of a trials table, metrics as floats (None when missing), JSON cells decoded.

    A damaged row (cut short, extra cells, a cell that does not parse) is never dropped in
    silence: with `strict` it is a ConfigError naming the file and line (for the writers:
    a table rewritten from what was read would lose it for good); otherwise the intact rows
    are returned and one `DamagedFile` warning names the file and the damaged lines."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(path, "", str(path), "no trials table here (has the sweep run?)")
    rows = read_table(path, ("trial_id", "status", "flops_ratio", "synergy_gain"), TRIAL_COLUMNS, _parse, strict)
    return [TrialRow.of(row) for row in rows]


def store_problem(path: str | Path, table: str) -> str | None:
    """Why the SQLite store `path` (optuna.db, mlflow.db) cannot be read, or None when it
    holds `table`. Opened read-only: a damaged or empty store is never written to. One
    exception: a writer killed inside a transaction (a SIGKILLed driver) leaves a hot
    `-journal` beside the store, which read-only SQLite cannot roll back ("attempt to write a
    readonly database"); then the store is opened read-write once, so that SQLite restores
    its last committed state, as the next writer's open would."""
    path = Path(path)
    if not path.is_file():
        return "no such file"
    try:
        try:
            tables = _tables(path, "ro")
        except sqlite3.OperationalError as err:
            if "readonly" not in str(err) or not Path(f"{path}-journal").is_file():
                raise
            tables = _tables(path, "rw")  # rolls the interrupted transaction back
    except sqlite3.Error as err:
        return f"not a readable SQLite database ({err})"
    return None if table in tables else f"holds no {table!r} table (empty or not this kind of store)"


def _tables(path: Path, mode: str) -> set[str]:
    with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode={mode}", uri=True)) as con:
        return {row[0] for row in con.execute("select name from sqlite_master where type = 'table'")}


def write_meta(path: str | Path, meta: SweepMeta) -> None:
    atomic_write(Path(path), meta.model_dump_json(indent=2))


def read_meta(path: str | Path) -> SweepMeta:
    from searchvlm.schema.errors import load_json, validate

    return validate(SweepMeta, load_json(path), path)


def resolve_run_dir(run: str | Path, runs_dir: str | Path = "runs") -> Path:
    """A sweep name (looked up under `runs_dir`) or a sweep directory.

    An unknown sweep is a ConfigError naming the runs folder and the sweeps it holds."""
    p = Path(run)
    if (p / TRIALS_FILE).exists() or (p / SWEEP_FILE).exists():
        return p
    q = Path(runs_dir) / str(run)
    if q.exists():
        return q
    raise ConfigError(
        runs_dir,
        "RUN",
        str(run),
        f"no sweep of this name here ({_sweeps_in(Path(runs_dir))}), "
        f"and {p} is not a sweep directory; pass a sweep name or folder (and --runs-dir)",
    )


def _sweeps_in(runs_dir: Path) -> str:
    if not runs_dir.is_dir():
        return "the folder does not exist"
    names = sorted(d.name for d in runs_dir.iterdir() if (d / SWEEP_FILE).exists() or (d / TRIALS_FILE).exists())
    return f"sweeps: {', '.join(names)}" if names else "it holds no sweeps"


# --------------------------------------------------------------------------- confirmed.csv

CONFIRMED_FILE = "confirmed.csv"
#: per-seed lists (JSON, in `seeds` order) of a confirmed policy
PER_SEED_COLUMNS = ("synergy_per_seed", "und_gain_per_seed", "gen_gain_per_seed", "vs_dense_per_seed")
CONFIRM_NUMBERS = (*OBJECTIVE_COLUMNS, "search_synergy_gain", "search_synergy_gain_stderr", "shrinkage",
                   "train_seconds")  # fmt: skip
CONFIRM_COLUMNS = ("trial_id", "number", "preset", "status", "error", "seeds", *PER_SEED_COLUMNS,
                   *CONFIRM_NUMBERS, "policy_json", "confirmed_at", "cpu")  # fmt: skip


def write_confirmed(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write `confirmed.csv` atomically, one row per confirmed policy (by trial number)."""
    write_table(path, rows, CONFIRM_COLUMNS)


def read_confirmed(path: str | Path, strict: bool = False) -> list[TrialRow]:
    """Rows of `confirmed.csv` (numbers as floats, None when missing, JSON cells decoded); []
    when there is none.
    Damaged rows as `read_trials` says (`strict` for the writer)."""
    path = Path(path)
    if not path.exists():
        return []
    required = ("trial_id", "number", "status", "seeds", "synergy_gain")
    return [TrialRow.of(row) for row in read_table(path, required, CONFIRM_COLUMNS, _parse_confirmed, strict)]


def _parse_confirmed(column: str, text: str) -> Any:
    if column in CONFIRM_NUMBERS:
        return float(text) if text else None
    return int(text) if column == "number" else text


def with_confirmed(rows: list[TrialRow], confirmed: list[TrialRow]) -> list[TrialRow]:
    """The trials table with each confirmed (status ok) policy's numbers in place of the
    search's: `confirmed` True on those rows (search numbers kept as `search_*`), False on
    the others."""
    by_id = {c.trial_id: c for c in confirmed if c.status == "ok"}
    out = []
    for row in rows:
        c = by_id.get(row.trial_id)
        if c is None:
            out.append(dataclasses.replace(row, cells={**row.cells, "confirmed": False}))
            continue
        cells = {**row.cells, **{k: c.get(k) for k in OBJECTIVE_COLUMNS}, "seeds": c["seeds"],
                 "synergy_per_seed": c["synergy_per_seed"], "search_synergy_gain": row.get("synergy_gain"),
                 "search_synergy_gain_stderr": row.get("synergy_gain_stderr"), "confirmed": True}  # fmt: skip
        out.append(dataclasses.replace(row, cells=cells, seeds=c.seeds, synergy_per_seed=c.synergy_per_seed))
    return out


def ranking_rows(rows: list[Mapping[str, Any]]) -> list[TrialRow]:
    """The rows a front is read from: the confirmed ones when any exist (rows of
    `with_confirmed`), else every trial but the repeats (a `duplicate_of` row is its twin's
    policy and result again: one point, not two). Unconfirmed rows keep their search
    numbers, which carry the winner's curse, so they are not ranked against confirmed ones."""
    decoded = [TrialRow.of(r) for r in rows]
    confirmed = [r for r in decoded if r.confirmed]
    return confirmed or [r for r in decoded if not r.duplicate_of]


def load_ranked(run_dir: str | Path, strict: bool = False) -> tuple[list[TrialRow], list[TrialRow]]:
    """(every trial with confirmed numbers merged in, the confirmed.csv rows) of a sweep dir;
    `strict`: a damaged row is an error (`read_trials`)."""
    run = Path(run_dir)
    confirmed = read_confirmed(run / CONFIRMED_FILE, strict)
    return with_confirmed(read_trials(run / TRIALS_FILE, strict), confirmed), confirmed


DECISION_FILE = "decision.json"
DECISION_SCHEMA = "searchvlm.decision/v1"


def read_decision(run_dir: str | Path) -> dict[str, Any]:
    """`decision.json` of a sweep folder (`searchvlm decide`); ConfigError naming it when
    missing or not a decision file."""
    path = Path(run_dir) / DECISION_FILE
    if not path.exists():
        raise ConfigError(path, "", "missing", f"no decision yet: run `searchvlm decide {Path(run_dir).name}` first")
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        raise ConfigError(path, "", "unreadable", f"not JSON ({err})") from None
    if not isinstance(data, dict) or data.get("schema") != DECISION_SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ConfigError(path, "schema", found, f"expected {DECISION_SCHEMA!r}")
    return data

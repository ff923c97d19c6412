"""A finished sweep's folder damaged after the fact (a full disk, an interrupted copy, a hand
edit): every command that reads the damaged file either works from what is intact and says
which file is damaged in one `warning:` line, or stops with one `error:` line naming it and
exit code 2. Never a traceback, never a write to the damaged file or the other records.

One folder (`helpers.sweeps.recorded_sweep`: trials.csv, confirmed.csv, sweep.json, the
space copy, optuna.db, ray/, the baseline cache, runs/mlflow.db) is built once per module
and copied per case. Training never starts: `confirm`'s training and `sweep --resume`'s Ray
start are stubs, and reaching them counts as "worked" (the damage was not in its way).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from helpers.sweeps import make_sweep, recorded_sweep
from searchvlm.cli import app
from searchvlm.schema.errors import ConfigError, DamagedFile
from searchvlm.schema.policy import ReductionPolicy

NAME = "rec"
ROOT_AS_USER = os.geteuid() == 0  # root reads a chmod-000 file: that damage cannot be made


class ReachedWork(AssertionError):
    """The command got past every check to its training: the damage was not in its way."""


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pristine folder: runs/rec (the recorded sweep), runs/other (a second sweep for
    `compare`), tiny.yaml, policy.json (for `show`)."""
    root = tmp_path_factory.mktemp("recorded")
    recorded_sweep(root, NAME)
    make_sweep(root / "runs", "other")
    (root / "policy.json").write_text(ReductionPolicy.dense(num_layers=4).model_dump_json())
    return root


@pytest.fixture
def copy(recorded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "w"
    shutil.copytree(recorded, root, symlinks=True)
    _rewrite_paths(root, recorded)
    monkeypatch.chdir(root)

    def stub(*args: Any, **kwargs: Any) -> Any:
        raise ReachedWork("training started")

    import searchvlm.records.confirm
    import searchvlm.sweep._driver as driver

    monkeypatch.setattr(searchvlm.records.confirm, "train_paired", stub)
    monkeypatch.setattr(driver, "ensure_ray", stub)
    monkeypatch.setattr(driver, "_warm_tracking", lambda *a: None)
    return root


def _rewrite_paths(root: Path, old: Path) -> None:
    """sweep.json records absolute paths (the space, the MLflow store): point them at the copy."""
    meta = root / "runs" / NAME / "sweep.json"
    meta.write_text(meta.read_text().replace(str(old), str(root)))


# --------------------------------------------------------------------------- damages


def _target(path: Path) -> Path:
    """The file a damage acts on: ray/ is damaged through Tune's state file."""
    return path / "tuner.pkl" if path.is_dir() else path


def _missing(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def _empty(path: Path) -> None:
    if path.is_dir():
        for child in path.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    else:
        path.write_bytes(b"")


def _truncated(path: Path) -> None:
    """Cut in the middle of a row (a table: halfway into its third data row), else halfway."""
    f = _target(path)
    data = f.read_bytes()
    if f.suffix == ".csv" and data.count(b"\n") >= 4:
        starts = [i + 1 for i, b in enumerate(data) if b == ord("\n")]
        cut = (starts[2] + starts[3]) // 2
    else:
        cut = len(data) // 2
    f.write_bytes(data[:cut])


def _garbage(path: Path) -> None:
    f = _target(path)
    f.write_bytes(random.Random(f.name).randbytes(max(64, f.stat().st_size)))


def _unreadable(path: Path) -> None:
    _target(path).chmod(0)


DAMAGES: dict[str, Callable[[Path], None]] = {
    "missing": _missing,
    "empty": _empty,
    "truncated": _truncated,
    "garbage": _garbage,
    "unreadable": _unreadable,
}

# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Outcome:
    """What a command did: its exit code, its `error:` / `warning:` lines, its output."""

    code: int
    errors: list[str]
    warnings: list[str]
    output: str


def _cli(*args: str) -> Outcome:
    res = CliRunner().invoke(app, list(args))
    if isinstance(res.exception, ReachedWork):
        code = 0
    else:
        assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
        code = res.exit_code
    assert "Traceback" not in res.output, res.output
    lines = res.output.splitlines()
    return Outcome(code, [ln for ln in lines if ln.startswith("error: ")],
                   [ln for ln in lines if ln.startswith("warning: ")], res.output)  # fmt: skip


def _api(fn: Callable[[], Any]) -> Outcome:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DamagedFile)
        try:
            fn()
        except ConfigError as err:
            return Outcome(2, [f"error: {line}" for line in str(err).splitlines()], [], str(err))
    found = [f"warning: {w.message}" for w in caught if issubclass(w.category, DamagedFile)]
    return Outcome(0, [], found, "\n".join(found))


def _load_trials() -> Outcome:
    from searchvlm import load_trials

    return _api(lambda: load_trials(NAME, runs_dir="runs"))


def _load_front() -> Outcome:
    from searchvlm import load_front

    return _api(lambda: load_front(NAME, runs_dir="runs"))


def _baseline() -> Outcome:
    from searchvlm.train.baselines import RunRecord, get_baseline

    trained: list[bool] = []

    def train() -> RunRecord:
        trained.append(True)
        return RunRecord(tasks=("understanding",), seed=0)

    out = _api(lambda: get_baseline("runs/cache", "k0", train))
    assert trained or out.code == 0, out
    return out


COMMANDS: dict[str, Callable[[], Outcome]] = {
    "pareto": lambda: _cli("pareto", NAME, "--no-plots"),
    "pareto-plots": lambda: _cli("pareto", NAME, "--force"),
    "export": lambda: _cli("export", NAME, "-o", "out/policy.json"),
    "show": lambda: _cli("show", "policy.json", "-o", "out/policy.png"),
    "runs": lambda: _cli("runs"),
    "runs-check": lambda: _cli("runs", "--check", NAME),
    "compare": lambda: _cli("compare", NAME, "other"),
    "confirm": lambda: _cli("confirm", NAME),
    "resume": lambda: _cli("sweep", f"runs/{NAME}/tiny.yaml", "--name", NAME, "--resume", "--no-progress"),
    "load_trials": _load_trials,
    "load_front": _load_front,
    "baseline": _baseline,
}

#: the commands that read a sweep's table and its sweep.json
TABLE_READERS = ("pareto", "export", "runs", "runs-check", "compare", "confirm", "resume", "load_trials", "load_front")
#: every file of the folder (relative to the copy's root) and the commands that read it
READERS: dict[str, tuple[str, ...]] = {
    f"runs/{NAME}/trials.csv": TABLE_READERS,
    f"runs/{NAME}/confirmed.csv": ("pareto", "export", "compare", "confirm", "load_front"),
    f"runs/{NAME}/sweep.json": TABLE_READERS,
    f"runs/{NAME}/tiny.yaml": ("confirm", "resume"),
    f"runs/{NAME}/optuna.db": ("pareto-plots", "runs-check", "resume"),
    f"runs/{NAME}/ray": ("resume",),
    "runs/cache/baselines/k0.json": ("baseline",),
    "runs/mlflow.db": ("pareto-plots", "runs-check", "resume"),
    "policy.json": ("show",),
}

#: (file, damage) a command may pass over in silence, and why that is right
SILENT = {
    (f"runs/{NAME}/confirmed.csv", "missing"): "no confirmation yet: the search numbers are used, as the output says",
    (f"runs/{NAME}/tiny.yaml", "missing"): "the space is read from its recorded path (confirm) or the argument",
    (f"runs/{NAME}/optuna.db", "missing"): "a sweep without a study: importance plots are skipped (logged)",
    ("runs/mlflow.db", "missing"): "a fresh MLflow store is made; trials.csv is the record",
    ("runs/cache/baselines/k0.json", "missing"): "not cached yet: trained, as always",
}
#: (file, damage, command) where the damaged file is not read on that command's path
NOT_READ = {
    # `runs` lists a sweep without its sweep.json (name from the folder, created from its mtime), and
    # without its table as one that recorded no trial yet (`runs --check` tells the two apart)
    (f"runs/{NAME}/trials.csv", "missing", "runs"),
    (f"runs/{NAME}/sweep.json", "missing", "runs"),
    # confirm retrains without the MLflow parent run; pareto/export/load_* need only the table
    *((f"runs/{NAME}/sweep.json", "missing", c) for c in ("pareto", "export", "compare", "load_trials", "load_front")),
}  # fmt: skip
#: files `runs --check` reads only to compare: damage there is its finding (exit 1), not a failure
CHECK_FINDINGS = {f"runs/{NAME}/trials.csv", f"runs/{NAME}/optuna.db", "runs/mlflow.db", f"runs/{NAME}/sweep.json"}

CASES = [(f, d, c) for f, commands in READERS.items() for d in DAMAGES for c in commands]
RECORDS = ("trials.csv", "confirmed.csv", "sweep.json", "optuna.db", "tiny.yaml")


def _snapshot(root: Path) -> dict[str, bytes | None]:
    files = [root / "runs" / NAME / f for f in RECORDS] + [root / "runs" / NAME / "ray" / "tuner.pkl"]
    return {str(f): f.read_bytes() if f.is_file() and os.access(f, os.R_OK) else None for f in files}


def test_every_file_and_damage_is_covered() -> None:
    """Every file of the recorded folder is damaged by the fuzz, in each way, for each reader."""
    assert len(CASES) == sum(len(c) for c in READERS.values()) * len(DAMAGES)
    assert {"trials.csv", "confirmed.csv", "sweep.json", "optuna.db", "tiny.yaml", "ray", "k0.json",
            "mlflow.db"} <= {Path(f).name for f in READERS}  # fmt: skip
    commands = {c for cs in READERS.values() for c in cs}
    assert commands == set(COMMANDS), set(COMMANDS) ^ commands


@pytest.mark.parametrize(("file", "damage", "command"), CASES, ids=["-".join(c) for c in CASES])
def test_damaged_folder(copy: Path, file: str, damage: str, command: str) -> None:
    if damage == "unreadable" and ROOT_AS_USER:
        pytest.skip("running as root: a chmod-000 file is still readable")
    path = copy / file
    DAMAGES[damage](path)
    before = _snapshot(copy)
    out = COMMANDS[command]()
    name = Path(file).name
    assert out.code in (0, 1, 2), out.output
    if out.code == 2:
        assert len(out.errors) == 1 or _one_problem(out), out.output
        assert name in out.errors[0] or (name == "ray" and "tuner.pkl" in out.errors[0]), out.output
    elif out.code == 1:
        assert command == "runs-check" and file in CHECK_FINDINGS, out.output
        assert name in out.output, out.output
    else:
        named = [w for w in out.warnings if name in w]
        assert len(named) <= 1, out.output
        if (file, damage) not in SILENT and (file, damage, command) not in NOT_READ:
            assert named, f"{command} worked on a damaged {file} ({damage}) without a warning:\n{out.output}"
    assert _snapshot(copy) == before, "a record changed under a damaged folder"


def _one_problem(out: Outcome) -> bool:
    """Several `error:` lines are the problems of ONE file (a damaged space: one per key)."""
    sources = {ln.split(":", 2)[1].strip() for ln in out.errors}
    return len(sources) == 1


# --------------------------------------------------------------------------- the cases


def test_garbage_study_pareto_writes_the_report(copy: Path) -> None:
    """optuna.db replaced by garbage: `pareto` works from trials.csv, says the study is
    unreadable in one warning, and writes the front (was: sqlite3.DatabaseError traceback)."""
    _garbage(copy / "runs" / NAME / "optuna.db")
    out = _cli("pareto", NAME)
    assert out.code == 0, out.output
    assert len(out.warnings) == 1 and "optuna.db" in out.warnings[0] and "not a readable" in out.warnings[0]
    assert (copy / "runs" / NAME / "report" / "pareto_front.png").is_file()


def _cut_mid_row(table: Path, row: int) -> list[str]:
    """Cut `table` halfway into data row `row` (0-based); the trial ids lost."""
    data = table.read_bytes()
    starts = [i + 1 for i, b in enumerate(data) if b == ord("\n")]  # starts[k]: data row k
    lost = [ln.split(",", 1)[0] for ln in data[starts[row] :].decode().splitlines() if ln[:4] == "abc_"]
    table.write_bytes(data[: (starts[row] + starts[row + 1]) // 2])
    return lost


def test_cut_table_is_reported_then_repaired_from_study_and_mlflow(copy: Path) -> None:
    """trials.csv cut in the middle of a row: `pareto` and `runs` name the file and line (was:
    4 of 24 trials, no word); `runs --check` finds the lost trials in the study and MLflow;
    `--repair` rebuilds them with their numbers and policies, the damaged file kept beside."""
    from searchvlm.schema.results import read_trials

    table = copy / "runs" / NAME / "trials.csv"
    original = {r["trial_id"]: r for r in read_trials(table)}
    lost = _cut_mid_row(table, 2)
    assert lost == ["abc_00002", "abc_00003", "abc_00004", "abc_00005", "abc_00006"]
    for args in (("pareto", NAME, "--no-plots"), ("runs",)):
        out = _cli(*args)
        assert out.code == 0 and len(out.warnings) == 1, out.output
        assert "trials.csv: line 4 (row 3): row cut short" in out.warnings[0] and "runs --check rec" in out.warnings[0]
    damaged = table.read_bytes()
    check = _cli("runs", "--check", NAME)
    assert check.code == 1 and f"missing from trials.csv: {', '.join(lost)}" in check.output, check.output
    assert table.read_bytes() == damaged and not table.with_name("trials.csv.damaged").exists()  # --check only reads
    repair = _cli("runs", "--check", NAME, "--repair")
    assert repair.code == 0 and f"rebuilt 5 rows: {', '.join(lost)}" in repair.output, repair.output
    assert table.with_name("trials.csv.damaged").read_bytes() == damaged
    rebuilt = {r["trial_id"]: r for r in read_trials(table)}
    assert sorted(rebuilt) == sorted(original)
    keep = ("number", "status", "error", "preset", "flops_ratio", "synergy_gain", "synergy_gain_stderr", "und_gain",
            "gen_gain", "und_acc", "gen_nll", "und_acc_iso", "gen_nll_iso", "policy_json")  # fmt: skip
    for tid in lost:
        assert {k: rebuilt[tid][k] for k in keep} == {k: original[tid][k] for k in keep}, tid
    assert _cli("runs", "--check", NAME).code == 0


def test_resume_refuses_a_cut_table_before_ray(copy: Path) -> None:
    """A resumed sweep rewrites trials.csv from what it reads: a cut row is one error, not a lost trial."""
    table = copy / "runs" / NAME / "trials.csv"
    _cut_mid_row(table, 2)
    cut = table.read_bytes()
    out = _cli("sweep", f"runs/{NAME}/tiny.yaml", "--name", NAME, "--resume", "--no-progress")
    assert out.code == 2 and len(out.errors) == 1 and "trials.csv: line 4 (row 3)" in out.errors[0], out.output
    assert table.read_bytes() == cut


@pytest.fixture
def bad_npz_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import yaml

    from helpers.sweeps import tiny_space

    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.npz").write_bytes(b"this is not an archive\n" * 4)
    space = tiny_space(tmp_path / "tok.yaml", calibrated=False)
    data = yaml.safe_load(space.read_text())
    data["data"] = {"name": "tokens", "path": "bad.npz"}
    data["synergy"] = {"gen_metric": "nll"}  # a user's tokens have no swapped captions
    space.write_text(yaml.safe_dump(data))
    return space


def test_bad_data_file_is_one_error_before_training(bad_npz_space: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`data: {name: tokens, path: bad.npz}` with a file that is no archive: `validate`,
    `trial` and `sweep` each stop with one error naming the file, before any training (was:
    `trial` trained 0 steps and failed with numpy's message about pickled data)."""
    import searchvlm.sweep._driver as driver
    import searchvlm.train.trial

    def stub(*args: Any, **kwargs: Any) -> Any:
        raise ReachedWork("training started")

    monkeypatch.setattr(searchvlm.train.trial, "run_trial", stub)
    monkeypatch.setattr(driver, "ensure_ray", stub)
    space = str(bad_npz_space)
    for args in (("validate", space), ("trial", space, "--preset", "dense"), ("sweep", space, "--no-progress")):
        out = _cli(*args)
        assert out.code == 2 and len(out.errors) == 1, out.output
        assert "bad.npz: data.path" in out.errors[0] and "not an .npz archive" in out.errors[0], out.output
    assert not Path("runs").exists()  # the sweep refused before making its folder


def test_wrong_dtype_in_data_file_is_refused_by_validate(tmp_path: Path, bad_npz_space: Path) -> None:
    import numpy as np

    from helpers.data import valid_arrays

    arrays = valid_arrays()
    arrays["image_tokens"] = arrays["image_tokens"].astype(np.float32)
    np.savez(tmp_path / "bad.npz", **arrays)
    out = _cli("validate", str(bad_npz_space))
    assert out.code == 2 and "image_tokens = 'dtype float32': must be an integer array" in out.errors[0], out.output


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_baseline_entry_is_retrained(tmp_path: Path, damage: str) -> None:
    """A cut or garbled cache entry is trained again (one warning naming it) and rewritten whole."""
    from searchvlm.train.baselines import RunRecord, _write, get_baseline

    entry = tmp_path / "baselines" / "k.json"
    entry.parent.mkdir()
    _write(entry, RunRecord(tasks=("generation",), seed=1, val={"gen_nll": {10: 2.0}}))
    DAMAGES[damage](entry)
    fresh = RunRecord(tasks=("generation",), seed=1, val={"gen_nll": {10: 1.5}})
    with pytest.warns(DamagedFile, match=r"k\.json: corrupt baseline cache entry .*; retrained"):
        got = get_baseline(tmp_path, "k", lambda: fresh)
    assert got.val == fresh.val
    assert get_baseline(tmp_path, "k", lambda: pytest.fail("retrained twice")).val == fresh.val


def test_store_left_mid_transaction_by_a_killed_writer_is_not_damaged(tmp_path: Path) -> None:
    """A driver SIGKILLed while MLflow or Optuna wrote leaves a hot `-journal` beside the store:
    read-only SQLite cannot roll it back ("attempt to write a readonly database"), which made
    `sweep --resume` call the store damaged (found when the tiny test sweeps got faster). The
    check lets SQLite roll back, and the store holds its last committed rows; a journal beside
    a file that is no database does not make it one."""
    import signal
    import sqlite3
    import subprocess
    import sys

    from searchvlm.schema.results import store_problem

    db = tmp_path / "mlflow.db"
    with contextlib.closing(sqlite3.connect(db)) as con:
        con.execute("create table runs (x)")
        con.executemany("insert into runs values (?)", [(i,) for i in range(2000)])
        con.commit()
    killed = (f"import os, signal, sqlite3\ncon = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
              "con.execute('pragma cache_size = 1'); con.execute('begin'); con.execute('update runs set x = x + 1')\n"
              "os.kill(os.getpid(), signal.SIGKILL)")  # fmt: skip
    assert subprocess.run([sys.executable, "-c", killed]).returncode == -signal.SIGKILL
    assert Path(f"{db}-journal").stat().st_size > 0  # the hot journal of the unfinished update
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as con:
            con.execute("select count(*) from runs").fetchall()
    assert store_problem(db, "runs") is None
    with contextlib.closing(sqlite3.connect(db)) as con:
        assert con.execute("select count(*), sum(x) from runs").fetchone() == (2000, sum(range(2000)))
    assert store_problem(db, "studies") == "holds no 'studies' table (empty or not this kind of store)"
    garbage = tmp_path / "garbage.db"  # a journal beside a file that is no database: still damage
    garbage.write_bytes(b"not sqlite" * 100)
    Path(f"{garbage}-journal").write_bytes(b"\0" * 512)
    assert store_problem(garbage, "runs").startswith("not a readable SQLite database (file is not a database)")
    assert garbage.read_bytes() == b"not sqlite" * 100

"""Shared helpers of the reliability suite: tiny spaces, free ports, real services, checks.

Every service binds to 127.0.0.1 and is stopped by the fixture that started it (by its
process group, never by name).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import optuna
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PY = sys.executable
BIN = Path(PY).parent


def tiny_space(path: Path, samples: int = 4, steps: int = 20, concurrency: int = 2,
               presets: list[str] | None = None) -> Path:  # fmt: skip
    """quick.yaml shrunk to seconds per trial (20 steps, evaluation every 10)."""
    data = yaml.safe_load((ROOT / "search_spaces" / "quick.yaml").read_text())
    data["training"].update(steps=steps, eval_every=10)
    data["search"].update(samples=samples, concurrency=concurrency, scheduler={"kind": "none"})
    data["presets"] = [] if presets is None else presets
    path.write_text(yaml.safe_dump(data))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_group(proc: subprocess.Popen, grace: float = 20) -> None:
    """Stop a process we started in its own session, and everything it spawned."""
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def study(run_dir: Path, name: str) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=f"sqlite:///{run_dir / 'optuna.db'}")


def child_runs(uri: str, runs: Path, run_dir: Path) -> list:
    from searchvlm.results import read_meta
    from searchvlm.tracking import Tracker

    tracker = Tracker(uri, runs)
    tracker.parent_id = read_meta(run_dir / "sweep.json").parent_run_id
    return tracker.children()


def check_consistent(run_dir: Path, name: str, uri: str, runs: Path, samples: int) -> list[dict]:
    """Every trial exactly once in the table, the study and MLflow, with matching states."""
    from searchvlm.results import read_trials

    rows = read_trials(run_dir / "trials.csv")
    ids = [r["trial_id"] for r in rows]
    assert len(rows) == samples and len(set(ids)) == samples, ids
    assert sorted(r["number"] for r in rows) == list(range(samples))
    trials = study(run_dir, name).trials
    state = {"ok": "COMPLETE", "failed": "FAIL", "pruned": "PRUNED"}
    assert sorted(t.number for t in trials) == list(range(samples))
    by_number = {t.number: t for t in trials}
    for r in rows:
        assert by_number[r["number"]].state.name == state[r["status"]], r
    runs_ = child_runs(uri, runs, run_dir)
    assert sorted(c.data.tags["trial_id"] for c in runs_) == sorted(ids)
    assert {c.data.tags["trial_id"]: c.data.tags["status"] for c in runs_} == {
        r["trial_id"]: r["status"] for r in rows
    }
    assert all(c.info.status in ("FINISHED", "FAILED", "KILLED") for c in runs_)
    return rows


def wait_for(pred: Any, timeout: float, what: str, every: float = 0.3) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(every)
    raise TimeoutError(what)


def rows_of(table: Path) -> list[dict]:
    from searchvlm.results import read_trials

    try:
        return read_trials(table) if table.exists() else []
    except Exception:  # noqa: BLE001 - polled while a writer replaces it
        return []


# --------------------------------------------------------------------------- mlflow server


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 with a sqlite store; restartable on one port."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{self.root / 'm.db'}",
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
               "--artifacts-destination", str(self.root / "art")]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     cwd=self.root, start_new_session=True)  # fmt: skip

    def wait(self, timeout: float = 150) -> None:
        wait_for(self.healthy, timeout, f"mlflow server {self.url}", every=0.5)

    def healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, "mlflow server exited"
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)
            self.proc = None


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()  # ~20 s to come up on a loaded machine: started early, awaited late
    yield server
    server.stop()


# --------------------------------------------------------------------------- sockets (/proc)


def descendants(root: int) -> set[int]:
    """Every live process under `root` (from /proc; no psutil needed)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, frontier = set(), {root}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - out
        out |= frontier
    return out


def listening(pids: set[int]) -> list[tuple[str, int]]:
    """(ip, port) of every TCP socket in LISTEN state owned by `pids` (IPv4 and IPv6)."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    out = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # 0A = LISTEN
                out.append((_ip(f[1].split(":")[0], v6), int(f[1].split(":")[1], 16)))
    return out


def _ip(hexip: str, v6: bool) -> str:
    import ipaddress

    raw = bytes.fromhex(hexip)
    if not v6:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))

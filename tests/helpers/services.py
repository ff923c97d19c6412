"""Real services and processes for the end-to-end tests: free ports, process groups, polling,
an `mlflow server`, and the TCP sockets a process tree listens on (read from /proc).

Every service binds to 127.0.0.1 and is stopped by whoever started it (by its process
group, never by name).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from helpers import BIN


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


def wait_for(pred: Any, timeout: float, what: str, every: float = 0.3) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(every)
    raise TimeoutError(what)


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
        # no job runner: mlflow's huey consumers (GenAI jobs we never use) poll at ~10% of a core each
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     cwd=self.root, start_new_session=True, env=env)  # fmt: skip

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

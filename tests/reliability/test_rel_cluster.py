"""A real two-node Ray cluster on this machine (both nodes on loopback, token auth): the
worker node dies mid-sweep; its trial is recorded failed, the sweep completes and the
front comes from what finished. Also: a local Ray started by searchvlm listens on
127.0.0.1 only and has no dashboard.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from helpers import BIN, PY
from helpers.services import free_port, stop_group, wait_for
from helpers.sweeps import check_consistent, rows_of, tiny_space
from searchvlm.objectives.pareto import front

LOOPBACK = {"127.0.0.1", "::1", "::ffff:7f00:1"}


class Cluster:
    """`ray start --block` head and worker node, each in its own process group."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.tmp = tempfile.mkdtemp(prefix="rr", dir="/tmp")  # AF_UNIX paths: <= 107 bytes
        self.address = f"127.0.0.1:{self.port}"
        # multi-node: Ray 2.60 rewrites 127.0.0.1 to the machine's routable address (its
        # loopback-only mode forbids worker nodes); token auth guards the cluster
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
                    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}  # fmt: skip
        self.env.pop("RAY_ADDRESS", None)
        self.head = self._start(["--head", "--port", str(self.port), "--node-ip-address", "127.0.0.1",
                                 "--include-dashboard=false", "--temp-dir", self.tmp])  # fmt: skip
        self.worker: subprocess.Popen | None = None

    def _start(self, args: list[str], extra: dict[str, str] | None = None) -> subprocess.Popen:
        log = (self.root / f"node{len(list(self.root.glob('node*.log')))}.log").open("w")
        cmd = [str(BIN / "ray"), "start", "--num-cpus", "1", "--disable-usage-stats", "--block", *args]
        return subprocess.Popen(cmd, env={**self.env, **(extra or {})}, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip

    def add_worker(self) -> None:
        self.worker = self._start(["--address", self.address, "--node-ip-address", "127.0.0.1"])

    def alive_nodes(self) -> int:
        assert self.head.poll() is None, (self.root / "node0.log").read_text()[-2000:]
        code = ("import ray; ray.init(address='%s', log_to_driver=False); "
                "print(sum(n['Alive'] for n in ray.nodes()))") % self.address  # fmt: skip
        out = subprocess.run([PY, "-c", code], env=self.env, capture_output=True, text=True, timeout=120)
        return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else 0

    def stop(self) -> None:
        for proc in (self.worker, self.head):
            if proc is not None:
                stop_group(proc, grace=5)
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        c.add_worker()
        wait_for(lambda: c.alive_nodes() == 2, 180, "two live Ray nodes", every=2)
        yield c
    finally:
        c.stop()


@pytest.mark.slow
@pytest.mark.sweep
@pytest.mark.multiprocess  # a Ray cluster
def test_worker_node_lost_mid_sweep(cluster: Cluster, tmp_path: Path):
    space = tiny_space(tmp_path / "cl.yaml", samples=4, steps=40)
    runs = tmp_path / "runs"
    cmd = [str(BIN / "searchvlm"), "sweep", str(space), "--name", "cl", "--runs-dir", str(runs),
           "--address", cluster.address, "--no-progress"]  # fmt: skip
    driver = subprocess.Popen(cmd, env=cluster.env, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        wait_for(lambda: len(rows_of(runs / "cl" / "trials.csv")) >= 1 or driver.poll() is not None,
                 300, "a first finished trial")  # fmt: skip
        assert cluster.worker is not None
        os.killpg(cluster.worker.pid, signal.SIGKILL)  # the worker node is gone, mid-sweep
        out, _ = driver.communicate(timeout=400)
    finally:
        stop_group(driver)
    assert driver.returncode == 0, out.decode()[-3000:]
    rows = check_consistent(runs / "cl", "cl", f"sqlite:///{runs / 'mlflow.db'}", runs, samples=4)
    assert {r["status"] for r in rows} <= {"ok", "failed"}
    assert all(r["error"] for r in rows if r["status"] == "failed")
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok and {r["trial_id"] for r in front(rows)} <= {r["trial_id"] for r in ok}
    (tmp_path / "observed.json").write_text(json.dumps({r["trial_id"]: (r["status"], r["error"][:200]) for r in rows}))
    print(json.dumps({r["number"]: (r["status"], r["error"][:160]) for r in rows}))


@pytest.mark.sweep  # a local Ray in a child process
def test_local_ray_is_loopback_only_without_dashboard(tmp_path: Path):
    code = ("import json, os, sys, ray; sys.path.insert(0, %r); "
            "from helpers.services import descendants, listening; from searchvlm.sweep import ensure_ray; "
            "ensure_ray(num_cpus=1); node = ray._private.worker._global_node; "
            "print(json.dumps({'gcs': ray.get_runtime_context().gcs_address, "
            "'webui': node.address_info.get('webui_url'), "
            "'socks': listening(descendants(os.getpid()) | {os.getpid()})})); ray.shutdown()"
            ) % str(Path(__file__).parents[1])  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    out = subprocess.run([PY, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["gcs"].startswith("127.0.0.1:")
    assert not info["webui"]  # dashboard off by default
    assert info["socks"] and {ip for ip, _ in info["socks"]} <= LOOPBACK, info["socks"]
    assert 8265 not in {port for _, port in info["socks"]}


@pytest.mark.slow
@pytest.mark.sweep
@pytest.mark.multiprocess  # a Ray cluster
def test_local_ray_never_joins_the_cluster_ray_start_left(tmp_path: Path):
    """`ray start` records its address in $RAY_TMPDIR/ray/ray_current_cluster, where a bare ray.init()
    joins that cluster (and refuses num_cpus there); without an address, a sweep's Ray is its own."""
    port, tmp = free_port(), tempfile.mkdtemp(prefix="rr", dir="/tmp")  # AF_UNIX paths: <= 107 bytes
    # RAY_TMPDIR: the address file goes to tmp/ray/, not the machine's /tmp/ray (where it would outlive the
    # head and send other tests' bare ray.init() to a dead cluster); a token guards the head meanwhile
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    env.update(RAY_TMPDIR=tmp, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))
    cmd = [str(BIN / "ray"), "start", "--head", "--port", str(port), "--node-ip-address", "127.0.0.1", "--num-cpus",
           "1", "--include-dashboard=false", "--disable-usage-stats", "--block"]  # fmt: skip
    with (tmp_path / "head.log").open("w") as log:
        head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    current = Path(tmp) / "ray" / "ray_current_cluster"
    code = ("import ray, sys; sys.path.insert(0, %r); from searchvlm.sweep import ensure_ray; "
            "ensure_ray(num_cpus=1); print(ray.get_runtime_context().gcs_address); ray.shutdown()"
            ) % str(Path(__file__).parents[1])  # fmt: skip
    try:
        wait_for(lambda: current.exists() and current.read_text().strip().endswith(f":{port}"), 180,
                 "ray start's address file", every=1)  # fmt: skip
        out = subprocess.run([PY, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    finally:
        stop_group(head, grace=5)
        shutil.rmtree(tmp, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-2000:]
    gcs = out.stdout.strip().splitlines()[-1]
    assert gcs.startswith("127.0.0.1:") and not gcs.endswith(f":{port}"), gcs

"""Two Ray nodes on this machine that do NOT share the data and runs folders (issue 38): the
worker node runs in its own mount namespace (`unshare -m`) with a private tmpfs over each,
the head has no CPUs for trials, so every baseline and trial runs on the masked node.

- The data file the driver reads is missing there: the sweep stops before any training with
  one `error:` line naming that node and the file; a different file at the same path there
  is named too (its content differs).
- With the same file there, the sweep completes: every record (trials.csv, sweep.json, the
  study) is on the driver's disk only, and the driver's baseline cache holds every up-front
  baseline, trained on the masked node and shipped back (`confirm` and `decide` find them).
  The driver's `$SEARCHVLM_PROFILE` reaches the trials there (their stats land on that node),
  and a warning the trials raise there reaches the driver: one line on its stderr, every
  trial's in sweep.log and on its MLflow run (the driver started as `ray job submit` starts
  it, with the job's runtime_env, which the sweep's own is merged with).

Needs root (or CAP_SYS_ADMIN) for `unshare -m`; skipped where the machine refuses it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import yaml

from helpers import BIN, PY
from helpers.data import valid_arrays
from helpers.services import free_port, stop_group, wait_for
from helpers.sweeps import child_runs, rows_of, tiny_space
from searchvlm.schema._host import KERNELS_ENV, PINS
from searchvlm.schema.space import load_space
from searchvlm.train.trial import reference_labels


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs none /mnt 2>/dev/null || mount -t tmpfs none /tmp"],
                           capture_output=True, timeout=30)  # fmt: skip
    return probe.returncode == 0


NO_UNSHARE = "unshare -m with a tmpfs mount is not allowed here"
pytestmark = [pytest.mark.slow, pytest.mark.sweep, pytest.mark.multiprocess,  # a 2-node Ray cluster
              pytest.mark.skipif(not _can_unshare(), reason=NO_UNSHARE)]  # fmt: skip


class MaskedCluster:
    """A `ray start --block` head with 0 CPUs, and a 1-CPU worker node whose mount namespace
    has an empty tmpfs over each folder of `masked` (each node in its own process group)."""

    def __init__(self, root: Path, masked: list[Path]) -> None:
        self.root, self.masked, self.port = root, masked[0], free_port()
        self.tmp = tempfile.mkdtemp(prefix="rm", dir="/tmp")  # AF_UNIX paths: <= 107 bytes
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
                    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}  # fmt: skip
        self.env.pop("RAY_ADDRESS", None)
        for key in (KERNELS_ENV, *PINS["avx2"]):  # the nodes' own environment: no kernel pin of the driver's
            self.env.pop(key, None)
        ray_start = [str(BIN / "ray"), "start", "--disable-usage-stats", "--block"]
        self.head = self._spawn([*ray_start, "--head", "--num-cpus", "0", "--port", str(self.port),
                                 "--node-ip-address", "127.0.0.1", "--include-dashboard=false",
                                 "--temp-dir", self.tmp])  # fmt: skip
        worker = " ".join([*ray_start, "--num-cpus", "1", "--resources", "'{\"masked\": 1}'",
                           "--address", self.address, "--node-ip-address", "127.0.0.1"])  # fmt: skip
        self.worker = self._spawn(["unshare", "-m", "--propagation", "private", "sh", "-c",
                                   " && ".join([*(f"mount -t tmpfs masked {m}" for m in masked),
                                                f"exec {worker}"])])  # fmt: skip

    def _spawn(self, cmd: list[str]) -> subprocess.Popen:
        log = (self.root / f"node{len(list(self.root.glob('node*.log')))}.log").open("w")
        return subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def nodes(self) -> list[dict]:
        assert self.head.poll() is None, (self.root / "node0.log").read_text()[-2000:]
        assert self.worker.poll() is None, (self.root / "node1.log").read_text()[-2000:]
        code = ("import json, ray; ray.init(address='%s', log_to_driver=False); "
                "print(json.dumps([n for n in ray.nodes() if n['Alive']]))") % self.address  # fmt: skip
        out = subprocess.run([PY, "-c", code], env=self.env, capture_output=True, text=True, timeout=120)
        return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else []

    def on_worker(self, script: str) -> None:
        """Run `script` (sh) inside the worker node's mount namespace."""
        subprocess.run(["nsenter", "-t", str(self.worker.pid), "-m", "sh", "-c", script], check=True, timeout=30)

    def stop(self) -> None:
        for proc in (self.worker, self.head):
            stop_group(proc, grace=5)
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def masked(tmp_path: Path) -> Iterator[MaskedCluster]:
    folders = [tmp_path / "data", tmp_path / "runs"]
    for folder in folders:
        folder.mkdir()
    c = MaskedCluster(tmp_path, folders)
    try:
        wait_for(lambda: len(c.nodes()) == 2, 180, "two live Ray nodes", every=2)
        yield c
    finally:
        c.stop()


def _sweep(cluster: MaskedCluster, space: Path, runs: Path, cwd: Path,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:  # fmt: skip
    """`searchvlm sweep` as the driver, with `env` added to its environment (not the nodes')."""
    cmd = [str(BIN / "searchvlm"), "sweep", str(space), "--name", "mk", "--runs-dir", str(runs),
           "--address", cluster.address, "--no-progress"]  # fmt: skip
    return subprocess.run(cmd, env={**cluster.env, **(env or {})}, cwd=cwd, capture_output=True, text=True,
                          timeout=400)  # fmt: skip


HERE = Path(__file__).resolve().parent  # `_faults` (the warning injected into the trials)


def _job_env(plan: Path) -> str:
    """What `ray job submit --runtime-env-json` hands its driver (RAY_JOB_CONFIG_JSON_ENV_VAR):
    a runtime_env whose setup hook makes every trial raise the planned warning."""
    path = os.pathsep.join([str(HERE), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])
    return json.dumps(
        {
            "runtime_env": {
                "worker_process_setup_hook": "_faults.install",
                "env_vars": {"PYTHONPATH": path, "SEARCHVLM_FAULT_PLAN": str(plan)},
            }
        }
    )


def _tokens_space(cluster: MaskedCluster, tmp_path: Path, samples: int) -> Path:
    np.savez(cluster.masked / "t.npz", **valid_arrays())  # on the driver's disk: the worker node sees its tmpfs
    space = tiny_space(tmp_path / "mk.yaml", samples=samples, concurrency=1)
    raw = yaml.safe_load(space.read_text())
    raw["data"] = {"name": "tokens", "path": "data/t.npz"}  # relative: made absolute where the driver runs
    space.write_text(yaml.safe_dump(raw))
    return space


def test_a_node_without_the_data_file_stops_the_sweep_before_training(masked: MaskedCluster, tmp_path: Path):
    space = _tokens_space(masked, tmp_path, samples=1)
    nodes = masked.nodes()
    worker = next(n["NodeID"] for n in nodes if n["Resources"].get("masked"))
    head = next(n["NodeID"] for n in nodes if not n["Resources"].get("masked"))
    runs = tmp_path / "runs"
    target = masked.masked / "t.npz"

    out = _sweep(masked, space, runs, tmp_path)
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error: ")]
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-3000:]
    assert len(lines) == 1, out.stderr[-3000:]
    assert str(target) in lines[0] and worker[:12] in lines[0] and head[:12] not in lines[0], lines[0]
    assert "file not found on this node" in lines[0]
    assert not (runs / "mk").exists()  # stopped before the sweep's folder, let alone a trial

    # a file at the same path on that node, with other content: named as such
    other = tmp_path / "other.npz"
    np.savez(other, **valid_arrays(15))
    masked.on_worker(f"cp {other} {target}")
    out = _sweep(masked, space, runs, tmp_path)
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error: ")]
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-3000:]
    assert str(target) in lines[0] and worker[:12] in lines[0] and "differs from the driver's copy" in lines[0]
    assert not (runs / "mk").exists()


def test_with_the_file_on_the_node_every_record_baseline_and_warning_reaches_the_driver(masked: MaskedCluster,
                                                                               tmp_path: Path):  # fmt: skip
    space = _tokens_space(masked, tmp_path, samples=2)
    target = masked.masked / "t.npz"
    shipped = tmp_path / "shipped.npz"
    shutil.copy2(target, shipped)
    masked.on_worker(f"cp {shipped} {target}")  # the same file at the same path on the worker node
    runs = tmp_path / "runs"
    plan = tmp_path / "plan.json"  # (outside the masked folders: the node reads it)
    plan.write_text(json.dumps({name: {"kind": "warn", "at": 0} for name in ("t0000", "t0001")}))
    prof = runs / "prof"  # the driver's $SEARCHVLM_PROFILE, masked on that node
    # the driver opts out of the kernel pin: the trials on that node must too, though importing
    # searchvlm there would pin them (the opt-out travels with the job, as the profile folder)
    env = {"SEARCHVLM_PROFILE": str(prof), "RAY_JOB_CONFIG_JSON_ENV_VAR": _job_env(plan), KERNELS_ENV: "native"}
    out = _sweep(masked, space, runs, tmp_path, env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    rows = rows_of(runs / "mk" / "trials.csv")
    assert len(rows) == 2 and {r["status"] for r in rows} == {"ok"}, [(r["status"], r["error"]) for r in rows]
    cached = sorted(p.name for p in (runs / "cache" / "baselines").glob("*.json"))
    up_front = load_space(space)
    assert len(cached) == len(up_front.seeds) * len(reference_labels(up_front.trial_config(None))) >= 2, cached
    # the worker node's runs folder (its tmpfs) has the cache it trained into, and none of the records
    script = f"cd {runs} && find . -name '*.json' -path '*baselines*' | sort; ls {runs / 'mk'} 2>/dev/null || true"
    listing = subprocess.run(["nsenter", "-t", str(masked.worker.pid), "-m", "sh", "-c", script],
                             capture_output=True, text=True, timeout=30, check=True).stdout  # fmt: skip
    assert all(name in listing for name in cached), listing
    assert "trials.csv" not in listing and "sweep.json" not in listing and "optuna.db" not in listing, listing

    # the variable reached both trials on that node: their stats are there, none on the driver's disk
    profiles = subprocess.run(["nsenter", "-t", str(masked.worker.pid), "-m", "sh", "-c", f"ls {prof}"],
                              capture_output=True, text=True, timeout=30, check=True).stdout.split()  # fmt: skip
    assert sorted(profiles) == ["t0000.prof", "t0001.prof"], profiles
    assert not prof.exists()
    assert all(r["cpu"] and "kernels]" not in r["cpu"] for r in rows), [r["cpu"] for r in rows]
    # the warning both trials raised there: once on the driver's stderr, each trial's in sweep.log and MLflow
    text = "UserWarning: injected warning past step 0"
    said = [ln for ln in out.stderr.splitlines() if text in ln]
    (node,) = {r["node"] for r in rows}  # the masked node's IP, as the trials recorded it
    assert len(said) == 1 and said[0].startswith("warning: t000") and f" on node {node}: " in said[0], said
    logged = [ln for ln in (runs / "mk" / "sweep.log").read_text().splitlines() if text in ln]
    assert len(logged) == 2 and all("WARNING searchvlm.train.trial: t000" in ln for ln in logged), logged
    tags = [r.data.tags.get("warnings", "") for r in child_runs(f"sqlite:///{runs / 'mlflow.db'}", runs, runs / "mk")]
    assert len(tags) == 2 and all(t.startswith(text) for t in tags), tags

"""Faults inside one machine's Ray session: failing trials, a SIGKILLed driver, two sweeps
writing one MLflow sqlite store at once.

One in-process Ray session (2 CPUs, 127.0.0.1, no dashboard) carries a test-only
`worker_process_setup_hook` (`_faults.install`) that injects the planned trial faults.
Other drivers (subprocesses) join it through `--address`, as a user's cluster would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
import ray

from helpers import PY
from helpers.services import stop_group, wait_for
from helpers.sweeps import check_consistent, child_runs, rows_of, study, tiny_space
from searchvlm.objectives.pareto import front, pareto_ranks
from searchvlm.sweep import run_sweep
from searchvlm.sweep._cluster import loopback_only
from searchvlm.tracking import Tracker

pytestmark = [pytest.mark.slow, pytest.mark.sweep]
HERE = Path(__file__).resolve().parent  # where `_faults` lives (on the Ray workers' PYTHONPATH)
DRIVER = ("import sys; from searchvlm.sweep import SweepOptions, run_sweep; "
          "run_sweep(sys.argv[1], name=sys.argv[2], runs_dir=sys.argv[3], options=SweepOptions(address=sys.argv[4]), "
          "progress=False)")  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")  # one baseline cache for the module


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults") / "plan.json"


@pytest.fixture(scope="module")
def address(plan: Path) -> Iterator[str]:
    path = [str(HERE), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]  # the caller's too
    env = {"PYTHONPATH": os.pathsep.join(path), "SEARCHVLM_FAULT_PLAN": str(plan)}
    loopback_only()  # as ensure_ray does: 127.0.0.1 only (drivers inherit the setting)
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             runtime_env={"env_vars": env, "worker_process_setup_hook": "_faults.install"})  # fmt: skip
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def driver(space: Path, name: str, runs: Path, address: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([PY, "-c", DRIVER, str(space), name, str(runs), address], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip


def _planned(plan: Path, faults: dict, space: Path, name: str, runs: Path):
    """`run_sweep` in this process with `faults` planned for its trials (the plan removed after)."""
    plan.write_text(json.dumps(faults))
    try:
        return run_sweep(space, name=name, runs_dir=runs, progress=False)
    finally:
        plan.unlink()


def test_diverging_and_raising_trials_fail_and_rank_last(runs: Path, plan: Path, address: str, tmp_path: Path):
    faults = {"t0001": {"kind": "diverge", "at": 10}, "t0002": {"kind": "raise", "at": 10}}
    s = _planned(plan, faults, tiny_space(tmp_path / "f.yaml", samples=4), "faulty", runs)
    rows = check_consistent(s.run_dir, "faulty", s.tracking_uri, runs, samples=4)
    by = {r["number"]: r for r in rows}
    assert "TrainingDiverged" in by[1]["error"] and "non-finite" in by[1]["error"] and "at step 10" in by[1]["error"]
    assert "injected fault at step 10" in by[2]["error"]
    for n in (1, 2):
        assert by[n]["status"] == "failed" and by[n]["steps_done"] == 10 and by[n]["policy_json"]
    assert {by[0]["status"], by[3]["status"]} == {"ok"}  # the sweep went on
    ranks = dict(zip((r["number"] for r in rows), pareto_ranks(rows)))
    assert ranks[1] == ranks[2] > max(ranks[0], ranks[3])  # failed rank last
    assert {r["number"] for r in front(rows)} <= {0, 3} and front(rows)
    told = {t.number: t for t in study(s.run_dir, "faulty").trials}
    assert "injected fault" in told[2].user_attrs["error"]
    children = child_runs(s.tracking_uri, runs, s.run_dir)
    mlflow_err = {c.data.tags["trial_id"]: c.data.tags.get("error", "") for c in children}
    assert "non-finite" in mlflow_err[by[1]["trial_id"]]


def test_sigkilled_driver_resumes_without_loss_or_retraining(runs: Path, address: str, tmp_path: Path):
    space = tiny_space(tmp_path / "k.yaml", samples=5, steps=40)
    table = runs / "killed" / "trials.csv"
    proc = driver(space, "killed", runs, address, tmp_path)
    try:
        wait_for(lambda: len(rows_of(table)) >= 2 or proc.poll() is not None, 240, "two finished trials")
        os.killpg(proc.pid, signal.SIGKILL)  # no handler runs: the worst case
        proc.wait(timeout=30)
    finally:
        stop_group(proc)
    before = {r["trial_id"]: r for r in rows_of(table)}
    assert 2 <= len(before) < 5, "killed too late to test anything"
    s = run_sweep(space, name="killed", runs_dir=runs, resume=True, progress=False)
    rows = check_consistent(s.run_dir, "killed", s.tracking_uri, runs, samples=5)
    after = {r["trial_id"]: r for r in rows}
    for tid, r in before.items():  # finished before the kill: kept as they were
        assert (after[tid]["end_time"], after[tid]["synergy_gain"]) == (r["end_time"], r["synergy_gain"])
    client = Tracker(s.tracking_uri, runs).client
    for c in child_runs(s.tracking_uri, runs, s.run_dir):
        if c.data.tags["trial_id"] in before:  # trained once: one first evaluation round
            steps = [m.step for m in client.get_metric_history(c.info.run_id, "und_acc")]
            assert steps.count(10) == 1, (c.data.tags["trial_id"], steps)


def test_two_sweeps_write_one_sqlite_store(runs: Path, address: str, tmp_path: Path):
    procs = {n: driver(tiny_space(tmp_path / f"{n}.yaml", samples=3, concurrency=1), n, runs, address, tmp_path)
             for n in ("left", "right")}  # fmt: skip
    try:
        codes = {n: (p.wait(timeout=400), p.stderr.read().decode()[-2000:]) for n, p in procs.items()}
    finally:
        for p in procs.values():
            stop_group(p)
    assert all(code == 0 for code, _ in codes.values()), codes
    uri = f"sqlite:///{runs / 'mlflow.db'}"
    parents = set()
    for n in procs:
        rows = check_consistent(runs / n, n, uri, runs, samples=3)
        assert {r["status"] for r in rows} == {"ok"}
        parents.add(json.loads((runs / n / "sweep.json").read_text())["parent_run_id"])
    assert len(parents) == 2


def test_a_warning_trials_raise_in_their_workers_reaches_the_driver_once(runs: Path, plan: Path, address: str,
                                                                         tmp_path: Path, capsys):  # fmt: skip
    """A Ray worker's output stays in its log (`log_to_driver=False`); the trials' warnings come
    with their reports: one line on stderr for the sweep, one per trial in sweep.log and MLflow."""
    faults = {"t0000": {"kind": "warn", "at": 5}, "t0001": {"kind": "warn", "at": 5}}
    s = _planned(plan, faults, tiny_space(tmp_path / "w.yaml", samples=2), "warned", runs)
    rows = check_consistent(s.run_dir, "warned", s.tracking_uri, runs, samples=2)
    assert {r["status"] for r in rows} == {"ok"}  # a warning fails nothing
    text = "UserWarning: injected warning past step 5"
    said = [ln for ln in capsys.readouterr().err.splitlines() if text in ln]
    (node,) = {r["node"] for r in rows}
    assert len(said) == 1 and said[0].startswith("warning: t000") and f" on node {node}: " in said[0], said
    logged = [ln for ln in (s.run_dir / "sweep.log").read_text().splitlines() if text in ln]
    assert len(logged) == 2 and {ln.split("searchvlm.train.trial: ")[1][:5] for ln in logged} == {"t0000", "t0001"}
    tags = [r.data.tags.get("warnings", "") for r in child_runs(s.tracking_uri, runs, s.run_dir)]
    assert len(tags) == 2 and all(t.startswith(text) and t.count("\n") == 0 for t in tags), tags

"""End-to-end sweeps on the real stack: Ray Tune + Optuna study + MLflow + run_trial.

One Ray session and one runs directory (so one baseline cache) are shared by the module.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from searchvlm.errors import ConfigError
from searchvlm.pareto import front
from searchvlm.results import read_meta, read_trials
from searchvlm.sweep import ensure_ray, run_sweep, shutdown_ray
from searchvlm.sweep._moasha import MOASHA, keeps, rank_order, rung_levels
from searchvlm.tracking import Tracker

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def tiny_space(path: Path, samples: int = 4, scheduler: dict | None = None, steps: int = 20,
               presets: list[str] | None = None) -> Path:  # fmt: skip
    data = yaml.safe_load((ROOT / "search_spaces" / "quick.yaml").read_text())
    data["training"].update(steps=steps, eval_every=10)
    data["search"].update(samples=samples, concurrency=2, scheduler=scheduler or {"kind": "none"})
    data["presets"] = ["himix"] if presets is None else presets
    data.pop("calibration", None)  # measured for quick.yaml's training, not for these few steps
    path.write_text(yaml.safe_dump(data))
    return path


def study(run_dir: Path, name: str) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=f"sqlite:///{run_dir / 'optuna.db'}")


def children(uri: str, runs: Path, run_dir: Path) -> list:
    tracker = Tracker(uri, runs)
    tracker.parent_id = read_meta(run_dir / "sweep.json").parent_run_id
    return tracker.children()


def check_consistent(run_dir: Path, name: str, uri: str, runs: Path) -> list[dict]:
    """Every trial exactly once in the table, the study and MLflow, with matching states."""
    rows = read_trials(run_dir / "trials.csv")
    ids = [r["trial_id"] for r in rows]
    assert len(ids) == len(set(ids))
    st = study(run_dir, name)
    assert [d.name for d in st.directions] == ["MINIMIZE", "MAXIMIZE"]
    state = {"ok": "COMPLETE", "failed": "FAIL", "pruned": "PRUNED"}
    by_number = {t.number: t for t in st.trials}
    assert len(st.trials) == len(rows)
    for r in rows:
        assert by_number[r["number"]].state.name == state[r["status"]], r
    runs_ = children(uri, runs, run_dir)
    assert sorted(c.data.tags["trial_id"] for c in runs_) == sorted(ids)
    assert {c.data.tags["trial_id"]: c.data.tags["status"] for c in runs_} == {
        r["trial_id"]: r["status"] for r in rows
    }
    return rows


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real `mlflow server` on 127.0.0.1 (started early: it takes ~20 s to come up)."""
    d = tmp_path_factory.mktemp("mlflow")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [str(Path(PY).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{d / 'm.db'}",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--artifacts-destination", str(d / "art")]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=d)
    url = f"http://127.0.0.1:{port}"
    yield url, proc
    proc.terminate()
    proc.wait(timeout=30)


def wait_health(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, "mlflow server exited"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


@pytest.fixture(scope="module")
def ray_session(mlflow_server):
    ensure_ray(num_cpus=2)
    yield
    shutdown_ray()


# --------------------------------------------------------------------------- unit: MO-ASHA


def test_rung_levels():
    assert rung_levels(10, 3, 100) == [10, 30, 90]
    assert rung_levels(100, 3, 500) == [100, 300]


def test_rank_order_front_then_crowding():
    pts = np.array([[0.5, -0.1], [0.3, -0.2], [0.9, 0.0], [np.inf, np.inf]])
    assert rank_order(pts).tolist() == [1, 0, 2, 3]
    assert keeps(pts, 1, 3) and keeps(pts, 0, 3) and not keeps(pts, 2, 3)


def test_moasha_rung_decisions():
    s = MOASHA(["flops_ratio", "synergy_gain"], ["min", "max"], grace_steps=10, max_steps=100,
               reduction_factor=3)  # fmt: skip
    good = {"flops_ratio": 0.5, "synergy_gain": 0.2}
    bad = {"flops_ratio": 0.9, "synergy_gain": -0.1}  # dominated by `good`
    assert s.decide("a", 10, good) == "CONTINUE"  # first at the rung
    assert s.decide("b", 10, bad) == "STOP"  # top ceil(2/3)=1 only
    assert s.decide("c", 10, {"flops_ratio": 0.4, "synergy_gain": 0.3}) == "CONTINUE"
    assert s.decide("a", 20, good) == "CONTINUE"  # between rungs: no decision
    assert s.decide("d", 10, {"flops_ratio": None, "synergy_gain": 1.0}) == "STOP"  # missing = worst
    assert s.stopped == {"b", "d"}


# --------------------------------------------------------------------------- unit: the searcher


def test_searcher_names_metrics_and_stores_trial_ids(tmp_path: Path):
    """The study names its objectives and each asked trial carries the searchvlm trial id
    (no Ray session needed: the searcher is driven the way Tune drives it)."""
    from searchvlm.space import load_space
    from searchvlm.sweep._searcher import make_searcher

    space = load_space(tiny_space(tmp_path / "s.yaml", presets=["himix"]))
    db = tmp_path / "optuna.db"
    searcher = make_searcher(space, "s", str(db))
    config = searcher.suggest("a1b2c3d4")
    assert config["preset"] == "himix"
    searcher.suggest("e5f6a7b8")
    searcher.on_trial_complete("a1b2c3d4", {"final": True, "status": "ok", "flops_ratio": np.float32(0.5),
                                            "synergy_gain": np.float64(0.1)})  # fmt: skip
    st = study(tmp_path, "s")
    assert st.metric_names == ["flops_ratio", "synergy_gain"]
    got = {t.number: (t.state.name, t.user_attrs.get("searchvlm_trial_id")) for t in st.trials}
    assert got == {0: ("COMPLETE", "a1b2c3d4"), 1: ("RUNNING", "e5f6a7b8")}
    assert st.trials[0].values == pytest.approx([0.5, 0.1])
    again = make_searcher(space, "s", str(db))  # a second searcher on the study keeps the names
    assert again._ot_study.metric_names == ["flops_ratio", "synergy_gain"]


def test_searcher_answers_repeats_and_waits_for_running_twins(tmp_path: Path):
    """Driven as Tune drives it: a repeat of a running trial waits (suggest -> None, no new
    Optuna trial), is answered once the twin ends ok, and a failed twin is not reused."""
    from searchvlm.config import TrialResult
    from searchvlm.space import load_space
    from searchvlm.sweep._searcher import make_searcher

    space = load_space(repeat_space(tmp_path / "s.yaml"))
    searcher = make_searcher(space, "s", str(tmp_path / "optuna.db"))
    first = searcher.suggest("a")
    assert "duplicate_of" not in first
    assert searcher.suggest("b") is None and searcher.suggest("c") is None  # waits for "a"
    assert len(study(tmp_path, "s").trials) == 2  # the waiting proposal holds its one trial
    res = TrialResult(status="ok", flops_ratio=0.5, synergy_gain=0.1)
    searcher.on_trial_complete("a", {"final": True, "status": "ok", "flops_ratio": 0.5, "synergy_gain": 0.1,
                                     "result_json": res.model_dump_json()})  # fmt: skip
    second = searcher.suggest("d")
    assert second["duplicate_of"] == "a" and second["optuna_number"] == 1
    assert TrialResult.model_validate_json(second["reuse_json"]) == res
    third = searcher.suggest("e")
    assert third["duplicate_of"] == "a" and third["optuna_number"] == 2
    attrs = {t.number: t.user_attrs for t in study(tmp_path, "s").trials}
    assert [(attrs[n].get("searchvlm_trial_id"), attrs[n].get("duplicate_of")) for n in range(3)] == [
        ("a", None), ("d", "a"), ("e", "a")]

    other = make_searcher(space, "s2", str(tmp_path / "optuna.db"))  # a twin that fails is retrained
    other.suggest("f")
    assert other.suggest("g") is None
    other.on_trial_complete("f", {"final": True, "status": "failed", "error": "boom"})
    retry = other.suggest("h")
    assert "duplicate_of" not in retry and other.twins.running == {other.twins.keys["h"]: "h"}


# --------------------------------------------------------------------------- end to end


def test_bad_space_fails_before_ray(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("search: {sampler: bayes}\nmodel: {num_layers: 4}\n")
    with pytest.raises(ConfigError) as err:
        run_sweep(bad, runs_dir=tmp_path / "runs", progress=False)
    assert "search.sampler" in str(err.value) and "bad.yaml" in str(err.value)
    assert not (tmp_path / "runs").exists()


def test_resume_refuses_changed_samples_or_space(tmp_path: Path):
    from searchvlm.space import load_space
    from searchvlm.sweep._driver import RAY_DIR, _init_run_dir, _resume_space

    space_path = tiny_space(tmp_path / "r.yaml", samples=5)
    run_dir = tmp_path / "runs" / "r"
    _init_run_dir(run_dir, space_path, load_space(space_path), "r", "sqlite:///unused.db")
    (run_dir / RAY_DIR).mkdir()
    (run_dir / RAY_DIR / "tuner.pkl").write_bytes(b"")  # an interrupted sweep's state (the checks come first)
    recorded = (run_dir / "sweep.json").read_bytes()
    for same in (None, 5):  # the recorded values, given or not
        space = _resume_space(run_dir, space_path, load_space(space_path), same, None)
        assert (space.search.samples, space.search.concurrency) == (5, 2)
    with pytest.raises(ConfigError) as err:
        run_sweep(space_path, name="r", runs_dir=tmp_path / "runs", samples=9, resume=True, progress=False)
    assert "--samples = 9" in str(err.value) and "started with samples = 5" in str(err.value)
    data = yaml.safe_load(space_path.read_text())
    data["training"]["steps"] = 21
    space_path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        run_sweep(space_path, name="r", runs_dir=tmp_path / "runs", resume=True, progress=False)
    assert str(space_path) in str(err.value) and "differs from the space sweep 'r' started with" in str(err.value)
    assert (run_dir / "sweep.json").read_bytes() == recorded  # nothing recorded was touched


def test_resume_extends_only_a_finished_sweep(tmp_path: Path):
    from searchvlm.config import TrialResult
    from searchvlm.results import trial_row, write_trials
    from searchvlm.space import load_space
    from searchvlm.sweep._driver import _extra_trials, _init_run_dir, _resume_space

    space_path = tiny_space(tmp_path / "r.yaml", samples=2)
    run_dir = tmp_path / "runs" / "r"
    _init_run_dir(run_dir, space_path, load_space(space_path), "r", "sqlite:///unused.db")
    rows = [trial_row(TrialResult(status="ok", flops_ratio=0.5, synergy_gain=0.0), f"t{i}", i) for i in range(2)]
    write_trials(run_dir / "trials.csv", rows[:1])
    with pytest.raises(ConfigError, match=r"--samples = 3: sweep 'r' started with samples = 2 and is unfinished \(1 trials"):
        _resume_space(run_dir, space_path, load_space(space_path), 3, None)
    write_trials(run_dir / "trials.csv", rows)
    space = _resume_space(run_dir, space_path, load_space(space_path), 3, 1)
    assert (space.search.samples, space.search.concurrency, _extra_trials(run_dir, space)) == (3, 1, 1)
    same = _resume_space(run_dir, space_path, load_space(space_path), None, None)
    assert same.search.samples == 2 and _extra_trials(run_dir, same) == 0
    with pytest.raises(ConfigError, match="a sweep can be extended, never shrunk"):
        _resume_space(run_dir, space_path, load_space(space_path), 1, None)
    with pytest.raises(ConfigError, match="differs from the space sweep 'r' started with"):
        _resume_space(run_dir, space_path, load_space(space_path, ["training.steps=30"]), 3, None)


@pytest.mark.slow
def test_sweep_sqlite(runs: Path, ray_session, tmp_path: Path, capfd):
    space = tiny_space(tmp_path / "tiny.yaml", samples=4)
    s = run_sweep(space, name="e2e", runs_dir=runs, progress=False)
    from searchvlm.space import load_space

    warning = load_space(space).synergy_warning()  # the tiny space drops quick.yaml's calibration
    assert "unmeasured" in warning and f"warning: {space}: {warning}" in capfd.readouterr().err  # warned at start
    rows = check_consistent(s.run_dir, "e2e", s.tracking_uri, runs)
    assert s.tracking_uri == f"sqlite:///{runs / 'mlflow.db'}"
    assert len(rows) == 4 and rows[0]["preset"] == "himix"
    assert {r["status"] for r in rows} == {"ok"}
    assert (s.run_dir / "tiny.yaml").exists() and (s.run_dir / "ray").is_dir()
    child = children(s.tracking_uri, runs, s.run_dir)[0]
    tracker = Tracker(s.tracking_uri, runs)
    steps = [m.step for m in tracker.client.get_metric_history(child.info.run_id, "synergy_gain")]
    assert 10 in steps and 20 in steps  # every evaluation round, with its step
    assert "policy.json" in [a.path for a in tracker.client.list_artifacts(child.info.run_id)]
    assert child.data.params["und.mode"] in ("query_drop", "skip", "drop")
    with pytest.raises(ConfigError, match="--resume"):
        run_sweep(space, name="e2e", runs_dir=runs, progress=False)


@pytest.mark.slow
def test_moasha_against_mlflow_server(runs: Path, ray_session, mlflow_server, tmp_path: Path):
    url, proc = mlflow_server
    wait_health(url, proc)
    space = tiny_space(tmp_path / "asha.yaml", samples=5, steps=30, presets=[],
                       scheduler={"kind": "mo_asha", "reduction_factor": 4, "grace_steps": 10})  # fmt: skip
    s = run_sweep(space, name="asha", runs_dir=runs, tracking_uri=url, progress=False)
    rows = check_consistent(s.run_dir, "asha", url, runs)
    pruned = [r for r in rows if r["status"] == "pruned"]
    assert pruned, "eta=4 with 5 trials must stop someone at the first rung"
    assert all(r["steps_done"] < 30 for r in pruned)
    on_front = {r["trial_id"] for r in front(rows)}
    assert not on_front & {r["trial_id"] for r in pruned}
    best = {t.number for t in study(s.run_dir, "asha").best_trials}
    assert not best & {r["number"] for r in pruned}


@pytest.mark.slow
def test_interrupted_sweep_resumes(runs: Path, ray_session, tmp_path: Path):
    space = tiny_space(tmp_path / "res.yaml", samples=5, steps=40)
    code = ("import sys; from searchvlm.sweep import run_sweep; "
            "run_sweep(sys.argv[1], name='res', runs_dir=sys.argv[2], progress=False)")  # fmt: skip
    proc = subprocess.Popen([PY, "-c", code, str(space), str(runs)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    table = runs / "res" / "trials.csv"
    end = time.monotonic() + 180
    while time.monotonic() < end and not (table.exists() and len(read_trials(table)) >= 2):
        time.sleep(0.3)
    proc.send_signal(signal.SIGINT)  # Ctrl-C: Tune saves its state and stops
    assert proc.wait(timeout=120) == 0
    before = {r["trial_id"]: r for r in read_trials(table)}
    assert 2 <= len(before) < 5
    s = run_sweep(space, name="res", runs_dir=runs, resume=True, progress=False)
    rows = check_consistent(s.run_dir, "res", s.tracking_uri, runs)
    assert len(rows) == 5
    after = {r["trial_id"]: r for r in rows}
    for tid, r in before.items():  # finished trials were not retrained
        assert after[tid]["end_time"] == r["end_time"] and after[tid]["synergy_gain"] == r["synergy_gain"]


def test_progress_lines_off_a_terminal_and_eta_on_one():
    import io

    from rich.console import Console

    from searchvlm.sweep._progress import LiveView, clock

    assert [clock(s) for s in (None, 4.4, 65, 3725)] == ["?", "4s", "1m05s", "1h02m"]
    buf = io.StringIO()
    view = LiveView("s", 4, Console(file=buf, width=80))
    assert view.plain  # a StringIO is no terminal
    done = {"trial_id": "a", "number": 0, "status": "ok", "flops_ratio": 0.5, "synergy_gain": -0.0123}
    view.start([done])  # one trial recorded before this session (a resume): not counted in the ETA
    view._t0 -= 10.0
    view.trial_started([done], "t0001 (b)", 1)
    row = {**done, "trial_id": "b", "number": 1, "flops_ratio": 0.25, "synergy_gain": 0.5}
    view.trial_finished([done, row], "t0001 (b)", row, 0)
    failed = {"trial_id": "c", "number": 2, "status": "failed", "error": "OOM"}
    view.trial_finished([done, row, failed], "t0002 (c)", failed, 0)
    view.stop([done, row, failed])
    lines = buf.getvalue().splitlines()
    assert lines[0].endswith("sweep s: started, 1/4 trials recorded")
    assert "trial t0001 (b) started; 1/4 done (1 ok, 0 failed, 0 pruned), 1 running, elapsed 10s, ETA ?" in lines[1]
    assert "trial t0001 (b) ok: flops_ratio 0.2500, synergy_gain +0.5000; 2/4 done" in lines[2]
    assert lines[2].endswith("elapsed 10s, ETA 20s")  # 10 s for 1 trial this session, 2 to go
    assert "trial t0002 (c) failed: OOM; 3/4 done (2 ok, 1 failed, 0 pruned)" in lines[3]
    assert lines[4].split("] ", 1)[1].startswith("sweep s: ended; 3/4 done")
    term = io.StringIO()
    live = LiveView("s", 4, Console(file=term, width=120, force_terminal=True))
    assert not live.plain
    live.start([done])
    live._t0 -= 10.0
    live.trial_finished([done, row], "t0001 (b)", row, 0)
    head = live._render([done, row], 1).renderables[0]
    assert "2/4 done" in head and "elapsed 10s, ETA 20s" in head
    live.stop([done, row])
    assert "sweep s: started" not in term.getvalue()  # the terminal gets the panel, not event lines


def repeat_space(path: Path, samples: int = 4) -> Path:
    """Every sample is one computation: understanding keep 1 0 0 0 (fastv K=1, R=1) under
    `skip` or `drop` with any selector (merged, see searchvlm.identity), the rest fixed."""
    data = yaml.safe_load(tiny_space(path, samples=samples, presets=[]).read_text())
    data["policy"] = {
        "understanding": {"mode": ["skip", "drop"], "selector": ["stride", "attention"],
                          "schedules": [{"kind": "fastv", "start": 1, "ratio": 1.0}]},
        "generation": {"mode": ["skip"], "selector": ["stride"],
                       "schedules": [{"kind": "shallow", "k": 1, "ratio": 0.0}]},
        "tie_schedules": [False], "sharing": {"qkv": ["shared"], "mlp": ["shared"]},
    }  # fmt: skip
    data["search"]["confirm"] = {"seeds": [1, 2], "top": 2}
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_repeated_policy_is_trained_once_then_confirmed(runs: Path, ray_session, tmp_path: Path):
    s = run_sweep(repeat_space(tmp_path / "rep.yaml"), name="rep", runs_dir=runs, progress=False)
    rows = check_consistent(s.run_dir, "rep", s.tracking_uri, runs)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    trained = [r for r in rows if not r["duplicate_of"]]
    assert len(trained) == 1, [(r["number"], r["duplicate_of"]) for r in rows]
    twin = trained[0]
    assert twin["number"] == 0 and twin["train_seconds"] > 0
    for r in rows:
        if r is twin:
            continue
        assert r["duplicate_of"] == twin["trial_id"] and r["train_seconds"] == 0.0
        assert (r["flops_ratio"], r["synergy_gain"], r["und_acc"]) == (twin["flops_ratio"], twin["synergy_gain"], twin["und_acc"])
        assert json.loads(r["policy_json"])["name"] == f"t{r['number']:04d}"  # its own explicit policy
    told = {t.number: t for t in study(s.run_dir, "rep").trials}
    assert all(told[r["number"]].values == told[0].values for r in rows)
    assert {n: t.user_attrs.get("duplicate_of") for n, t in told.items()} == {
        r["number"]: (r["duplicate_of"] or None) for r in rows
    }
    client = Tracker(s.tracking_uri, runs).client
    for c in children(s.tracking_uri, runs, s.run_dir):
        first_round = [m.step for m in client.get_metric_history(c.info.run_id, "und_acc") if m.step == 10]
        trained_here = c.data.tags["trial_id"] == twin["trial_id"]
        assert len(first_round) == (1 if trained_here else 0)  # a repeat never trains a round
        assert c.data.tags.get("duplicate_of", "") == ("" if trained_here else twin["trial_id"])
    # search.confirm ran at the end: the one trained policy (its repeats are the same one),
    # on the fresh seeds, paired with dense; logged on the parent run; export reads it
    from searchvlm.export import build_policy_file
    from searchvlm.results import read_confirmed

    confirmed = read_confirmed(s.run_dir / "confirmed.csv")
    assert [r["trial_id"] for r in confirmed] == [twin["trial_id"]]
    c = confirmed[0]
    assert c["status"] == "ok" and json.loads(c["seeds"]) == [1, 2] and len(json.loads(c["vs_dense_per_seed"])) == 2
    assert c["synergy_vs_dense_stderr"] is not None and c["search_synergy_gain"] == twin["synergy_gain"]
    parent = read_meta(s.run_dir / "sweep.json").parent_run_id
    history = client.get_metric_history(parent, "confirmed.synergy_gain")
    assert [(m.step, m.value) for m in history] == [(0, pytest.approx(c["synergy_gain"]))]
    assert "confirm/confirmed.csv" in [a.path for a in client.list_artifacts(parent, "confirm")]
    pf = build_policy_file(s.run_dir)
    assert pf.provenance["numbers"] == "confirmed" and pf.provenance["trial_id"] == twin["trial_id"]
    assert pf.objectives["synergy_gain"] == pytest.approx(c["synergy_gain"])
    check_consistent(s.run_dir, "rep", s.tracking_uri, runs)  # confirmation added no trial anywhere

"""End-to-end sweeps on the real stack (searchvlm.sweep._driver): Ray Tune + Optuna study +
MLflow + run_trial; and the driver's refusals before Ray starts.

One Ray session and one runs directory (so one baseline cache) are shared by the module.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from helpers import PY
from helpers.services import MlflowServer
from helpers.sweeps import check_consistent, child_runs, repeat_space, study, tiny_space
from searchvlm.objectives.pareto import front
from searchvlm.schema.errors import ConfigError
from searchvlm.schema.results import read_meta, read_trials
from searchvlm.sweep import SweepOptions, ensure_ray, run_sweep, shutdown_ray
from searchvlm.tracking import Tracker


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real `mlflow server` on 127.0.0.1 (started early: it takes ~20 s to come up)."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ray_session(mlflow_server):
    ensure_ray(num_cpus=2)
    yield
    shutdown_ray()


def test_bad_space_fails_before_ray(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("search: {sampler: bayes}\nmodel: {num_layers: 4}\n")
    with pytest.raises(ConfigError) as err:
        run_sweep(bad, runs_dir=tmp_path / "runs", progress=False)
    assert "search.sampler" in str(err.value) and "bad.yaml" in str(err.value)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", ["", ".hidden", "a/b"])
def test_bad_name_fails_before_ray(tmp_path: Path, name: str):
    space = tiny_space(tmp_path / "n.yaml", calibrated=False)
    with pytest.raises(ConfigError, match="--name") as err:
        run_sweep(space, name=name, runs_dir=tmp_path / "runs", progress=False)
    assert f"--name = {name!r}" in str(err.value) and not (tmp_path / "runs").exists()


def test_resume_refuses_changed_samples_or_space(tmp_path: Path):
    from searchvlm.schema.space import load_space
    from searchvlm.sweep._rundir import RAY_DIR, init_run_dir, resume_space

    space_path = tiny_space(tmp_path / "r.yaml", samples=5, presets=["himix"], calibrated=False)
    run_dir = tmp_path / "runs" / "r"
    init_run_dir(run_dir, space_path, load_space(space_path), "r", "sqlite:///unused.db")
    (run_dir / RAY_DIR).mkdir()
    (run_dir / RAY_DIR / "tuner.pkl").write_bytes(b"")  # an interrupted sweep's state (the checks come first)
    recorded = (run_dir / "sweep.json").read_bytes()
    for same in (None, 5):  # the recorded values, given or not
        space = resume_space(run_dir, space_path, load_space(space_path), same, None)
        assert (space.search.samples, space.search.concurrency) == (5, 2)
    with pytest.raises(ConfigError) as err:
        run_sweep(
            space_path,
            name="r",
            runs_dir=tmp_path / "runs",
            resume=True,
            progress=False,
            options=SweepOptions(samples=9),
        )
    assert "--samples = 9" in str(err.value) and "started with samples = 5" in str(err.value)
    data = yaml.safe_load(space_path.read_text())
    data["training"]["steps"] = 21
    space_path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        run_sweep(space_path, name="r", runs_dir=tmp_path / "runs", resume=True, progress=False)
    assert str(space_path) in str(err.value) and "differs from the space sweep 'r' started with" in str(err.value)
    assert (run_dir / "sweep.json").read_bytes() == recorded  # nothing recorded was touched


def test_resume_extends_only_a_finished_sweep(tmp_path: Path):
    from searchvlm.schema.results import trial_row, write_trials
    from searchvlm.schema.space import load_space
    from searchvlm.schema.trial_result import TrialResult
    from searchvlm.sweep._rundir import extra_trials, init_run_dir, resume_space

    space_path = tiny_space(tmp_path / "r.yaml", samples=2, presets=["himix"], calibrated=False)
    run_dir = tmp_path / "runs" / "r"
    init_run_dir(run_dir, space_path, load_space(space_path), "r", "sqlite:///unused.db")
    rows = [trial_row(TrialResult(status="ok", flops_ratio=0.5, synergy_gain=0.0), f"t{i}", i) for i in range(2)]
    write_trials(run_dir / "trials.csv", rows[:1])
    unfinished = r"--samples = 3: sweep 'r' started with samples = 2 and is unfinished \(1 trials"
    with pytest.raises(ConfigError, match=unfinished):
        resume_space(run_dir, space_path, load_space(space_path), 3, None)
    write_trials(run_dir / "trials.csv", rows)
    space = resume_space(run_dir, space_path, load_space(space_path), 3, 1)
    assert (space.search.samples, space.search.concurrency, extra_trials(run_dir, space)) == (3, 1, 1)
    same = resume_space(run_dir, space_path, load_space(space_path), None, None)
    assert same.search.samples == 2 and extra_trials(run_dir, same) == 0
    with pytest.raises(ConfigError, match="a sweep can be extended, never shrunk"):
        resume_space(run_dir, space_path, load_space(space_path), 1, None)
    with pytest.raises(ConfigError, match="differs from the space sweep 'r' started with"):
        resume_space(run_dir, space_path, load_space(space_path, ["training.steps=30"]), 3, None)


@pytest.mark.slow
@pytest.mark.sweep
@pytest.mark.multiprocess  # ray_session starts the module's mlflow server
def test_sweep_sqlite(runs: Path, ray_session, tmp_path: Path, capfd):
    space = tiny_space(tmp_path / "tiny.yaml", samples=4, presets=["himix"], calibrated=False)
    s = run_sweep(space, name="e2e", runs_dir=runs, progress=False)
    from searchvlm.schema.space import load_space

    warning = load_space(space).synergy_warning()  # the tiny space drops quick.yaml's calibration
    assert "unmeasured" in warning and f"warning: {space}: {warning}" in capfd.readouterr().err  # warned at start
    rows = check_consistent(s.run_dir, "e2e", s.tracking_uri, runs)
    assert s.tracking_uri == f"sqlite:///{runs / 'mlflow.db'}"
    assert len(rows) == 4 and rows[0]["preset"] == "himix"
    assert {r["status"] for r in rows} == {"ok"}
    # the baselines of seed 0 (each task alone) were trained up front, before any trial began
    import datetime as dt

    cached = sorted((runs / "cache" / "baselines").glob("*.json"))
    first = min(dt.datetime.fromisoformat(r["start_time"]).timestamp() for r in rows)
    assert len(cached) == 2 and all(f.stat().st_mtime <= first + 1 for f in cached)  # start_time: whole seconds
    assert (s.run_dir / "tiny.yaml").exists() and (s.run_dir / "ray").is_dir()
    child = child_runs(s.tracking_uri, runs, s.run_dir)[0]
    tracker = Tracker(s.tracking_uri, runs)
    steps = [m.step for m in tracker.client.get_metric_history(child.info.run_id, "synergy_gain")]
    assert 10 in steps and 20 in steps  # every evaluation round, with its step
    assert "policy.json" in [a.path for a in tracker.client.list_artifacts(child.info.run_id)]
    assert child.data.params["und.mode"] in ("query_drop", "skip", "drop")
    with pytest.raises(ConfigError, match="--resume"):
        run_sweep(space, name="e2e", runs_dir=runs, progress=False)
    log = (s.run_dir / "sweep.log").read_text()  # Ray's INFO chatter: in the log, not on the terminal
    assert "INFO ray.tune" in log and "Wrote the latest version" not in capfd.readouterr().err


@pytest.mark.slow
@pytest.mark.sweep
@pytest.mark.multiprocess  # ray_session starts the module's mlflow server
def test_ray_experiment_analysis_lists_every_trial(runs: Path, ray_session, tmp_path: Path):
    """Ray's own ExperimentAnalysis on the sweep's Ray dir finds each trial with its reports
    (Tune's JSON/CSV loggers are kept: it reads result.json / progress.csv)."""
    from ray.tune import ExperimentAnalysis

    space = tiny_space(tmp_path / "ea.yaml", samples=5, presets=["himix"], calibrated=False)
    s = run_sweep(space, name="ea", runs_dir=runs, progress=False, options=SweepOptions(samples=2))  # --samples 2
    ea = ExperimentAnalysis(str(s.run_dir / "ray"))
    rows = {r["trial_id"]: r for r in read_trials(s.run_dir / "trials.csv")}
    assert sorted(t.trial_id for t in ea.trials) == sorted(rows)
    frame = ea.dataframe()
    assert len(frame) == 2 and {"synergy_gain", "flops_ratio", "training_iteration"} <= set(frame.columns)
    for trial_id, history in ea.trial_dataframes.items():
        assert len(history) >= 2  # the evaluation rounds' reports, then the final one
        for key in ("flops_ratio", "synergy_gain"):
            assert history[key].iloc[-1] == pytest.approx(float(rows[trial_id][key]))


def test_a_resumed_sweep_logs_to_the_store_it_recorded(tmp_path: Path):
    """`--resume` (or an extension) without --tracking-uri goes on logging where the sweep
    started (a tracking server), not into a new sqlite store beside it."""
    from helpers.sweeps import make_sweep
    from searchvlm.schema.results import write_meta
    from searchvlm.sweep._driver import _tracking_uri

    runs = tmp_path / "runs"
    run = make_sweep(runs, "srv")
    write_meta(run / "sweep.json", read_meta(run / "sweep.json").model_copy(update={"tracking_uri": "http://m:5000"}))
    assert _tracking_uri(run, runs, True, None) == "http://m:5000"
    assert _tracking_uri(run, runs, True, "http://other:5000") == "http://other:5000"  # the option wins
    assert _tracking_uri(runs / "new", runs, False, None) == f"sqlite:///{runs.resolve() / 'mlflow.db'}"
    plain = make_sweep(runs, "plain")  # recorded nothing (an old sweep.json): the runs folder's store
    assert _tracking_uri(plain, runs, True, None) == f"sqlite:///{runs.resolve() / 'mlflow.db'}"


@pytest.mark.slow
@pytest.mark.sweep
@pytest.mark.multiprocess  # ray_session starts the module's mlflow server
def test_moasha_against_mlflow_server(runs: Path, ray_session, mlflow_server, tmp_path: Path):
    mlflow_server.wait(timeout=120)
    url = mlflow_server.url
    space = tiny_space(tmp_path / "asha.yaml", samples=5, steps=30, presets=[], calibrated=False,
                       scheduler={"kind": "mo_asha", "reduction_factor": 4, "grace_steps": 10})  # fmt: skip
    s = run_sweep(space, name="asha", runs_dir=runs, progress=False, options=SweepOptions(tracking_uri=url))
    rows = check_consistent(s.run_dir, "asha", url, runs)
    pruned = [r for r in rows if r["status"] == "pruned"]
    assert pruned, "eta=4 with 5 trials must stop someone at the first rung"
    assert all(r["steps_done"] < 30 for r in pruned)
    on_front = {r["trial_id"] for r in front(rows)}
    assert not on_front & {r["trial_id"] for r in pruned}
    best = {t.number for t in study(s.run_dir, "asha").best_trials}
    assert not best & {r["number"] for r in pruned}


@pytest.mark.slow
@pytest.mark.sweep
@pytest.mark.multiprocess  # ray_session starts the module's mlflow server
def test_interrupted_sweep_resumes(runs: Path, ray_session, tmp_path: Path):
    space = tiny_space(tmp_path / "res.yaml", samples=5, steps=40, presets=["himix"], calibrated=False)
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


@pytest.mark.slow
@pytest.mark.sweep
@pytest.mark.multiprocess  # ray_session starts the module's mlflow server
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
        objectives = ("flops_ratio", "synergy_gain", "und_acc")
        assert [r[k] for k in objectives] == [twin[k] for k in objectives]
        assert json.loads(r["policy_json"])["name"] == f"t{r['number']:04d}"  # its own explicit policy
    told = {t.number: t for t in study(s.run_dir, "rep").trials}
    assert all(told[r["number"]].values == told[0].values for r in rows)
    assert {n: t.user_attrs.get("duplicate_of") for n, t in told.items()} == {
        r["number"]: (r["duplicate_of"] or None) for r in rows
    }
    client = Tracker(s.tracking_uri, runs).client
    for c in child_runs(s.tracking_uri, runs, s.run_dir):
        first_round = [m.step for m in client.get_metric_history(c.info.run_id, "und_acc") if m.step == 10]
        trained_here = c.data.tags["trial_id"] == twin["trial_id"]
        assert len(first_round) == (1 if trained_here else 0)  # a repeat never trains a round
        assert c.data.tags.get("duplicate_of", "") == ("" if trained_here else twin["trial_id"])
    # search.confirm ran at the end: the one trained policy (its repeats are the same one),
    # on the fresh seeds, paired with dense; logged on the parent run; export reads it
    from searchvlm.objectives.export import build_policy_file
    from searchvlm.schema.results import read_confirmed

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

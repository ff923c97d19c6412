"""The trainable's profile hook (benchmarks/trial_profile.py): stats per trial, env restored."""

from __future__ import annotations

import json
import os
import pstats
import warnings
from pathlib import Path

import pytest

from searchvlm.schema._host import KERNELS_ENV, PINS
from searchvlm.sweep import _trainable


def test_profiled_call_writes_stats_and_restores_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_trainable.PROFILE_ENV, str(tmp_path))
    seen = []

    def body(config, x):  # runs the plain path: the variable is unset inside
        seen.append((config, x, os.environ.get(_trainable.PROFILE_ENV)))
        return sum(i * i for i in range(1000))

    config = {"optuna_number": 3, "preset": "himix"}
    _trainable._profiled(body, config, 7)
    assert seen == [(config, 7, None)]
    assert os.environ[_trainable.PROFILE_ENV] == str(tmp_path)
    stats = pstats.Stats(str(tmp_path / f"{_trainable.trial_name({'optuna_number': 3, 'preset': 'himix'})}.prof"))
    assert any(name == "body" for _, _, name in stats.stats)  # type: ignore[attr-defined]


def test_the_profile_folder_reaches_every_node_through_the_jobs_runtime_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`trial_env`: what ray.init hands every worker of the sweep's job, on every node (a
    worker on another node has that node's environment, not the driver's)."""
    from searchvlm.sweep._cluster import trial_env

    for key in (KERNELS_ENV, *PINS["avx2"]):  # the kernel pin travels too (test below)
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv(_trainable.PROFILE_ENV, raising=False)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert trial_env() is None  # only when set on the driver
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(_trainable.PROFILE_ENV, "prof")  # relative: a trial runs in its own folder
    assert trial_env() == {"env_vars": {_trainable.PROFILE_ENV: str(tmp_path / "prof")}}
    # a driver that `ray job submit --runtime-env-json` started with the variable: Ray refuses it twice
    job = {"runtime_env": {"env_vars": {_trainable.PROFILE_ENV: "/shared/prof"}}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    assert trial_env() is None
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"env_vars": {"OTHER": "1"}}}))
    assert trial_env() == {"env_vars": {_trainable.PROFILE_ENV: str(tmp_path / "prof")}}


def test_a_profiled_trial_makes_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On another node the driver's profile folder may not exist: the trial makes it."""
    folder = tmp_path / "not" / "yet"
    monkeypatch.setenv(_trainable.PROFILE_ENV, str(folder))
    _trainable._profiled(lambda config: None, {"optuna_number": 4})
    assert (folder / "t0004.prof").is_file()


def test_a_trials_warnings_are_collected_once_each_and_sent_with_its_reports(capsys) -> None:
    def same() -> None:
        warnings.warn("the same thing", UserWarning, stacklevel=1)  # one text: this line, each time

    with _trainable.caught_warnings() as new:
        for _ in range(3):
            same()
        warnings.warn("another", RuntimeWarning, stacklevel=1)
        first = new()
        same()  # already sent
        assert new() == []
        warnings.warn("later", UserWarning, stacklevel=1)
        second = new()
    assert [w.split(" (")[0] for w in first] == ["UserWarning: the same thing", "RuntimeWarning: another"]
    assert [w.split(" (")[0] for w in second] == ["UserWarning: later"]
    assert all(w.endswith(")") and "test_profile_hook.py:" in w for w in first + second)
    assert _trainable._with_warnings({"step": 1}, []) == {"step": 1}
    # a trial that raises past its reports: what it did not send goes to its worker's log
    with pytest.raises(RuntimeError), _trainable.caught_warnings() as new:
        warnings.warn("unsent", UserWarning, stacklevel=1)
        raise RuntimeError("crash")
    assert "warning: UserWarning: unsent (" in capsys.readouterr().err
    assert _trainable._with_warnings({"step": 1}, second) == {"step": 1, _trainable.WARNINGS_KEY: second}


def test_the_driver_says_each_warning_once_and_records_every_trials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SweepCallback: a text once on stderr for the sweep, each (trial, text) once in sweep.log."""
    from types import SimpleNamespace

    from helpers.sweeps import tiny_space
    from searchvlm.schema.space import load_space
    from searchvlm.sweep._callback import SweepCallback

    run_dir = tmp_path / "runs" / "sw"
    run_dir.mkdir(parents=True)
    cb = SweepCallback(run_dir, load_space(tiny_space(tmp_path / "s.yaml")), "", run_dir.parent, progress=False)
    a = SimpleNamespace(trial_id="ab12_00000", config={"optuna_number": 0})
    b = SimpleNamespace(trial_id="ab12_00001", config={"optuna_number": 1})
    w1, w2 = "UserWarning: one (x.py:1)", "UserWarning: two (x.py:2)"
    report = {"final": True, "node": "10.0.0.7", _trainable.WARNINGS_KEY: [w1]}
    cb.on_trial_result(0, [], a, report)
    cb.on_trial_result(0, [], a, report)  # the same again (a repeated report): nothing new
    cb.on_trial_result(0, [], b, {"final": True, _trainable.WARNINGS_KEY: [w1, w2]})
    err = capsys.readouterr().err.splitlines()
    assert err == [f"warning: t0000 (ab12_00000) on node 10.0.0.7: {w1}", f"warning: t0001 (ab12_00001): {w2}"]
    log = (run_dir / "sweep.log").read_text().splitlines()
    want = [f"t0000 (ab12_00000) on node 10.0.0.7: {w1}", f"t0001 (ab12_00001): {w1}", f"t0001 (ab12_00001): {w2}"]
    assert [ln.split(" WARNING searchvlm.train.trial: ")[1] for ln in log] == want
    assert cb.warned == {a.trial_id: [w1], b.trial_id: [w1, w2]}
    assert cb.__getstate__()["warned"] == {}  # (runtime state: not in tuner.pkl)


def test_the_kernel_pin_reaches_every_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver's CPU-kernel pin (or its opt-out) goes to every node, so the trials there run
    the driver's kernels; one the submitting job already sets is left to it."""
    from searchvlm.sweep._cluster import trial_env

    monkeypatch.delenv(_trainable.PROFILE_ENV, raising=False)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    for key in PINS["avx2"]:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv(KERNELS_ENV, "native")
    assert trial_env() == {"env_vars": {KERNELS_ENV: "native"}}
    monkeypatch.setenv(KERNELS_ENV, "avx2")
    for key, value in PINS["avx2"].items():
        monkeypatch.setenv(key, value)
    assert trial_env() == {"env_vars": {KERNELS_ENV: "avx2", **PINS["avx2"]}}
    job = {"runtime_env": {"env_vars": {"MKL_CBWR": "COMPATIBLE"}}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    assert "MKL_CBWR" not in trial_env()["env_vars"]

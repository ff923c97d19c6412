"""MLflow tracking: bounded retry, one parent per sweep, children found again by trial_id."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from searchvlm.config import TrialResult
from searchvlm.policy import preset
from searchvlm.tracking import Tracker, default_uri, retry


def test_retry_transient_then_success(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("server restarting")
        return "ok"

    assert retry(flaky) == "ok" and len(calls) == 3


def test_retry_is_bounded_and_permanent_errors_not_retried(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    calls = []

    def down() -> None:
        calls.append(1)
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        retry(down, tries=4)
    assert len(calls) == 4

    def bad() -> None:
        calls.append(1)
        raise MlflowException("nope", error_code=INVALID_PARAMETER_VALUE)

    calls.clear()
    with pytest.raises(MlflowException):
        retry(bad)
    assert len(calls) == 1


def test_parent_and_children_not_duplicated_on_resume(tmp_path: Path):
    uri = default_uri(tmp_path)
    space = tmp_path / "s.yaml"
    space.write_text("model: {num_layers: 4}\n")
    t = Tracker(uri, tmp_path)
    parent = t.start_sweep("sw", space, {"samples": 2})
    pol = preset("himix", 4)
    a = t.child("tid-a", "t0000", pol.flat_params(), {"optuna_number": "0"})
    assert t.child("tid-a", "t0000", pol.flat_params(), {}) == a
    t.log_round(a, 10, {"synergy_gain": 0.1, "flops_ratio": 0.5})
    t.finish_trial(a, TrialResult(flops_ratio=0.5, synergy_gain=0.2, steps_done=20, policy=pol), pol.to_json())
    # a resumed driver: new Tracker, same parent id, same trial id -> same child
    t2 = Tracker(uri, tmp_path)
    assert t2.start_sweep("sw", space, {}, parent_run_id=parent) == parent
    assert t2.child("tid-a", "t0000", pol.flat_params(), {}) == a
    t2.child("tid-b", "t0001", {}, {})
    kids = t2.children()
    assert sorted(k.data.tags["trial_id"] for k in kids) == ["tid-a", "tid-b"]
    a_run = t2.client.get_run(a)
    assert a_run.data.tags["status"] == "ok" and a_run.info.status == "FINISHED"
    assert a_run.data.tags["mlflow.parentRunId"] == parent
    assert [m.step for m in t2.client.get_metric_history(a, "synergy_gain")] == [10, 20]
    assert (tmp_path / "mlartifacts").is_dir()  # artifacts beside the db, not in the CWD

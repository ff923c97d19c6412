"""MLflow tracking: bounded retry, one parent per sweep, children found again by trial_id."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from searchvlm.schema.policy import preset
from searchvlm.schema.results import SweepMeta, sweep_tracking_uri
from searchvlm.schema.trial_result import TrialResult
from searchvlm.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, Tracker, default_uri, log_report, retry


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
    # validation rounds under the plain key, the final (test) value under test_*: no jump
    assert [m.step for m in t2.client.get_metric_history(a, "synergy_gain")] == [10]
    assert [(m.step, m.value) for m in t2.client.get_metric_history(a, "test_synergy_gain")] == [(20, 0.2)]
    assert a_run.data.metrics["test_flops_ratio"] == 0.5 and a_run.data.metrics["flops_ratio"] == 0.5
    assert (tmp_path / "mlartifacts").is_dir()  # artifacts beside the db, not in the CWD


def test_experiment_is_a_classic_ml_experiment(tmp_path: Path):
    t = Tracker(default_uri(tmp_path), tmp_path)
    assert t.client.get_experiment(t.experiment_id).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    # an experiment an older version made without the tag gets it when opened
    t.client.delete_experiment_tag(t.experiment_id, EXPERIMENT_KIND_TAG)
    assert EXPERIMENT_KIND_TAG not in t.client.get_experiment(t.experiment_id).tags
    again = Tracker(default_uri(tmp_path), tmp_path)
    assert again.client.get_experiment(t.experiment_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


def test_moving_the_runs_folder_keeps_the_artifact_links(tmp_path: Path):
    old_runs, new_runs = tmp_path / "a" / "runs", tmp_path / "b" / "runs"
    space = old_runs / "sw" / "s.yaml"
    space.parent.mkdir(parents=True)
    space.write_text("model: {num_layers: 4}\n")
    t = Tracker(default_uri(old_runs), old_runs)
    parent = t.start_sweep("sw", space, {"samples": 1})
    meta = SweepMeta(name="sw", space_path=str(space), space_hash="x", package_version="0", model={},
                     tracking_uri=default_uri(old_runs), parent_run_id=parent)  # fmt: skip
    new_runs.parent.mkdir()
    shutil.move(old_runs, new_runs)
    assert sweep_tracking_uri(meta, new_runs / "sw") == f"sqlite:///{new_runs.resolve() / 'mlflow.db'}"
    moved = Tracker(default_uri(new_runs), new_runs)
    exp = moved.client.get_experiment(moved.experiment_id)
    assert exp.artifact_location == (new_runs / "mlartifacts").as_uri()
    run = moved.client.get_run(parent)
    assert run.info.artifact_uri.startswith((new_runs / "mlartifacts").as_uri() + "/")
    got = moved.client.download_artifacts(parent, "s.yaml", str(tmp_path))
    assert Path(got).read_text() == "model: {num_layers: 4}\n"
    assert not (tmp_path / "a" / "runs").exists()  # nothing recreated at the old place


def test_parent_summary_metrics_and_report_logged_once(tmp_path: Path):
    uri = default_uri(tmp_path)
    space = tmp_path / "s.yaml"
    space.write_text("model: {num_layers: 4}\n")
    t = Tracker(uri, tmp_path)
    parent = t.start_sweep("sw", space, {})
    t.log_summary({"hypervolume": 0.08, "front_size": 3, "knee_flops_ratio": float("nan")}, 7)
    metrics = t.client.get_run(parent).data.metrics
    assert metrics == {"hypervolume": 0.08, "front_size": 3.0}  # non-finite values are not logged
    js, html = tmp_path / "plotly.min.js", tmp_path / "f.html"
    js.write_text("x" * 100)
    html.write_text("<html></html>")
    log_report(uri, tmp_path, parent, [html, js], {"hypervolume": 0.09}, 8)
    log_report(uri, tmp_path, parent, [html, js], {"hypervolume": 0.1}, 9)
    history = t.client.get_metric_history(parent, "hypervolume")
    assert [(m.step, m.value) for m in history] == [(7, 0.08), (8, 0.09), (9, 0.1)]
    assert sorted(Path(f.path).name for f in t.client.list_artifacts(parent, "report")) == ["f.html", "plotly.min.js"]


def test_child_run_name_and_tag_carry_the_trial_id(tmp_path: Path):
    """The sweep callback names a child `t0001-himix (<trial id>)` and tags it `trial_id`,
    the id trials.csv and the Optuna user attr `searchvlm_trial_id` carry; when the sweep
    ends the parent gets the summary metrics of its table."""
    from types import SimpleNamespace

    from searchvlm.schema.space import load_space
    from searchvlm.sweep._callback import SweepCallback
    from test_export import make_sweep

    run = make_sweep(tmp_path / "runs")
    uri = default_uri(tmp_path / "runs")
    root = Path(__file__).resolve().parents[1]
    cb = SweepCallback(run, load_space(root / "search_spaces" / "quick.yaml"), uri, tmp_path / "runs", progress=False)
    cb.tracker = Tracker(uri, tmp_path / "runs")
    parent = cb.tracker.start_sweep("s1", root / "search_spaces" / "quick.yaml", {})
    trial = SimpleNamespace(trial_id="e9def074_00001", config={"optuna_number": 1, "preset": "himix"})
    child = cb.tracker.client.get_run(cb._child(trial))
    assert child.info.run_name == "t0001-himix (e9def074_00001)"
    assert child.data.tags["trial_id"] == "e9def074_00001" and child.data.tags["optuna_number"] == "1"
    cb._log_summary()
    m = cb.tracker.client.get_run(parent).data.metrics
    assert m["hypervolume"] == pytest.approx(0.01) and m["front_size"] == 3 and m["trials"] == 7
    assert m["knee_flops_ratio"] == 0.5 and m["knee_synergy_gain"] == 0.04
    assert (m["trials_ok"], m["trials_failed"], m["trials_pruned"]) == (5, 1, 1)

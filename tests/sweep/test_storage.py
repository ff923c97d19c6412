"""Issue 38, `searchvlm sweep --storage URI`: Tune's experiment state in a shared folder or an
S3-compatible bucket (searchvlm.sweep._storage), the driver's records where they were, the
storage recorded in sweep.json and used by `--resume`; bad URIs refused in one line. The S3
sweep runs against moto's server on loopback (skipped where moto is not installed).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers.sweeps import tiny_space
from searchvlm._storage_uri import check_storage
from searchvlm.errors import ConfigError
from searchvlm.results import read_meta, read_trials


@pytest.mark.parametrize(
    ("given", "recorded"),
    [
        ("s3://bucket/some/prefix/", "s3://bucket/some/prefix"),
        ("s3://bucket", "s3://bucket"),
        ("S3://bucket/p", "s3://bucket/p"),
    ],
)
def test_s3_uris_are_recorded_plain(given: str, recorded: str):
    assert check_storage(given) == recorded


def test_paths_and_file_uris_are_absolute_folders(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_storage("state") == str(tmp_path / "state")
    assert check_storage(f"file://{tmp_path}/state/") == str(tmp_path / "state")
    assert check_storage(f"file://localhost{tmp_path}") == str(tmp_path)


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("", "is empty"),
        ("gs://bucket/p", "scheme 'gs' is not supported"),
        ("http://host/p", "scheme 'http' is not supported"),
        ("s3://", "needs a bucket name"),
        ("s3://key:secret@bucket/p", "needs a bucket name"),
        ("s3://bucket/p?endpoint_override=x", "no '?' or '#' part"),
        ("file://host/p", "file:// names a host"),
    ],
)
def test_bad_uris_are_one_config_error(uri: str, why: str):
    with pytest.raises(ConfigError, match="--storage") as err:
        check_storage(uri)
    assert why in str(err.value) and repr(uri) in str(err.value)


def test_a_file_is_no_storage(tmp_path: Path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_storage(str(tmp_path / "f"))


@pytest.mark.parametrize("uri", ["gs://bucket/p", "", "s3://"])
def test_the_sweep_command_refuses_a_bad_storage_in_one_line(uri: str, tmp_path: Path):
    from searchvlm.cli import app

    space = tiny_space(tmp_path / "q.yaml")
    res = CliRunner().invoke(app, ["sweep", str(space), "--storage", uri, "--runs-dir", str(tmp_path / "runs")])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0].startswith("error: ") and "--storage" in lines[0] and repr(uri) in lines[0], res.output
    assert not (tmp_path / "runs").exists()


def test_where_tune_keeps_its_state(tmp_path: Path, monkeypatch):
    from searchvlm.sweep._storage import tune_state

    run = tmp_path / "runs" / "sw"
    default = tune_state(run, None)
    assert (default.storage_path, default.name, default.path) == (str(run), "ray", f"{run}/ray")
    shared = tune_state(run, str(tmp_path / "shared"))
    assert (shared.path, shared.filesystem) == (f"{tmp_path}/shared/sw", None)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    aws = tune_state(run, "s3://b/p")
    assert (aws.path, aws.filesystem, aws.shown) == ("s3://b/p/sw", None, "s3://b/p/sw")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    other = tune_state(run, "s3://b/p")
    assert other.path == "b/p/sw" and type(other.filesystem).__name__ == "S3FileSystem"


def test_a_new_sweep_refuses_storage_holding_its_name(tmp_path: Path):
    from searchvlm.sweep._rundir import check_state
    from searchvlm.sweep._storage import tune_state

    state = tune_state(tmp_path / "runs" / "sw", str(tmp_path / "shared"))
    (tmp_path / "shared" / "sw").mkdir(parents=True)
    check_state(tmp_path / "runs" / "sw", "sw", False, state)  # an empty folder: free
    (tmp_path / "shared" / "sw" / "tuner.pkl").write_bytes(b".")
    with pytest.raises(ConfigError, match="already holds Tune's state of a sweep named 'sw'"):
        check_state(tmp_path / "runs" / "sw", "sw", False, state)
    with pytest.raises(ConfigError, match="no Tune state"):
        check_state(tmp_path / "runs" / "sw", "sw", True, tune_state(tmp_path / "runs" / "sw", str(tmp_path)))


def _finished_resume(space: Path, runs: Path, name: str, storage: str, where) -> None:
    """A 2-trial sweep with `storage`: Tune's state there (`where()` lists it), none in
    runs/<name>/ray, the records in runs/<name>, sweep.json naming it; `--resume` without
    `--storage` restores from it and trains nothing again."""
    from ray import tune

    from searchvlm.sweep import SweepOptions, run_sweep
    from searchvlm.sweep._storage import tune_state

    s = run_sweep(space, name=name, runs_dir=runs, progress=False, options=SweepOptions(storage=storage))
    run_dir = runs / name
    assert not (run_dir / "ray").exists()
    assert {"trials.csv", "sweep.json", "optuna.db"} <= {p.name for p in run_dir.iterdir()}
    assert (runs / "mlflow.db").exists()
    assert read_meta(run_dir / "sweep.json").storage == check_storage(storage)
    state = tune_state(run_dir, check_storage(storage))
    assert s.tune_state == state.shown
    assert tune.Tuner.can_restore(state.path, storage_filesystem=state.filesystem)
    assert "tuner.pkl" in where() and any(n.startswith("experiment_state") for n in where())
    before = {r["trial_id"]: r for r in read_trials(run_dir / "trials.csv")}
    assert len(before) == 2 and {r["status"] for r in before.values()} == {"ok"}
    again = run_sweep(space, name=name, runs_dir=runs, resume=True, progress=False)
    after = {r["trial_id"]: r for r in read_trials(run_dir / "trials.csv")}
    assert after.keys() == before.keys() and again.tune_state == state.shown
    for tid, r in before.items():  # finished trials were not retrained
        assert after[tid]["end_time"] == r["end_time"] and after[tid]["synergy_gain"] == r["synergy_gain"]
    assert not (run_dir / "ray").exists()


@pytest.mark.slow
@pytest.mark.sweep
def test_a_sweep_keeps_tunes_state_in_a_shared_folder_and_resumes_from_it(tmp_path: Path):
    from searchvlm.sweep import ensure_ray, shutdown_ray

    space = tiny_space(tmp_path / "st.yaml", samples=2, concurrency=2, calibrated=False)
    shared = tmp_path / "shared"
    ensure_ray(num_cpus=2)
    try:
        _finished_resume(space, tmp_path / "runs", "st", f"file://{shared}",
                         lambda: {p.name for p in (shared / "st").iterdir()})  # fmt: skip
    finally:
        shutdown_ray()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.sweep
def test_a_sweep_keeps_tunes_state_in_an_s3_bucket_and_resumes_from_it(tmp_path: Path, monkeypatch):
    """Against moto's S3 server on loopback (AWS_ENDPOINT_URL), as Ray's own tests do."""
    server_mod = pytest.importorskip("moto.server", reason="moto[server] is not installed")
    boto3 = pytest.importorskip("boto3")
    from searchvlm.sweep import ensure_ray, shutdown_ray

    port = _free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():  # fmt: skip
        monkeypatch.setenv(key, value)  # Ray's workers inherit them: ensure_ray starts after this
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket="sweeps")

        def objects() -> set[str]:
            listed = s3.list_objects_v2(Bucket="sweeps", Prefix="state/s3/").get("Contents", [])
            return {o["Key"].removeprefix("state/s3/") for o in listed}

        space = tiny_space(tmp_path / "s3.yaml", samples=2, concurrency=2, calibrated=False)
        ensure_ray(num_cpus=2)
        try:
            _finished_resume(space, tmp_path / "runs", "s3", "s3://sweeps/state", objects)
        finally:
            shutdown_ray()
        assert any("/" in key for key in objects())  # each trial's results, below the experiment
        with pytest.raises(ConfigError, match=r"--storage = 's3://nosuchbucket/x': cannot be written"):
            from searchvlm.sweep import SweepOptions, run_sweep

            run_sweep(space, name="nb", runs_dir=tmp_path / "runs", progress=False,
                      options=SweepOptions(storage="s3://nosuchbucket/x"))  # fmt: skip
    finally:
        server.stop()

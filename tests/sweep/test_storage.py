"""Issue 38, `searchvlm sweep --storage URI`: Tune's experiment state in a shared folder or an
S3-compatible bucket (searchvlm.records._storage), the driver's records where they were, the
storage recorded in sweep.json and used by `--resume`; bad URIs refused in one line. The S3
sweep runs against moto's server on loopback (skipped where moto is not installed).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers.sweeps import tiny_space
from searchvlm.schema._storage_uri import check_storage
from searchvlm.schema.errors import ConfigError
from searchvlm.schema.results import read_meta, read_trials


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
    from searchvlm.records._storage import tune_state

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
    from searchvlm.records._storage import tune_state
    from searchvlm.sweep._rundir import check_state

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

    from searchvlm.records._storage import tune_state
    from searchvlm.sweep import SweepOptions, run_sweep

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
    res = _rm("st", "--runs-dir", str(tmp_path / "runs"), "--yes")  # the sweep and its Tune state
    assert res.exit_code == 0 and f"deleted Tune's state in {shared}/st" in res.output, res.output
    assert not (shared / "st").exists() and not (tmp_path / "runs" / "st").exists() and shared.is_dir()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def moto_s3(monkeypatch):
    """moto's S3 server on loopback (a thread), the AWS variables naming it, and a boto3 client."""
    server_mod = pytest.importorskip("moto.server", reason="moto[server] is not installed")
    boto3 = pytest.importorskip("boto3")
    port = _free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    for key in ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket="sweeps")
        yield s3, endpoint
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.sweep
def test_a_sweep_keeps_tunes_state_in_an_s3_bucket_and_resumes_from_it(tmp_path: Path, moto_s3):
    """Against moto's S3 server on loopback (AWS_ENDPOINT_URL), as Ray's own tests do."""
    from searchvlm.sweep import ensure_ray, shutdown_ray

    s3, _ = moto_s3  # (the AWS variables are set: Ray's workers inherit them, ensure_ray starts after)

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
    res = _rm("s3", "--runs-dir", str(tmp_path / "runs"), "--yes")  # the sweep and its Tune state
    assert res.exit_code == 0 and "deleted Tune's state in s3://sweeps/state/s3" in res.output, res.output
    assert objects() <= {""} and not (tmp_path / "runs" / "s3").exists()
    with pytest.raises(ConfigError, match=r"--storage = 's3://nosuchbucket/x': cannot be written"):
        from searchvlm.sweep import SweepOptions, run_sweep

        run_sweep(space, name="nb", runs_dir=tmp_path / "runs", progress=False,
                  options=SweepOptions(storage="s3://nosuchbucket/x"))  # fmt: skip


# --------------------------------------------------------------------------- rm of Tune's state


def _stored_sweep(runs: Path, name: str, storage: str) -> Path:
    """A finished sweep's folder whose sweep.json records `storage` (as `--storage` would)."""
    from helpers.sweeps import make_sweep
    from searchvlm.schema.results import write_meta

    run = make_sweep(runs, name)
    write_meta(run / "sweep.json", read_meta(run / "sweep.json").model_copy(update={"storage": storage}))
    return run


def _rm(*args: str, input: str | None = None):
    from searchvlm.cli import app

    return CliRunner().invoke(app, ["rm", *args], input=input)


def test_rm_deletes_tunes_state_in_a_shared_folder_and_only_that_sweeps(tmp_path: Path):
    shared, runs = tmp_path / "shared", tmp_path / "runs"
    for name in ("a", "b"):
        (shared / name / "trial0").mkdir(parents=True)
        (shared / name / "tuner.pkl").write_bytes(b".")
        _stored_sweep(runs, name, str(shared))
    res = _rm("a", "--runs-dir", str(runs), "--yes")
    assert res.exit_code == 0, res.output
    assert f"deleted Tune's state in {shared}/a" in res.output
    assert not (runs / "a").exists() and not (shared / "a").exists()
    assert (shared / "b" / "tuner.pkl").exists() and (runs / "b").is_dir()  # another sweep's state stays
    # the question names it; --keep-storage leaves it and prints the command that deletes it
    res = _rm("b", "--runs-dir", str(runs), input="n\n")
    assert res.exit_code == 1 and f"Tune's state in {shared}/b" in res.output
    res = _rm("b", "--runs-dir", str(runs), "--yes", "--keep-storage")
    assert res.exit_code == 0 and not (runs / "b").exists() and (shared / "b" / "tuner.pkl").exists()
    assert f"kept Tune's state in {shared}/b: delete it with `rm -r {shared}/b`" in res.output, res.output
    # nothing there (deleted by hand): said so, the folder goes
    _stored_sweep(runs, "c", str(shared))
    res = _rm("c", "--runs-dir", str(runs), "--yes")
    assert res.exit_code == 0 and f"found no Tune's state in {shared}/c" in res.output and not (runs / "c").exists()


def test_rm_deletes_tunes_state_in_an_s3_bucket(tmp_path: Path, moto_s3):
    s3, endpoint = moto_s3
    for key in ("state/a/tuner.pkl", "state/a/t1/result.json", "state/ab/tuner.pkl", "state/b/tuner.pkl"):
        s3.put_object(Bucket="sweeps", Key=key, Body=b".")
    runs = tmp_path / "runs"
    for name in ("a", "b"):
        _stored_sweep(runs, name, "s3://sweeps/state")

    def keys() -> set[str]:  # (pyarrow leaves an empty "state/" marker where it deleted below it)
        return {o["Key"] for o in s3.list_objects_v2(Bucket="sweeps").get("Contents", []) if o["Key"][-1] != "/"}

    res = _rm("a", "--runs-dir", str(runs), "--yes")
    assert res.exit_code == 0, res.output
    assert "deleted Tune's state in s3://sweeps/state/a" in res.output and not (runs / "a").exists()
    assert keys() == {"state/ab/tuner.pkl", "state/b/tuner.pkl"}  # not a prefix match: sweep `ab` stays
    res = _rm("b", "--runs-dir", str(runs), "--yes", "--keep-storage")
    assert res.exit_code == 0 and keys() == {"state/ab/tuner.pkl", "state/b/tuner.pkl"}
    want = f"delete it with `aws s3 rm --recursive s3://sweeps/state/b/ --endpoint-url {endpoint}`"
    assert want in res.output, res.output


def test_rm_that_cannot_reach_the_storage_deletes_nothing(tmp_path: Path, monkeypatch):
    pytest.importorskip("pyarrow")
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)  # nothing listens there
    runs = tmp_path / "runs"
    run = _stored_sweep(runs, "a", "s3://sweeps/state")
    res = _rm("a", "--runs-dir", str(runs), "--yes")
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert "Tune's state at s3://sweeps/state/a cannot be deleted" in lines[0]
    assert "aws s3 rm --recursive s3://sweeps/state/a/" in lines[0] and "--keep-storage" in lines[0]
    assert (run / "sweep.json").exists()  # nothing deleted

"""Issue 38, inputs that travel to the nodes of a cluster without a shared disk: `data.path`
made absolute at load, the data file keyed by content in the baseline cache, the sweep's
`--cache-dir` recorded for `confirm` and `decide`, Ray Client refused, and the pre-flight
check each node runs (`searchvlm.sweep._preflight`), here on its own and on a one-node Ray.
The check on a node that really lacks the file: `tests/reliability/test_rel_masked_node.py`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers.data import valid_arrays
from helpers.sweeps import tiny_space
from searchvlm.schema.config import DataConfig, ModelConfig, TrainingConfig
from searchvlm.schema.errors import ConfigError
from searchvlm.schema.policy import ReductionPolicy
from searchvlm.schema.results import SweepMeta, read_meta
from searchvlm.schema.space import load_space
from searchvlm.train.baselines import baseline_key
from searchvlm.train.training import RunSpec

TASKS = ("understanding", "generation")


def _npz(path: Path, n: int = 12) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **valid_arrays(n))
    return path


def _tokens_space(tmp: Path, data_path: str) -> Path:
    space = tiny_space(tmp / "tok.yaml", samples=2)
    raw = yaml.safe_load(space.read_text())
    raw["data"] = {"name": "tokens", "path": data_path}
    space.write_text(yaml.safe_dump(raw))
    return space


# --------------------------------------------------------------------------- data.path absolute


def test_a_relative_data_path_is_made_absolute_against_the_working_directory(tmp_path, monkeypatch):
    _npz(tmp_path / "data" / "t.npz")
    space_file = _tokens_space(tmp_path, "data/t.npz")
    monkeypatch.chdir(tmp_path)
    space = load_space(space_file)
    assert space.data.path == str(tmp_path / "data" / "t.npz")
    # what a trial gets (the space as JSON, read in the trial's own working directory) keeps it
    elsewhere = tmp_path / "trial_cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    again = type(space).model_validate_json(space.model_dump_json())
    assert again.data.path == str(tmp_path / "data" / "t.npz")
    from searchvlm.data import check_data

    check_data(again.data)  # opens from another folder
    assert DataConfig(name="tokens", path="~/x.npz").path == os.path.expanduser("~/x.npz")
    assert DataConfig().path is None


def test_a_sweep_started_with_the_path_as_written_still_resumes(tmp_path, monkeypatch):
    """Hashes recorded before the path was made absolute: data.path as written (relative)."""
    _npz(tmp_path / "data" / "t.npz")
    monkeypatch.chdir(tmp_path)
    space = load_space(_tokens_space(tmp_path, "data/t.npz"))
    old = space.space_hash(data_path="data/t.npz")
    assert old != space.space_hash()
    assert space.hash_matches(old) and space.hash_matches(space.space_hash())
    assert space.hash_matches(space.space_hash(data_path="./data/t.npz"))
    assert not space.hash_matches(space.space_hash(data_path="data/other.npz"))


def test_the_sweeps_copy_of_its_space_names_the_data_absolutely(tmp_path, monkeypatch):
    from searchvlm.sweep._rundir import init_run_dir

    _npz(tmp_path / "data" / "t.npz")
    monkeypatch.chdir(tmp_path)
    space_file = _tokens_space(tmp_path, "data/t.npz")
    space = load_space(space_file)
    run = tmp_path / "runs" / "tok"
    init_run_dir(run, space_file, space, "tok", "sqlite:///x.db")
    monkeypatch.chdir(tmp_path / "runs")  # confirm / decide from another folder read the same file
    copy = load_space(run / "tok.yaml")
    assert copy.data.path == str(tmp_path / "data" / "t.npz")
    assert copy.space_hash() == read_meta(run / "sweep.json").space_hash
    assert read_meta(run / "sweep.json").cache_dir is None


# --------------------------------------------------------------------------- the baseline key


def _key(data: DataConfig, tasks: tuple[str, ...] = TASKS) -> str:
    spec = RunSpec(ModelConfig(), ReductionPolicy.dense(4), TrainingConfig(steps=6), tasks, 0)
    return baseline_key(spec, data, False)


def test_the_baseline_key_holds_the_data_files_content_not_its_path(tmp_path):
    one = _npz(tmp_path / "a" / "t.npz")
    moved = tmp_path / "b" / "copy.npz"
    moved.parent.mkdir()
    shutil.copy2(one, moved)
    key = _key(DataConfig(name="tokens", path=str(one)))
    assert _key(DataConfig(name="tokens", path=str(moved))) == key  # copied or moved: a cache hit
    _npz(moved, n=15)  # changed content at the same path: a miss
    assert _key(DataConfig(name="tokens", path=str(moved))) != key
    assert _key(DataConfig(name="tokens", path=str(one)), ("understanding",)) != key


def test_generated_data_keep_their_keys():
    """No file: the key is what it was (test_data_seed pins two of them too)."""
    from searchvlm.train.baselines import _where

    assert _where(DataConfig()) == set()
    assert "path" in DataConfig().model_dump(mode="json")


# --------------------------------------------------------------------------- cache dir, Ray Client


def test_a_sweeps_cache_dir_is_where_confirm_and_decide_look(tmp_path):
    run = tmp_path / "runs" / "s"
    meta = SweepMeta(name="s", space_path="x.yaml", space_hash="h", package_version="0", model={})
    assert meta.cache_path(run) == tmp_path / "runs" / "cache"
    shared = meta.model_copy(update={"cache_dir": "/shared/cache"})
    assert shared.cache_path(run) == Path("/shared/cache")
    assert json.loads(shared.model_dump_json())["cache_dir"] == "/shared/cache"


@pytest.mark.parametrize("via_env", [False, True])
def test_ray_client_is_refused_with_the_supported_ways(monkeypatch, via_env):
    from searchvlm.sweep._cluster import cluster_address

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if via_env:
        monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    with pytest.raises(ConfigError) as err:
        cluster_address(None if via_env else "ray://head:10001")
    text = str(err.value)
    assert len(text.splitlines()) == 1 and ("RAY_ADDRESS" if via_env else "--address") in text
    assert "ray job submit" in text and "head node" in text
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster_address("10.0.0.1:6379") == "10.0.0.1:6379" and cluster_address(None) is None


def test_the_sweep_command_refuses_ray_client_before_anything_is_written(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from searchvlm.cli import app

    space = tiny_space(tmp_path / "q.yaml")
    runs = tmp_path / "runs"
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    res = CliRunner().invoke(app, ["sweep", str(space), "--runs-dir", str(runs), "--address", "ray://head:10001",
                                   "--no-progress"])  # fmt: skip
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "ray job submit" in lines[0], res.output
    assert not runs.exists()


# --------------------------------------------------------------------------- the pre-flight check


def _expected(tmp_path: Path, files: dict[str, str | None]):
    from searchvlm.sweep._preflight import Expected, versions

    return Expected(files, str(tmp_path / "cache"), versions())


def test_a_node_with_every_input_passes(tmp_path):
    from searchvlm.sweep._preflight import node_problems, sha256

    data = _npz(tmp_path / "t.npz")
    assert node_problems(_expected(tmp_path, {str(data): sha256(str(data))})) == []
    assert (tmp_path / "cache").is_dir() and not list((tmp_path / "cache").iterdir())  # its probe removed


def test_a_node_names_each_missing_changed_or_unwritable_thing(tmp_path):
    from searchvlm.sweep._preflight import Expected, node_problems, sha256

    data = _npz(tmp_path / "t.npz")
    want = sha256(str(data))
    missing = str(tmp_path / "gone.npz")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    expected = Expected({missing: "0" * 64, str(data): "f" * 64}, str(blocker / "cache"),
                        {"searchvlm": "0.0.0-other", "torch": "1.0"})  # fmt: skip
    problems = dict(node_problems(expected))
    assert "file not found on this node" in problems[missing]
    assert "differs from the driver's copy" in problems[str(data)] and want[:12] in problems[str(data)]
    assert "not writable" in problems[str(blocker / "cache")]
    assert any(k.startswith("searchvlm ") and "driver runs searchvlm 0.0.0-other" in v for k, v in problems.items())
    assert any(k.startswith("torch ") for k in problems)


def test_the_inputs_of_a_space_are_its_data_and_model_files(tmp_path, monkeypatch):
    from searchvlm.sweep._preflight import inputs, sha256

    data = _npz(tmp_path / "data" / "t.npz")
    monkeypatch.chdir(tmp_path)
    space = load_space(_tokens_space(tmp_path, "data/t.npz"))
    assert inputs(space) == {str(data): sha256(str(data))}
    assert inputs(load_space(tiny_space(tmp_path / "q.yaml"))) == {}


@pytest.mark.sweep  # a local Ray
def test_preflight_on_a_ray_node_stops_with_one_line_naming_node_and_file(tmp_path, monkeypatch):
    """A one-node Ray: the file disappears after the driver read it, as on a node without it."""
    import ray

    from searchvlm.sweep import ensure_ray, shutdown_ray
    from searchvlm.sweep._preflight import preflight

    data = _npz(tmp_path / "data" / "t.npz")
    monkeypatch.chdir(tmp_path)
    space_file = _tokens_space(tmp_path, "data/t.npz")
    space = load_space(space_file)
    started = ensure_ray(num_cpus=1)
    try:
        assert preflight(space, space_file, tmp_path / "cache") == 1
        from searchvlm.sweep import _preflight

        monkeypatch.setattr(_preflight, "inputs", lambda s: {str(data): "0" * 64, str(tmp_path / "gone"): None})
        with pytest.raises(ConfigError) as err:
            preflight(space, space_file, tmp_path / "cache")
        node = ray.nodes()[0]
        text = str(err.value)
        assert len(text.splitlines()) == 1, text
        assert str(data) in text and node["NodeID"][:12] in text and node["NodeManagerAddress"] in text
        assert "differs from the driver's copy" in text
    finally:
        if started:
            shutdown_ray()


# --------------------------------------------------------------------------- shipped baselines


def test_shipped_cache_entries_fill_what_a_nodes_cache_lacks(tmp_path):
    from searchvlm.train.baselines import RunRecord, _write, cache_entry, get_baseline, store_entries

    driver, node = tmp_path / "driver", tmp_path / "node"
    (driver / "baselines").mkdir(parents=True)
    _write(driver / "baselines" / "k1.json", RunRecord(("understanding",), 0, val={"und_acc": {10: 0.5}}))
    entry = cache_entry(driver, "baselines/k1.json")
    assert entry is not None and cache_entry(driver, "baselines/k2.json") is None
    assert store_entries(node, {"baselines/k1.json": entry, "codebooks/c1.npz": b"npz"}) == 2
    assert store_entries(node, {"baselines/k1.json": b"{damaged"}) == 0  # present: never overwritten
    found = get_baseline(node, "k1", train=lambda: pytest.fail("a shipped baseline is trained again"))
    assert found.cached and found.val == {"und_acc": {10: 0.5}}
    assert (node / "codebooks" / "c1.npz").read_bytes() == b"npz"
    assert not list(node.rglob(".shipped.*"))  # no temporary left
    for name in ("../x.json", "baselines/../../x", "other/k.json", "/abs/baselines/k.json", "baselines/.lock"):
        with pytest.raises(ValueError, match="no shipped cache entry"):
            store_entries(node, {name: b""})


def test_a_codebook_knows_its_cache_entry(tmp_path):
    """What the up-front baselines ship besides their runs: the patch codebook of their data."""
    from searchvlm.data import load_data
    from searchvlm.schema.config import TokenizerConfig

    cfg = DataConfig(name="shapes", train_size=40, val_size=8, test_size=8,
                     tokenizer=TokenizerConfig(kind="patch", patch=4, codes=8))  # fmt: skip
    book = load_data(cfg, cache_dir=tmp_path).codebook
    assert book.cache_key and (tmp_path / "codebooks" / f"{book.cache_key}.npz").is_file()
    assert load_data(cfg, cache_dir=tmp_path).codebook.cache_key == book.cache_key  # read back: the same entry
    assert load_data(cfg).codebook.cache_key is None  # no cache, no entry


def test_the_sweeps_cache_dir_given_recorded_or_beside_the_runs(tmp_path):
    from searchvlm.schema.results import write_meta
    from searchvlm.sweep._driver import _cache_dir
    from searchvlm.sweep._rundir import record_cache_dir

    run = tmp_path / "runs" / "s"
    run.mkdir(parents=True)
    meta = SweepMeta(name="s", space_path="x.yaml", space_hash="h", package_version="0", model={})
    write_meta(run / "sweep.json", meta)
    assert _cache_dir(run, resume=False, given=None) == tmp_path / "runs" / "cache"
    assert _cache_dir(run, resume=True, given=None) == (tmp_path / "runs" / "cache").resolve()
    assert _cache_dir(run, resume=False, given=tmp_path / "shared") == (tmp_path / "shared").resolve()
    record_cache_dir(run, tmp_path / "shared")
    assert read_meta(run / "sweep.json").cache_dir == str(tmp_path / "shared")
    assert _cache_dir(run, resume=True, given=None) == (tmp_path / "shared").resolve()


def test_the_sweep_command_passes_cache_dir_and_storage(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import searchvlm.sweep as sweep_pkg
    from searchvlm.cli import app

    seen = {}

    def fake(space_file, **kw):
        seen.update(kw)
        raise ConfigError(None, "stop", None, "stopped here")

    monkeypatch.setattr(sweep_pkg, "run_sweep", fake, raising=False)
    space = tiny_space(tmp_path / "q.yaml")
    res = CliRunner().invoke(app, ["sweep", str(space), "--cache-dir", str(tmp_path / "shared"),
                                   "--storage", "s3://b/p/"])  # fmt: skip
    assert res.exit_code == 2 and "stopped here" in res.output, res.output
    assert seen["options"].cache_dir == tmp_path / "shared"
    assert seen["options"].storage == "s3://b/p"  # checked and recorded plain (tests/sweep/test_storage.py)


@pytest.mark.slow
@pytest.mark.sweep
def test_a_sweep_with_cache_dir_keeps_every_baseline_and_codebook_there(tmp_path):
    """`--cache-dir`: the up-front baselines, their codebook and the trials use it (none in
    runs/cache), sweep.json records it, and `confirm` would read it."""
    from searchvlm.sweep import SweepOptions, ensure_ray, run_sweep, shutdown_ray

    space = tiny_space(tmp_path / "cd.yaml", samples=1, concurrency=1, calibrated=False)
    runs, shared = tmp_path / "runs", tmp_path / "shared_cache"
    started = ensure_ray(num_cpus=1)
    try:
        s = run_sweep(space, name="cd", runs_dir=runs, progress=False, options=SweepOptions(cache_dir=shared))
    finally:
        if started:
            shutdown_ray()
    assert s.counts["ok"] == 1
    assert len(list((shared / "baselines").glob("*.json"))) == 2  # each task alone, seed 0
    assert len(list((shared / "codebooks").glob("*.npz"))) == 1
    assert not (runs / "cache" / "baselines").exists()
    meta = read_meta(s.run_dir / "sweep.json")
    assert meta.cache_dir == str(shared.resolve()) and meta.cache_path(s.run_dir) == shared.resolve()

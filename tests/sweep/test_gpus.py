"""Sweeps on GPUs without a GPU: a local Ray with two logical GPUs (`ray.init(num_gpus=2)`).

Trials ask Ray for `search.gpus_per_trial` with their CPUs, `concurrency: auto` follows the
cluster, each trial records where it ran (trials.csv, MLflow, load_trials), a trial given two
GPUs trains over two processes, and a sweep that asks for more GPUs per trial than the
cluster has fails before it writes anything.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import yaml
from typer.testing import CliRunner

from helpers.sweeps import child_runs, tiny_space
from searchvlm.schema.results import read_trials
from searchvlm.sweep import run_sweep, shutdown_ray

pytestmark = pytest.mark.sweep  # every test here runs on the module's local Ray

CPUS, GPUS = 4, 2


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")  # one baseline cache for the module


@pytest.fixture(scope="module", autouse=True)
def logical_gpus() -> Iterator[None]:
    from searchvlm.sweep._cluster import loopback_only

    loopback_only()
    ray.init(address="local", num_cpus=CPUS, num_gpus=GPUS, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)  # fmt: skip
    yield
    shutdown_ray()


def _space(tmp_path: Path, gpus: float, samples: int = 4) -> Path:
    path = tiny_space(tmp_path / f"g{gpus}.yaml", samples=samples, steps=20, calibrated=False)
    data = yaml.safe_load(path.read_text())
    data["search"].update(concurrency="auto", gpus_per_trial=gpus, cpus_per_trial=1)
    if gpus > 1:  # one process per GPU: data parallel
        data["training"]["shard"] = "ddp"
    path.write_text(yaml.safe_dump(data))
    return path


def _interval(run_dir: Path, row: dict) -> tuple[float, float]:
    """When a trial's worker trained (Unix seconds): its final Tune report's `started_at`
    and `trial_wall_s` (trials.csv's times have a 1 s resolution), inside the time Ray held
    its resources."""
    final = json.loads((run_dir / "ray" / row["trial_id"] / "result.json").read_text().splitlines()[-1])
    return final["started_at"], final["started_at"] + final["trial_wall_s"]


def _most_at_once(run_dir: Path, rows: list[dict]) -> int:
    """The most trials of `rows` whose training intervals share an instant."""
    spans = [_interval(run_dir, r) for r in rows]
    return max(sum(a < t < b for a, b in spans) for t in (a + 1e-3 for a, _ in spans))


def _sweep(tmp_path: Path, runs: Path, gpus: float, name: str, capsys: pytest.CaptureFixture) -> list[dict]:
    summary = run_sweep(_space(tmp_path, gpus), name=name, runs_dir=runs, progress=False)
    assert summary.counts["ok"] == 4, [r["error"] for r in summary.rows]
    rows = read_trials(summary.run_dir / "trials.csv")
    assert {r["node"] for r in rows} == {"127.0.0.1"}
    assert {r["device"] for r in rows} == {"cpu"}  # logical GPUs: no CUDA behind them
    return rows


def test_one_gpu_per_trial_two_at_once(tmp_path: Path, runs: Path, capsys: pytest.CaptureFixture) -> None:
    rows = _sweep(tmp_path, runs, 1.0, "g1", capsys)
    assert "concurrency auto: 2 trials at once" in capsys.readouterr().err
    assert {r["gpu_ids"] for r in rows} <= {"0", "1"}
    for a, b in itertools.combinations(rows, 2):  # overlapping trials never share a GPU
        (a0, a1), (b0, b1) = _interval(runs / "g1", a), _interval(runs / "g1", b)
        if a0 < b1 and b0 < a1:
            assert a["gpu_ids"] != b["gpu_ids"], (a, b)
    from searchvlm import load_trials

    df = load_trials("g1", runs_dir=runs)
    assert sorted(df["gpu_ids"]) == sorted(r["gpu_ids"] for r in rows) and set(df["device"]) == {"cpu"}
    tags = {c.data.tags["trial_id"]: c.data.tags for c in child_runs(f"sqlite:///{runs / 'mlflow.db'}", runs,
                                                                       runs / "g1")}  # fmt: skip
    assert {t: (g["node"], g["gpu_ids"], g["device"]) for t, g in tags.items()} == {
        r["trial_id"]: (r["node"], r["gpu_ids"], r["device"]) for r in rows
    }


def test_half_gpu_packs_four_two_per_gpu(tmp_path: Path, runs: Path, capsys: pytest.CaptureFixture) -> None:
    rows = _sweep(tmp_path, runs, 0.5, "g05", capsys)
    assert "concurrency auto: 4 trials at once" in capsys.readouterr().err
    assert {r["gpu_ids"] for r in rows} == {"0", "1"}
    assert _most_at_once(runs / "g05", rows) == 4
    for gpu in ("0", "1"):
        assert _most_at_once(runs / "g05", [r for r in rows if r["gpu_ids"] == gpu]) == 2


def test_two_gpus_per_trial_train_over_two_processes(tmp_path: Path, runs: Path,
                                                     capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    """Above one GPU a trial trains data parallel, one process per GPU (here gloo processes on
    the CPU behind the logical GPUs; tests/test_distributed.py checks their numbers)."""
    path = _space(tmp_path, 2.0, samples=1)
    data = yaml.safe_load(path.read_text())
    data["data"].update(train_size={"understanding": 64, "generation": 32}, val_size=32, test_size=32)
    data["training"].update(steps=10, eval_every=5)
    data["synergy"]["baseline"] = "matched"  # no up-front baselines: the trial's ranks train its own
    path.write_text(yaml.safe_dump(data))
    summary = run_sweep(path, name="g2", runs_dir=runs, progress=False)
    assert summary.counts["ok"] == 1, [r["error"] for r in summary.rows]
    assert "concurrency auto: 1 trials at once" in capsys.readouterr().err
    (row,) = read_trials(summary.run_dir / "trials.csv")
    assert (row["gpu_ids"], row["device"]) == ("0,1", "cpu")


def test_more_gpus_than_the_cluster_has_fails_first(tmp_path: Path) -> None:
    from searchvlm.cli import app

    path = _space(tmp_path, 3.0)
    res = CliRunner().invoke(app, ["sweep", str(path), "--runs-dir", str(tmp_path / "runs"), "--no-progress"])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert "search.gpus_per_trial = 3.0" in lines[0] and "GPU 2" in lines[0], lines[0]
    assert not (tmp_path / "runs").exists()

"""benchmarks/regularised_baseline.py (CONTROLS_PLAN.md's C3) on a tiny space: the isolated
generator retrained per weight decay, picked by its own validation, cached, and the plan's rule."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from regularised_baseline import tuned_baseline, verdict  # noqa: E402


@pytest.fixture(scope="module")
def tiny_space(tmp_path_factory) -> Path:
    space = yaml.safe_load((ROOT / "search_spaces" / "quick.yaml").read_text())
    space["training"].update(steps=20, eval_every=10)
    space["data"].update(train_size={"understanding": 64, "generation": 32}, val_size=16, test_size=16)
    path = tmp_path_factory.mktemp("c3") / "tiny.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def test_each_decay_is_its_own_cached_run_and_validation_picks_one(tiny_space: Path, tmp_path: Path) -> None:
    got = tuned_baseline(tiny_space, 3, [0.01, 0.5], tmp_path)
    runs = got["runs"]
    assert set(runs) == {"0.01", "0.5"}
    best = max(runs, key=lambda wd: (runs[wd]["val"], -float(wd)))
    assert got["picked_weight_decay"] == float(best) and got["test"] == runs[best]["test"]
    assert all(r["round"] in (10, 20) and r["last_round"] == 20 for r in runs.values())
    entries = sorted((tmp_path / "baselines").glob("*.json"))
    assert len(entries) == 2  # one generator per decay, nothing else trained
    before = [e.stat().st_mtime_ns for e in entries]
    assert tuned_baseline(tiny_space, 3, [0.01, 0.5], tmp_path) == got  # the rerun reads the cache
    assert [e.stat().st_mtime_ns for e in entries] == before


def test_the_plans_rule() -> None:
    assert verdict((0.01, 0.02), (-0.10, 0.02)).startswith("A")
    assert verdict((0.10, 0.02), (-0.01, 0.02)).startswith("B")
    assert verdict((0.03, 0.02), (-0.03, 0.02)).startswith("inconclusive")
    assert verdict((0.03, None), (-0.03, None)).startswith("inconclusive")

"""The proxy table's analysis (benchmarks/proxy_table_analysis.py) and its committed policy list."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from proxy_table_analysis import analyse, two_way_anova  # noqa: E402


def _ols_f(y: np.ndarray) -> tuple[float, float]:
    """The policy F test as a comparison of two least-squares fits (with and without policy dummies)."""
    p, s = y.shape
    pol = np.repeat(np.eye(p), s, axis=0)  # (P*S, P)
    seed = np.tile(np.eye(s), (p, 1))[:, 1:]  # (P*S, S-1)
    full, reduced = np.hstack([pol, seed]), np.hstack([np.ones((p * s, 1)), seed])
    rss = [float(((y.ravel() - x @ np.linalg.lstsq(x, y.ravel(), rcond=None)[0]) ** 2).sum()) for x in (full, reduced)]
    df_res = (p - 1) * (s - 1)
    f = ((rss[1] - rss[0]) / (p - 1)) / (rss[0] / df_res)
    return f, float(stats.f.sf(f, p - 1, df_res))


@pytest.mark.parametrize("effect", [0.0, 0.15])
def test_anova_equals_a_least_squares_model_comparison(effect: float) -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(0, 0.03, (12, 5)) + effect * np.arange(12)[:, None] / 12 + rng.normal(0, 0.02, 5)[None, :]
    got = two_way_anova(y)["policy"]
    f, p = _ols_f(y)
    assert got["F"] == pytest.approx(f, rel=1e-9) and got["p"] == pytest.approx(p, rel=1e-6)
    assert (got["p"] < 0.05) == (effect > 0)  # the planted trend is found, noise alone is not


def test_partial_table_counts_complete_rows_only() -> None:
    def row(seeds: list[int], y: float) -> dict:
        curve = lambda s: [[75, y, 0, 0, 0, 0], [150, y + s, 0, 0, 0, 0]]  # noqa: E731
        return {"seeds": [{"seed": s, "status": "ok", "synergy_gain": y + 0.01 * s, "machine": "cpu",
                           "synergy_vs_dense": y * (1 + s) ** 2, "curve": curve(s)} for s in seeds]}  # fmt: skip

    table = {"seeds": [0, 1, 2], "curve_columns": ["step", "synergy_gain", "a", "b", "c", "d"],
             "rows": [row([0, 1, 2], 0.1), row([0, 1], 0.2), row([0, 1, 2], 0.3), row([0, 1, 2], 0.0)]}  # fmt: skip
    out = analyse(table)
    assert out["complete_rows"] == 3 and out["cpu_models"] == ["cpu"] and "pooled" not in out
    table["rows"][2]["seeds"][0].update(machine="other cpu", isa="AVX2")  # a run from a verified restart
    out = analyse(table)
    assert out["cpu_models"] == ["cpu", "other cpu"] and out["pooled"].endswith("AVX2, native, not recorded")
    table["rows"][2]["seeds"][0].update(machine="cpu")
    table["rows"][2]["seeds"][0].pop("isa")
    assert [r["step"] for r in out["rung_noise"]] == [75, 150]
    noise = [r["seed_sd"] for r in out["rung_noise"]]
    assert noise == pytest.approx([0.0, 1.0])


def test_the_committed_policy_list_follows_the_plan() -> None:
    points = json.loads((ROOT / "benchmarks/data/proxy_table_points.json").read_text())["points"]
    sampled = [p for p in points if p["kind"] == "sampled"]
    presets = {p["preset"] for p in points if p["kind"] == "preset"}
    assert len(sampled) == 41 and len(points) == 48 and "dense" not in presets and len(presets) == 7
    assert sorted(p["bin"] for p in sampled) == list(range(41))  # one draw per FLOPs bin
    assert len({json.dumps(p["policy"], sort_keys=True) for p in points}) == 48
    assert all(p["flops_ratio"] < 1.0 for p in points)

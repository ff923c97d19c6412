"""benchmarks/diagnose_tau.py: docs/diagnose.md's rule for the gradient conflict as a search prior."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from diagnose_tau import kendall_tau, tau_with_interval, verdict  # noqa: E402


def test_kendall_tau_by_hand() -> None:
    # pairs (1,2),(1,3),(2,3): x rises in all three; y rises, rises, falls -> (2 - 1) / 3
    assert kendall_tau(np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0])) == pytest.approx(1 / 3)


def test_the_rule_needs_the_size_and_an_interval_that_excludes_zero() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=48)
    strong = tau_with_interval(x, x + rng.normal(scale=0.3, size=48), boot=1000)
    assert strong["tau"] > 0.6 and strong["ci95"][0] > 0 and verdict(strong).startswith("a search prior")
    noise = tau_with_interval(x, rng.normal(size=48), boot=1000)
    assert noise["ci95"][0] < 0 < noise["ci95"][1] and verdict(noise) == "not a search prior"
    weak = {"tau": 0.3, "ci95": [0.1, 0.5]}  # excludes 0 but under 0.4
    assert verdict(weak) == "not a search prior"

"""Tests of searchvlm.objectives.noninferiority: the bounds against scipy's own one-sample t-test, the
seeds a decision needs against a hand-computed noncentral-t power, and the race's error
rate and power on simulated paired seeds (>= 400 races each)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from searchvlm.objectives.noninferiority import bounds, look_schedule, power, race, seeds_needed

DELTA, ALPHA = 0.04, 0.05


def test_bounds_match_a_one_sided_t_test() -> None:
    d = [0.012, -0.031, 0.044, 0.003, 0.020, -0.008]
    mean, lo, hi, p = bounds(d, 0.025, DELTA)
    se = np.std(d, ddof=1) / math.sqrt(len(d))
    assert mean == pytest.approx(np.mean(d))
    assert lo == pytest.approx(np.mean(d) - 2.5705818 * se, abs=1e-7)  # t(0.975, 5), from a table
    assert hi == pytest.approx(np.mean(d) + 2.5705818 * se, abs=1e-7)
    # H0: difference <= -delta  <=>  d + delta has mean <= 0: scipy's test is independent of ours
    assert p == pytest.approx(stats.ttest_1samp(np.add(d, DELTA), 0.0, alternative="greater").pvalue)
    assert (lo > -DELTA) == (p < 0.025)


def test_bounds_without_spread_and_too_few_seeds() -> None:
    assert bounds([0.01, 0.01, 0.01], 0.05, DELTA) == (0.01, 0.01, 0.01, 0.0)
    assert bounds([-0.05, -0.05], 0.05, DELTA)[3] == 1.0
    with pytest.raises(ValueError, match="at least 2"):
        bounds([0.1], 0.05, DELTA)


def test_power_and_seeds_needed_against_hand_computed_noncentral_t() -> None:
    # n = 10, delta / sd = 1, alpha 0.05: t(0.95, 9) = 1.8331, noncentrality sqrt(10) = 3.1623,
    # power = P(T'(9, 3.1623) > 1.8331) = 0.8975 (noncentral t table)
    assert power(10, sd=1.0, delta=1.0, alpha=0.05) == pytest.approx(0.8975, abs=1e-4)
    # 80% is first reached at 8 seeds: power 0.7544 at 7, 0.8150 at 8
    assert power(7, 1.0, 1.0, 0.05) == pytest.approx(0.7544, abs=1e-4)
    assert seeds_needed(1.0, 1.0, 0.05) == 8
    assert seeds_needed(0.5, 1.0, 0.05) < 8 < seeds_needed(2.0, 1.0, 0.05)
    assert seeds_needed(1.0, 1.0, 0.05, diff=-1.0) is None  # a true loss of the whole margin: never


def test_power_matches_a_simulated_t_test() -> None:
    rng = np.random.default_rng(0)
    n, sd, reps = 8, 1.0, 20000
    d = rng.normal(0.0, sd, size=(reps, n))  # (reps, n) true difference 0
    t = (d.mean(axis=1) + 1.0) / (d.std(axis=1, ddof=1) / math.sqrt(n))
    simulated = float(np.mean(t > stats.t.ppf(0.95, n - 1)))
    assert simulated == pytest.approx(power(n, sd, 1.0, 0.05), abs=4 * math.sqrt(0.2 * 0.8 / reps))


def test_looks_double_up_to_the_maximum() -> None:
    assert look_schedule(5, 10) == [5, 10]
    assert look_schedule(3, 20) == [3, 6, 12, 20]
    assert look_schedule(4, 4) == [4]
    with pytest.raises(ValueError):
        look_schedule(1, 5)


def _simulated(true: dict[str, float], sd: float, rng: np.random.Generator, max_seeds: int = 10):
    """A race's `sample` on normal paired differences: each candidate's seeds drawn once."""
    draws = {name: rng.normal(mu, sd, size=max_seeds) for name, mu in true.items()}
    return lambda name, n: draws[name][:n]


def _races(true: dict[str, float], sd: float, reps: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    order = [(name, 1.0 - 0.1 * i) for i, name in enumerate(true)]  # most expensive first
    return [race(order, _simulated(true, sd, rng), DELTA, ALPHA, look_schedule(5, 10)) for _ in range(reps)]


def _mc(p: float, reps: int) -> float:
    return 3 * math.sqrt(p * (1 - p) / reps)


def test_no_policy_qualifies_wrong_acceptance_within_alpha() -> None:
    """Every candidate is worse than dense by exactly the margin (the hardest true null)."""
    reps = 1000
    results = _races({"a": -DELTA, "b": -DELTA, "c": -DELTA}, sd=0.05, reps=reps)
    wrong = np.mean([r.verdict == "accepted" for r in results])
    assert wrong <= ALPHA + _mc(ALPHA, reps)
    assert {r.verdict for r in results} <= {"accepted", "none_qualifies", "undetermined"}


def test_a_worse_cheaper_policy_is_rarely_accepted_after_a_good_one() -> None:
    reps = 1000
    results = _races({"good": 0.0, "bad": -DELTA}, sd=0.035, reps=reps, seed=1)
    wrong = np.mean([r.accepted is not None and r.accepted.name == "bad" for r in results])
    assert wrong <= ALPHA + _mc(ALPHA, reps)
    assert np.mean([r.accepted is not None and r.accepted.name == "good" for r in results]) > 0.5


def test_a_non_inferior_policy_is_accepted_with_80_percent_power_at_10_seeds() -> None:
    """Planning point: true difference 0, paired SD 0.035, margin 0.04: 10 seeds give 0.89
    power at one look of alpha / 2 (`power`); the race (looks 5 and 10) must reach 0.80."""
    assert power(10, 0.035, DELTA, ALPHA / 2) > 0.8
    reps = 1000
    results = _races({"a": 0.0}, sd=0.035, reps=reps, seed=2)
    accepted = np.mean([r.verdict == "accepted" for r in results])
    assert accepted >= 0.80 - _mc(0.8, reps)
    assert max(r.tested[0].seeds for r in results) == 10  # seeds added only while undecided
    assert np.mean([r.tested[0].seeds == 5 for r in results]) > 0.2


def test_the_race_stops_at_the_first_candidate_not_shown_non_inferior() -> None:
    fixed = {"a": [0.01, 0.012, 0.008, 0.011, 0.009], "b": [-0.2, -0.21, -0.19, -0.2, -0.2],
             "c": [0.05] * 5}  # fmt: skip
    asked: list[tuple[str, int]] = []

    def sample(name: str, n: int) -> list[float]:
        asked.append((name, n))
        return fixed[name][:n]

    r = race([("a", 0.9), ("b", 0.7), ("c", 0.5)], sample, DELTA, ALPHA, [5])
    assert r.verdict == "accepted" and r.accepted is not None and r.accepted.name == "a"
    assert r.stopped_at == "b" and [t.state for t in r.tested] == ["non_inferior", "inferior"]
    assert asked == [("a", 5), ("b", 5)]  # c is never trained: the sequence stopped at b


def test_undetermined_says_how_many_seeds_would_decide() -> None:
    noisy = [0.05, -0.09, 0.02, -0.06, 0.04]
    r = race([("a", 0.8)], lambda name, n: noisy[:n], DELTA, ALPHA, [5])
    assert r.verdict == "undetermined" and r.accepted is None
    sd = float(np.std(noisy, ddof=1))
    assert r.seeds_needed == seeds_needed(sd, DELTA, ALPHA) and r.seeds_needed > 5
    with pytest.raises(ValueError, match="delta"):
        race([("a", 0.8)], lambda name, n: noisy[:n], 0.0, ALPHA, [5])
    with pytest.raises(ValueError, match="alpha"):
        race([("a", 0.8)], lambda name, n: noisy[:n], DELTA, 0.5, [5])

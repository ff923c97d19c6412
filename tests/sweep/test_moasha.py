"""MO-ASHA (searchvlm.sweep._moasha): rung levels, the ranking by front then crowding, and
the rung decisions, without a Ray session."""

from __future__ import annotations

import numpy as np

from searchvlm.sweep._moasha import MOASHA, keeps, rank_order, rung_levels


def test_rung_levels():
    assert rung_levels(10, 3, 100) == [10, 30, 90]
    assert rung_levels(100, 3, 500) == [100, 300]


def test_rank_order_front_then_crowding():
    pts = np.array([[0.5, -0.1], [0.3, -0.2], [0.9, 0.0], [np.inf, np.inf]])
    assert rank_order(pts).tolist() == [1, 0, 2, 3]
    assert keeps(pts, 1, 3) and keeps(pts, 0, 3) and not keeps(pts, 2, 3)


def test_moasha_rung_decisions():
    s = MOASHA(["flops_ratio", "synergy_gain"], ["min", "max"], grace_steps=10, max_steps=100,
               reduction_factor=3)  # fmt: skip
    good = {"flops_ratio": 0.5, "synergy_gain": 0.2}
    bad = {"flops_ratio": 0.9, "synergy_gain": -0.1}  # dominated by `good`
    assert s.decide("a", 10, good) == "CONTINUE"  # first at the rung
    assert s.decide("b", 10, bad) == "STOP"  # top ceil(2/3)=1 only
    assert s.decide("c", 10, {"flops_ratio": 0.4, "synergy_gain": 0.3}) == "CONTINUE"
    assert s.decide("a", 20, good) == "CONTINUE"  # between rungs: no decision
    assert s.decide("d", 10, {"flops_ratio": None, "synergy_gain": 1.0}) == "STOP"  # missing = worst
    assert s.stopped == {"b", "d"}


def test_presets_are_never_stopped_but_compared_with():
    """A literature preset (a protected trial) is a reference point: it joins the rung and is
    never stopped; a later trial it dominates is stopped against it."""
    s = MOASHA(["flops_ratio", "synergy_gain"], ["min", "max"], grace_steps=10, max_steps=100,
               reduction_factor=3)  # fmt: skip
    assert s.decide("a", 10, {"flops_ratio": 0.5, "synergy_gain": 0.2}) == "CONTINUE"
    assert s.decide("preset", 10, {"flops_ratio": 0.9, "synergy_gain": -0.1}, protected=True) == "CONTINUE"
    assert s.decide("b", 10, {"flops_ratio": 0.95, "synergy_gain": -0.2}) == "STOP"
    assert s.stopped == {"b"} and "preset" in s.rungs[10]


def test_on_trial_result_protects_preset_trials():
    from types import SimpleNamespace

    s = MOASHA(["flops_ratio", "synergy_gain"], ["min", "max"], grace_steps=10, max_steps=100,
               reduction_factor=3)  # fmt: skip
    s.decide("a", 10, {"flops_ratio": 0.5, "synergy_gain": 0.2})
    hmgen = SimpleNamespace(trial_id="h", config={"preset": "hmgen"})
    other = SimpleNamespace(trial_id="o", config={"und.mode": "skip"})
    worse = {"step": 10, "flops_ratio": 0.9, "synergy_gain": -0.195}
    assert s.on_trial_result(None, hmgen, worse) == "CONTINUE"
    assert s.on_trial_result(None, other, worse) == "STOP"


def test_a_rung_does_not_stop_a_trial_on_a_difference_within_the_noise():
    """With `noise` (what a rung cannot tell apart) a trial out of the top 1/eta is stopped only
    if it would still be dominated with that much synergy added: HMGen-like at -0.195 against
    +0.05 survives a noise of 0.28 (2 s.e. of a one-seed difference at SD 0.1), not one of 0.1."""

    def rung(noise):
        s = MOASHA(["flops_ratio", "synergy_gain"], ["min", "max"], grace_steps=10, max_steps=100,
                   reduction_factor=3, noise=noise)  # fmt: skip
        s.decide("a", 10, {"flops_ratio": 0.5, "synergy_gain": 0.05})
        return s.decide("h", 10, {"flops_ratio": 0.9, "synergy_gain": -0.195})

    assert rung(None) == "STOP"
    assert rung({"synergy_gain": 0.1}) == "STOP"  # -0.095 is still dominated by (0.5, 0.05)
    assert rung({"synergy_gain": 0.28}) == "CONTINUE"  # +0.085 would not be: not told apart

"""Synergy-gain arithmetic (docs/definitions.md)."""

from __future__ import annotations

import math

import pytest

from searchvlm.objectives.synergy import aggregate, mean_stderr, relative_gain, seed_gains


def test_relative_gain_signs_follow_direction() -> None:
    assert relative_gain(0.6, 0.5, higher_is_better=True) == pytest.approx(0.2)
    assert relative_gain(0.4, 0.5, higher_is_better=True) == pytest.approx(-0.2)
    # lower-is-better (NLL): a lower joint value is a gain
    assert relative_gain(1.5, 2.0, higher_is_better=False) == pytest.approx(0.25)
    assert relative_gain(2.5, 2.0, higher_is_better=False) == pytest.approx(-0.25)


def test_seed_gains_min_and_mean() -> None:
    g = seed_gains(und_joint=0.55, und_iso=0.5, gen_joint=1.9, gen_iso=2.0, how="min")
    assert g.und_gain == pytest.approx(0.1)
    assert g.gen_gain == pytest.approx(0.05)
    assert g.synergy_gain == pytest.approx(0.05)
    assert seed_gains(0.55, 0.5, 1.9, 2.0, how="mean").synergy_gain == pytest.approx(0.075)


def test_aggregate_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="aggregate"):
        aggregate(0.1, 0.2, "max")  # type: ignore[arg-type]


def test_mean_stderr() -> None:
    mean, se = mean_stderr([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0)
    assert se == pytest.approx(1.0 / math.sqrt(3))
    assert mean_stderr([0.5]) == (0.5, None)
    with pytest.raises(ValueError):
        mean_stderr([])


def test_best_step_takes_the_earliest_best_and_checkpoint_reads_test() -> None:
    from searchvlm.objectives.synergy import Checkpoint, best_step, checkpoint, paired_difference

    acc = {100: 0.5, 200: 0.7, 300: 0.7, 400: 0.6}
    nll = {100: 2.0, 200: 1.5, 300: 1.6, 400: 1.5}
    assert best_step(acc, True) == 200 and best_step(nll, False) == 200
    test = {100: 0.4, 200: 0.65, 300: 0.66, 400: 0.61}
    se = {s: 0.01 * s / 100 for s in test}
    assert checkpoint("und_acc", acc, test, se, "best") == Checkpoint(200, 0.65, 0.02)
    assert checkpoint("gen_nll", nll, test, se, "best").step == 200
    assert checkpoint("und_acc", acc, test, se, "final") == Checkpoint(400, 0.61, 0.04)
    with pytest.raises(ValueError, match="synergy.at"):
        checkpoint("und_acc", acc, test, se, "last")  # type: ignore[arg-type]
    mean, stderr = paired_difference([0.3, 0.1], [0.1, 0.2])
    assert mean == pytest.approx(0.05) and stderr == pytest.approx(0.15)

"""Tests of searchvlm.objectives.ehvi: the improvement against moocore's hypervolume, the closed form
against a Monte Carlo estimate, and what a known cost implies (0 at dense's cost, cheaper
preferred under a flat posterior)."""

from __future__ import annotations

import moocore
import numpy as np
import pytest

from searchvlm.objectives.ehvi import ehvi_known_cost, hvi_known_cost, steps

FRONT = np.array([[0.3, -0.02], [0.5, -0.08], [0.8, -0.15], [0.9, 0.05]])  # (cost, -synergy); the last dominated
REF = (1.0, 0.0)


def _hv(points: np.ndarray) -> float:
    inside = points[(points[:, 0] < REF[0]) & (points[:, 1] < REF[1])]
    return float(moocore.hypervolume(inside, ref=np.array(REF))) if len(inside) else 0.0


def test_staircase_keeps_the_non_dominated_steps() -> None:
    a, b = steps(FRONT, REF)
    assert a.tolist() == [0.3, 0.5, 0.8] and b.tolist() == [-0.02, -0.08, -0.15]


@pytest.mark.parametrize("cost", [0.1, 0.3, 0.42, 0.65, 0.85, 0.99])
def test_improvement_equals_moocore_hypervolume_difference(cost: float) -> None:
    for loss in np.linspace(-0.3, 0.05, 36):
        expected = _hv(np.vstack([FRONT, [cost, loss]])) - _hv(FRONT)
        assert hvi_known_cost(cost, float(loss), FRONT, REF) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("cost", "mu", "sigma"), [(0.2, -0.05, 0.05), (0.45, -0.1, 0.03), (0.7, -0.2, 0.1),
                                                    (0.6, -0.03, 0.05)])  # fmt: skip
def test_closed_form_equals_monte_carlo_within_one_percent(cost: float, mu: float, sigma: float) -> None:
    y = np.random.default_rng(0).normal(mu, sigma, size=2_000_000)
    a, b = steps(FRONT, REF)
    # HVI is piecewise linear in y: exact at every sample through the staircase (checked
    # against moocore above), vectorised here
    edges = np.r_[cost, a[a > cost], REF[0]]
    levels = np.r_[b[a <= cost][-1] if (a <= cost).any() else REF[1], b[a > cost]]
    mc = float(np.mean(np.maximum(0.0, levels[None, :] - y[:, None]) @ np.diff(edges)))
    closed = float(ehvi_known_cost(np.array([cost]), np.array([mu]), np.array([sigma]), FRONT, REF)[0])
    assert closed == pytest.approx(mc, rel=0.01)


def test_zero_at_and_above_the_dense_cost() -> None:
    out = ehvi_known_cost(np.array([1.0, 1.2]), np.array([-5.0, -5.0]), np.array([1.0, 1.0]), FRONT, REF)
    assert out.tolist() == [0.0, 0.0]


def test_a_flat_posterior_prefers_cheaper_policies() -> None:
    costs = np.linspace(0.05, 0.95, 19)
    flat = np.full(19, -0.05), np.full(19, 0.1)
    for front in (np.empty((0, 2)), FRONT):
        out = ehvi_known_cost(costs, *flat, front, REF)
        assert np.all(np.diff(out) < 0)


def test_no_spread_is_the_improvement_itself() -> None:
    out = ehvi_known_cost(np.array([0.4]), np.array([-0.1]), np.array([0.0]), FRONT, REF)
    assert out[0] == pytest.approx(hvi_known_cost(0.4, -0.1, FRONT, REF))

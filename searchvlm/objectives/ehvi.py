"""Expected hypervolume improvement when one of two objectives is known exactly.

L1 module (numpy; scipy's normal distribution). Both objectives minimised: the cost `c`
(a policy's FLOPs ratio, computed before training) is known; the loss `Y` (minus synergy)
is a Gaussian posterior N(mu, sigma^2). Against a front P (points (a_i, b_i)) and a
reference point (r1, r2), the volume a candidate adds is a sum over the cost intervals
[u_k, u_k+1) between c and r1 (split at the front's costs) of the interval's width times
how far Y lies below the best loss already attained there, B_k = min(r2, b_i : a_i <= u_k):

    HVI(c, y) = sum_k w_k * max(0, B_k - y)
    EHVI(c)   = sum_k w_k * [(B_k - mu) * Phi(z_k) + sigma * phi(z_k)],   z_k = (B_k - mu) / sigma

(the expected positive part of a Gaussian). That is the closed form of Olofsson et al.,
IEEE TBME 2019 (two objectives, one deterministic); BoTorch reaches the same by putting
the known objective in a `GenericDeterministicModel`. EHVI is 0 at c >= r1: a policy as
costly as dense adds nothing, whatever its synergy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ehvi_known_cost", "hvi_known_cost", "steps"]


def steps(front: np.ndarray, ref: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """The attained-loss staircase of `front` ((n, 2) minimised points) inside `ref`:
    (costs a_k ascending, best loss B_k from a_k on), each B_k below r2."""
    pts = np.asarray(front, dtype=float).reshape(-1, 2)  # (n, 2)
    pts = pts[(pts[:, 0] < ref[0]) & (pts[:, 1] < ref[1]) & np.isfinite(pts).all(axis=1)]
    if len(pts) == 0:
        return np.empty(0), np.empty(0)
    pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]  # by cost, then loss
    best = np.minimum.accumulate(pts[:, 1])  # (n,) best loss at or below each cost
    keep = np.r_[True, best[1:] < best[:-1]]  # where the staircase steps down
    return pts[keep, 0], best[keep]


def _segments(cost: float, a: np.ndarray, b: np.ndarray, ref: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Widths and attained losses of the intervals between `cost` and r1."""
    if cost >= ref[0]:
        return np.empty(0), np.empty(0)
    before = a <= cost
    start_b = float(b[before][-1]) if before.any() else ref[1]
    edges = np.r_[cost, a[~before], ref[0]]  # (k+1,)
    levels = np.r_[start_b, b[~before]]  # (k,)
    return np.diff(edges), levels


def hvi_known_cost(cost: float, loss: float, front: np.ndarray, ref: tuple[float, float]) -> float:
    """The hypervolume the point (cost, loss) adds to `front` inside `ref`."""
    w, lv = _segments(cost, *steps(front, ref), ref)
    return float(np.sum(w * np.maximum(0.0, lv - loss)))


def ehvi_known_cost(cost: np.ndarray, mu: np.ndarray, sigma: np.ndarray, front: np.ndarray,
                    ref: tuple[float, float]) -> np.ndarray:  # fmt: skip
    """EHVI of each candidate (`cost` exact, loss ~ N(`mu`, `sigma`^2)); shape (m,)."""
    from scipy.stats import norm

    a, b = steps(front, ref)
    out = np.zeros(len(cost))
    for i, (c, m, s) in enumerate(zip(np.asarray(cost, float), np.asarray(mu, float), np.asarray(sigma, float))):
        w, lv = _segments(float(c), a, b, ref)
        if len(w) == 0:
            continue
        if s <= 0:
            out[i] = float(np.sum(w * np.maximum(0.0, lv - m)))
            continue
        z = (lv - m) / s  # (k,)
        out[i] = float(np.sum(w * ((lv - m) * norm.cdf(z) + s * norm.pdf(z))))
    return out

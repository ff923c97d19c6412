"""Synergy gain: how much joint training beats isolated single-task training (DESIGN.md).

L1 module: pure arithmetic on floats. Per task the relative improvement of the joint model
over its isolated baseline, sign-flipped for lower-is-better metrics:
    g_U = (U_joint - U_iso) / |U_iso|      (understanding accuracy: higher is better)
    g_G = (G_iso - G_joint) / |G_iso|      (generation NLL: lower is better)
    synergy_gain = min(g_U, g_G)  (default; `mean` as an option)
Seeds are paired (joint seed s against isolated seed s); mean and standard error reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

_EPS = 1e-12


def relative_gain(joint: float, isolated: float, higher_is_better: bool) -> float:
    """Relative improvement of `joint` over `isolated` (positive = joint is better)."""
    denom = max(abs(isolated), _EPS)
    diff = joint - isolated if higher_is_better else isolated - joint
    return diff / denom


def aggregate(g_u: float, g_g: float, how: Literal["min", "mean"] = "min") -> float:
    if how == "min":
        return min(g_u, g_g)
    if how == "mean":
        return 0.5 * (g_u + g_g)
    raise ValueError(f"synergy.aggregate = {how!r} must be 'min' or 'mean'")


@dataclass(frozen=True)
class SeedGains:
    """Gains of one seed's paired joint/isolated runs."""

    und_gain: float
    gen_gain: float
    synergy_gain: float


def seed_gains(
    und_joint: float,
    und_iso: float,
    gen_joint: float,
    gen_iso: float,
    how: Literal["min", "mean"] = "min",
) -> SeedGains:
    g_u = relative_gain(und_joint, und_iso, higher_is_better=True)
    g_g = relative_gain(gen_joint, gen_iso, higher_is_better=False)
    return SeedGains(g_u, g_g, aggregate(g_u, g_g, how))


def mean_stderr(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and standard error of the mean (None with a single value)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n == 1:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)

"""Synergy gain: how much joint training beats isolated single-task training (docs/definitions.md).

L1 module: pure arithmetic on floats. Per task the relative improvement of the joint model
over its isolated baseline, sign-flipped for lower-is-better metrics:
    g_U = (U_joint - U_iso) / |U_iso|      (understanding accuracy: higher is better)
    g_G = (G_iso - G_joint) / |G_iso|      (generation NLL: lower is better; `synergy.gen_metric`
                                            caption_acc / fidelity: (G_joint - G_iso) / |G_iso|)
    synergy_gain = min(g_U, g_G)  (default; `mean` as an option)
Seeds are paired (joint seed s against isolated seed s); mean and standard error reported.
Each metric's direction is its row in `searchvlm.schema.metrics`.

Which checkpoint is scored (`synergy.at`): `best` takes each run's own evaluation round
with the best VALIDATION value of the task's metric (the earliest such round; early
stopping), then reads that round's TEST value; `final` takes the last round. A run that
overfits is compared at its best, so regularisation by the other task is not read as synergy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Sequence

from searchvlm.schema.metrics import REGISTRY, LiveMap, gen_metric_choices

__all__ = [
    "Checkpoint",
    "GEN_METRICS",
    "HIGHER_IS_BETTER",
    "SeedGains",
    "aggregate",
    "best_step",
    "checkpoint",
    "mean_stderr",
    "paired_difference",
    "relative_gain",
    "seed_gains",
]

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
    gen_higher_is_better: bool = False,
) -> SeedGains:
    """Gains of one seed; the generation metric is an NLL (lower better) unless
    `gen_higher_is_better` (caption accuracy, fidelity)."""
    g_u = relative_gain(und_joint, und_iso, higher_is_better=True)
    g_g = relative_gain(gen_joint, gen_iso, higher_is_better=gen_higher_is_better)
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


#: metric -> whether higher is better (its row in `searchvlm.schema.metrics`, read at every look-up)
HIGHER_IS_BETTER: Mapping[str, bool] = LiveMap(lambda: {m.name: m.higher_is_better for m in REGISTRY.values()})
#: `synergy.gen_metric` -> the metric g_G is computed on (`searchvlm.schema.metrics`, read at every look-up)
GEN_METRICS: Mapping[str, str] = LiveMap(gen_metric_choices)


@dataclass(frozen=True)
class Checkpoint:
    """The scored evaluation round of one run and metric: its step, test value and s.e."""

    step: int
    value: float
    se: float | None


def best_step(curve: Mapping[int, float], higher_is_better: bool) -> int:
    """The earliest step whose value is the best of `curve` (step -> validation value)."""
    if not curve:
        raise ValueError("empty validation curve")
    steps = sorted(curve)
    best = (max if higher_is_better else min)(curve[s] for s in steps)
    return next(s for s in steps if curve[s] == best)


def checkpoint(
    metric: str,
    val: Mapping[int, float],
    test: Mapping[int, float],
    test_se: Mapping[int, float] | None = None,
    at: Literal["best", "final"] = "best",
) -> Checkpoint:
    """The round `at` picks from the validation curve, scored on test."""
    if at == "best":
        step = best_step(val, HIGHER_IS_BETTER[metric])
    elif at == "final":
        step = max(val)
    else:
        raise ValueError(f"synergy.at = {at!r} must be 'best' or 'final'")
    se = None if test_se is None else test_se.get(step)
    return Checkpoint(step, test[step], se)


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float | None]:
    """Mean and standard error of a[i] - b[i] over paired seeds."""
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    return mean_stderr([x - y for x, y in zip(a, b)])

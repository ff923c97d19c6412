"""MO-ASHA: multi-objective asynchronous successive halving as a Ray Tune scheduler.

After Syne Tune's MOASHA (Schmucker et al., "Multi-objective ASHA", 2021). Rungs sit at
geometric step counts `grace * η^k` (< `max_steps`). When a trial first reaches a rung its
intermediate objective vector is recorded there; it continues only if it ranks in the
top `max(1, ceil(n / η))` of the `n` vectors recorded at that rung, ranked by
non-dominated sorting (Pareto rank, via moocore) and, inside a front, by crowding distance
(larger first). Objectives are normalised to "minimise"; a missing or non-finite value is
`inf` for every objective (ranks last). Stopped trials are reported to the searcher without a final result,
which `_searcher.MOOptunaSearch` tells Optuna as PRUNED, never COMPLETE.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import moocore
import numpy as np
from ray.tune.experiment import Trial
from ray.tune.schedulers.trial_scheduler import FIFOScheduler, TrialScheduler

from ._keys import PRESET_ATTR


def rung_levels(grace: int, eta: float, max_steps: int) -> list[int]:
    """Geometric rung step counts below `max_steps`: grace, grace·η, grace·η², ..."""
    levels, r = [], float(grace)
    while round(r) < max_steps:
        levels.append(int(round(r)))
        r *= eta
    return sorted(set(levels))


def normalise(values: Sequence[float | None], modes: Sequence[str]) -> np.ndarray:
    """One objective vector as 'minimise' (max objectives negated). A missing or
    non-finite value makes the whole vector `inf`: it ranks behind every complete one."""
    if any(v is None or not math.isfinite(float(v)) for v in values):
        return np.full(len(modes), np.inf)
    return np.asarray([-float(v) if m == "max" else float(v) for v, m in zip(values, modes)])


def crowding(points: np.ndarray) -> np.ndarray:
    """Crowding distance of points in one front, shape (n, m) -> (n,); extremes get inf."""
    n, m = points.shape
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(m):
        order = np.argsort(points[:, j], kind="stable")
        col = points[order, j]
        span = col[-1] - col[0]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span > 0 and np.isfinite(span):
            dist[order[1:-1]] += (col[2:] - col[:-2]) / span
    return dist


def rank_order(points: np.ndarray) -> np.ndarray:
    """Indices of `points` (n, m; minimise) best first: Pareto rank, then crowding."""
    finite = np.where(np.isfinite(points), points, np.finfo(float).max)
    ranks = moocore.pareto_rank(finite)  # (n,) 1 = non-dominated
    crowd = np.zeros(len(points))
    for r in np.unique(ranks):
        idx = np.flatnonzero(ranks == r)
        crowd[idx] = crowding(finite[idx])
    return np.lexsort((-crowd, ranks))


def keeps(points: np.ndarray, index: int, eta: float) -> bool:
    """Does point `index` rank in the top max(1, ceil(n/η)) of `points`?"""
    top = max(1, math.ceil(len(points) / eta))
    return index in set(rank_order(points)[:top].tolist())


class MOASHA(FIFOScheduler):
    """Ray Tune scheduler: multi-objective successive halving over `metrics`/`modes`."""

    def __init__(
        self,
        metrics: list[str],
        modes: list[str],
        grace_steps: int,
        max_steps: int,
        reduction_factor: float = 3.0,
        time_attr: str = "step",
        noise: dict[str, float] | None = None,
    ) -> None:
        """`noise`: per metric, a difference the rung cannot tell from noise (e.g. 2 standard
        errors of a one-seed difference): a trial is stopped only if it would still rank out
        with that much added in its favour."""
        super().__init__()
        self.metrics, self.modes, self.eta, self.time_attr = metrics, modes, reduction_factor, time_attr
        self.benefit = np.array([(noise or {}).get(m, 0.0) for m in metrics])  # (m,) subtracted: minimise
        self.levels = rung_levels(grace_steps, reduction_factor, max_steps)
        self.rungs: dict[int, dict[str, np.ndarray]] = {lv: {} for lv in self.levels}
        self.stopped: set[str] = set()

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # metrics/modes are ours; the Tuner's single metric is not used

    def decide(self, trial_id: str, step: int, result: dict[str, Any], protected: bool = False) -> str:
        """CONTINUE or STOP for one intermediate result (pure; unit-tested directly). A
        `protected` trial (a literature preset: the reference points a front is read
        against) joins the rungs, so others are compared with it, and is never stopped."""
        vec = normalise([result.get(m) for m in self.metrics], self.modes)
        for level in self.levels:
            rung = self.rungs[level]
            if step < level or trial_id in rung:
                continue
            rung[trial_id] = vec
            ids = list(rung)
            if not protected and not self._keeps(trial_id, rung, ids):
                self.stopped.add(trial_id)
                return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def _keeps(self, trial_id: str, rung: dict[str, np.ndarray], ids: list[str]) -> bool:
        """In the rung's top 1/η, or (with `noise`) on its front once the noise is given to it:
        a trial that might be non-dominated is not stopped on a difference the rung cannot see."""
        points = np.stack([rung[i] for i in ids])  # (n, m)
        index = ids.index(trial_id)
        if keeps(points, index, self.eta):
            return True
        if not self.benefit.any() or not np.isfinite(points[index]).all():
            return False
        doubt = points.copy()
        doubt[index] = points[index] - self.benefit
        ranks = moocore.pareto_rank(np.where(np.isfinite(doubt), doubt, np.finfo(float).max))  # (n,)
        return int(ranks[index]) == int(ranks.min())

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        if result.get("final") or self.time_attr not in result:
            return TrialScheduler.CONTINUE
        protected = bool((trial.config or {}).get(PRESET_ATTR))
        return self.decide(trial.trial_id, int(result[self.time_attr]), result, protected)

    def debug_string(self) -> str:
        sizes = ", ".join(f"{lv}:{len(r)}" for lv, r in self.rungs.items())
        return f"MOASHA rungs {{{sizes}}}, stopped {len(self.stopped)}"

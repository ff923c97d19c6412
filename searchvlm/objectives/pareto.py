"""Pareto logic over a sweep's trials: front, ranks, hypervolume, knee and selection rules.

L1 module: numpy + moocore only. Rows are the `results.TrialRow`s of `results.read_trials`
(any mapping with `trial_id`, `number`, `status`, `flops_ratio`, `synergy_gain` works; its
per-seed cells are decoded by `TrialRow.of`).

Objectives are normalised to "minimise": `flops_ratio` as is, `synergy_gain` negated.
A trial counts only when `status == "ok"` and both objectives are finite; failed, pruned
and incomplete trials are never on the front and always rank last (they are kept, never
dropped: `pareto_ranks` gives them `max_rank + 1`).

Numbers are any real numbers: Python's, numpy's (float32, int64, ...) and pandas' cells
alike; booleans are not numbers here.

Ties: trials with identical objectives are all on the front (moocore's `keep_weakly`), and
every rule breaks ties deterministically (lower FLOPs, then higher synergy, then the
earlier trial `number`).

Noise: the front is computed on the means over seeds (a row's `synergy_gain`). FLOPs are
exact, synergy is noisy: two points whose synergy differs by at most 2 standard errors of
their difference (`paired_se`: paired by seed when they share 2+ seeds, else the two
standard errors combined) are `ties`; a dominated point is `near_front` when no front
point at most as costly beats it by more than that.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import moocore
import numpy as np

from searchvlm.schema.errors import COMMAND_LINE, ConfigError
from searchvlm.schema.results import TrialRow, finite_number
from searchvlm.schema.search import RULES

Row = Mapping[str, Any]
#: a row type a function hands back as it was given (a `TrialRow`, a dict)
R = TypeVar("R", bound=Row)
#: hypervolume reference FLOPs ratio (the dense model); the synergy side defaults to the
#: dense preset trial's synergy gain, else the worst among the valid trials (`default_ref`).
REF_FLOPS = 1.0

__all__ = [
    "REF_FLOPS",
    "RULES",
    "TIE_SE",
    "confirm_candidates",
    "default_ref",
    "default_ref_source",
    "finite_number",
    "front",
    "hypervolume",
    "hypervolume_history",
    "is_valid",
    "knee",
    "near_front",
    "nondominated",
    "objectives",
    "paired_se",
    "pareto_ranks",
    "per_seed",
    "pooled_seed_sd",
    "select",
    "ties",
]
#: standard errors within which two synergy values are not told apart
TIE_SE = 2.0


# --------------------------------------------------------------------------- objectives


def is_valid(row: Row) -> bool:
    """A trial that can be on the front: status ok and both objectives finite numbers."""
    return (
        row.get("status") == "ok"
        and finite_number(row.get("flops_ratio")) is not None
        and finite_number(row.get("synergy_gain")) is not None
    )


def objectives(rows: Sequence[Row]) -> np.ndarray:
    """(n, 2) minimisation matrix `[flops_ratio, -synergy_gain]`; invalid rows are `inf`."""
    pts = np.full((len(rows), 2), np.inf)  # (n, 2)
    for i, row in enumerate(rows):
        if is_valid(row):
            pts[i] = (float(row["flops_ratio"]), -float(row["synergy_gain"]))
    return pts


def nondominated(points: np.ndarray, keep_duplicates: bool = True) -> np.ndarray:
    """Boolean mask of the non-dominated rows of a minimisation matrix (n, m).

    Rows holding a non-finite value are never non-dominated. Exact duplicates of a
    non-dominated point are all kept unless `keep_duplicates` is False (then the first).
    """
    pts = np.asarray(points, dtype=float)
    mask = np.zeros(len(pts), dtype=bool)
    finite = np.isfinite(pts).all(axis=1) if pts.size else mask.copy()
    if finite.any():
        mask[finite] = moocore.is_nondominated(pts[finite], keep_weakly=keep_duplicates)
    return mask


def pareto_ranks(rows: Sequence[Row]) -> np.ndarray:
    """Non-dominated sorting rank per row (0 = front); invalid rows get `max_rank + 1`."""
    pts = objectives(rows)
    finite = np.isfinite(pts).all(axis=1)
    ranks = np.zeros(len(rows), dtype=int)
    if finite.any():
        ranks[finite] = moocore.pareto_rank(pts[finite])
    ranks[~finite] = (ranks[finite].max() + 1) if finite.any() else 0
    return ranks


def _order(rows: Sequence[Row]) -> list[int]:
    """Indices sorted by FLOPs, then higher synergy, then trial number (ties broken)."""
    pts = objectives(rows)
    nums = [_number(r, i) for i, r in enumerate(rows)]
    return sorted(range(len(rows)), key=lambda i: (pts[i, 0], pts[i, 1], nums[i]))


def _number(row: Row, default: int) -> int:
    num = finite_number(row.get("number"))
    return default if num is None else int(num)


def front(rows: Sequence[R]) -> list[R]:
    """The non-dominated valid trials, sorted by FLOPs ratio (ascending)."""
    mask = nondominated(objectives(rows))
    return [rows[i] for i in _order(rows) if mask[i]]


# --------------------------------------------------------------------------- noise


def per_seed(row: Row) -> dict[int, float]:
    """`{seed: synergy gain}` of a row (columns `seeds` and `synergy_per_seed`, JSON lists)."""
    r = TrialRow.of(row)
    if len(r.seeds) != len(r.synergy_per_seed):
        return {}
    return {s: v for s, v in zip(r.seeds, r.synergy_per_seed) if v is not None}


def paired_se(a: Row, b: Row, default: float | None = None) -> float | None:
    """Standard error of `synergy(a) - synergy(b)`: paired by seed over their common seeds
    (2 or more), else from both rows' `synergy_gain_stderr` (`default` standing in for a
    missing one); None when unknown."""
    pa, pb = per_seed(a), per_seed(b)
    common = sorted(set(pa) & set(pb))
    if len(common) >= 2:
        d = np.array([pa[s] - pb[s] for s in common])  # (n,)
        return float(d.std(ddof=1) / math.sqrt(len(d)))
    ses = [finite_number(r.get("synergy_gain_stderr")) for r in (a, b)]
    ses = [default if v is None else v for v in ses]
    if any(v is None for v in ses):
        return None
    return float(math.hypot(*ses))  # type: ignore[arg-type]


def pooled_seed_sd(rows: Sequence[Row]) -> float | None:
    """Seed standard deviation of synergy pooled over the valid rows with 2+ seeds
    (`stderr * sqrt(n)`), for points measured on one seed; None when no row has two."""
    var, dof = 0.0, 0
    for r in rows:
        n, se = len(TrialRow.of(r).seeds), finite_number(r.get("synergy_gain_stderr"))
        if is_valid(r) and n >= 2 and se is not None:
            var += se * se * n * (n - 1)
            dof += n - 1
    return math.sqrt(var / dof) if dof else None


def ties(rows: Sequence[Row], k: float = TIE_SE, default_se: float | None = None) -> dict[str, list[str]]:
    """For each front point, the other front points whose synergy it cannot be told apart
    from (difference within `k` paired standard errors); `{trial_id: [trial_id, ...]}`."""
    fr = front(rows)
    out: dict[str, list[str]] = {str(r["trial_id"]): [] for r in fr}
    for i, a in enumerate(fr):
        for b in fr[i + 1 :]:
            se = paired_se(a, b, default_se)
            if se is not None and abs(float(a["synergy_gain"]) - float(b["synergy_gain"])) <= k * se:
                out[str(a["trial_id"])].append(str(b["trial_id"]))
                out[str(b["trial_id"])].append(str(a["trial_id"]))
    return out


def _shortfall(row: Row, fr: Sequence[Row], default_se: float | None) -> float:
    """How many paired standard errors the front beats `row` by, at most its FLOPs (inf when
    a front point beats it with unknown noise; 0 when nothing cheaper beats it)."""
    worst = 0.0
    for f in fr:
        gap = float(f["synergy_gain"]) - float(row["synergy_gain"])
        if float(f["flops_ratio"]) > float(row["flops_ratio"]) or gap <= 0:
            continue
        se = paired_se(f, row, default_se)
        worst = max(worst, gap / se if se else math.inf)
    return worst


def near_front(rows: Sequence[R], k: float = TIE_SE, default_se: float | None = None) -> list[R]:
    """Valid dominated points within `k` paired standard errors of the front, closest first."""
    fr = front(rows)
    on = {id(r) for r in fr}
    near = [(s, i, r) for i, r in enumerate(rows) if is_valid(r) and id(r) not in on
            for s in [_shortfall(r, fr, default_se)] if s <= k]  # fmt: skip
    return [r for _, _, r in sorted(near, key=lambda t: (t[0], float(t[2]["flops_ratio"]), t[1]))]


def confirm_candidates(rows: Sequence[R], top: int | None = None, k: float = TIE_SE,
                       default_se: float | None = None) -> list[R]:  # fmt: skip
    """The front (by FLOPs) then the near-front (closest first), at most `top` of them."""
    out = [*front(rows), *near_front(rows, k, default_se)]
    return out if top is None else out[:top]


# --------------------------------------------------------------------------- hypervolume


def default_ref(rows: Sequence[Row]) -> tuple[float, float]:
    """Default reference point `(flops_ratio, synergy_gain)`: (1.0, the dense model's synergy).

    The synergy side is the `dense` preset trial's synergy gain when the rows hold one (the
    lowest, when several sweeps are pooled): the volume then counts only policies that are
    cheaper than dense AND keep at least its synergy. Without a dense trial it is the worst
    synergy gain over the valid trials (0.0 when there is none). `default_ref_source` says
    which. A trial at the dense cost or at the reference synergy adds no volume.
    """
    dense = _dense_synergies(rows)
    if dense:
        return (REF_FLOPS, min(dense))
    syn = [float(r["synergy_gain"]) for r in rows if is_valid(r)]
    return (REF_FLOPS, min(syn) if syn else 0.0)


def default_ref_source(rows: Sequence[Row]) -> str:
    """What `default_ref(rows)`'s synergy is: "dense" (the dense preset trial's) or "worst" (seen)."""
    return "dense" if _dense_synergies(rows) else "worst"


def _dense_synergies(rows: Sequence[Row]) -> list[float]:
    return [float(r["synergy_gain"]) for r in rows if is_valid(r) and r.get("preset") == "dense"]


def _check_ref(ref: Sequence[float]) -> tuple[float, float]:
    vals = tuple(float(v) for v in ref)
    if len(vals) != 2 or not all(math.isfinite(v) for v in vals):
        raise ConfigError(None, "ref", ref, "must be two finite numbers (flops_ratio, synergy_gain)")
    return vals  # type: ignore[return-value]


def _hv(points: np.ndarray, ref_min: np.ndarray) -> float:
    pts = points[np.isfinite(points).all(axis=1)]
    if len(pts) == 0:
        return 0.0
    return float(moocore.hypervolume(pts, ref=ref_min))


def hypervolume(rows: Sequence[Row], ref: Sequence[float] | None = None) -> tuple[float, tuple[float, float]]:
    """Hypervolume of the valid trials (flops_ratio x synergy_gain area) and the reference.

    `ref` is `(flops_ratio, synergy_gain)` in natural units; default `default_ref(rows)`.
    Only points strictly better than `ref` in both objectives add volume.
    """
    ref_nat = default_ref(rows) if ref is None else _check_ref(ref)
    ref_min = np.array([ref_nat[0], -ref_nat[1]])
    return _hv(objectives(rows), ref_min), ref_nat


def hypervolume_history(rows: Sequence[Row], ref: Sequence[float] | None = None) -> list[tuple[int, float]]:
    """`(number, hypervolume)` after each trial, in trial `number` order.

    One fixed reference for the whole history (default: `default_ref` over ALL rows), so
    the curve never decreases; failed trials repeat the previous value.
    """
    ref_nat = default_ref(rows) if ref is None else _check_ref(ref)
    ref_min = np.array([ref_nat[0], -ref_nat[1]])
    idx = sorted(range(len(rows)), key=lambda i: _number(rows[i], i))
    pts = objectives([rows[i] for i in idx])  # (n, 2) in number order
    out: list[tuple[int, float]] = []
    hv = 0.0
    for k, i in enumerate(idx):
        if np.isfinite(pts[k]).all():
            hv = _hv(pts[: k + 1], ref_min)
        out.append((_number(rows[i], i), hv))
    return out


# --------------------------------------------------------------------------- knee and rules


def _knee_index(pts: np.ndarray) -> int:
    """Index (into `pts`, a front sorted by FLOPs) of the knee; see `knee`."""
    if len(pts) <= 2:
        return 0
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    z = (pts - lo) / span  # (n, 2) normalised to [0, 1]
    a, b = z[0], z[-1]  # extremes: min FLOPs, max synergy
    d = b - a
    # signed distance to the line a->b, positive on the ideal (0, 0) side
    cross = d[0] * (z[:, 1] - a[1]) - d[1] * (z[:, 0] - a[0])
    dist = -cross / max(float(np.hypot(*d)), 1e-12)
    best = np.flatnonzero(dist >= dist.max() - 1e-12)
    return int(best[0])


def knee(rows: Sequence[R]) -> R:
    """The front's knee: max distance to the line joining its two extremes.

    Rule (Das 1999 / "Kneedle"-style): normalise both minimised objectives to [0, 1] over
    the front, draw the line from the lowest-FLOPs point to the highest-synergy point and
    take the point farthest from it on the ideal side. Duplicated objective values count
    once; with one or two distinct points, or a front with no bulge, the lowest-FLOPs point
    wins; ties go to lower FLOPs, then the earlier trial.
    """
    fr = front(rows)
    if not fr:
        raise ConfigError(None, "trials", len(rows), _no_valid_reason(rows))
    pts = objectives(fr)
    _, first = np.unique(pts, axis=0, return_index=True)
    keep = np.sort(first)  # distinct points, still in FLOPs order
    return fr[int(keep[_knee_index(pts[keep])])]


def _no_valid_reason(rows: Sequence[Row]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        status = "incomplete" if r.get("status") == "ok" else str(r.get("status") or "missing")
        counts[status] = counts.get(status, 0) + 1
    detail = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no trials"
    return f"no trial finished with both objectives ({detail}); nothing to select"


def _feasible(rows: Sequence[R], max_flops: float | None, min_synergy: float | None) -> list[R]:
    return [
        r
        for r in rows
        if is_valid(r)
        and (max_flops is None or r["flops_ratio"] <= max_flops)
        and (min_synergy is None or r["synergy_gain"] >= min_synergy)
    ]


def _closest(rows: Sequence[Row], max_flops: float | None, min_synergy: float | None) -> Row:
    """The valid trial with the smallest constraint violation (each scaled by its spread)."""
    valid = [r for r in rows if is_valid(r)]
    pts = np.array([[r["flops_ratio"], r["synergy_gain"]] for r in valid], dtype=float)  # (n, 2)
    spread = np.ptp(pts, axis=0)
    spread = np.where(spread > 0, spread, 1.0)
    over = np.zeros(len(valid))
    if max_flops is not None:
        over += np.maximum(0.0, pts[:, 0] - max_flops) / spread[0]
    if min_synergy is not None:
        over += np.maximum(0.0, min_synergy - pts[:, 1]) / spread[1]
    nums = [_number(r, i) for i, r in enumerate(valid)]
    best = min(range(len(valid)), key=lambda i: (over[i], pts[i, 0], -pts[i, 1], nums[i]))
    return valid[best]


def _constraint_text(max_flops: float | None, min_synergy: float | None) -> str:
    parts = []
    if max_flops is not None:
        parts.append(f"flops_ratio <= {max_flops:g}")
    if min_synergy is not None:
        parts.append(f"synergy_gain >= {min_synergy:g}")
    return " and ".join(parts)


def _infeasible(rows: Sequence[Row], max_flops: float | None, min_synergy: float | None, source: Any) -> ConfigError:
    c = _closest(rows, max_flops, min_synergy)
    key = (
        "--max-flops"
        if min_synergy is None
        else "--min-synergy"
        if max_flops is None
        else ("--max-flops/--min-synergy")
    )
    value = max_flops if min_synergy is None else min_synergy if max_flops is None else ([max_flops, min_synergy])
    return ConfigError(
        source,
        key,
        value,
        f"no trial meets {_constraint_text(max_flops, min_synergy)}; the closest is trial "
        f"{c.get('trial_id')} (number {c.get('number')}, flops_ratio {c['flops_ratio']:.4g}, "
        f"synergy_gain {c['synergy_gain']:.4g}); relax the constraint or run more trials",
    )


def select(
    rows: Sequence[R],
    rule: str = "knee",
    max_flops: float | None = None,
    min_synergy: float | None = None,
    source: str | Path | None = None,
) -> R:
    """Pick one trial: `knee` | `max-synergy` | `min-flops` among the feasible trials.

    Feasible: valid, `flops_ratio <= max_flops` and `synergy_gain >= min_synergy` (when
    given). Raises `ConfigError` for an unknown rule (naming the argument), and naming
    `source` when no trial is valid or none is feasible (then with the closest trial).
    """
    if rule not in RULES:  # an argument, not the table: blamed on the caller
        raise ConfigError(COMMAND_LINE, "--rule", rule, f"must be one of {', '.join(RULES)}")
    if not any(is_valid(r) for r in rows):
        raise ConfigError(source, "trials", len(rows), _no_valid_reason(rows))
    feasible = _feasible(rows, max_flops, min_synergy)
    if not feasible:
        raise _infeasible(rows, max_flops, min_synergy, source)
    fr = front(feasible)  # sorted by FLOPs, then synergy, then number
    if rule == "min-flops":
        return fr[0]
    if rule == "max-synergy":
        best = max(r["synergy_gain"] for r in fr)
        return next(r for r in fr if r["synergy_gain"] == best)
    return knee(fr)

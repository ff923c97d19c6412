"""The decision rule: the cheapest policy whose synergy is non-inferior to dense's.

L1 module: arithmetic on paired per-seed differences (numpy; scipy's t and noncentral t,
imported on first use). `searchvlm.records.decide` trains the seeds; this module only reads them.

For one candidate, with d_i = synergy(policy, seed i) - synergy(dense, seed i) on n fresh
seeds (paired: the dense joint run of the same seed), mean m, standard error se:

    lower bound  LB = m - t(1 - a, n - 1) * se      one-sided, level 1 - a
    p            P(T(n - 1) >= (m + delta) / se)   for H0: true difference <= -delta

The candidate is *non-inferior* when LB > -delta (equivalently p < a), *inferior* when
the upper bound m + t(1 - a, n - 1) * se < -delta, else *undecided*. Not TOST: a policy
much better than dense passes (Hsu & Berger, JASA 1999).

The race (`race`): candidates are tested in a fixed order fixed before any race seed is
trained: most expensive first (the one most likely to keep synergy), then cheaper ones
(Hsu-Berger fixed sequence / the "minimum effective dose" step-down of Tamhane & Logan,
JASA 2002). Each hypothesis is tested at level alpha and the race stops at the first
candidate that is not shown non-inferior; the answer is the last one accepted. Why no
adjustment is needed across candidates: a wrong acceptance needs the first truly inferior
candidate of the order accepted, and that single test has level alpha.

Seeds are added in looks (`looks`: e.g. 5 then 10 seeds) only while a candidate is
undecided (`run_looks`). Several looks at one candidate are several chances to cross, so each
look is tested at alpha / (number of looks) (Bonferroni over looks: conservative, needs no
independence). Hence: the family-wise probability of accepting any policy whose true
difference is at most -delta is at most alpha.

A table of policies (`confirm`, `reproduce`: every row its own verdict, not a race) tests
each of its m rows at alpha / m (`row_verdicts`); run until decided (`reproduce --max-seeds`,
`sequential_verdicts`), with the same looks as the race, each look of each row at
alpha / (m * number of looks) (Bonferroni over rows and looks): the chance that any row's
verdict is wrong stays at most alpha however many looks a row takes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = [
    "CandidateTest",
    "RaceResult",
    "Verdict",
    "bounds",
    "look_schedule",
    "power",
    "race",
    "row_verdicts",
    "run_looks",
    "seeds_needed",
    "sequential_level",
    "sequential_verdicts",
    "check_candidate",
]

Verdict = Literal["accepted", "none_qualifies", "undetermined"]
State = Literal["non_inferior", "inferior", "undecided"]
#: the power `seeds_needed` plans for
TARGET_POWER = 0.8


def _t_quantile(q: float, df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(q, df))


def bounds(diffs: Sequence[float], level_alpha: float, delta: float) -> tuple[float, float, float, float]:
    """(mean, lower bound, upper bound, p) of paired differences at one-sided level `level_alpha`;
    p tests H0 "true difference <= -delta". Needs 2+ values; a zero spread gives exact bounds."""
    d = np.asarray(diffs, dtype=float)  # (n,)
    n = len(d)
    if n < 2:
        raise ValueError(f"a bound needs at least 2 paired seeds, got {n}")
    mean, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(n))
    if se == 0.0:
        return mean, mean, mean, 0.0 if mean > -delta else 1.0
    from scipy import stats

    half = _t_quantile(1.0 - level_alpha, n - 1) * se
    p = float(stats.t.sf((mean + delta) / se, n - 1))
    return mean, mean - half, mean + half, p


def power(n: int, sd: float, delta: float, alpha: float, diff: float = 0.0) -> float:
    """Probability that n paired seeds show non-inferiority at level `alpha` when the true
    difference is `diff` and the paired seed SD `sd`: 1 - F_nct(t(1-alpha, n-1); n-1, (diff+delta)*sqrt(n)/sd)."""
    from scipy import stats

    if n < 2:
        return 0.0
    if sd <= 0:
        return 1.0 if diff > -delta else 0.0
    nc = (diff + delta) * math.sqrt(n) / sd
    return float(stats.nct.sf(_t_quantile(1.0 - alpha, n - 1), n - 1, nc))


def seeds_needed(sd: float, delta: float, alpha: float, target: float = TARGET_POWER, diff: float = 0.0,
                 limit: int = 100_000) -> int | None:  # fmt: skip
    """The fewest paired seeds with `power(n, sd, delta, alpha, diff) >= target` (noncentral t);
    None when no number of seeds can (the true difference at or below -delta) or above `limit`."""
    if diff + delta <= 0:
        return None
    lo, hi = 2, 2
    while power(hi, sd, delta, alpha, diff) < target:
        if hi >= limit:
            return None
        lo, hi = hi, min(hi * 2, limit)
    while lo < hi:  # power rises with n: the first n that reaches the target
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if power(mid, sd, delta, alpha, diff) < target else (lo, mid)
    return lo


def look_schedule(first: int, max_seeds: int) -> list[int]:
    """Seed counts at which a candidate is tested: `first`, doubling, ending at `max_seeds`."""
    if first < 2 or max_seeds < first:
        raise ValueError(f"looks need 2 <= first ({first}) <= max_seeds ({max_seeds})")
    looks = [first]
    while looks[-1] < max_seeds:
        looks.append(min(2 * looks[-1], max_seeds))
    return looks


@dataclass
class CandidateTest:
    """One candidate's race: its paired differences and what they showed."""

    name: str
    flops_ratio: float
    state: State = "undecided"
    seeds: int = 0
    mean: float | None = None
    sd: float | None = None
    lower: float | None = None
    upper: float | None = None
    p: float | None = None
    diffs: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_candidate(test: CandidateTest, diffs: Sequence[float], level_alpha: float, delta: float) -> CandidateTest:
    """Update `test` with the bounds of `diffs` at level `level_alpha` (one look)."""
    mean, lo, hi, p = bounds(diffs, level_alpha, delta)
    test.diffs, test.seeds = [float(v) for v in diffs], len(diffs)
    test.mean, test.lower, test.upper, test.p = mean, lo, hi, p
    test.sd = float(np.std(np.asarray(diffs, dtype=float), ddof=1))
    test.state = "non_inferior" if lo > -delta else "inferior" if hi < -delta else "undecided"
    return test


@dataclass
class RaceResult:
    """A race's outcome: the verdict, the accepted candidate (if any), every candidate tested
    (in test order), and for an undecided stop the seeds a decision would need."""

    verdict: Verdict
    accepted: CandidateTest | None
    tested: list[CandidateTest]
    delta: float
    alpha: float
    looks: list[int]
    seeds_needed: int | None = None
    stopped_at: str | None = None  # the candidate the race stopped on (not shown non-inferior)

    @property
    def level_per_look(self) -> float:
        return self.alpha / len(self.looks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict, "delta": self.delta, "alpha": self.alpha, "looks": self.looks,
            "level_per_look": self.level_per_look, "seeds_needed": self.seeds_needed, "stopped_at": self.stopped_at,
            "accepted": None if self.accepted is None else self.accepted.as_dict(),
            "tested": [t.as_dict() for t in self.tested],
        }  # fmt: skip


#: the paired differences of candidate `name` on its first `n` race seeds (trains what is missing);
#: None when they cannot be had (a table's row whose training failed: `run_looks` drops it)
Sample = Callable[[str, int], Sequence[float] | None]


def run_looks(tests: Sequence[CandidateTest], sample: Sample, level: float, delta: float,
              looks: Sequence[int]) -> None:  # fmt: skip
    """Test each of `tests` look by look (`check_candidate` at `level` on `sample(name, n)`
    for n in `looks`), adding seeds only to the tests still undecided: a test stops at its
    first decided look, at the last look (the cap), or when `sample` gives None."""
    pending = list(tests)
    for n in looks:
        still = []
        for test in pending:
            diffs = sample(test.name, n)
            if diffs is None:
                continue
            check_candidate(test, diffs, level, delta)
            if test.state == "undecided":
                still.append(test)
        pending = still
        if not pending:
            return


def race(order: Sequence[tuple[str, float]], sample: Sample, delta: float, alpha: float,
         looks: Sequence[int]) -> RaceResult:  # fmt: skip
    """Run the fixed-sequence race over `order` ((name, flops_ratio), most expensive first;
    see the module docstring), asking `sample` for each candidate's differences look by look."""
    if not delta > 0:
        raise ValueError(f"delta = {delta} must be > 0")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha = {alpha} must be in (0, 0.5)")
    level = alpha / len(looks)
    tested: list[CandidateTest] = []
    accepted: CandidateTest | None = None
    for name, flops in order:
        test = CandidateTest(name, float(flops))
        tested.append(test)
        run_looks([test], sample, level, delta, looks)
        if test.state != "non_inferior":
            return _stop(test, accepted, tested, delta, alpha, list(looks))
        accepted = test
    return RaceResult("accepted" if accepted else "none_qualifies", accepted, tested, delta, alpha, list(looks))


def _stop(test: CandidateTest, accepted: CandidateTest | None, tested: list[CandidateTest], delta: float,
          alpha: float, looks: list[int]) -> RaceResult:  # fmt: skip
    """The race stopped on `test`: the last accepted candidate stands; else none qualifies
    (shown inferior) or the answer is undetermined (with the seeds the stopping one needs)."""
    need = None
    if test.state == "undecided" and test.sd is not None:
        need = seeds_needed(test.sd, delta, alpha / len(looks))  # planning at a true difference of 0
    verdict: Verdict = "accepted" if accepted else "none_qualifies" if test.state == "inferior" else "undetermined"
    return RaceResult(verdict, accepted, tested, delta, alpha, looks, need, test.name)


def row_verdicts(diffs: dict[str, Sequence[float]], flops: dict[str, float], delta: float,
                 alpha: float) -> dict[str, CandidateTest]:  # fmt: skip
    """Each row's own verdict against dense at margin `delta` (a table of policies, not a
    race: `confirm`, `reproduce`): every row with 2+ paired seeds tested at alpha / m, m the
    number of such rows (Bonferroni), so the chance that any verdict is wrong stays at alpha.
    States read: `non_inferior` (a loss of delta or more is excluded), `inferior` (shown),
    `undecided` (neither: not detected)."""
    tested = {k: v for k, v in diffs.items() if len(v) >= 2}
    level = alpha / max(len(tested), 1)
    return {k: check_candidate(CandidateTest(k, float(flops.get(k, float("nan")))), v, level, delta)
            for k, v in tested.items()}  # fmt: skip


def sequential_verdicts(order: Sequence[tuple[str, float]], sample: Sample, delta: float, alpha: float,
                        looks: Sequence[int]) -> dict[str, CandidateTest]:  # fmt: skip
    """`row_verdicts` run until decided: each row of `order` ((name, flops_ratio), fixed before
    any seed is seen) tested look by look (`run_looks`, the race's looks) at
    alpha / (m * number of looks), m = len(order) (Bonferroni over rows and looks: the chance
    that any row's verdict is wrong stays at most alpha). With one look it is `row_verdicts`
    on those rows."""
    if not delta > 0:
        raise ValueError(f"delta = {delta} must be > 0")
    tests = {name: CandidateTest(name, float(flops)) for name, flops in order}
    run_looks(list(tests.values()), sample, sequential_level(alpha, len(tests), looks), delta, looks)
    return tests


def sequential_level(alpha: float, rows: int, looks: Sequence[int]) -> float:
    """The level of each look of each row in `sequential_verdicts`: alpha / (rows * looks)."""
    return alpha / (max(rows, 1) * len(looks))

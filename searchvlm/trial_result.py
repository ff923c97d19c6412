"""The record of a trial: `TrialResult`, the kinds of number it reached (`Reached`) and the
metric name lists derived from those marks.

L0 module: pydantic + stdlib only. A field's `Reached` mark is its one declaration as a
trials.csv column, an exported policy's objective, a searchable metric or a per-round report.
The metrics' fields (value, test standard error, isolated value) are made from their rows in
`searchvlm.metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, create_model, model_validator
from pydantic_core import PydanticKnownError

from searchvlm._strict import Strict as _Strict
from searchvlm.metrics import REGISTRY
from searchvlm.policy import ReductionPolicy

__all__ = [
    "PerRound",
    "REACHED_METRICS",
    "ROUND_METRICS",
    "Reached",
    "SEARCHABLE_METRICS",
    "SEED_MEANS",
    "SEED_STDERRS",
    "Searchable",
    "SeedMean",
    "SeedStderr",
    "TrialResult",
    "TrialStatus",
    "best_at_last_round",
    "gen_gain_text",
    "last_round_text",
    "late_fields",
]

TrialStatus = Literal["ok", "failed", "pruned"]


@dataclass(frozen=True)
class Reached:
    """Marks a `TrialResult` number the trial reached: a trials.csv column and an exported
    policy's `objectives` (in field order). `seed_mean`: the mean over seeds of the per-seed
    records' value (its standard error over seeds, where kept, is the field `<name>_stderr`);
    `searchable`: a search space may name it as an objective or constraint; `per_round`:
    also reported after every evaluation round, on validation data (for MO-ASHA and MLflow)."""

    seed_mean: bool = True
    searchable: bool = False
    per_round: bool = False


# the kinds of `TrialResult` numbers (a field's kind is its one declaration: see `Reached`)
SeedMean = Annotated[float | None, Reached()]
Searchable = Annotated[float | None, Reached(searchable=True)]
PerRound = Annotated[float | None, Reached(searchable=True, per_round=True)]
SeedStderr = Annotated[float | None, Reached(seed_mean=False)]


class _Gains(_Strict):
    """The head of `TrialResult`: status, FLOPs and gains."""

    status: TrialStatus = Field(
        "ok",
        description="ok: trained and scored | failed: an exception or a non-finite loss ended it "
        "(see error; ranks last, never on the front) | pruned: stopped early by the scheduler "
        "(mo_asha); its metrics are the last evaluation round's validation values",
    )
    error: str | None = Field(None, description="why the trial failed (exception type and message); None when ok")
    flops_ratio: Annotated[float | None, Reached(seed_mean=False, searchable=True, per_round=True)] = Field(
        None, description="analytic training FLOPs of one joint step under the policy / the dense model's"
    )
    synergy_gain: PerRound = Field(
        None, description="min(und_gain, gen_gain) per seed (mean with synergy.aggregate: mean), averaged over seeds"
    )
    synergy_gain_stderr: Annotated[float | None, Reached(seed_mean=False, searchable=True)] = Field(
        None, description="standard error of synergy_gain over the paired seeds"
    )
    und_gain: PerRound = Field(
        None, description="g_U = (und_acc - und_acc_iso) / |und_acc_iso| per seed, averaged over seeds"
    )
    und_gain_stderr: SeedStderr = Field(None, description="standard error of und_gain over the paired seeds")
    gen_gain: PerRound = Field(
        None,
        description="g_G per seed on synergy.gen_metric, averaged: (gen_nll_iso - gen_nll) / |gen_nll_iso| "
        "for nll (lower is better), (G - G_iso) / |G_iso| for caption_acc and fidelity",
    )
    gen_gain_stderr: SeedStderr = Field(None, description="standard error of gen_gain over the paired seeds")
    synergy_vs_dense: Searchable = Field(
        None,
        description="synergy_gain minus the dense joint model's on the same seeds, mean of the per-seed "
        "differences (synergy.vs_dense: true; else None)",
    )
    synergy_vs_dense_stderr: SeedStderr = Field(
        None, description="paired standard error of synergy_vs_dense over the seeds"
    )
    und_gain_vs_dense: Searchable = Field(
        None, description="und_gain minus the dense joint model's, paired by seed (synergy.vs_dense: true)"
    )
    gen_gain_vs_dense: Searchable = Field(
        None, description="gen_gain minus the dense joint model's, paired by seed (synergy.vs_dense: true)"
    )


def _metric_fields() -> dict[str, Any]:
    """Each registered metric's fields (`searchvlm.metrics`): the joint value (and its test
    standard error) of every metric, then every isolated baseline's value, in registration order."""
    joint, iso = {}, {}
    for m in REGISTRY.values():
        joint[m.name] = (PerRound if m.per_round else Searchable, Field(None, description=m.doc))
        if m.test_se:
            doc = f"test-set standard error of {m.name} (std / sqrt(N))"
            joint[f"{m.name}_test_se"] = (SeedMean, Field(None, description=doc))
        iso[m.iso] = (SeedMean, Field(None, description=m.iso_doc))
    return {**joint, **iso}


#: the gains and the registered metrics' fields (the head of `TrialResult`, in trials.csv's order)
_Scores = create_model("_Scores", __base__=_Gains, __module__=__name__, **_metric_fields())


class TrialResult(_Scores):
    """What a trial returns (and what the trials table holds, one row per trial).

    Gains are defined in docs/definitions.md (synergy gain). Numbers are means over the
    paired seeds, each run scored at its `synergy.at` checkpoint; `*_stderr` is the standard
    error over seeds (None with one seed), `*_test_se` the test set's own standard error.
    The metrics' fields come from their rows in `searchvlm.metrics`; a metric registered
    after this module is imported rides along as an extra key (`late_fields`)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, float | None] = Field(init=False)

    gen_gain_below_chance: SeedMean = Field(
        None,
        description="share of seeds whose g_G is a relative gain over an isolated score below chance "
        "(synergy.gen_metric caption_acc: the isolated caption accuracy under 1 / (1 + swapped captions per "
        "image)); such a ratio means nothing and is printed as 'below chance'. None for the other gen metrics",
    )
    seeds: list[int] = Field(default_factory=list, description="the paired seeds trained")
    per_seed: list[dict[str, Any]] = Field(
        default_factory=list,
        description="one record per seed: the numbers above for that seed, the scored steps "
        "(und_step_joint, und_step_iso, gen_step_joint, gen_step_iso), the isolated runs' "
        "und_acc_iso_test_se and gen_nll_iso_test_se, and baseline_cached (not in trials.csv)",
    )
    train_seconds: float = Field(
        0.0, description="wall seconds of joint training and evaluation, all seeds (baselines excluded)"
    )
    steps_done: int = Field(0, description="optimizer steps the joint model completed (where a failed trial stopped)")
    policy: ReductionPolicy | None = Field(None, description="the explicit policy trained under")
    cpu: str | None = Field(
        None,
        description="CPU model the numbers were measured on: the joint runs' and their cached reference "
        "runs' ('; '-joined when they differ, which makes the comparison unsound). Numbers from different "
        "CPU types are not comparable (searchvlm._host); None: not recorded (results made before it was)",
    )

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        """Unknown keys are errors, as in every schema; the extra keys are late metrics' only."""
        if isinstance(data, Mapping):
            known = {*cls.model_fields, *late_fields()}
            if any(key not in known for key in data):
                raise PydanticKnownError("extra_forbidden")
        return data


def late_fields() -> tuple[str, ...]:
    """The fields of metrics registered after `TrialResult` was made (a test's, a plugin's):
    their seed means and isolated values, carried as extra keys (not trials.csv columns)."""
    return tuple(f for m in REGISTRY.values() if m.name not in TrialResult.model_fields for f in (m.name, m.iso))


def _reached(flag: str | None = None) -> tuple[str, ...]:
    """The `TrialResult` fields marked `Reached` (with `flag` set), in field order."""
    marks = {name: next((m for m in f.metadata if isinstance(m, Reached)), None)
             for name, f in TrialResult.model_fields.items()}  # fmt: skip
    return tuple(name for name, m in marks.items() if m is not None and (flag is None or getattr(m, flag)))


#: every number a trial reached: trials.csv's metric columns, an exported policy's `objectives`
REACHED_METRICS: tuple[str, ...] = _reached()
#: what a search space may name as an objective or constraint
SEARCHABLE_METRICS: tuple[str, ...] = _reached("searchable")
#: what a trial reports after every evaluation round (validation values)
ROUND_METRICS: tuple[str, ...] = _reached("per_round")
#: the means over seeds of the per-seed records' values
SEED_MEANS: tuple[str, ...] = _reached("seed_mean")
#: the per-seed values whose standard error over seeds is kept (as `<name>_stderr`)
SEED_STDERRS: tuple[str, ...] = tuple(n.removesuffix("_stderr") for n in REACHED_METRICS if n.endswith("_stderr"))


def gen_gain_text(row: Any, spec: str = "+.4f", missing: str = "-") -> str:
    """g_G as display text: 'below chance' when a seed's isolated score is below chance
    (`gen_gain_below_chance` > 0), else the number in `spec`; `row` is a TrialResult or a
    trials-table row."""
    get = row.get if isinstance(row, Mapping) else lambda k: getattr(row, k, None)
    if (get("gen_gain_below_chance") or 0) > 0:
        return "below chance"
    value = get("gen_gain")
    return missing if value is None or not math.isfinite(float(value)) else format(float(value), spec)


def best_at_last_round(per_seed: list[dict[str, Any]], last_step: int,
                       metrics: tuple[str, ...] | None = None) -> list[tuple[str, str, int, int]]:  # fmt: skip
    """(metric, "joint" | "alone", seeds whose scored round is the last one, seeds) for each run
    the per-seed records picked a round of (`metrics`: those only, e.g. g_U's and g_G's). A best
    round at `last_step` means the run was still improving when training stopped: a gain on
    it is a gain at this budget, not at convergence."""
    out = []
    for m in REGISTRY.values():
        if metrics is not None and m.name not in metrics:
            continue
        for side, name in (("joint", "joint"), ("iso", "alone")):
            steps = [p[f"{m.step_key}_{side}"] for p in per_seed if p.get(f"{m.step_key}_{side}") is not None]
            if steps:
                out.append((m.name, name, sum(1 for s in steps if s == last_step), len(steps)))
    return out


def last_round_text(per_seed: list[dict[str, Any]], last_step: int, metrics: tuple[str, ...] | None = None) -> str:
    """`und_acc alone 4/5` for every run whose best round was the last in some seed ('' if none)."""
    runs = best_at_last_round(per_seed, last_step, metrics)
    return ", ".join(f"{name} {side} {k}/{n}" for name, side, k, n in runs if k)

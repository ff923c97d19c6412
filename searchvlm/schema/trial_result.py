"""The record of a trial: `TrialResult`, its per-seed records (`SeedResult`), the kinds of
number it reached (`Reached`) and the metric name lists derived from those marks.

L0 module: pydantic + stdlib only. A field's `Reached` mark is its one declaration as a
trials.csv column, an exported policy's objective, a searchable metric or a per-round report.
The metrics' fields (value, test standard error, isolated value; per seed also the scored
steps) are made from their rows in `searchvlm.schema.metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, SerializerFunctionWrapHandler, create_model, model_serializer, model_validator
from pydantic_core import PydanticCustomError, PydanticKnownError

from searchvlm.schema._strict import Strict as _Strict
from searchvlm.schema.metrics import REGISTRY, MetricInfo
from searchvlm.schema.policy import ReductionPolicy

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
    "SeedResult",
    "SeedStderr",
    "TrialResult",
    "TrialStatus",
    "best_at_last_round",
    "gen_gain_text",
    "last_round_text",
    "late_fields",
    "seed_metric_fields",
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


def seed_metric_fields(m: MetricInfo) -> dict[str, tuple[Any, str]]:
    """A metric's keys in a per-seed record (`SeedResult`), each with its type and description,
    in record order: the joint value (with its test standard error where kept) and its scored
    step, then the isolated run's. A metric scored on the final model only (no scorer:
    fidelity) has its two values and no steps."""
    if m.scorer is None:
        return {m.name: (float | None, m.doc), m.iso: (float | None, m.iso_doc)}
    out: dict[str, tuple[Any, str]] = {}
    for name, side, doc in ((m.name, "joint", m.doc), (m.iso, "iso", m.iso_doc)):
        out[name] = (float | None, doc)
        if m.test_se:
            out[f"{name}_test_se"] = (float | None, f"test-set standard error of {name} (std / sqrt(N))")
        run = "joint" if side == "joint" else "isolated"
        out[f"{m.step_key}_{side}"] = (int | None, f"the evaluation step the {run} run of {m.name} was scored at")
    return out


def _seed_fields() -> dict[str, Any]:
    """The per-seed record's head: every registered metric's keys (`seed_metric_fields`), those
    scored every round first, then `seed`, then those scored on the final model."""
    scored: dict[bool, dict[str, Any]] = {True: {}, False: {}}
    for m in REGISTRY.values():
        for key, (tp, doc) in seed_metric_fields(m).items():
            scored[m.scorer is not None][key] = (tp, Field(None, description=doc))
    seed = (int, Field(description="the seed (data, initialisation and batches)"))
    return {**scored[True], "seed": seed, **scored[False]}


class _Record(_Strict):
    model_config = ConfigDict(extra="allow", frozen=True)


#: the metrics' keys of a seed (in the order `run_trial` writes them)
_SeedScores = create_model("_SeedScores", __base__=_Record, __module__=__name__, **_seed_fields())


class SeedResult(_SeedScores):
    """One seed's numbers in `TrialResult.per_seed`: each metric joint and isolated at its
    scored round (with those rounds), the gains and where its baselines came from.

    A key absent from the record (a metric the data set does not score, the comparison with
    dense when `synergy.vs_dense` is off) is None here and absent again when written: a record
    read from a file is written back with the keys it had. A metric registered after this
    module is imported (a test's, a plugin's) rides along as extra keys (`late_fields`)."""

    __pydantic_extra__: dict[str, float | int | None] = Field(init=False)

    und_gain: float | None = Field(None, description="g_U of this seed: joint und_acc against the isolated one")
    gen_gain: float | None = Field(None, description="g_G of this seed on synergy.gen_metric")
    synergy_gain: float | None = Field(None, description="this seed's synergy gain (synergy.aggregate of g_U, g_G)")
    baseline_cached: dict[str, bool] | None = Field(
        None, description="per task, whether the isolated run was read from the baseline cache"
    )
    gen_gain_below_chance: float | None = Field(
        None, description="1.0 when g_G is on caption_acc and the isolated caption accuracy is below chance, else 0.0"
    )
    synergy_vs_dense: float | None = Field(
        None, description="synergy_gain minus the dense joint model's on this seed (synergy.vs_dense: true)"
    )
    und_gain_vs_dense: float | None = Field(None, description="und_gain minus the dense joint model's on this seed")
    gen_gain_vs_dense: float | None = Field(None, description="gen_gain minus the dense joint model's on this seed")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        """Unknown keys are errors; the extra keys are late metrics' only."""
        if isinstance(data, Mapping):
            late = {k for m in REGISTRY.values() if m.name not in cls.model_fields for k in seed_metric_fields(m)}
            unknown = [str(key) for key in data if key not in cls.model_fields and key not in late]
            if unknown:
                raise PydanticCustomError("extra_forbidden", "Extra inputs are not permitted: {keys}",
                                          {"keys": ", ".join(unknown)})  # fmt: skip
        return data

    @model_serializer(mode="wrap")
    def _as_recorded(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The keys the record was given, no others (files keep their keys: see the class doc)."""
        given = self.model_fields_set
        return {k: v for k, v in handler(self).items() if k in given}


def _metric_fields() -> dict[str, Any]:
    """Each registered metric's fields (`searchvlm.schema.metrics`): the joint value (and its test
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
    The metrics' fields come from their rows in `searchvlm.schema.metrics`; a metric registered
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
    per_seed: list[SeedResult] = Field(
        default_factory=list,
        description="one record per seed (`SeedResult`): the numbers above for that seed, the scored "
        "steps, the isolated runs' test standard errors and baseline_cached (not in trials.csv)",
    )
    train_seconds: float = Field(
        0.0, description="wall seconds of joint training and evaluation, all seeds (baselines excluded)"
    )
    steps_done: int = Field(0, description="optimizer steps the joint model completed (where a failed trial stopped)")
    policy: ReductionPolicy | None = Field(None, description="the explicit policy trained under")
    cpu: str | None = Field(
        None,
        description="CPU model the numbers were measured on, with ' [AVX2 kernels]' when torch's kernels "
        "were pinned: the joint runs' and their cached reference runs' ('; '-joined when they differ). "
        "Numbers from different CPU types are not comparable unless all ran the pinned kernels "
        "(searchvlm.schema._host); None: not recorded (results made before it was)",
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


def best_at_last_round(per_seed: list[SeedResult], last_step: int,
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
            key = f"{m.step_key}_{side}"
            steps = [step for p in per_seed if (step := getattr(p, key, None)) is not None]
            if steps:
                out.append((m.name, name, sum(1 for s in steps if s == last_step), len(steps)))
    return out


def last_round_text(per_seed: list[SeedResult], last_step: int, metrics: tuple[str, ...] | None = None) -> str:
    """`und_acc alone 4/5` for every run whose best round was the last in some seed ('' if none)."""
    runs = best_at_last_round(per_seed, last_step, metrics)
    return ", ".join(f"{name} {side} {k}/{n}" for name, side, k, n in runs if k)

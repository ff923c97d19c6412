"""The `search:` side of a search-space file: objectives, constraints and search settings.

L0 module: pydantic + stdlib only. `objectives` and `constraints` name trial-result metrics
(`SEARCHABLE_METRICS`, declared on `TrialResult`'s fields); `search` says how a sweep samples
(Optuna sampler, seed, samples, concurrency), stops early (`scheduler`), warm-starts and
confirms its front (`confirm`). `searchvlm.schema.space` composes these into the `SearchSpace`.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from searchvlm.schema._strict import Strict as _Strict
from searchvlm.schema.trial_result import SEARCHABLE_METRICS

METRICS: tuple[str, ...] = SEARCHABLE_METRICS  # what objectives and constraints may name
#: how `export` picks a trial off a sweep's front (`searchvlm.objectives.pareto.select`; `--rule`)
RULES: tuple[str, ...] = ("knee", "max-synergy", "min-flops")
#: `export --rule`: the front rules, and `decision` (the policy `searchvlm decide` accepted)
EXPORT_RULES: tuple[str, ...] = (*RULES, "decision")


class Objective(_Strict):
    """One objective: a metric of the trial result and its direction."""

    name: str = Field(description=f"one of {', '.join(METRICS)}")
    mode: Literal["min", "max"] = Field(description="min | max")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in METRICS:
            raise ValueError(f"objective {v!r} is not one of {', '.join(METRICS)}")
        return v


_CONSTRAINT = re.compile(r"^\s*([a-z_]+)\s*(<=|>=)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


class Constraint(BaseModel):
    """`metric <= x` or `metric >= x`, parsed by a regex (never evaluated)."""

    metric: str
    op: Literal["<=", ">="]
    bound: float

    @classmethod
    def parse(cls, text: str) -> "Constraint":
        m = _CONSTRAINT.match(text)
        if not m:
            raise ValueError(f"constraint {text!r} must look like 'und_acc >= 0.5' (<= or >=)")
        if m.group(1) not in METRICS:
            raise ValueError(f"constraint metric {m.group(1)!r} is not one of {', '.join(METRICS)}")
        return cls(metric=m.group(1), op=m.group(2), bound=float(m.group(3)))  # type: ignore[arg-type]

    def violation(self, metrics: dict[str, Any]) -> float:
        """Optuna convention: <= 0 is feasible. A missing metric counts as violated (1.0)."""
        v = metrics.get(self.metric)
        if v is None:
            return 1.0
        return float(v) - self.bound if self.op == "<=" else self.bound - float(v)


def _check_constraint(text: str) -> str:
    Constraint.parse(text)
    return text


ConstraintText = Annotated[str, AfterValidator(_check_constraint)]


class SchedulerSpace(_Strict):
    """Early stopping: `none` or `mo_asha` (multi-objective successive halving)."""

    kind: Literal["none", "mo_asha"] = Field("none", description="none | mo_asha")
    reduction_factor: float = Field(3.0, gt=1, description="η: keep the top 1/η at each rung")
    grace_steps: int | None = Field(None, ge=1, description="first rung (training steps); None: training.eval_every")
    max_steps: int | None = Field(None, ge=1, description="last step; None: training.steps")


class ConfirmSettings(_Strict):
    """`search.confirm`: at the end of a sweep, retrain its front and near-front on fresh
    seeds paired with dense (`searchvlm confirm`), writing runs/<sweep>/confirmed.csv."""

    seeds: list[int] = Field(min_length=1, description="fresh seeds (none of the space's `seeds`)")
    top: int | None = Field(None, ge=1, description="confirm at most this many policies (None: all)")


class DecisionSettings(_Strict):
    """`decision:` how `searchvlm decide` answers "the cheapest policy that keeps dense's
    synergy" (docs/definitions.md): a race on fresh seeds, each paired with dense, one-sided
    non-inferiority tests in a fixed FLOPs order (`searchvlm.objectives.noninferiority`)."""

    delta: float = Field(
        gt=0,
        description="non-inferiority margin on synergy_gain: a policy qualifies when its synergy is shown "
        "to be at most this far below dense's (lower confidence bound of the paired difference > -delta); "
        "say why the value is right for your proxy in a comment beside it",
    )
    alpha: float = Field(0.05, gt=0, lt=0.5, description="family-wise error rate of accepting a policy that is "
                         "in truth worse than dense by delta or more")  # fmt: skip
    first_seeds: int = Field(5, ge=2, description="fresh seeds of a candidate's first look")
    max_seeds: int = Field(10, ge=2, description="most fresh seeds per candidate (looks double up to it)")
    shortlist: int = Field(3, ge=1, description="candidates raced: the cheapest of the sweep's front and near-front")

    @model_validator(mode="after")
    def _looks(self) -> "DecisionSettings":
        if self.max_seeds < self.first_seeds:
            raise ValueError(f"max_seeds ({self.max_seeds}) must be >= first_seeds ({self.first_seeds})")
        return self


class SearchSettings(_Strict):
    """How the sweep searches."""

    sampler: Literal["tpe", "nsga2", "gp", "random", "grid", "known_cost"] = Field(
        "gp",
        description="Optuna sampler: gp | tpe | nsga2 | random | grid | known_cost (known_cost: prices every "
        "candidate's FLOPs before training and models synergy only, choosing by expected hypervolume improvement "
        "with the FLOPs exact; needs objectives flops_ratio (min) and one other). gp was the best of the Optuna "
        "samplers on the former proxy's tabular replay (docs/performance.md)",
    )
    samples: int = Field(8, ge=1, description="trials in the sweep (presets included)")
    concurrency: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        2,
        description="trials running at once, or auto: as many as the Ray cluster's CPUs and GPUs "
        "allow (cpus_per_trial and gpus_per_trial each, from ray.cluster_resources(); printed at start)",
    )
    seed: int = Field(0, description="sampler seed")
    startup_trials: int | None = Field(
        None, ge=0, description="tpe/gp: random trials before the model kicks in (None: default)"
    )
    population_size: int | None = Field(None, ge=2, description="nsga2: population size")
    scheduler: SchedulerSpace = SchedulerSpace()
    cpus_per_trial: float = Field(1.0, gt=0, description="CPUs per trial (= torch threads)")
    gpus_per_trial: float = Field(
        0.0,
        ge=0,
        description="GPUs Ray gives each trial (with its CPUs); the trial trains on them (training.device "
        "auto or cuda). A fraction packs small trials onto one GPU (0.25: four per GPU); above 1 a trial trains "
        "data parallel, one process per GPU (training.processes; needs training.shard ddp or fsdp); 0: none "
        "requested (a trial then sees every GPU of its node, all trials use cuda:0)",
    )
    warm_start: Literal["none", "analysis"] = Field(
        "none",
        description="analysis: before the first trial, train the dense model, measure its layerwise "
        "attention allocation (`searchvlm analyze`, cached in runs/<sweep>/analysis.json) and "
        "enqueue the derived per-task keep schedule as the sweep's first trial (a fixed explicit "
        "policy, like a preset; it need not lie inside the searched space)",
    )
    confirm: ConfirmSettings | None = Field(
        None, description="run `searchvlm confirm` with these seeds (and top) when the sweep finishes"
    )

    @field_validator("gpus_per_trial")
    @classmethod
    def _ray_gpus(cls, v: float) -> float:
        if v > 1 and not float(v).is_integer():
            raise ValueError(f"gpus_per_trial = {v}: above 1 it must be a whole number of GPUs (Ray's rule)")
        return v

    def trials_at_once(self, cluster: dict[str, float]) -> int:
        """The trials `cluster` (`ray.cluster_resources()`: {"CPU": n, "GPU": m, ...}) runs at
        once: `concurrency`, or for `auto` the most its CPUs and GPUs fit (at least 1)."""
        if self.concurrency != "auto":
            return self.concurrency
        fits = cluster.get("CPU", 0.0) / self.cpus_per_trial
        if self.gpus_per_trial:
            fits = min(fits, cluster.get("GPU", 0.0) / self.gpus_per_trial)
        return max(1, math.floor(fits + 1e-9))  # 1 / 0.125 is 8, not 7.999...

    @model_serializer(mode="wrap")
    def _compact(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Fields added later are left out at their defaults: a space that does not use them
        keeps its serialisation and `space_hash`."""
        out = handler(self)
        if out.get("gpus_per_trial", 0.0) == 0.0:
            out.pop("gpus_per_trial", None)
        return out


__all__ = [
    "METRICS", "ConfirmSettings", "Constraint", "ConstraintText", "Objective", "SchedulerSpace", "SearchSettings",
]  # fmt: skip

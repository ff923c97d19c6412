"""Reduction policies: per-task, per-layer image-token keep ratios, modes, selectors, sharing.

L0 module: pydantic + stdlib only (no torch / ray / mlflow). The explicit
`ReductionPolicy` is what the model executes and what `export` writes; schedules
(`fastv`, `pyramid`, `shallow`, `cosine`, `per_layer`) are how search spaces and presets
parametrise it, and each compiles to the explicit per-layer list.
"""

from __future__ import annotations

import json
import math
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

TASKS: tuple[str, str] = ("understanding", "generation")
Task = Literal["understanding", "generation"]
Mode = Literal["query_drop", "skip", "drop"]
Selector = Literal["attention", "pdrop", "stride", "random", "recent", "router"]
# Selectors that rank the whole image by what the prompt's last token sees: causal only when
# every position whose loss depends on the choice comes after the image (understanding). In
# generation every image token is a target, so they would read later targets: refused.
PROMPT_SELECTORS: tuple[str, ...] = ("attention", "pdrop")
Ratio = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class Segment(IntEnum):
    """Segment code of every token (the `segments` tensor holds these values)."""

    SYSTEM = 0
    INSTRUCTION = 1
    IMAGE = 2
    OUTPUT = 3


def kept_count(ratio: float, num_image: int, available: int | None = None) -> int:
    """Number of image tokens a layer computes: round-half-up(ratio * num_image), clipped.

    `num_image` is the sequence's original image-token count; `available` the number still
    present in the layer (fewer after a `drop`). Shared by the model and the FLOPs count so
    the two can never disagree on rounding.
    """
    k = int(math.floor(ratio * num_image + 0.5))
    cap = num_image if available is None else available
    return max(0, min(k, cap))


def generation_selector_error(selector: str) -> str:
    return (
        f"generation.selector = {selector!r} is invalid: it ranks the image tokens by the attention "
        "of a token that sees them all, and in generation every image token is a target, so the "
        "choice would depend on later targets (not causal); use 'router' (a per-token causal "
        "decision), 'stride', 'recent' or 'random'"
    )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- schedules


class PerLayerSchedule(_Strict):
    """One explicit keep ratio per layer."""

    kind: Literal["per_layer"] = "per_layer"
    keep: list[Ratio] = Field(description="keep ratio of image tokens, one per layer")

    def compile(self, num_layers: int) -> list[float]:
        if len(self.keep) != num_layers:
            raise ValueError(
                f"per_layer.keep has {len(self.keep)} entries but the model has {num_layers} layers"
            )
        return list(self.keep)


class FastVSchedule(_Strict):
    """FastV: full layers before `start` (K), then keep 1-R of the image tokens."""

    kind: Literal["fastv"] = "fastv"
    start: int = Field(2, ge=1, description="K: first reduced layer (0-based)")
    ratio: Ratio = Field(0.5, description="R: fraction of image tokens removed from layer K on")

    def compile(self, num_layers: int) -> list[float]:
        if self.start >= num_layers:
            raise ValueError(f"fastv.start = {self.start} must be < num_layers = {num_layers}")
        return [1.0] * self.start + [1.0 - self.ratio] * (num_layers - self.start)


class PyramidSchedule(_Strict):
    """PyramidDrop: at each stage boundary keep λ of the remaining image tokens."""

    kind: Literal["pyramid"] = "pyramid"
    boundaries: list[int] | None = Field(
        None, description="layers where a stage starts; default L/4, L/2, 3L/4"
    )
    ratio: Ratio = Field(0.5, description="λ: fraction of the remaining image tokens kept")

    def compile(self, num_layers: int) -> list[float]:
        bounds = self.boundaries
        if bounds is None:
            raw = {max(1, round(num_layers * f)) for f in (0.25, 0.5, 0.75)}
            bounds = sorted(b for b in raw if b < num_layers)
        for b in bounds:
            if not 1 <= b < num_layers:
                raise ValueError(f"pyramid.boundaries value {b} must be in [1, {num_layers - 1}]")
        keep, r = [], 1.0
        for layer in range(num_layers):
            if layer in bounds:
                r *= self.ratio
            keep.append(r)
        return keep


def shallow_layers(num_layers: int, k: int) -> list[int]:
    """HMGen placement: K shallow layers in the middle, alternating with full layers.

    K is clipped to (L-1)//2 so that the first and last layers stay full.
    """
    k = max(0, min(k, (num_layers - 1) // 2))
    if k == 0:
        return []
    span = 2 * k - 1
    start = (num_layers - span) // 2
    return [start + 2 * i for i in range(k)]


class ShallowSchedule(_Strict):
    """HMGen: K shallow layers (image tokens pass through) placed in the middle, alternating."""

    kind: Literal["shallow"] = "shallow"
    k: int = Field(3, ge=0, description="number of shallow layers (clipped to (L-1)//2)")
    ratio: Ratio = Field(0.0, description="keep ratio inside a shallow layer")

    def compile(self, num_layers: int) -> list[float]:
        shallow = set(shallow_layers(num_layers, self.k))
        return [self.ratio if i in shallow else 1.0 for i in range(num_layers)]


class CosineSchedule(_Strict):
    """p-MoD shifted cosine: 1.0 until `shift`, then cosine decay to `floor` at the last layer."""

    kind: Literal["cosine"] = "cosine"
    floor: Ratio = Field(0.15, description="keep ratio of the last layer")
    shift: int = Field(0, ge=0, description="layers kept dense before the decay starts")

    def compile(self, num_layers: int) -> list[float]:
        if self.shift >= num_layers:
            raise ValueError(f"cosine.shift = {self.shift} must be < num_layers = {num_layers}")
        span = max(1, num_layers - 1 - self.shift)
        out = []
        for layer in range(num_layers):
            t = min(1.0, max(0.0, (layer - self.shift) / span))
            out.append(self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * t)))
        return out


Schedule = Annotated[
    Union[PerLayerSchedule, FastVSchedule, PyramidSchedule, ShallowSchedule, CosineSchedule],
    Field(discriminator="kind"),
]


# --------------------------------------------------------------------------- explicit policy


class TaskPolicy(_Strict):
    """What one task does to its image tokens in every layer."""

    keep: list[Ratio] = Field(description="fraction of image tokens computed in each layer")
    mode: Mode = Field("skip", description="fate of the image tokens that are not kept")
    selector: Selector = Field("stride", description="which image tokens are kept when 0<keep<1")

    @property
    def is_dense(self) -> bool:
        return all(k >= 1.0 for k in self.keep)


class Sharing(_Strict):
    """Parameter pathways. Split weights start as copies of the shared ones."""

    qkv: Literal["shared", "modality", "task_image"] = Field(
        "shared",
        description="q/k/v projections: shared | modality (image vs text) | "
        "task_image (image-token projections per task)",
    )
    mlp: Literal["shared", "modality", "task"] = Field(
        "shared",
        description="MLP: shared | modality (image vs text) | task (image-token MLP per task)",
    )
    scope: list[int] | None = Field(None, description="layers the split applies to (None: all)")

    def applies(self, layer: int) -> bool:
        return self.scope is None or layer in self.scope


class ReductionPolicy(_Strict):
    """The explicit policy the model runs: per task, one keep ratio per layer."""

    num_layers: int = Field(ge=1, description="decoder layers of the target model")
    understanding: TaskPolicy
    generation: TaskPolicy
    sharing: Sharing = Sharing()
    tie_schedules: bool = Field(False, description="both tasks use one schedule (one pathway)")
    seed: int = Field(0, description="seed of the `random` selector")
    name: str | None = Field(None, description="preset or trial name, informational")

    @model_validator(mode="after")
    def _check(self) -> "ReductionPolicy":
        for task in TASKS:
            tp: TaskPolicy = getattr(self, task)
            if len(tp.keep) != self.num_layers:
                raise ValueError(
                    f"{task}.keep has {len(tp.keep)} entries but num_layers = {self.num_layers}"
                )
        if self.generation.selector in PROMPT_SELECTORS and not self.generation.is_dense:
            raise ValueError(generation_selector_error(self.generation.selector))
        if self.generation.mode == "drop" and not self.generation.is_dense:
            raise ValueError(
                "generation.mode = 'drop' is invalid: dropping deletes the image tokens that "
                "generation must predict; use 'skip' or 'query_drop'"
            )
        drop = self.understanding
        if drop.mode == "drop" and any(b > a + 1e-12 for a, b in zip(drop.keep, drop.keep[1:])):
            raise ValueError(
                f"understanding.keep = {drop.keep} must be non-increasing with mode 'drop' "
                "(dropped tokens never come back)"
            )
        if self.tie_schedules and (
            self.understanding.keep != self.generation.keep
            or self.understanding.mode != self.generation.mode
        ):
            raise ValueError(
                "tie_schedules = true needs identical understanding/generation keep and mode"
            )
        if self.sharing.scope is not None:
            bad = [i for i in self.sharing.scope if not 0 <= i < self.num_layers]
            if bad:
                raise ValueError(f"sharing.scope has layers {bad} outside [0, {self.num_layers})")
        return self

    def task(self, task: str) -> TaskPolicy:
        if task not in TASKS:
            raise ValueError(f"task = {task!r} is not one of {TASKS}")
        return getattr(self, task)

    @property
    def is_dense(self) -> bool:
        return self.understanding.is_dense and self.generation.is_dense

    @classmethod
    def dense(cls, num_layers: int) -> "ReductionPolicy":
        full = TaskPolicy(keep=[1.0] * num_layers)
        return cls(num_layers=num_layers, understanding=full, generation=full, name="dense")

    @classmethod
    def preset(cls, name: str, num_layers: int) -> "ReductionPolicy":
        return preset(name, num_layers)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    def flat_params(self) -> dict[str, str | float | int | bool]:
        """Flat key/value view (for MLflow params and trial tables)."""
        out: dict[str, str | float | int | bool] = {}
        for task in TASKS:
            tp = self.task(task)
            short = task[:3]
            out[f"{short}.mode"] = tp.mode
            out[f"{short}.selector"] = tp.selector
            for i, k in enumerate(tp.keep):
                out[f"{short}.keep.{i}"] = round(k, 6)
        out["sharing.qkv"] = self.sharing.qkv
        out["sharing.mlp"] = self.sharing.mlp
        out["sharing.scope"] = "all" if self.sharing.scope is None else ",".join(
            map(str, self.sharing.scope)
        )
        out["tie_schedules"] = self.tie_schedules
        return out


# --------------------------------------------------------------------------- specs (schedules)


class TaskSpec(_Strict):
    """A task's policy written as a schedule (compiled to `TaskPolicy`)."""

    schedule: Schedule = Field(default_factory=lambda: CosineSchedule(floor=1.0))
    mode: Mode = "skip"
    selector: Selector = "stride"

    def compile(self, num_layers: int) -> TaskPolicy:
        return TaskPolicy(
            keep=self.schedule.compile(num_layers), mode=self.mode, selector=self.selector
        )


def compile_policy(
    num_layers: int,
    understanding: TaskSpec,
    generation: TaskSpec,
    sharing: Sharing | None = None,
    tie_schedules: bool = False,
    name: str | None = None,
    seed: int = 0,
) -> ReductionPolicy:
    """Compile per-task schedules into an explicit policy. Tied: generation takes
    understanding's schedule and mode with its own selector."""
    und = understanding.compile(num_layers)
    gen = und.model_copy(update={"selector": generation.selector}) if tie_schedules else generation.compile(num_layers)
    return ReductionPolicy(
        num_layers=num_layers,
        understanding=und,
        generation=gen,
        sharing=sharing or Sharing(),
        tie_schedules=tie_schedules,
        name=name,
        seed=seed,
    )


# --------------------------------------------------------------------------- presets

_FULL = TaskSpec()


def _fastv_start(num_layers: int) -> int:
    """FastV's K = 2 (after layer 2 the image gets little attention), clipped to the depth."""
    return max(1, min(num_layers - 1, 2))


def _hmgen(num_layers: int, k: int) -> tuple[TaskSpec, Sharing]:
    shallow = set(shallow_layers(num_layers, k))
    full_layers = [i for i in range(num_layers) if i not in shallow]
    spec = TaskSpec(schedule=ShallowSchedule(k=k), mode="skip", selector="stride")
    return spec, Sharing(qkv="modality", scope=full_layers)


_HIMIX = TaskSpec(schedule=FastVSchedule(start=1, ratio=1.0), mode="query_drop")


def preset(name: str, num_layers: int) -> ReductionPolicy:
    """Named literature policies; depths scale with `num_layers` (see docs/definitions.md)."""
    L = num_layers
    if name == "dense":
        return ReductionPolicy.dense(L)
    if name == "fastv":
        # FastV (Chen et al., 2024): full layers before K=2, then drop R=50% of the image tokens
        # for the rest of the stack, ranked by the attention the last prompt token gave them in
        # layer K-1 (heads averaged); original positions kept.
        und = TaskSpec(
            schedule=FastVSchedule(start=_fastv_start(L), ratio=0.5),
            mode="drop",
            selector="attention",
        )
        return compile_policy(L, und, _FULL, name=name)
    if name == "pyramiddrop":
        # PyramidDrop (Xing et al., 2024): stages end at L/4, L/2, 3L/4; at each boundary keep
        # λ=0.5 of the remaining image tokens, ranked by the last prompt token's attention
        # computed with the boundary layer's own norm/q/k/rotary ("pdrop" selector). The
        # reference renumbers positions after a drop; we keep the original ones, as FastV does.
        und = TaskSpec(schedule=PyramidSchedule(ratio=0.5), mode="drop", selector="pdrop")
        return compile_policy(L, und, _FULL, name=name)
    if name == "himix":
        # HiMix: from layer 1 on, image tokens are keys/values only (no query, no MLP).
        return compile_policy(L, _HIMIX, _FULL, name=name)
    if name in ("hmgen", "hmgen5"):
        gen, sharing = _hmgen(L, 3 if name == "hmgen" else 5)
        return compile_policy(L, _FULL, gen, sharing=sharing, name=name)
    if name == "himix_hmgen":
        gen, _ = _hmgen(L, 3)
        return compile_policy(L, _HIMIX, gen, name=name)
    if name == "himix_hmgen_partial":
        gen, _ = _hmgen(L, 3)
        return compile_policy(L, _HIMIX, gen, sharing=Sharing(qkv="task_image"), name=name)
    if name == "pmod":
        # p-MoD (Zhang et al., 2024): Mixture-of-Depths routers on the image tokens with a
        # shifted-cosine capacity per layer decaying to a floor of 0.15; unrouted tokens skip
        # the block. Generation routes with the causal per-token rule (see model._select).
        spec = TaskSpec(schedule=CosineSchedule(floor=0.15), mode="skip", selector="router")
        return compile_policy(L, spec, spec, name=name)
    if name == "tied":
        spec = TaskSpec(schedule=CosineSchedule(floor=0.5, shift=1), mode="skip")
        return compile_policy(L, spec, spec, tie_schedules=True, name=name)
    raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")


PRESETS: tuple[str, ...] = (
    "dense",
    "fastv",
    "pyramiddrop",
    "himix",
    "hmgen",
    "hmgen5",
    "himix_hmgen",
    "himix_hmgen_partial",
    "pmod",
    "tied",
)


# --------------------------------------------------------------------------- exported files

POLICY_SCHEMA = "searchvlm.policy/v1"


class PolicyFile(_Strict):
    """An exported policy (see docs/file-formats.md): validated on load, never executed."""

    schema_: Literal["searchvlm.policy/v1"] = Field(POLICY_SCHEMA, alias="schema", description="file format version")
    policy: ReductionPolicy = Field(description="the explicit policy (ReductionPolicy)")
    model: dict = Field(description="model config the policy was searched on (num_layers, ...)")
    objectives: dict[str, float | None] = Field(
        default_factory=dict, description="what the trial reached: its trials.csv metric columns (None: not measured)"
    )
    provenance: dict[str, str | int | float | None] = Field(
        default_factory=dict,
        description="where it came from: sweep, trial_id, trial_number, preset, space_path, space_hash, "
        "package_version, exported_by, rule, max_flops, min_synergy, exported_at",
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _layers_match(self) -> "PolicyFile":
        n = self.model.get("num_layers")
        if n is not None and n != self.policy.num_layers:
            raise ValueError(
                f"model.num_layers = {n} but policy.num_layers = {self.policy.num_layers}"
            )
        return self

    def dump(self) -> str:
        return self.model_dump_json(indent=2, by_alias=True)


def load_policy(path: str | Path, num_layers: int | None = None) -> ReductionPolicy:
    """Load and validate an exported policy file (or a bare explicit policy JSON).

    Raises `searchvlm.errors.ConfigError` naming the file, key and value on any problem.
    `num_layers`, when given, must match the policy (the target model's depth).
    """
    from searchvlm.errors import ConfigError, load_json, validate

    path = Path(path)
    data = load_json(path)
    if isinstance(data, dict) and "schema" in data:
        policy = validate(PolicyFile, data, path).policy
    else:
        policy = validate(ReductionPolicy, data, path)
    if num_layers is not None and num_layers != policy.num_layers:
        raise ConfigError(
            path, "policy.num_layers", policy.num_layers, f"the target model has {num_layers} layers"
        )
    return policy


def dumps_policy(policy: ReductionPolicy) -> str:
    return json.dumps(policy.model_dump(), indent=2)

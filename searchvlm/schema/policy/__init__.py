"""The explicit reduction policy: per-task, per-layer image-token keep ratios, modes,
selectors, sharing; and the exported policy file.

L0 module: pydantic + stdlib only (no torch / ray / mlflow). `ReductionPolicy` is what the
model executes and what `export` writes. Schedules (`searchvlm.schema.policy.schedules`) and presets
(`searchvlm.schema.policy.presets`) are how search spaces and named policies parametrise it; their names
stay importable from here.
"""

from __future__ import annotations

import math
from enum import IntEnum
from importlib import import_module
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from searchvlm.schema._strict import Frozen
from searchvlm.schema.policy.selectors import Selector, selector_info

__all__ = [
    "Mode",
    "POLICY_SCHEMA",
    "PolicyFile",
    "Ratio",
    "ReductionPolicy",
    "SEGMENTS",
    "Segment",
    "Sharing",
    "TASKS",
    "TaskPolicy",
    "generation_selector_error",
    "kept_count",
    "load_policy",
    "task_selector_error",
]

TASKS: tuple[str, str] = ("understanding", "generation")
Mode = Literal["query_drop", "skip", "drop"]
Ratio = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class Segment(IntEnum):
    """Segment code of every token (the `segments` tensor holds these values)."""

    SYSTEM = 0
    INSTRUCTION = 1
    IMAGE = 2
    OUTPUT = 3


SEGMENTS: tuple[str, ...] = tuple(s.name.lower() for s in Segment)  # system, instruction, image, output


def kept_count(ratio: float, num_image: int, available: int | None = None) -> int:
    """Number of image tokens a layer computes: round-half-up(ratio * num_image), clipped.

    `num_image` is the sequence's original image-token count; `available` the number still
    present in the layer (fewer after a `drop`). Shared by the model and the FLOPs count so
    the two can never disagree on rounding.
    """
    k = int(math.floor(ratio * num_image + 0.5))
    cap = num_image if available is None else available
    return max(0, min(k, cap))


def task_selector_error(task: str, selector: str) -> str | None:
    """Why `selector` cannot serve `task` (its declaration in `searchvlm.schema.policy.selectors`), or None.

    A selector that ranks the whole image by what the prompt's last token sees is causal only
    when every position whose loss depends on the choice comes after the image
    (understanding); in generation every image token is a target, so it would read later
    targets: refused."""
    if selector_info(selector).serves(task):
        return None
    if task == "generation":
        return generation_selector_error(selector)
    return f"{task}.selector = {selector!r} is invalid: it cannot serve {task}"


def generation_selector_error(selector: str) -> str:
    return (
        f"generation.selector = {selector!r} is invalid: it ranks the image tokens by the attention "
        "of a token that sees them all, and in generation every image token is a target, so the "
        "choice would depend on later targets (not causal); use 'router' (a per-token causal "
        "decision), 'stride', 'recent' or 'random'"
    )


# --------------------------------------------------------------------------- explicit policy


class TaskPolicy(Frozen):
    """What one task does to its image tokens in every layer."""

    keep: list[Ratio] = Field(description="fraction of image tokens computed in each layer")
    mode: Mode = Field("skip", description="fate of the image tokens that are not kept")
    selector: Selector = Field("stride", description="which image tokens are kept when 0<keep<1")

    @property
    def is_dense(self) -> bool:
        return all(k >= 1.0 for k in self.keep)


class Sharing(Frozen):
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


class ReductionPolicy(Frozen):
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
                raise ValueError(f"{task}.keep has {len(tp.keep)} entries but num_layers = {self.num_layers}")
        for task in TASKS:
            tp = getattr(self, task)
            problem = None if tp.is_dense else task_selector_error(task, tp.selector)
            if problem:
                raise ValueError(problem)
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
            self.understanding.keep != self.generation.keep or self.understanding.mode != self.generation.mode
        ):
            raise ValueError("tie_schedules = true needs identical understanding/generation keep and mode")
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
        out["sharing.scope"] = "all" if self.sharing.scope is None else ",".join(map(str, self.sharing.scope))
        out["tie_schedules"] = self.tie_schedules
        return out


# --------------------------------------------------------------------------- exported files

POLICY_SCHEMA = "searchvlm.policy/v1"


class PolicyFile(Frozen):
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
            raise ValueError(f"model.num_layers = {n} but policy.num_layers = {self.policy.num_layers}")
        return self

    def dump(self) -> str:
        return self.model_dump_json(indent=2, by_alias=True)


def load_policy(path: str | Path, num_layers: int | None = None) -> ReductionPolicy:
    """Load and validate an exported policy file (or a bare explicit policy JSON).

    Raises `searchvlm.schema.errors.ConfigError` naming the file, key and value on any problem.
    `num_layers`, when given, must match the policy (the target model's depth).
    """
    from searchvlm.schema.errors import ConfigError, load_json, validate

    path = Path(path)
    data = load_json(path)
    if isinstance(data, dict) and "schema" in data:
        policy = validate(PolicyFile, data, path).policy
    else:
        policy = validate(ReductionPolicy, data, path)
    if num_layers is not None and num_layers != policy.num_layers:
        raise ConfigError(path, "policy.num_layers", policy.num_layers, f"the target model has {num_layers} layers")
    return policy


# names that moved out of this module, importable from here as before
_MOVED = {
    **dict.fromkeys(("Schedule", "FastVSchedule", "PyramidSchedule", "ShallowSchedule", "CosineSchedule",
                     "PerLayerSchedule", "TaskSpec", "Tied", "compile_policy", "shallow_layers"),
                    "searchvlm.schema.policy.schedules"),
    **dict.fromkeys(("PRESETS", "preset"), "searchvlm.schema.policy.presets"),
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Keep schedules: how presets and search spaces parametrise a task's per-layer keep ratios.

L0 module: pydantic + stdlib only. A schedule kind is one class here, registered with
`@register_schedule`: its `kind`, its parameters as pydantic fields (type, valid range,
default, description) and `ratios()`, the keep ratio of every layer. That is all a new
kind needs: policies and search spaces validate it by `kind`, a search space derives its
searched dimensions and range checks from the fields (see `Param`), and `compile_policy`
compiles it into the explicit policy. How a field is read:

- an `int` or `float` field is a searched number (a dist in a space file; default: the
  field's default as a constant); `Layer` marks a layer index (below the model depth);
- a list field marked `PerLayer` holds one value per layer and is searched per layer;
- any other field is fixed: a space file gives it as it is.

`compile_policy` turns one `TaskSpec` per task (or a `Tied` generation) into the explicit
`ReductionPolicy`; with mode `drop` the keep list is clamped to its running minimum.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from itertools import accumulate
from typing import Annotated, Any, Literal

from pydantic import Field, SerializeAsAny, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError, PydanticKnownError

from searchvlm.schema._strict import Frozen
from searchvlm.schema.policy import Mode, Ratio, ReductionPolicy, Selector, Sharing, TaskPolicy

__all__ = [
    "CosineSchedule",
    "FastVSchedule",
    "Layer",
    "Param",
    "PerLayer",
    "PerLayerSchedule",
    "PyramidSchedule",
    "SCHEDULES",
    "Schedule",
    "ShallowSchedule",
    "TaskSpec",
    "Tied",
    "by_kind",
    "compile_policy",
    "register_schedule",
    "shallow_layers",
]

# --------------------------------------------------------------------------- declarations


@dataclass(frozen=True)
class Layer:
    """Marks an int field (or a list's items) as a layer index: valid in [low, num_layers - 1]
    (and at least the field's `ge`)."""

    low: int = 0


@dataclass(frozen=True)
class PerLayer:
    """Marks a list field as one value per layer, searched per layer (params `<name>.<i>`);
    a space's default dist spans the items' valid range in steps of `step`."""

    step: float | None = None


@dataclass(frozen=True)
class Param:
    """One parameter of a schedule kind, as its pydantic field declares it."""

    name: str
    role: Literal["number", "per_layer", "fixed"]
    type: Any  # number: int | float; per_layer: the items' type; fixed: the annotation
    default: Any
    description: str
    ge: float | None = None
    le: float | None = None
    layer: Layer | None = None
    step: float | None = None

    @property
    def low(self) -> float:
        """Smallest valid value."""
        return max(self.ge or 0, self.layer.low if self.layer else 0)

    def limits(self, num_layers: int) -> tuple[float, float]:
        """Smallest and largest valid value at this model depth."""
        return self.low, num_layers - 1 if self.layer else (math.inf if self.le is None else self.le)

    def valid(self) -> str:
        """The valid range as text (`int in [1, L-1]`, `float in [0, 1]`, `int ≥ 0`)."""
        name = getattr(self.type, "__name__", str(self.type))
        if self.layer:
            return f"{name} in [{self.low:g}, L-1]"
        return f"{name} in [{self.low:g}, {self.le:g}]" if self.le is not None else f"{name} ≥ {self.low:g}"

    @property
    def what(self) -> str:
        """What the values are, for error messages: layer | ratio | count."""
        return "layer" if self.layer else ("ratio" if self.type is float else "count")


def _markers(tp: Any, metadata: list[Any]) -> list[Any]:
    """Every metadata object in `metadata` and in the `Annotated` parts of `tp`."""
    out = []
    for m in metadata:
        out += [*m.metadata] if isinstance(m, FieldInfo) else [m]
    if typing.get_origin(tp) is Annotated:
        return out + _markers(typing.get_args(tp)[0], list(tp.__metadata__))
    for arg in typing.get_args(tp):
        out += _markers(arg, [])
    return out


def _first(markers: list[Any], kind: type) -> Any:
    return next((m for m in markers if isinstance(m, kind)), None)


def _bound(markers: list[Any], key: str) -> float | None:
    return next((getattr(m, key) for m in markers if getattr(m, key, None) is not None), None)


def _param(name: str, info: FieldInfo) -> Param:
    markers = _markers(info.annotation, list(info.metadata))
    per_layer = _first(markers, PerLayer)
    if info.annotation in (int, float):
        role, tp = "number", info.annotation
    elif per_layer is not None:
        role, tp = "per_layer", _item_type(info.annotation)
    else:
        role, tp = "fixed", info.annotation
    default = info.get_default(call_default_factory=True)  # PydanticUndefined: required
    return Param(name, role, tp, default, info.description or "", _bound(markers, "ge"), _bound(markers, "le"),
                 _first(markers, Layer), per_layer.step if per_layer else None)  # fmt: skip


def _item_type(tp: Any) -> Any:
    item = typing.get_args(tp)[0]
    return typing.get_args(item)[0] if typing.get_origin(item) is Annotated else item


# --------------------------------------------------------------------------- the base


def by_kind(cls: type, base: type, data: Any, handler: Callable[[Any], Any], classes: Mapping[str, type]) -> Any:
    """Body of a `wrap` model validator: validate a mapping as the class its `kind` names.

    Errors read as pydantic's tagged-union errors; a nested class's own errors keep their
    key path (pydantic-core merges a ValidationError raised inside a validator)."""
    if cls is not base or isinstance(data, base):
        return handler(data)
    if not isinstance(data, dict):
        raise PydanticKnownError("model_attributes_type")
    if "kind" not in data:
        raise PydanticCustomError("union_tag_not_found", "Unable to extract tag using discriminator {discriminator}",
                                  {"discriminator": "'kind'"})  # fmt: skip
    kind = data["kind"]
    if not isinstance(kind, str) or kind not in classes:
        tags = ", ".join(f"'{k}'" for k in classes)
        raise PydanticCustomError(
            "union_tag_invalid",
            "Input tag '{tag}' found using {discriminator} does not match any of the expected tags: {expected_tags}",
            {"discriminator": "'kind'", "tag": str(kind), "expected_tags": tags},
        )
    return classes[kind].model_validate(data)


class Schedule(Frozen):
    """A keep schedule: parameters that compile to one keep ratio per layer."""

    kind: str

    @model_validator(mode="wrap")
    @classmethod
    def _by_kind(cls, data: Any, handler: Callable[[Any], Any]) -> Any:
        return by_kind(cls, Schedule, data, handler, SCHEDULES)

    @classmethod
    def params(cls) -> tuple[Param, ...]:
        """Every parameter (`kind` excluded), in field order."""
        return _params(cls)

    def ratios(self, num_layers: int) -> list[float]:
        """The keep ratio of every layer (parameters already checked against the depth)."""
        raise NotImplementedError

    def compile(self, num_layers: int) -> list[float]:
        """One keep ratio per layer; ValueError naming a parameter that does not fit the depth."""
        for problem in self.depth_problems(num_layers):
            raise ValueError(problem)
        return self.ratios(num_layers)

    def depth_problems(self, num_layers: int) -> list[str]:
        """Layer parameters beyond the depth, per-layer lists of the wrong length."""
        out = []
        for p in self.params():
            value = getattr(self, p.name)
            if p.role == "per_layer" and len(value) != num_layers:
                out.append(f"{self.kind}.{p.name} has {len(value)} entries but the model has {num_layers} layers")
            elif p.layer and p.role == "number" and value > num_layers - 1:
                out.append(f"{self.kind}.{p.name} = {value} must be < num_layers = {num_layers}")
            elif p.layer and isinstance(value, list):
                low, high = p.limits(num_layers)
                out += [f"{self.kind}.{p.name} value {v} must be in [{low}, {high}]" for v in value
                        if not low <= v <= high]  # fmt: skip
        return out


@cache
def _params(cls: type[Schedule]) -> tuple[Param, ...]:
    return tuple(_param(name, info) for name, info in cls.model_fields.items() if name != "kind")


#: every schedule kind, by `kind` (registration order: the order errors and docs list them)
SCHEDULES: dict[str, type[Schedule]] = {}


def register_schedule(cls: type[Schedule]) -> type[Schedule]:
    """Make a schedule kind known to policies and search spaces (a class decorator)."""
    kind = cls.model_fields["kind"].default if issubclass(cls, Schedule) else None
    if not isinstance(kind, str):
        raise TypeError(f"{cls.__name__} must be a Schedule with a default `kind` string")
    if SCHEDULES.get(kind, cls) is not cls:
        raise ValueError(f"schedule kind {kind!r} is already registered ({SCHEDULES[kind].__name__})")
    SCHEDULES[kind] = cls
    return cls


# --------------------------------------------------------------------------- the kinds


@register_schedule
class FastVSchedule(Schedule):
    """FastV: full layers before `start` (K), then keep 1-R of the image tokens."""

    kind: Literal["fastv"] = Field("fastv", description="schedule kind")
    start: Annotated[int, Layer()] = Field(2, ge=1, description="K: first reduced layer, 0-based")
    ratio: Ratio = Field(0.5, description="R: fraction of image tokens removed from layer K on")

    def ratios(self, num_layers: int) -> list[float]:
        return [1.0] * self.start + [1.0 - self.ratio] * (num_layers - self.start)


@register_schedule
class PyramidSchedule(Schedule):
    """PyramidDrop: at each stage boundary keep λ of the remaining image tokens."""

    kind: Literal["pyramid"] = Field("pyramid", description="schedule kind")
    boundaries: list[Annotated[int, Layer(low=1)]] | None = Field(
        None, description="layers where a stage starts; default L/4, L/2, 3L/4"
    )
    ratio: Ratio = Field(0.5, description="λ: fraction of the remaining image tokens kept")

    def ratios(self, num_layers: int) -> list[float]:
        bounds = self.boundaries
        if bounds is None:
            raw = {max(1, round(num_layers * f)) for f in (0.25, 0.5, 0.75)}
            bounds = sorted(b for b in raw if b < num_layers)
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


@register_schedule
class ShallowSchedule(Schedule):
    """HMGen: K shallow layers (image tokens pass through) placed in the middle, alternating."""

    kind: Literal["shallow"] = Field("shallow", description="schedule kind")
    k: int = Field(3, ge=0, description="number of shallow layers (clipped to (L-1)//2)")
    ratio: Ratio = Field(0.0, description="keep ratio inside a shallow layer")

    def ratios(self, num_layers: int) -> list[float]:
        shallow = set(shallow_layers(num_layers, self.k))
        return [self.ratio if i in shallow else 1.0 for i in range(num_layers)]


@register_schedule
class CosineSchedule(Schedule):
    """p-MoD shifted cosine: 1.0 until `shift`, then cosine decay to `floor` at the last layer."""

    kind: Literal["cosine"] = Field("cosine", description="schedule kind")
    floor: Ratio = Field(0.15, description="keep ratio of the last layer")
    shift: Annotated[int, Layer()] = Field(0, ge=0, description="layers kept dense before the decay starts")

    def ratios(self, num_layers: int) -> list[float]:
        span = max(1, num_layers - 1 - self.shift)
        out = []
        for layer in range(num_layers):
            t = min(1.0, max(0.0, (layer - self.shift) / span))
            out.append(self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * t)))
        return out


@register_schedule
class PerLayerSchedule(Schedule):
    """One explicit keep ratio per layer (a search space draws every layer's from one dist,
    params `<task>.per_layer.keep.<i>`)."""

    kind: Literal["per_layer"] = Field("per_layer", description="schedule kind")
    keep: Annotated[list[Ratio], PerLayer(step=0.25)] = Field(description="keep ratio of image tokens, one per layer")

    def ratios(self, num_layers: int) -> list[float]:
        return list(self.keep)


# --------------------------------------------------------------------------- compilation


class TaskSpec(Frozen):
    """A task's policy written as a schedule (compiled to `TaskPolicy`)."""

    schedule: SerializeAsAny[Schedule] = Field(default_factory=lambda: CosineSchedule(floor=1.0))
    mode: Mode = "skip"
    selector: Selector = "stride"

    def compile(self, num_layers: int) -> TaskPolicy:
        """With `drop` the keep list is clamped to its running minimum (dropped tokens never
        come back): a documented repair, so that every sampled point is a valid policy."""
        keep = self.schedule.compile(num_layers)
        if self.mode == "drop":
            keep = list(accumulate(keep, min, initial=1.0))[1:]
        return TaskPolicy(keep=keep, mode=self.mode, selector=self.selector)


class Tied(Frozen):
    """Generation tied to understanding (`tie_schedules`): understanding's schedule and mode
    (one pathway), generation's own selector."""

    selector: Selector = "stride"


def compile_policy(
    num_layers: int,
    understanding: TaskSpec,
    generation: TaskSpec | Tied,
    sharing: Sharing | None = None,
    name: str | None = None,
    seed: int = 0,
) -> ReductionPolicy:
    """Compile per-task schedules into the explicit policy (each schedule once)."""
    und = understanding.compile(num_layers)
    tied = isinstance(generation, Tied)
    gen = (
        TaskPolicy(keep=und.keep, mode=und.mode, selector=generation.selector)
        if tied
        else (generation.compile(num_layers))
    )
    return ReductionPolicy(
        num_layers=num_layers,
        understanding=und,
        generation=gen,
        sharing=sharing or Sharing(),
        tie_schedules=tied,
        name=name,
        seed=seed,
    )

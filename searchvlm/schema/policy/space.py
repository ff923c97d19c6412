"""The searched policy dimensions of a search space (L0 module: pydantic + stdlib only).

`Dist` is one searchable number (a scalar in YAML is a constant, a list categorical);
`ScheduleSpace` the dists of one schedule kind, one generated subclass per registered kind
(`space_of`, from its `searchvlm.schema.policy.schedules` class); `TaskSpace`, `SharingSpace` and
`PolicySpace` the `policy:` section of a space file. `searchvlm.schema.space` composes them into
the `SearchSpace` and samples them (`SupportsSuggest`: what a sampler must offer).
"""

from __future__ import annotations

from functools import cache, partial
from typing import Any, Callable, ClassVar, Literal, Protocol

from pydantic import (
    Field,
    GetJsonSchemaHandler,
    SerializeAsAny,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticUndefined, core_schema

from searchvlm.schema._strict import Strict as _Strict
from searchvlm.schema.policy import Mode, Selector, task_selector_error
from searchvlm.schema.policy.schedules import SCHEDULES, CosineSchedule, Param, Schedule, by_kind

__all__ = ["Dist", "PolicySpace", "Scalar", "ScheduleSpace", "SharingSpace", "SupportsSuggest", "TaskSpace", "space_of"]

Scalar = float | int | str | bool


class SupportsSuggest(Protocol):
    """What `SearchSpace.suggest` needs: the `suggest_*` methods of an `optuna.Trial`."""

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float: ...  # fmt: skip

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1,
                    log: bool = False) -> int: ...  # fmt: skip

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


# --------------------------------------------------------------------------- dimensions


class Dist(_Strict):
    """One searchable number. YAML shorthand: a scalar is a constant, a list is categorical."""

    type: Literal["float", "int", "categorical", "const"] = Field(description="float | int | categorical | const")
    low: float | None = Field(None, description="float/int: lower bound (inclusive)")
    high: float | None = Field(None, description="float/int: upper bound (inclusive)")
    step: float | None = Field(None, gt=0, description="float/int: grid step (None: continuous)")
    log: bool = Field(False, description="float/int: sample on a log scale")
    choices: list[Scalar] | None = Field(None, description="categorical: the values")
    value: Scalar | None = Field(None, description="const: the value")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, list):
            return {"type": "categorical", "choices": data}
        if isinstance(data, (int, float, str, bool)):
            return {"type": "const", "value": data}
        return data

    @model_validator(mode="after")
    def _check(self) -> "Dist":
        if self.type in ("float", "int"):
            if self.low is None or self.high is None:
                raise ValueError(f"type = {self.type!r} needs both low and high")
            if self.low > self.high:
                raise ValueError(f"low = {self.low} must be <= high = {self.high}")
            if self.log and (self.low <= 0 or self.step is not None):
                raise ValueError("log = true needs low > 0 and no step")
        if self.type == "int" and any(v is not None and float(v) != int(v) for v in (self.low, self.high, self.step)):
            raise ValueError("type = 'int' needs integer low, high and step")
        if self.type == "categorical" and not self.choices:
            raise ValueError("type = 'categorical' needs a non-empty choices list")
        if self.type == "const" and self.value is None:
            raise ValueError("type = 'const' needs a value")
        return self

    def bounds(self) -> tuple[float, float]:
        """Smallest and largest value the dimension can produce (numeric dims)."""
        if self.type in ("float", "int"):
            return float(self.low), float(self.high)  # type: ignore[arg-type]
        vals = [self.value] if self.type == "const" else list(self.choices or [])
        nums = [float(v) for v in vals if isinstance(v, (int, float))]
        return (min(nums), max(nums)) if nums else (0.0, 0.0)

    def grid(self) -> list[Scalar] | None:
        """Finite list of values (None when continuous)."""
        if self.type == "const":
            return [self.value]  # type: ignore[list-item]
        if self.type == "categorical":
            return list(self.choices or [])
        if self.type == "int" and self.step is None:
            return list(range(int(self.low), int(self.high) + 1))  # type: ignore[arg-type]
        if self.step is None:
            return None
        n = int(round((self.high - self.low) / self.step))  # type: ignore[operator]
        vals = [self.low + i * self.step for i in range(n + 1)]  # type: ignore[operator]
        return [int(v) for v in vals] if self.type == "int" else [round(v, 10) for v in vals]

    def sample(self, trial: SupportsSuggest, name: str) -> Any:
        if self.type == "const":
            return self.value
        if self.type == "categorical":
            return trial.suggest_categorical(name, list(self.choices or []))
        if self.type == "int":
            step = int(self.step or 1)
            return trial.suggest_int(name, int(self.low), int(self.high), step=step, log=self.log)  # type: ignore[arg-type]
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)  # type: ignore[arg-type]


def _const(value: Scalar) -> Dist:
    return Dist(type="const", value=value)


# --------------------------------------------------------------------------- schedule spaces


class ScheduleSpace(_Strict):
    """The searched dimensions of one schedule kind. One subclass per registered kind,
    generated from its `searchvlm.schema.policy.schedules` class (`space_of`): a dist per number, one
    dist for every layer of a per-layer list, fixed fields as they are."""

    kind: str
    schedule: ClassVar[type[Schedule]]

    @model_validator(mode="wrap")
    @classmethod
    def _by_kind(cls, data: Any, handler: Callable[[Any], Any]) -> Any:
        return by_kind(cls, ScheduleSpace, data, handler, _spaces())

    @classmethod
    def variants(cls) -> tuple[type["ScheduleSpace"], ...]:
        """The space of every registered kind (what a schedule list item may be)."""
        return tuple(_spaces().values())

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        if cls is not ScheduleSpace:
            return handler(schema)
        choices = {kind: space.__pydantic_core_schema__ for kind, space in _spaces().items()}
        return handler(core_schema.tagged_union_schema(choices, discriminator="kind"))  # as pydantic's unions

    def __reduce__(self) -> tuple[Any, ...]:
        # the generated classes are not module attributes: pickle (the sweep's searcher) by kind
        return _blank, (self.kind,), self.__getstate__()

    def dims(self, num_layers: int) -> dict[str, Dist]:
        """The searched dists by their name in the schedule (`ratio`, `keep.3`)."""
        return {name: getattr(self, p.name) for p in self.schedule.params() for name in _dim_names(p, num_layers)}

    def build(self, values: dict[str, Any], num_layers: int) -> Schedule:
        """The schedule at one point (`values` named as in `dims`)."""
        args = {}
        for p in self.schedule.params():
            names = _dim_names(p, num_layers)
            if p.role == "number":
                args[p.name] = p.type(values[names[0]])
            elif p.role == "per_layer":
                args[p.name] = [p.type(values[n]) for n in names]
            else:
                args[p.name] = getattr(self, p.name)
        return self.schedule(**args)

    def problems(self, num_layers: int, key: str) -> list[tuple[str, Any, str]]:
        """Values outside a parameter's valid range at this depth (a dist's whole range)."""
        out: list[tuple[str, Any, str]] = []
        for p in self.schedule.params():
            value, (low, high) = getattr(self, p.name), p.limits(num_layers)
            if isinstance(value, Dist) and (value.bounds()[0] < low or value.bounds()[1] > high):
                why = f"{p.what} values must lie in [{low:g}, {high:g}] (num_layers = {num_layers})"
                out.append((f"{key}.{p.name}", value.model_dump(exclude_none=True), why))
            elif p.layer and isinstance(value, list):
                out += [(f"{key}.{p.name}[{j}]", v, f"must be in [{low}, {high}]")
                        for j, v in enumerate(value) if not low <= v <= high]  # fmt: skip
        return out


def _dim_names(p: Param, num_layers: int) -> list[str]:
    """A parameter's dims: itself (a number), `<name>.<i>` (per layer), none (fixed)."""
    if p.role == "per_layer":
        return [f"{p.name}.{i}" for i in range(num_layers)]
    return [p.name] if p.role == "number" else []


def _blank(kind: str) -> ScheduleSpace:
    """An empty instance of a kind's space class (unpickling fills it)."""
    space = _spaces()[kind]
    return space.__new__(space)


def _spaces() -> dict[str, type[ScheduleSpace]]:
    """The space class of every registered schedule kind, by kind (registration order)."""
    return {kind: space_of(schedule) for kind, schedule in SCHEDULES.items()}


@cache
def space_of(schedule: type[Schedule]) -> type[ScheduleSpace]:
    """The space class of a schedule kind: its fields as dists (defaults: the schedule's own
    defaults as constants; a per-layer list: its items' range in its grid step)."""
    kind = schedule.model_fields["kind"].default
    fields: dict[str, Any] = {"kind": (Literal[kind], Field(kind, description="schedule kind"))}
    for p in schedule.params():
        doc = p.description if p.role == "fixed" else f"{p.description} ({p.valid()})"
        if p.role == "per_layer":
            dist = partial(Dist, type="int" if p.type is int else "float", low=p.ge, high=p.le, step=p.step)
            fields[p.name] = (Dist, Field(default_factory=dist, description=f"{doc}; one dist for every layer"))
        elif p.role == "number" and p.default is not PydanticUndefined:
            fields[p.name] = (Dist, Field(default_factory=partial(_const, p.default), description=doc))
        else:
            fields[p.name] = (Dist if p.role == "number" else p.type, Field(p.default, description=doc))
    name = schedule.__name__.removesuffix("Schedule") + "Space"
    space = create_model(name, __base__=ScheduleSpace, __doc__=schedule.__doc__, __module__=__name__, **fields)
    space.schedule = schedule
    return space


class TaskSpace(_Strict):
    """A task's policy dimensions: mode and selector choices, candidate schedules."""

    mode: list[Mode] = Field(default_factory=lambda: ["skip"], description="mode choices")
    selector: list[Selector] = Field(default_factory=lambda: ["stride"], description="selector choices")
    schedules: list[SerializeAsAny[ScheduleSpace]] = Field(
        default_factory=lambda: [space_of(CosineSchedule)(floor=_const(1.0))],
        min_length=1,
        description="candidate schedules (a list of {kind: ..., <param>: <dist>}); "
        "the kind is a categorical dimension when there are several",
    )

    @field_validator("mode", "selector", mode="before")
    @classmethod
    def _one(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class SharingSpace(_Strict):
    """Parameter-sharing choices (see `searchvlm.schema.policy.Sharing`)."""

    qkv: list[Literal["shared", "modality", "task_image"]] = Field(
        default_factory=lambda: ["shared"], description="q/k/v sharing choices"
    )
    mlp: list[Literal["shared", "modality", "task"]] = Field(
        default_factory=lambda: ["shared"], description="MLP sharing choices"
    )
    scope: list[int] | None = Field(None, description="layers a split applies to (None: all)")

    @field_validator("qkv", "mlp", mode="before")
    @classmethod
    def _one(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class PolicySpace(_Strict):
    """The searched part of a trial: per-task reduction and the sharing pathways."""

    understanding: TaskSpace = TaskSpace()
    generation: TaskSpace = TaskSpace()
    tie_schedules: list[bool] = Field(
        default_factory=lambda: [False],
        description="choices of tying both tasks to one schedule (generation's mode choices)",
    )
    sharing: SharingSpace = SharingSpace()

    @field_validator("tie_schedules", mode="before")
    @classmethod
    def _one(cls, v: Any) -> Any:
        return [v] if isinstance(v, bool) else v

    @field_validator("generation")
    @classmethod
    def _no_drop(cls, v: TaskSpace) -> TaskSpace:
        bad = [p for p in map(partial(task_selector_error, "generation"), v.selector) if p]
        if bad:
            raise ValueError(bad[0].replace("generation.selector", "selector"))
        if "drop" in v.mode:
            raise ValueError(
                f"mode = {v.mode}: 'drop' is invalid for generation (it deletes the image "
                "tokens generation predicts); use 'skip' or 'query_drop'"
            )
        return v

"""Search spaces: the schema of `search_spaces/*.yaml`, sampled params -> explicit policy.

L0 module: pydantic + stdlib only (no torch / ray / mlflow / optuna import). A space file
has fixed sections (`model`, `data`, `training`, `synergy`, `seeds`: the `TrialConfig`
types), the `policy` dimensions, `objectives`, `constraints`, `search` settings and
`presets` (warm-start points). `SearchSpace.suggest(trial)` samples one point through any
object with Optuna's `suggest_float/int/categorical` (define-by-run, conditional on the
schedule kind); `SearchSpace.policy_from_params(params)` turns a point into an explicit
`ReductionPolicy`.

Invalid combinations are repaired, not rejected: with mode `drop` the compiled keep list
is clamped to be non-increasing (running minimum, "dropped tokens never come back"), so
every sampled point is a valid policy. The explicit policy a trial trained under is what
the trials table and MLflow record.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable
from typing import Annotated, Any, Literal, Protocol

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from searchvlm.config import DataConfig, ModelConfig, SynergyConfig, TrainingConfig, TrialConfig
from searchvlm.errors import ConfigError, load_yaml, validate
from searchvlm.overrides import Override, apply_overrides, attribute, parse_overrides
from searchvlm.policy import (
    PRESETS,
    PROMPT_SELECTORS,
    CosineSchedule,
    FastVSchedule,
    Mode,
    PerLayerSchedule,
    PyramidSchedule,
    ReductionPolicy,
    Selector,
    Sharing,
    ShallowSchedule,
    TaskSpec,
    compile_policy,
    generation_selector_error,
    preset,
)

Scalar = float | int | str | bool
METRICS: tuple[str, ...] = (
    "flops_ratio", "synergy_gain", "und_gain", "gen_gain", "und_acc", "gen_nll",
    "gen_fidelity", "synergy_gain_stderr", "synergy_vs_dense", "und_gain_vs_dense", "gen_gain_vs_dense",
)  # fmt: skip
SHORT = {"understanding": "und", "generation": "gen"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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

    type: Literal["float", "int", "categorical", "const"] = Field(
        description="float | int | categorical | const"
    )
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
        if self.type == "int" and any(
            v is not None and float(v) != int(v) for v in (self.low, self.high, self.step)
        ):
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


class FastVSpace(_Strict):
    """FastV: full layers before `start` (K), then keep 1-`ratio` of the image tokens."""

    kind: Literal["fastv"] = Field("fastv", description="schedule kind")
    start: Dist = Field(default_factory=lambda: _const(2), description="K (int, < num_layers)")
    ratio: Dist = Field(default_factory=lambda: _const(0.5), description="R: share removed")

    def dims(self) -> dict[str, Dist]:
        return {"start": self.start, "ratio": self.ratio}

    def build(self, v: dict[str, Any], num_layers: int) -> FastVSchedule:
        return FastVSchedule(start=int(v["start"]), ratio=float(v["ratio"]))


class PyramidSpace(_Strict):
    """PyramidDrop: keep `ratio` (λ) of the remaining image tokens at each stage boundary."""

    kind: Literal["pyramid"] = Field("pyramid", description="schedule kind")
    ratio: Dist = Field(default_factory=lambda: _const(0.5), description="λ per stage")
    boundaries: list[int] | None = Field(None, description="stage starts; None: L/4, L/2, 3L/4")

    def dims(self) -> dict[str, Dist]:
        return {"ratio": self.ratio}

    def build(self, v: dict[str, Any], num_layers: int) -> PyramidSchedule:
        return PyramidSchedule(ratio=float(v["ratio"]), boundaries=self.boundaries)


class ShallowSpace(_Strict):
    """HMGen: `k` shallow layers in the middle (alternating), keep `ratio` inside them."""

    kind: Literal["shallow"] = Field("shallow", description="schedule kind")
    k: Dist = Field(default_factory=lambda: _const(3), description="shallow layers (int)")
    ratio: Dist = Field(default_factory=lambda: _const(0.0), description="keep in shallow layers")

    def dims(self) -> dict[str, Dist]:
        return {"k": self.k, "ratio": self.ratio}

    def build(self, v: dict[str, Any], num_layers: int) -> ShallowSchedule:
        return ShallowSchedule(k=int(v["k"]), ratio=float(v["ratio"]))


class CosineSpace(_Strict):
    """p-MoD shifted cosine: dense until `shift`, then cosine decay to `floor`."""

    kind: Literal["cosine"] = Field("cosine", description="schedule kind")
    floor: Dist = Field(default_factory=lambda: _const(0.15), description="last-layer keep")
    shift: Dist = Field(default_factory=lambda: _const(0), description="dense layers (int)")

    def dims(self) -> dict[str, Dist]:
        return {"floor": self.floor, "shift": self.shift}

    def build(self, v: dict[str, Any], num_layers: int) -> CosineSchedule:
        return CosineSchedule(floor=float(v["floor"]), shift=int(v["shift"]))


class PerLayerSpace(_Strict):
    """One keep ratio per layer, each drawn from `keep` (params `<task>.per_layer.keep.<i>`)."""

    kind: Literal["per_layer"] = Field("per_layer", description="schedule kind")
    keep: Dist = Field(
        default_factory=lambda: Dist(type="float", low=0.0, high=1.0, step=0.25),
        description="distribution of every layer's keep ratio",
    )

    def dims_for(self, num_layers: int) -> dict[str, Dist]:
        return {f"keep.{i}": self.keep for i in range(num_layers)}

    def build(self, v: dict[str, Any], num_layers: int) -> PerLayerSchedule:
        return PerLayerSchedule(keep=[float(v[f"keep.{i}"]) for i in range(num_layers)])


ScheduleSpace = FastVSpace | PyramidSpace | ShallowSpace | CosineSpace | PerLayerSpace
_ScheduleField = Annotated[ScheduleSpace, Field(discriminator="kind")]


def _dims(s: ScheduleSpace, num_layers: int) -> dict[str, Dist]:
    return s.dims_for(num_layers) if isinstance(s, PerLayerSpace) else s.dims()


class TaskSpace(_Strict):
    """A task's policy dimensions: mode and selector choices, candidate schedules."""

    mode: list[Mode] = Field(default_factory=lambda: ["skip"], description="mode choices")
    selector: list[Selector] = Field(
        default_factory=lambda: ["stride"], description="selector choices"
    )
    schedules: list[_ScheduleField] = Field(
        default_factory=lambda: [CosineSpace(floor=_const(1.0))],
        min_length=1,
        description="candidate schedules (a list of {kind: ..., <param>: <dist>}); "
        "the kind is a categorical dimension when there are several",
    )

    @field_validator("mode", "selector", mode="before")
    @classmethod
    def _one(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v



class SharingSpace(_Strict):
    """Parameter-sharing choices (see `searchvlm.policy.Sharing`)."""

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
        bad = [s for s in v.selector if s in PROMPT_SELECTORS]
        if bad:
            raise ValueError(generation_selector_error(bad[0]).replace("generation.selector", "selector"))
        if "drop" in v.mode:
            raise ValueError(
                f"mode = {v.mode}: 'drop' is invalid for generation (it deletes the image "
                "tokens generation predicts); use 'skip' or 'query_drop'"
            )
        return v


# --------------------------------------------------------------------------- objectives, search


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


def _check_preset(name: str) -> str:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    return name


ConstraintText = Annotated[str, AfterValidator(_check_constraint)]
PresetName = Annotated[str, AfterValidator(_check_preset)]


class SchedulerSpace(_Strict):
    """Early stopping: `none` or `mo_asha` (multi-objective successive halving)."""

    kind: Literal["none", "mo_asha"] = Field("none", description="none | mo_asha")
    reduction_factor: float = Field(3.0, gt=1, description="η: keep the top 1/η at each rung")
    grace_steps: int | None = Field(
        None, ge=1, description="first rung (training steps); None: training.eval_every"
    )
    max_steps: int | None = Field(None, ge=1, description="last step; None: training.steps")


class ConfirmSettings(_Strict):
    """`search.confirm`: at the end of a sweep, retrain its front and near-front on fresh
    seeds paired with dense (`searchvlm confirm`), writing runs/<sweep>/confirmed.csv."""

    seeds: list[int] = Field(min_length=1, description="fresh seeds (none of the space's `seeds`)")
    top: int | None = Field(None, ge=1, description="confirm at most this many policies (None: all)")


class SearchSettings(_Strict):
    """How the sweep searches."""

    sampler: Literal["tpe", "nsga2", "gp", "random", "grid"] = Field(
        "tpe", description="Optuna sampler: tpe | nsga2 | gp | random | grid"
    )
    samples: int = Field(8, ge=1, description="trials in the sweep (presets included)")
    concurrency: int = Field(2, ge=1, description="trials running at once")
    seed: int = Field(0, description="sampler seed")
    startup_trials: int | None = Field(
        None, ge=0, description="tpe/gp: random trials before the model kicks in (None: default)"
    )
    population_size: int | None = Field(None, ge=2, description="nsga2: population size")
    scheduler: SchedulerSpace = SchedulerSpace()
    cpus_per_trial: float = Field(1.0, gt=0, description="CPUs per trial (= torch threads)")
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


# --------------------------------------------------------------------------- the space


class ProxyCalibration(_Strict):
    """What `benchmarks/calibrate_proxy.py` measured for the DENSE policy on this file's fixed
    sections: each task's gain over its isolated baseline, mean and paired standard error."""

    seeds: int = Field(ge=1, description="paired seeds measured")
    at: Literal["best", "final"] = Field("best", description="checkpoint rule the gains were read at")
    und_gain: tuple[float, float] = Field(description="understanding gain: [mean, paired s.e.]")
    gen_gain: tuple[float, float] = Field(description="generation gain: [mean, paired s.e.]")
    command: str = Field("", description="the command that measured it")

    def shows_synergy(self) -> bool:
        """Both gains more than 2 paired standard errors above zero."""
        return all(m > 0 and m > 2 * se for m, se in (self.und_gain, self.gen_gain))


class SearchSpace(_Strict):
    """A search-space file (`search_spaces/*.yaml`)."""

    description: str = Field("", description="free text")
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    training: TrainingConfig = TrainingConfig()
    synergy: SynergyConfig = SynergyConfig()
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="paired seeds")
    policy: PolicySpace = PolicySpace()
    objectives: list[Objective] = Field(
        default_factory=lambda: [
            Objective(name="flops_ratio", mode="min"),
            Objective(name="synergy_gain", mode="max"),
        ],
        min_length=1,
        description="metrics and directions (default: flops_ratio min, synergy_gain max)",
    )
    constraints: list[ConstraintText] = Field(
        default_factory=list, description="e.g. 'und_acc >= 0.5' (Optuna set_constraint)"
    )
    search: SearchSettings = SearchSettings()
    presets: list[PresetName] = Field(
        default_factory=list, description=f"presets enqueued first (warm-start points): {', '.join(PRESETS)}"
    )
    calibration: ProxyCalibration | None = Field(
        None, description="the dense policy's measured synergy on this proxy (warns a sweep when absent or not positive)"
    )

    def synergy_warning(self) -> str | None:
        """Why this proxy's synergy numbers should not be read as synergy, or None."""
        c = self.calibration
        if c is None:
            return ("this space has no `calibration:` section: the dense model's synergy on its proxy "
                    "is unmeasured (benchmarks/calibrate_proxy.py measures it)")  # fmt: skip
        if c.shows_synergy():
            return None
        return (
            f"on this proxy the DENSE unified model does not beat both isolated baselines "
            f"(g_U {c.und_gain[0]:+.3f} ± {c.und_gain[1]:.3f}, g_G {c.gen_gain[0]:+.3f} ± {c.gen_gain[1]:.3f}, "
            f"{c.seeds} seeds, at the {c.at} checkpoint): synergy_gain ranks how much synergy LOSS a "
            "policy adds, not synergy; read synergy_vs_dense and each task's gain"
        )

    # ---- fixed part

    def trial_config(
        self, policy: ReductionPolicy | None, name: str = "trial", cache_dir: str | Path | None = None
    ) -> TrialConfig:
        """The TrialConfig of one trial: the fixed sections plus `policy` (None: dense)."""
        extra = {} if cache_dir is None else {"cache_dir": str(Path(cache_dir).resolve())}
        return TrialConfig(
            model=self.model, data=self.data, training=self.training, synergy=self.synergy,
            seeds=list(self.seeds), policy=policy, name=name, **extra,
        )  # fmt: skip

    def with_search(self, **update: Any) -> "SearchSpace":
        """This space with `search` fields replaced (None values are ignored), e.g. `--samples`."""
        upd = {k: v for k, v in update.items() if v is not None}
        return self.model_copy(update={"search": self.search.model_copy(update=upd)}) if upd else self

    def space_hash(self) -> str:
        """Stable 16-hex digest of the normalised space (provenance of exported policies)."""
        data = self.model_dump(mode="json")
        if data["search"]["confirm"] is None:  # added later: spaces without it keep their hash
            del data["search"]["confirm"]
        text = json.dumps(data, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def directions(self) -> list[str]:
        return [o.mode for o in self.objectives]

    @property
    def metric_names(self) -> list[str]:
        return [o.name for o in self.objectives]

    def parsed_constraints(self) -> list[Constraint]:
        return [Constraint.parse(c) for c in self.constraints]

    def max_steps(self) -> int:
        return self.search.scheduler.max_steps or self.training.steps

    # ---- sampling

    def suggest(self, trial: SupportsSuggest) -> dict[str, Any]:
        """Sample one point (define-by-run); returns the flat params, constants included."""
        p = self.policy
        out: dict[str, Any] = {}
        tied = _pick(trial, out, "tie_schedules", p.tie_schedules)
        self._suggest_task(trial, out, "understanding", tied)
        if not tied:
            self._suggest_task(trial, out, "generation", False)
        else:
            _pick(trial, out, "gen.selector", p.generation.selector)
        _pick(trial, out, "sharing.qkv", p.sharing.qkv)
        _pick(trial, out, "sharing.mlp", p.sharing.mlp)
        return out

    def _suggest_task(self, trial: SupportsSuggest, out: dict, task: str, tied: bool) -> None:
        ts: TaskSpace = getattr(self.policy, task)
        s = SHORT[task]
        if tied:  # one pathway: generation's modes (never `drop`), understanding's schedules
            _pick(trial, out, "tied.mode", self.policy.generation.mode)
        else:
            _pick(trial, out, f"{s}.mode", ts.mode)
        _pick(trial, out, f"{s}.selector", ts.selector)
        kind = _pick(trial, out, f"{s}.schedule", [x.kind for x in ts.schedules])
        sched = next(x for x in ts.schedules if x.kind == kind)
        for key, dist in _dims(sched, self.model.num_layers).items():
            name = f"{s}.{kind}.{key}"
            out[name] = dist.sample(trial, name)

    def policy_from_params(self, params: dict[str, Any], name: str | None = None) -> ReductionPolicy:
        """Compile flat params (from `suggest`) into an explicit policy (drop: keep clamped)."""
        L = self.model.num_layers
        tied = bool(params.get("tie_schedules", False))
        und = self._task_spec(params, "understanding", tied)
        gen = und.model_copy(update={"selector": params["gen.selector"]}) if tied else (
            self._task_spec(params, "generation", False)
        )
        sharing = Sharing(
            qkv=params.get("sharing.qkv", "shared"),
            mlp=params.get("sharing.mlp", "shared"),
            scope=self.policy.sharing.scope,
        )
        return compile_policy(L, _monotone_ok(und, L), _monotone_ok(gen, L), sharing, tied, name)

    def _task_spec(self, params: dict[str, Any], task: str, tied: bool) -> TaskSpec:
        s = SHORT[task]
        kind = params[f"{s}.schedule"]
        sched = next(x for x in getattr(self.policy, task).schedules if x.kind == kind)
        prefix = f"{s}.{kind}."
        values = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
        mode = params["tied.mode"] if tied else params[f"{s}.mode"]
        schedule = sched.build(values, self.model.num_layers)
        return TaskSpec(schedule=schedule, mode=mode, selector=params[f"{s}.selector"])

    def grid_space(self) -> dict[str, list[Scalar]]:
        """Every param's finite values (for Optuna's GridSampler); ConfigError if continuous."""
        grid: dict[str, list[Scalar]] = {}
        for name, dist in self._all_dims().items():
            values = dist.grid()
            if values is None:
                raise ConfigError(None, name, dist.model_dump(exclude_none=True),
                                  "sampler 'grid' needs finite dimensions (give a step)")  # fmt: skip
            grid[name] = values
        return grid

    def _all_dims(self) -> dict[str, Dist]:
        p, L = self.policy, self.model.num_layers
        dims: dict[str, Dist] = {"tie_schedules": Dist(type="categorical", choices=p.tie_schedules)}
        if True in p.tie_schedules:
            dims["tied.mode"] = Dist(type="categorical", choices=p.generation.mode)
        for task, ts in (("understanding", p.understanding), ("generation", p.generation)):
            s = SHORT[task]
            dims[f"{s}.mode"] = Dist(type="categorical", choices=ts.mode)
            dims[f"{s}.selector"] = Dist(type="categorical", choices=ts.selector)
            dims[f"{s}.schedule"] = Dist(type="categorical", choices=[x.kind for x in ts.schedules])
            for sched in ts.schedules:
                for key, dist in _dims(sched, L).items():
                    dims[f"{s}.{sched.kind}.{key}"] = dist
        dims["sharing.qkv"] = Dist(type="categorical", choices=p.sharing.qkv)
        dims["sharing.mlp"] = Dist(type="categorical", choices=p.sharing.mlp)
        return dims


def _pick(trial: SupportsSuggest, out: dict, name: str, choices: list) -> Any:
    """Categorical choice; a single choice is a constant (not an Optuna dimension)."""
    out[name] = choices[0] if len(choices) == 1 else trial.suggest_categorical(name, list(choices))
    return out[name]


def _monotone_ok(spec: TaskSpec, num_layers: int) -> TaskSpec:
    """With `drop`, clamp the compiled keep list to its running minimum (documented repair)."""
    if spec.mode != "drop":
        return spec
    keep, low = [], 1.0
    for k in spec.schedule.compile(num_layers):
        low = min(low, k)
        keep.append(low)
    return spec.model_copy(update={"schedule": PerLayerSchedule(keep=keep)})


# --------------------------------------------------------------------------- cross checks


def _space_problems(space: SearchSpace) -> list[tuple[str, Any, str]]:
    """Checks that need several sections at once (the model depth, the search settings)."""
    L = space.model.num_layers
    out: list[tuple[str, Any, str]] = []
    for task in ("understanding", "generation"):
        for i, sched in enumerate(getattr(space.policy, task).schedules):
            out += _schedule_problems(sched, L, f"policy.{task}.schedules[{i}]")
    for i, s in enumerate(space.policy.sharing.scope or []):
        if not 0 <= s < L:
            out.append((f"policy.sharing.scope[{i}]", s, f"must be in [0, {L - 1}]"))
    out += _search_problems(space)
    return out


_LIMITS: dict[str, tuple[float, str]] = {
    "ratio": (1.0, "ratio"), "floor": (1.0, "ratio"), "keep": (1.0, "ratio"),
    "start": (-1, "layer"), "shift": (-1, "layer"), "k": (1e9, "count"),
}  # fmt: skip


def _schedule_problems(sched: ScheduleSpace, num_layers: int, key: str) -> list[tuple]:
    out: list[tuple] = []
    dims = {"keep": sched.keep} if isinstance(sched, PerLayerSpace) else sched.dims()
    for name, dist in dims.items():
        lo, hi = dist.bounds()
        top, what = _LIMITS[name]
        top = num_layers - 1 if top == -1 else top
        low_ok = 1 if name == "start" else 0
        if lo < low_ok or hi > top:
            out.append((f"{key}.{name}", dist.model_dump(exclude_none=True),
                        f"{what} values must lie in [{low_ok}, {top:g}] (num_layers = {num_layers})"))  # fmt: skip
    if isinstance(sched, PyramidSpace):
        for j, b in enumerate(sched.boundaries or []):
            if not 1 <= b < num_layers:
                out.append((f"{key}.boundaries[{j}]", b, f"must be in [1, {num_layers - 1}]"))
    return out


def _search_problems(space: SearchSpace) -> list[tuple]:
    out: list[tuple] = []
    sched = space.search.scheduler
    if sched.kind == "mo_asha":
        grace = sched.grace_steps or space.training.eval_every
        if grace >= space.max_steps():
            out.append(("search.scheduler.grace_steps", grace,
                        f"must be < the last step {space.max_steps()} for rungs to exist"))  # fmt: skip
    confirm = space.search.confirm
    if confirm is not None and set(confirm.seeds) & set(space.seeds):
        out.append(("search.confirm.seeds", confirm.seeds,
                    f"must be fresh seeds, none of the sweep's seeds {space.seeds}"))  # fmt: skip
    if space.search.sampler == "grid":
        try:
            space.grid_space()
        except ConfigError as err:
            key, value, reason = err.problems[0]
            out.append((f"policy ({key})", value, reason))
    return out


# --------------------------------------------------------------------------- files


def load_space(path: str | Path, overrides: Iterable[str | Override] | None = None) -> SearchSpace:
    """Load and validate a search-space YAML file, with `--set key.path=value` overrides
    applied first (see `searchvlm.overrides`). ConfigError lists every problem: the field
    checks and, for the sections that passed them, the cross-section checks."""
    path = Path(path)
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(path, "", data, "a search space must be a YAML mapping")
    parsed = parse_overrides(overrides)
    data = apply_overrides(data, parsed)
    try:
        space = validate(SearchSpace, data, path)
    except ConfigError as err:
        raise attribute(ConfigError.many(path, err.problems + _partial_checks(data, err)), parsed) from None
    problems = _space_problems(space)
    if problems:
        raise attribute(ConfigError.many(path, problems), parsed)
    return space


def _section(key: str) -> str:
    match = re.match(r"[A-Za-z_]+", key)
    return match.group(0) if match else ""


def _partial_checks(data: dict[str, Any], err: ConfigError) -> list[tuple[str, Any, str]]:
    """The cross-section checks a space whose field checks failed can still have: run on
    the sections that passed (failed ones at their defaults), problems in failed sections
    dropped. Nothing when `model` or `training` failed (every cross check depends on them)."""
    failed = {_section(key) for key, _, _ in err.problems}
    if failed & {"", "model", "training"}:
        return []
    try:
        rest = validate(SearchSpace, {k: v for k, v in data.items() if k not in failed})
    except ConfigError:
        return []
    return [p for p in _space_problems(rest) if _section(p[0]) not in failed]


def validate_file(path: str | Path) -> str:
    """Check a search-space YAML or a policy JSON; returns a one-line summary or raises
    ConfigError listing every problem with its key path."""
    from searchvlm.policy import load_policy

    path = Path(path)
    if path.suffix.lower() == ".json":
        pol = load_policy(path)
        return f"{path}: valid policy ({pol.num_layers} layers, name {pol.name!r})"
    space = load_space(path)
    return (
        f"{path}: valid search space ({space.model.num_layers} layers, sampler "
        f"{space.search.sampler}, {space.search.samples} samples, hash {space.space_hash()})"
    )


@dataclass(frozen=True)
class FileCheck:
    """What `validate` found in one file: a summary when valid, else every problem."""

    path: str
    summary: str | None
    error: ConfigError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        problems = self.error.records() if self.error else []
        return {"file": self.path, "valid": self.ok, "summary": self.summary, "problems": problems}


def validate_files(paths: Iterable[str | Path]) -> list[FileCheck]:
    """`validate_file` on every path; a bad file never stops the others (`searchvlm validate`)."""
    out = []
    for path in paths:
        try:
            out.append(FileCheck(str(path), validate_file(path)))
        except ConfigError as err:
            out.append(FileCheck(str(path), None, err))
    return out


def preset_policy(space: SearchSpace, name: str) -> ReductionPolicy:
    """A preset at the space's model depth."""
    return preset(name, space.model.num_layers)

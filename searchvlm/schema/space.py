"""Search spaces: the schema of `search_spaces/*.yaml`, sampled params -> explicit policy.

L0 module: pydantic + stdlib only (no torch / ray / mlflow / optuna import). A space file
has fixed sections (`model`, `data`, `training`, `synergy`, `seeds`: the `TrialConfig`
types), the `policy` dimensions, `objectives`, `constraints`, `search` settings (their
schemas live in `searchvlm.schema.search`) and `presets` (warm-start points).
`SearchSpace.suggest(trial)` samples one point through any object with Optuna's
`suggest_float/int/categorical` (define-by-run, conditional on the schedule kind);
`SearchSpace.policy_from_params(params)` turns a point into an explicit `ReductionPolicy`.

The `policy` dimensions (dists, schedule spaces, task and sharing choices) are defined in
`searchvlm.schema.policy.space`; a schedule's searched dimensions derive from its class in
`searchvlm.schema.policy.schedules` (`space_of`). The `validate` command's file checks are in
`searchvlm.schema.file_checks`. Invalid combinations are repaired, not rejected: with mode `drop` the
compiled keep list is clamped to be non-increasing (running minimum, "dropped tokens never
come back", done by `compile_policy`), so every sampled point is a valid policy. The
explicit policy a trial trained under is what the trials table and MLflow record.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from searchvlm.schema._strict import Strict as _Strict
from searchvlm.schema.config import (
    DataConfig,
    ModelConfig,
    SynergyConfig,
    TrainingConfig,
    TrialConfig,
    check_gen_metric,
)
from searchvlm.schema.errors import COMMAND_LINE, ConfigError, load_yaml, validate
from searchvlm.schema.overrides import Override, apply_overrides, attribute, parse_overrides
from searchvlm.schema.policy import TASKS, ReductionPolicy, Sharing, load_policy
from searchvlm.schema.policy.presets import PRESETS, preset
from searchvlm.schema.policy.schedules import TaskSpec, Tied, compile_policy
from searchvlm.schema.policy.space import Dist, PolicySpace, Scalar, ScheduleSpace, SupportsSuggest, TaskSpace
from searchvlm.schema.search import (  # noqa: F401 - re-exported: the search settings were defined here
    METRICS,
    ConfirmSettings,
    Constraint,
    ConstraintText,
    DecisionSettings,
    Objective,
    SchedulerSpace,
    SearchSettings,
)

__all__ = [
    "PresetName",
    "ProxyCalibration",
    "SHORT",
    "SearchSpace",
    "load_space",
    "load_trial_config",
    "param_name",
    "preset_policy",
    "trial_policy",
]

# The parameter codec: the flat names of a sampled point (Optuna params, MLflow params), built
# only by `param_name` and these constants: `tie_schedules`; `tied.mode` (a tied point's one
# mode); per task `<t>.mode`, `<t>.selector`, `<t>.schedule` and `<t>.<kind>.<dim>` (t = und |
# gen, dims as `ScheduleSpace.dims` names them; a tied point has `gen.selector` only);
# `sharing.qkv`, `sharing.mlp`. `SearchSpace.suggest` encodes, `policy_from_params` decodes.
TIE, TIED_MODE = "tie_schedules", "tied.mode"
SHORT = {"understanding": "und", "generation": "gen"}


def param_name(task: str, *parts: str) -> str:
    """`und.fastv.start` = param_name("understanding", "fastv", "start")."""
    return ".".join((SHORT[task], *parts))


# --------------------------------------------------------------------------- presets


def _check_preset(name: str) -> str:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    return name


PresetName = Annotated[str, AfterValidator(_check_preset)]


# --------------------------------------------------------------------------- the space


class ProxyCalibration(_Strict):
    """What `benchmarks/calibrate_proxy.py` measured for the DENSE policy on this file's fixed
    sections: each task's gain over its isolated baseline, mean and paired standard error."""

    seeds: int = Field(ge=1, description="paired seeds measured")
    at: Literal["best", "final"] = Field("best", description="checkpoint rule the gains were read at")
    und_gain: tuple[float, float] = Field(description="understanding gain: [mean, paired s.e.]")
    gen_gain: tuple[float, float] = Field(description="generation gain: [mean, paired s.e.]")
    synergy_sd: float | None = Field(
        None,
        ge=0,
        description="seed standard deviation of the dense policy's synergy_gain: one seed's noise, "
        "shown beside one-seed fronts",
    )
    command: str = Field("", description="the command that measured it")

    @model_serializer(mode="wrap")
    def _compact(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """`synergy_sd` serialises only when measured (space hashes as before it existed)."""
        out = handler(self)
        if self.synergy_sd is None:
            out.pop("synergy_sd", None)
        return out

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
    decision: DecisionSettings | None = Field(
        None, description="margin and error rate of `searchvlm decide` (None: give --delta on the command line)"
    )
    calibration: ProxyCalibration | None = Field(
        None,
        description="the dense policy's measured synergy on this proxy (warns a sweep when absent or not positive)",
    )

    @model_validator(mode="after")
    def _gen_metric(self) -> "SearchSpace":
        check_gen_metric(self.data, self.synergy)
        return self

    @field_validator("presets")
    @classmethod
    def _presets_fit(cls, names: list[str], info: ValidationInfo) -> list[str]:
        """Each warm-start preset compiles at the model's depth (HMGen needs 3 layers)."""
        model = info.data.get("model")
        for name in names if model is not None else []:
            try:
                preset(name, model.num_layers)
            except ValueError as err:
                raise ValueError(f"preset {name!r} does not fit model.num_layers = {model.num_layers}: {err}") from None
        return names

    @model_validator(mode="after")
    def _gpus(self) -> "SearchSpace":
        self.training.on_gpus(self.search.gpus_per_trial)  # above 1 GPU: one process per GPU
        return self

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
        """The TrialConfig of one trial: the fixed sections plus `policy` (None: dense); above
        one GPU per trial, its training runs one process per GPU (`TrainingConfig.on_gpus`)."""
        extra = {} if cache_dir is None else {"cache_dir": str(Path(cache_dir).resolve())}
        return TrialConfig(
            model=self.model, data=self.data, training=self.training.on_gpus(self.search.gpus_per_trial),
            synergy=self.synergy, seeds=list(self.seeds), policy=policy, name=name, **extra,
        )  # fmt: skip

    def with_search(self, **update: Any) -> "SearchSpace":
        """This space with `search` fields replaced (None values are ignored), e.g. `--samples`."""
        upd = {k: v for k, v in update.items() if v is not None}
        return self.model_copy(update={"search": self.search.model_copy(update=upd)}) if upd else self

    def space_hash(self, data_path: str | None = None) -> str:
        """Stable 16-hex digest of the normalised space (provenance of exported policies).
        `data_path`: hashed in place of `data.path` (see `hash_matches`)."""
        data = self.model_dump(mode="json")
        if data["search"]["confirm"] is None:  # added later: spaces without it keep their hash
            del data["search"]["confirm"]
        if data["decision"] is None:  # likewise
            del data["decision"]
        if data_path is not None:
            data["data"]["path"] = data_path
        text = json.dumps(data, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def hash_matches(self, recorded: str) -> bool:
        """`recorded` (a sweep's `space_hash`) is this space's hash, or the hash it had when
        `data.path` was kept as written: relative to the working directory (sweeps started
        before the path was made absolute at load)."""
        if self.space_hash() == recorded:
            return True
        path = self.data.path
        if path is None:
            return False
        rel = os.path.relpath(path)
        return recorded in {self.space_hash(rel), self.space_hash(f"./{rel}")}

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

    # ---- sampling: the parameter codec (names: see TIE above)

    def suggest(self, trial: SupportsSuggest) -> dict[str, Any]:
        """Sample one point (define-by-run); returns the flat params, constants included."""
        p, L = self.policy, self.model.num_layers
        out: dict[str, Any] = {}
        tied = _pick(trial, out, TIE, p.tie_schedules)
        for task in TASKS:
            ts: TaskSpace = getattr(p, task)
            if task == "generation" and tied:  # one pathway: understanding's schedule and mode
                _pick(trial, out, param_name(task, "selector"), ts.selector)
                continue
            _pick(trial, out, *((TIED_MODE, p.generation.mode) if tied else (param_name(task, "mode"), ts.mode)))
            _pick(trial, out, param_name(task, "selector"), ts.selector)
            kind = _pick(trial, out, param_name(task, "schedule"), [x.kind for x in ts.schedules])
            for dim, dist in _candidate(ts, kind).dims(L).items():
                name = param_name(task, kind, dim)
                out[name] = dist.sample(trial, name)
        _pick(trial, out, "sharing.qkv", p.sharing.qkv)
        _pick(trial, out, "sharing.mlp", p.sharing.mlp)
        return out

    def policy_from_params(self, params: dict[str, Any], name: str | None = None) -> ReductionPolicy:
        """Compile flat params (from `suggest`) into an explicit policy (drop: keep clamped)."""
        tied = bool(params.get(TIE, False))
        und = self._task_spec(params, "understanding", params[TIED_MODE] if tied else None)
        gen_selector = params[param_name("generation", "selector")]
        gen = Tied(selector=gen_selector) if tied else self._task_spec(params, "generation")
        sharing = Sharing(
            qkv=params.get("sharing.qkv", "shared"),
            mlp=params.get("sharing.mlp", "shared"),
            scope=self.policy.sharing.scope,
        )
        return compile_policy(self.model.num_layers, und, gen, sharing, name=name)

    def _task_spec(self, params: dict[str, Any], task: str, mode: str | None = None) -> TaskSpec:
        L = self.model.num_layers
        kind = params[param_name(task, "schedule")]
        sched = _candidate(getattr(self.policy, task), kind)
        values = {dim: params[param_name(task, kind, dim)] for dim in sched.dims(L)}
        return TaskSpec(
            schedule=sched.build(values, L),
            mode=params[param_name(task, "mode")] if mode is None else mode,
            selector=params[param_name(task, "selector")],
        )

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
        dims: dict[str, Dist] = {TIE: Dist(type="categorical", choices=p.tie_schedules)}
        if True in p.tie_schedules:
            dims[TIED_MODE] = Dist(type="categorical", choices=p.generation.mode)
        for task in TASKS:
            ts: TaskSpace = getattr(p, task)
            dims[param_name(task, "mode")] = Dist(type="categorical", choices=ts.mode)
            dims[param_name(task, "selector")] = Dist(type="categorical", choices=ts.selector)
            dims[param_name(task, "schedule")] = Dist(type="categorical", choices=[x.kind for x in ts.schedules])
            for sched in ts.schedules:
                for dim, dist in sched.dims(L).items():
                    dims[param_name(task, sched.kind, dim)] = dist
        dims["sharing.qkv"] = Dist(type="categorical", choices=p.sharing.qkv)
        dims["sharing.mlp"] = Dist(type="categorical", choices=p.sharing.mlp)
        return dims


def _pick(trial: SupportsSuggest, out: dict, name: str, choices: list) -> Any:
    """Categorical choice; a single choice is a constant (not an Optuna dimension)."""
    out[name] = choices[0] if len(choices) == 1 else trial.suggest_categorical(name, list(choices))
    return out[name]


def _candidate(ts: TaskSpace, kind: str) -> ScheduleSpace:
    return next(x for x in ts.schedules if x.kind == kind)


# --------------------------------------------------------------------------- cross checks


def _space_problems(space: SearchSpace) -> list[tuple[str, Any, str]]:
    """Checks that need several sections at once (the model depth, the search settings)."""
    L = space.model.num_layers
    out: list[tuple[str, Any, str]] = []
    for task in TASKS:
        for i, sched in enumerate(getattr(space.policy, task).schedules):
            out += sched.problems(L, f"policy.{task}.schedules[{i}]")
    for i, s in enumerate(space.policy.sharing.scope or []):
        if not 0 <= s < L:
            out.append((f"policy.sharing.scope[{i}]", s, f"must be in [0, {L - 1}]"))
    out += _search_problems(space)
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
    names = space.metric_names
    cost_ok = len(names) == 2 and "flops_ratio" in names and space.directions[names.index("flops_ratio")] == "min"
    if space.search.sampler == "known_cost" and not cost_ok:
        why = f"needs two objectives, flops_ratio (min) and one other; the objectives are {names}"
        out.append(("search.sampler", "known_cost", why))
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
    applied first (see `searchvlm.schema.overrides`). ConfigError lists every problem: the field
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


def preset_policy(space: SearchSpace, name: str) -> ReductionPolicy:
    """A preset at the space's model depth."""
    return preset(name, space.model.num_layers)


def trial_policy(
    space: SearchSpace, preset: str | None = None, policy_file: str | Path | None = None
) -> ReductionPolicy:
    """The policy one trial on `space` trains under: exactly one of the preset `preset`
    (`--preset`) or the policy file `policy_file` (`--policy`), at the space's model depth."""
    if (preset is None) == (policy_file is None):
        raise ConfigError(COMMAND_LINE, "--preset/--policy", None, "give exactly one of --preset NAME or --policy FILE")
    if policy_file is not None:
        return load_policy(policy_file, num_layers=space.model.num_layers)
    try:
        return preset_policy(space, preset)
    except ValueError as err:
        raise ConfigError(COMMAND_LINE, "--preset", preset, str(err)) from None


def load_trial_config(
    space_file: str | Path,
    *,
    preset: str | None = None,
    policy: str | Path | None = None,
    seeds: Sequence[int] | None = None,
    cache_dir: str | Path | None = None,
    overrides: Iterable[str | Override] | None = None,
) -> TrialConfig:
    """The TrialConfig `searchvlm trial` runs (`searchvlm.train.trial.run_trial` takes it): the
    space's fixed sections (after `overrides`) with the policy of `trial_policy`, named after
    it, and `seeds` / `cache_dir` when given. Problems are ConfigErrors naming file or option."""
    space = load_space(space_file, overrides)
    pol = trial_policy(space, preset, policy)
    config = space.trial_config(pol, name=pol.name or "trial")
    update: dict[str, Any] = {}
    if seeds is not None:
        update["seeds"] = list(seeds)
    if cache_dir is not None:
        update["cache_dir"] = str(cache_dir)  # as given (the space's own `trial_config` resolves it)
    return config.model_copy(update=update)

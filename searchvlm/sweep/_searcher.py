"""The Optuna side of a sweep: sampler choice, define-by-run space, and how results are told.

`MOOptunaSearch` subclasses Ray's `OptunaSearch` (multi-objective: `metric`/`mode` lists,
the space as a define-by-run function, never the Tuner's `metric` + `param_space` trap)
and decides each trial's Optuna state itself:

- a trial whose last result carries `final: True` and `status: ok` -> COMPLETE with the
  objective values, after `trial.set_constraint(...)` for every space constraint;
- `status: failed`, a Ray error, or a missing/non-finite objective -> FAIL (Optuna keeps
  the trial and its error, samplers ignore it; the trials table ranks it last);
- no final result (stopped by MO-ASHA or any scheduler) -> PRUNED, never COMPLETE with a
  partial result.

No policy is trained twice. Each proposal is keyed by `searchvlm.schema.identity.trial_key`
(canonical explicit policy + the training part of the trial config):

- a key whose trial finished `ok` is answered from it: the config carries `duplicate_of`
  and the twin's result, the worker reports that result without training, Optuna is told
  its values, and the row, study trial and MLflow run all exist (with `duplicate_of`);
- a key whose trial is still running waits: `suggest` returns None (Tune asks again)
  until the twin finishes, holding the asked Optuna trial, then answers it as above (or
  trains it when the twin failed or was pruned: a failure may be transient and a pruned
  result is partial, so neither is reused).

The study names its objectives (`set_metric_names`, so optuna-dashboard and importance
plots say `flops_ratio`, not "Objective 0"), and every Optuna trial carries the searchvlm
trial id (the Ray trial id, `trial_id` in trials.csv and MLflow) as the user attr
`searchvlm_trial_id`, set when the trial is asked for.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from searchvlm.objectives.pareto import finite_number
from searchvlm.schema.identity import trial_key
from searchvlm.schema.policy import ReductionPolicy
from searchvlm.schema.space import SearchSpace

from ._keys import DUPLICATE_OF, NUMBER_KEY, POLICY_ATTR, PRESET_ATTR, REUSE_ATTR, TRIAL_ID_ATTR
from ._known_cost import KnownCostSampler, SpaceCost
from ._trainable import config_policy, trial_name

log = logging.getLogger(__name__)


class DefineByRun:
    """Picklable define-by-run space: presets (enqueued with a user attr) sample nothing; a
    fixed explicit policy (user attr `policy_json`) travels in the trial config as JSON."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def __call__(self, trial: Any) -> dict[str, Any]:
        preset = trial.user_attrs.get(PRESET_ATTR)
        head = {NUMBER_KEY: trial.number}
        fixed = trial.user_attrs.get(POLICY_ATTR)
        if preset:
            return {**head, PRESET_ATTR: preset, **({POLICY_ATTR: fixed} if fixed else {})}
        return {**head, **self.space.suggest(trial)}


def make_sampler(space: SearchSpace, cache_dir: str | None = None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler named by `search.sampler`, seeded (`known_cost` prices policies on
    the data prepared through `cache_dir`)."""
    s = space.search
    if s.sampler == "known_cost":
        return KnownCostSampler(space, SpaceCost(space, cache_dir), seed=s.seed)
    if s.sampler == "tpe":
        extra = {} if s.startup_trials is None else {"n_startup_trials": s.startup_trials}
        return optuna.samplers.TPESampler(seed=s.seed, **extra)
    if s.sampler == "nsga2":
        extra = {} if s.population_size is None else {"population_size": s.population_size}
        return optuna.samplers.NSGAIISampler(seed=s.seed, **extra)
    if s.sampler == "gp":
        extra = {} if s.startup_trials is None else {"n_startup_trials": s.startup_trials}
        # a conditional dimension (one schedule kind's own fields) is drawn by GP's random
        # independent sampler; saying so at every trial would flood the sweep's log
        return optuna.samplers.GPSampler(seed=s.seed, warn_independent_sampling=False, **extra)
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    return optuna.samplers.GridSampler(space.grid_space(), seed=s.seed)


def study_url(db_path: str) -> str:
    return f"sqlite:///{db_path}"


def make_searcher(
    space: SearchSpace,
    study_name: str,
    db_path: str,
    warm: ReductionPolicy | None = None,
    cache_dir: str | None = None,
) -> "MOOptunaSearch":
    """A multi-objective searcher on a persistent study (`optuna-dashboard sqlite:///...`).

    A fresh study enqueues `warm` first (a fixed explicit policy, preset name its `name`),
    then the space's presets. `cache_dir`: the baseline cache (default: cache/ beside the sweep)."""
    storage = optuna.storages.RDBStorage(study_url(db_path))
    fresh = not _study_exists(storage, study_name)
    searcher = MOOptunaSearch(
        space=DefineByRun(space),
        metric=space.metric_names,
        mode=space.directions,
        sampler=make_sampler(space, cache_dir or str(Path(db_path).resolve().parent.parent / "cache")),
        study_name=study_name,
        storage=storage,
    )
    searcher.constraints = space.parsed_constraints()
    _name_metrics(searcher._ot_study, space.metric_names)
    if fresh and warm is not None:
        attrs = {PRESET_ATTR: warm.name or "warm_start", POLICY_ATTR: warm.model_dump_json()}
        searcher._ot_study.enqueue_trial({}, user_attrs=attrs)
    if fresh:
        for name in space.presets:
            searcher._ot_study.enqueue_trial({}, user_attrs={PRESET_ATTR: name})
    return searcher


def _name_metrics(study: optuna.Study, names: list[str]) -> None:
    """`study.set_metric_names(names)` (experimental in Optuna 4-5: its warning is ours to drop)."""
    if list(study.metric_names or []) == names:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(names)


def _study_exists(storage: optuna.storages.BaseStorage, name: str) -> bool:
    return any(s.study_name == name for s in storage.get_all_studies())


class Twins:
    """Which key each trial computes, the trial that trained each finished key, the one
    training each running key, and the proposal waiting for a running twin (pickled with
    the searcher, so a resumed sweep keeps it)."""

    def __init__(self) -> None:
        self.done: dict[str, tuple[str, str]] = {}  # key -> (trial id, TrialResult JSON), status ok
        self.running: dict[str, str] = {}  # key -> trial id training it
        self.keys: dict[str, str] = {}  # trial id -> key
        self.waiting: tuple[int, dict, str] | None = None  # (Optuna storage id, config, key)


class MOOptunaSearch(OptunaSearch):
    """OptunaSearch that tells COMPLETE / FAIL / PRUNED and answers repeats, as the module
    docstring says."""

    constraints: list = []

    @property
    def twins(self) -> Twins:
        if "_twins" not in self.__dict__:
            self._twins = Twins()
        return self._twins

    def suggest(self, trial_id: str) -> dict | None:
        if self.twins.waiting is not None:
            return self._serve_waiting(trial_id)
        if trial_id not in self._ot_trials:  # after a hard kill: adopt an orphaned trial first
            orphan = self._orphan()
            if orphan is not None:
                self._ot_trials[trial_id] = optuna.Trial(self._ot_study, orphan._trial_id)
        config = super().suggest(trial_id)
        if config is None or trial_id not in self._ot_trials:
            return config
        key = self._key(config)
        if key is not None and self.twins.running.get(key, trial_id) != trial_id:
            self.twins.waiting = (self._ot_trials.pop(trial_id)._trial_id, config, key)
            return None  # its twin is training: asked again until that one finishes
        return self._start(trial_id, config, key)

    def _serve_waiting(self, trial_id: str) -> dict | None:
        storage_id, config, key = self.twins.waiting  # type: ignore[misc]
        if key in self.twins.running:
            return None
        self.twins.waiting = None
        self._ot_trials[trial_id] = optuna.Trial(self._ot_study, storage_id)
        return self._start(trial_id, config, key)

    def _start(self, trial_id: str, config: dict, key: str | None) -> dict:
        """Record who computes `key`; a finished twin's result turns the config into a repeat."""
        ot_trial = self._ot_trials[trial_id]
        ot_trial.set_user_attr(TRIAL_ID_ATTR, trial_id)  # one id for the study, trials.csv and MLflow
        if key is None:
            return config
        self.twins.keys[trial_id] = key
        twin = self.twins.done.get(key)
        if twin is None:
            self.twins.running[key] = trial_id
            return config
        ot_trial.set_user_attr(DUPLICATE_OF, twin[0])
        return {**config, DUPLICATE_OF: twin[0], REUSE_ATTR: twin[1]}

    def _key(self, config: dict) -> str | None:
        """The trial key of a config (None when it does not compile: it fails on its own)."""
        space = self._space.space
        try:
            policy = config_policy(space, config)
        except ValueError:
            return None
        return trial_key(space.trial_config(policy, trial_name(config)))

    def _orphan(self) -> optuna.trial.FrozenTrial | None:
        """A RUNNING study trial no Tune trial owns: asked after the last saved searcher
        state, then its driver died. Re-used so the study never holds a stray trial."""
        owned = {t._trial_id for t in self._ot_trials.values()}
        if self.twins.waiting is not None:
            owned.add(self.twins.waiting[0])
        running = self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return next((t for t in running if t._trial_id not in owned), None)

    def _finish_key(self, trial_id: str, result: dict | None, error: bool) -> None:
        """A trained key is done when its trial ended ok; otherwise a repeat trains again."""
        key = self.twins.keys.get(trial_id)
        if key is None or self.twins.running.get(key) != trial_id:
            return
        del self.twins.running[key]
        r = result or {}
        if not error and r.get("final") and r.get("status") == "ok" and r.get("result_json"):
            self.twins.done.setdefault(key, (trial_id, str(r["result_json"])))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self._finish_key(trial_id, result, error)
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        if self._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished():
            self._completed_trials.add(trial_id)  # told before an interruption; keep that
            return
        state, values = self._state(result, error)
        if state == TrialState.COMPLETE:
            for i, c in enumerate(self.constraints):
                ot_trial.set_constraint(f"c{i}: {c.metric} {c.op} {c.bound:g}", c.violation(result or {}))
        if result and result.get("error"):
            ot_trial.set_user_attr("error", str(result["error"])[:2000])
        try:
            self._ot_study.tell(ot_trial, values, state=state)
        except (ValueError, RuntimeError) as err:  # e.g. already told before an interruption
            log.warning("optuna tell for %s: %s", trial_id, err)
        self._completed_trials.add(trial_id)

    def _state(self, result: dict | None, error: bool) -> tuple[TrialState, list[float] | None]:
        if error or not result:
            return TrialState.FAIL, None
        if not result.get("final"):
            return TrialState.PRUNED, None
        values = [finite_number(result.get(m)) for m in self.metric]  # numpy scalars count too
        ok = result.get("status") == "ok" and all(v is not None for v in values)
        return (TrialState.COMPLETE, values) if ok else (TrialState.FAIL, None)

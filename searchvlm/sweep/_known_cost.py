"""`sampler: known_cost`: an Optuna sampler that prices every candidate before training it.

A policy's FLOPs ratio is exact and free (`searchvlm.objectives.flops.count_flops` on the compiled
policy and the data's sequence layout); only its synergy needs a model. Each time a trial
is asked for, the sampler

1. draws `candidates` whole parameter dicts from the space (`SearchSpace.suggest` on a
   seeded recording trial, so a schedule kind's own fields come with their kind), compiles
   each, drops invalid ones and every policy already asked for (no duplicates), and prices
   each with the exact FLOPs ratio;
2. fits a Gaussian process to the completed trials' loss (minus synergy) on policy features
   (keep ratio per layer and task, modes, selectors, sharing, the FLOPs ratio itself); with
   fewer than `MIN_FIT` completed trials the posterior is flat, so the cheapest candidates
   win, as sorting by FLOPs would choose;
3. scores each candidate by the closed-form EHVI with the FLOPs exact
   (`searchvlm.objectives.ehvi.ehvi_known_cost`) against the feasible completed front and the reference
   (FLOPs 1.0, the dense trial's synergy when one finished, else the worst seen), times the
   probability that each space constraint holds (a GP on its violation, as Optuna records it);
4. stores the winner's whole dict on the trial (system attr `known_cost:params`), which
   `sample_independent` hands out name by name (Optuna's GridSampler does the same).

Enqueued trials (presets, warm starts) are left alone. Deterministic for a seed: the draw
of trial `number` uses `default_rng([seed, number])`.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, get_args

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from searchvlm.objectives.ehvi import ehvi_known_cost
from searchvlm.schema.identity import canonical_policy
from searchvlm.schema.policy import Mode, ReductionPolicy, Sharing
from searchvlm.schema.policy.selectors import SELECTORS
from searchvlm.schema.space import SearchSpace, preset_policy

from ._keys import POLICY_ATTR, PRESET_ATTR

__all__ = ["PARAMS_ATTR", "KnownCostSampler", "SpaceCost", "policy_features"]

PARAMS_ATTR = "known_cost:params"
#: completed trials before the synergy posterior is fitted (below: flat)
MIN_FIT = 3
#: the flat posterior's spread (synergy units) before there is data to fit
PRIOR_SD = 0.1
Cost = Callable[[ReductionPolicy], float]


# --------------------------------------------------------------------------- candidates


class _Draw:
    """A define-by-run trial that samples uniformly from a numpy generator (`SupportsSuggest`)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:  # fmt: skip
        if step:
            return float(low + step * self.rng.integers(0, int(math.floor((high - low) / step + 1e-9)) + 1))
        if log:
            return float(math.exp(self.rng.uniform(math.log(low), math.log(high))))
        return float(self.rng.uniform(low, high))

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return int(self.rng.choice(np.arange(low, high + 1, step)))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return choices[int(self.rng.integers(len(choices)))]


class _Replay:
    """A trial that answers with recorded params (a finished trial's), to rebuild its whole dict."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    def suggest_float(self, name: str, *args: Any, **kw: Any) -> Any:
        return self.params[name]

    suggest_int = suggest_categorical = suggest_float


def _key(policy: ReductionPolicy) -> str:
    """Equal for two policies that compute the same thing (`identity.canonical_policy`)."""
    return canonical_policy(policy).model_copy(update={"name": None}).model_dump_json()


class SpaceCost:
    """The exact FLOPs ratio of a policy on `space`'s model and data layout (computed once,
    on first use, from the prepared data; picklable, holding only the layout)."""

    def __init__(self, space: SearchSpace, cache_dir: str | Path | None = None) -> None:
        self.space, self.cache_dir = space, None if cache_dir is None else str(cache_dir)
        self._priced: tuple[Any, Any] | None = None

    def __call__(self, policy: ReductionPolicy) -> float:
        from searchvlm.objectives.flops import count_flops

        model_cfg, layouts = self._layout()
        return count_flops(model_cfg, policy, layouts, batch_size=self.space.training.batch_size).ratio

    def _layout(self) -> tuple[Any, Any]:
        if self._priced is None:
            from searchvlm.train.trial import priced_data, task_layouts

            # the draw every trial counts FLOPs on: with `data.seed: run` each seed trains on
            # other images, but the layout that prices a policy is one draw's (data seed 0),
            # and every draw has its vocabulary and sequence lengths (`trial.prepare_seeds`
            # checks; tests/test_data_seed.py tests)
            data, model_cfg = priced_data(self.space.trial_config(None, cache_dir=self.cache_dir))
            self._priced = (model_cfg, task_layouts(data))
        return self._priced


def _one_hot(value: str, choices: Sequence[str]) -> list[float]:
    return [float(value == c) for c in choices]


def policy_features(policy: ReductionPolicy, cost: float) -> np.ndarray:
    """A policy as numbers for the surrogate: keep ratios per layer and task, one-hot modes,
    selectors and sharing, the tie flag and the FLOPs ratio."""
    modes, selectors = list(get_args(Mode)), sorted(SELECTORS)
    qkv, mlp = (list(get_args(Sharing.model_fields[k].annotation)) for k in ("qkv", "mlp"))
    u, g = policy.understanding, policy.generation
    parts = [u.keep, g.keep, _one_hot(u.mode, modes), _one_hot(g.mode, modes), _one_hot(u.selector, selectors),
             _one_hot(g.selector, selectors), _one_hot(policy.sharing.qkv, qkv), _one_hot(policy.sharing.mlp, mlp),
             [float(policy.tie_schedules), cost]]  # fmt: skip
    return np.array([float(v) for p in parts for v in p])


# --------------------------------------------------------------------------- the posterior


def _gp(kernel: Any, x: np.ndarray, y: np.ndarray, xq: np.ndarray, seed: int,
        normalize: bool) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor

    gp = GaussianProcessRegressor(kernel, normalize_y=normalize, n_restarts_optimizer=2, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gp.fit(x, y)
    mu, sd = gp.predict(xq, return_std=True)
    return mu, np.maximum(sd, 1e-9)


def _posterior(x: np.ndarray, y: np.ndarray, xq: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """GP mean and SD of the loss at `xq` (m, d) from observations (n, d) -> (n,) (anisotropic
    Matern 5/2 and a noise term, fitted); flat below MIN_FIT."""
    if len(y) < MIN_FIT:
        mean = float(np.mean(y)) if len(y) else 0.0
        return np.full(len(xq), mean), np.full(len(xq), PRIOR_SD)
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    d = x.shape[1]
    kernel = ConstantKernel(1.0, (1e-3, 1e3)) * Matern(np.ones(d), (1e-2, 1e2), nu=2.5) + WhiteKernel(0.1, (1e-6, 1e1))
    return _gp(kernel, x, y, xq, seed, normalize=True)


def _feasible_probability(x: np.ndarray, violations: np.ndarray, xq: np.ndarray, seed: int) -> np.ndarray:
    """P(every constraint holds) at `xq`: per constraint a GP on its violation (<= 0 holds),
    fitted like the loss's once the observed values differ; while they are all alike, one
    with prior mean 0 and a fixed unit length scale, so a policy far from every observed one
    is as likely to hold as not and one near them is not (a kernel fitted to identical values
    would call every policy alike)."""
    out = np.ones(len(xq))
    if violations.shape[1] == 0 or len(violations) < MIN_FIT:
        return out
    from scipy.stats import norm
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    for j in range(violations.shape[1]):
        v = violations[:, j]
        if np.ptp(v) > 0:  # some hold, some do not: fit the kernel, as for the loss
            mu, sd = _posterior(x, v, xq, seed)
        else:
            scale = max(float(np.abs(v).max()), 1e-6) ** 2
            kernel = ConstantKernel(scale, "fixed") * Matern(1.0, "fixed", nu=2.5) + WhiteKernel(1e-4 * scale, "fixed")
            mu, sd = _gp(kernel, x, v, xq, seed, normalize=False)
        out *= norm.cdf(-mu / sd)
    return out


def _violations(trials: Sequence[FrozenTrial]) -> np.ndarray:
    """(n, c) constraint values of finished trials (`Trial.set_constraint`, <= 0 holds), one
    column per constraint name; a value a trial lacks counts as holding (0)."""
    names = sorted({k for t in trials for k in t.constraints})
    if not names:
        return np.empty((len(trials), 0))
    return np.array([[float(t.constraints.get(k, 0.0)) for k in names] for t in trials])  # (n, c)


# --------------------------------------------------------------------------- the sampler


class KnownCostSampler(BaseSampler):
    """See the module docstring. `cost` prices a compiled policy (default: `SpaceCost`)."""

    def __init__(self, space: SearchSpace, cost: Cost | None = None, seed: int | None = 0,
                 candidates: int = 512) -> None:  # fmt: skip
        names = space.metric_names
        if len(names) != 2 or "flops_ratio" not in names or space.directions[names.index("flops_ratio")] != "min":
            raise ValueError("sampler known_cost needs two objectives: flops_ratio (min) and one other")
        self.space, self.cost, self.seed, self.candidates = space, cost or SpaceCost(space), seed or 0, candidates
        self.cost_index = names.index("flops_ratio")
        self.sign = -1.0 if space.directions[1 - self.cost_index] == "max" else 1.0  # loss = sign * value
        self._fallback = RandomSampler(seed=seed)

    def reseed_rng(self) -> None:
        self._fallback.reseed_rng()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict:
        return {}

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        if PARAMS_ATTR in trial.system_attrs or "fixed_params" in trial.system_attrs:
            return  # chosen already (a retried trial) or enqueued (a preset, a warm start)
        params = self.propose(study.get_trials(deepcopy=False), trial.number)
        if params is not None:
            study._storage.set_trial_system_attr(trial._trial_id, PARAMS_ATTR, json.dumps(params))

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:  # fmt: skip
        params = json.loads(trial.system_attrs.get(PARAMS_ATTR, "{}"))
        value = params.get(param_name)
        if value is not None and param_distribution._contains(param_distribution.to_internal_repr(value)):
            return value
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    # ---- the choice

    def propose(self, trials: Sequence[FrozenTrial], number: int) -> dict[str, Any] | None:
        """The next whole parameter dict (None when every draw repeats a trial)."""
        decoded = [(t, p) for t in trials for p in [self._policy(t)] if p is not None]  # each trial decoded once
        pool = self._draw(number, {_key(p) for _, p in decoded})
        if not pool:
            return None
        costs = np.array([c for _, _, c in pool])  # (m,)
        xq = np.stack([policy_features(p, c) for _, p, c in pool])  # (m, d)
        done = [(t, p) for t, p in decoded if t.state == TrialState.COMPLETE and t.values]
        score, feasible = self._scores(done, costs, xq, number)
        # ties (e.g. every EHVI 0 while no feasible trial is known): the likelier feasible, then the cheaper
        best = min(range(len(pool)), key=lambda i: (-score[i], -feasible[i], costs[i], i))
        return pool[best][0]

    def _draw(self, number: int, seen: set[str]) -> list[tuple[dict[str, Any], ReductionPolicy, float]]:
        rng = np.random.default_rng([self.seed, number])
        pool, keys = [], set(seen)
        for _ in range(self.candidates):
            params = self.space.suggest(_Draw(rng))
            try:
                policy = self.space.policy_from_params(params)
            except ValueError:
                continue
            key = _key(policy)
            if key not in keys:
                keys.add(key)
                pool.append((params, policy, float(self.cost(policy))))
        return pool

    def _scores(self, done: list[tuple[FrozenTrial, ReductionPolicy]], costs: np.ndarray, xq: np.ndarray,
                number: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Each candidate's EHVI times its feasibility probability, and that probability
        (`done`: the completed trials and their policies)."""
        obs_cost = np.array([t.values[self.cost_index] for t, _ in done])  # (n,)
        loss = np.array([self.sign * t.values[1 - self.cost_index] for t, _ in done])  # (n,)
        x = np.stack([policy_features(p, c) for (_, p), c in zip(done, obs_cost)]) if done else np.empty((0, 0))
        viol = _violations([t for t, _ in done])  # (n, c)
        feasible = (viol <= 0).all(axis=1) if viol.size else np.ones(len(done), dtype=bool)
        feasible_p = _feasible_probability(x, viol, xq, self.seed + number)
        if viol.size and len(done) >= MIN_FIT and not feasible.any():
            return feasible_p, feasible_p  # no feasible policy seen yet: find one first
        mu, sd = _posterior(x, loss, xq, self.seed + number)
        front = np.c_[obs_cost, loss][feasible] if done else np.empty((0, 2))
        ref = (1.0, self._ref_loss(done, loss, mu, sd))
        return ehvi_known_cost(costs, mu, sd, front, ref) * feasible_p, feasible_p

    def _ref_loss(self, done: list, loss: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> float:
        """The dense trial's loss when one finished; else the worst seen; else the prior's tail."""
        dense = [v for (t, _), v in zip(done, loss) if t.user_attrs.get(PRESET_ATTR) == "dense"]
        if dense:
            return float(min(dense))
        return float(loss.max()) if len(loss) else float(np.max(mu + 3 * sd))

    def _policy(self, t: FrozenTrial) -> ReductionPolicy | None:
        """The explicit policy a trial trained (None: not decodable, e.g. asked and not yet sampled)."""
        try:
            if t.user_attrs.get(POLICY_ATTR):
                return ReductionPolicy.model_validate_json(t.user_attrs[POLICY_ATTR])
            if t.user_attrs.get(PRESET_ATTR):
                return preset_policy(self.space, t.user_attrs[PRESET_ATTR])
            if PARAMS_ATTR in t.system_attrs:
                return self.space.policy_from_params(json.loads(t.system_attrs[PARAMS_ATTR]))
            if t.params:
                return self.space.policy_from_params(self.space.suggest(_Replay(t.params)))
        except (ValueError, KeyError):
            return None
        return None

"""The `known_cost` sampler (searchvlm.sweep._known_cost) in an Optuna study driven by
ask/tell on default.yaml's space, and in a real tiny sweep."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from helpers import ROOT
from searchvlm.schema.space import load_space
from searchvlm.sweep._known_cost import PARAMS_ATTR, KnownCostSampler, SpaceCost, _key, policy_features

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def default_cost(tmp_path_factory: pytest.TempPathFactory):
    space = load_space(ROOT / "search_spaces" / "default.yaml")
    return space, SpaceCost(space, tmp_path_factory.mktemp("cache"))


def _rounds(space, cost, n: int, seed: int = 0, violation=None) -> list[dict]:
    """n ask/tell rounds with a made-up synergy that falls with the FLOPs saved (and, with
    `violation(flops)`, one constraint set as the sweep sets it: `Trial.set_constraint`)."""
    sampler = KnownCostSampler(space, cost, seed=seed, candidates=128)
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=sampler)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        trial = study.ask()
        params = space.suggest(trial)
        policy = space.policy_from_params(params)
        flops = cost(policy)
        if violation is not None:
            trial.set_constraint("c0: und_acc >= 0.3", violation(flops))
        study.tell(trial, [flops, 0.1 - 0.3 * (1 - flops) + rng.normal(0, 0.02)])
        out.append({"params": params, "policy": policy, "flops": flops,
                    "chosen": json.loads(study.trials[-1].system_attrs[PARAMS_ATTR])})  # fmt: skip
    return out


@pytest.mark.slow  # 10-70 s on a loaded 2-core machine: out of the fast tier
def test_twenty_rounds_on_the_default_space_give_valid_distinct_policies(default_cost) -> None:
    space, cost = default_cost
    rounds = _rounds(space, cost, 20)
    keys = {_key(r["policy"]) for r in rounds}
    assert len(keys) == 20  # no duplicates, even after canonicalising (a dense task's mode does not count)
    assert all(r["params"] == r["chosen"] for r in rounds)  # every parameter came from the whole dict chosen
    assert all(0 < r["flops"] < 1 for r in rounds)
    # before any fit the posterior is flat: the first proposal is the cheapest of its draw
    first = KnownCostSampler(space, cost, seed=0, candidates=128)._draw(0, set())
    assert rounds[0]["flops"] == pytest.approx(min(c for _, _, c in first))


@pytest.mark.slow  # 10-70 s on a loaded 2-core machine: out of the fast tier
def test_infeasible_trials_steer_proposals_away(default_cost) -> None:
    """Cheap policies break the constraint (violation > 0): once the sampler has seen that,
    it proposes feasible ones, and infeasible trials are not on the front it improves."""
    from searchvlm.sweep._known_cost import _violations

    space, cost = default_cost
    rounds = _rounds(space, cost, 14, seed=5, violation=lambda f: 0.5 if f < 0.8 else -0.1)
    free = _rounds(space, cost, 14, seed=5)  # the same sampler without the constraint
    held = [sum(r["flops"] >= 0.8 for r in rs[3:]) for rs in (rounds, free)]
    # the first 3 are the cheapest draws (flat posterior, all breaking it); then it looks for
    # feasible policies (seen here: 5 of 11 vs 0 of 11 without the constraint)
    assert held[0] >= 4 and held[0] > held[1], [round(r["flops"], 3) for r in rounds]
    study = optuna.create_study(directions=["minimize", "maximize"])
    trial = study.ask()
    trial.set_constraint("b", -1.0)
    trial.set_constraint("a", 2.0)
    study.tell(trial, [0.5, 0.1])
    assert _violations(study.trials).tolist() == [[2.0, -1.0]]  # one column per constraint, by name


@pytest.mark.slow  # 10-20 s: kept out of the fast tier
def test_deterministic_for_a_seed(default_cost) -> None:
    space, cost = default_cost
    a, b = _rounds(space, cost, 5, seed=3), _rounds(space, cost, 5, seed=3)
    assert [r["params"] for r in a] == [r["params"] for r in b]
    assert [r["params"] for r in a] != [r["params"] for r in _rounds(space, cost, 5, seed=4)]


def test_enqueued_trials_are_left_alone_and_features_are_numbers(default_cost) -> None:
    space, cost = default_cost
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=KnownCostSampler(space, cost))
    study.enqueue_trial({}, user_attrs={"preset": "himix"})
    trial = study.ask()
    assert PARAMS_ATTR not in study.trials[0].system_attrs
    study.tell(trial, [0.7, 0.05])
    policy = space.policy_from_params(space.suggest(study.ask()))
    x = policy_features(policy, cost(policy))
    assert x.ndim == 1 and np.isfinite(x).all()
    assert x[: space.model.num_layers].tolist() == policy.understanding.keep and x[-1] == cost(policy)


def test_known_cost_needs_flops_as_an_objective(tmp_path: Path) -> None:
    from helpers.sweeps import tiny_space
    from searchvlm.schema.errors import ConfigError

    path = tiny_space(tmp_path / "s.yaml")
    data = yaml.safe_load(path.read_text())
    data["search"]["sampler"] = "known_cost"
    data["objectives"] = [{"name": "synergy_gain", "mode": "max"}]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"search.sampler.*flops_ratio"):
        load_space(path)


@pytest.mark.slow
@pytest.mark.sweep
def test_a_real_sweep_with_known_cost_then_decide(tmp_path: Path) -> None:
    """Ray Tune's OptunaSearch path: 4 trials (dense first), every sampled one chosen whole by
    the sampler and priced exactly (the trial's own flops_ratio), then `decide` on the sweep."""
    from helpers.sweeps import study, tiny_space
    from searchvlm.records.decide import DecideOptions, decide
    from searchvlm.sweep import run_sweep

    path = tiny_space(tmp_path / "k.yaml", samples=4, presets=["dense"], calibrated=False)
    data = yaml.safe_load(path.read_text())
    data["search"]["sampler"] = "known_cost"
    path.write_text(yaml.safe_dump(data))
    summary = run_sweep(path, name="k", runs_dir=tmp_path / "runs", progress=False)
    assert summary.counts.get("ok") == 4, summary.counts
    trials = study(summary.run_dir, "k").trials
    sampled = [t for t in trials if PARAMS_ATTR in t.system_attrs]
    assert len(sampled) == 3 and all(t.params == {k: v for k, v in json.loads(t.system_attrs[PARAMS_ATTR]).items()
                                                  if k in t.params} for t in sampled)  # fmt: skip
    space = load_space(path)
    cost = SpaceCost(space, tmp_path / "runs" / "cache")
    for t in sampled:
        policy = space.policy_from_params(json.loads(t.system_attrs[PARAMS_ATTR]))
        assert t.values[0] == pytest.approx(cost(policy), abs=1e-12)  # the price the sampler knew
    done = decide(summary.run_dir, DecideOptions(delta=1000.0, first_seeds=2, max_seeds=2, shortlist=1))
    assert done.result.verdict == "accepted" and done.trained == 2
    from mlflow.tracking import MlflowClient

    parent = MlflowClient(tracking_uri=summary.tracking_uri).get_run(summary.parent_run_id)  # decide logged there
    assert parent.data.tags["decision.verdict"] == "accepted"
    assert parent.data.tags["decision.trial_id"] == done.result.accepted.name
    assert parent.data.metrics["decision.seeds"] == 2.0

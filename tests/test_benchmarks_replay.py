"""The tabular replay harness (benchmarks/_tabular.py, benchmarks/search_replay.py) on a synthetic table."""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _tabular import enumerate_space, policy_key  # noqa: E402
from search_replay import (  # noqa: E402
    cheapest,
    claimed_curve,
    diff_ci,
    draw_seeds,
    hv_curve,
    moasha_once,
    ratio_ci,
    replay,
    seen_run,
)
from searchvlm.objectives.pareto import hypervolume  # noqa: E402
from searchvlm.schema.space import load_space  # noqa: E402

SPACE = ROOT / "benchmarks" / "data" / "tabular_quick_space.yaml"
REF = (1.0, -0.3)


@pytest.fixture(scope="module")
def table():
    """Every point of the tabular space with made-up objectives: 3 seeds, each with a 4-round curve."""
    space = load_space(SPACE)
    rows = {}
    for i, key in enumerate(enumerate_space(space)):
        flops = 0.4 + 0.5 * ((i * 37) % 100) / 100
        seeds = []
        for s in range(3):
            syn = -0.2 + 0.3 * ((i * 53 + 17 * s) % 100) / 100
            curve = [[75 * r, syn - 0.05 * (4 - r), 0, 0, 0, 0] for r in (1, 2, 3, 4)]
            seeds.append({"seed": s, "status": "ok", "flops_ratio": flops, "synergy_gain": syn, "curve": curve})
        mean = sum(x["synergy_gain"] for x in seeds) / 3
        rows[key] = {"key": key, "status": "ok", "flops_ratio": flops, "synergy_gain": mean, "seeds": seeds}
    return space, rows


def test_space_has_at_least_64_distinct_policies(table):
    assert len(table[1]) >= 64


def test_policy_key_ignores_name_and_a_dense_tasks_mode(table):
    space, _ = table
    params = next(iter(enumerate_space(space).values()))
    a = space.policy_from_params({**params, "gen.cosine.floor": 1.0, "gen.mode": "skip"}, name="a")
    b = space.policy_from_params({**params, "gen.cosine.floor": 1.0, "gen.mode": "query_drop"}, name="b")
    assert policy_key(a) == policy_key(b)


def test_replay_tells_the_drawn_seed_and_scores_on_means(table, monkeypatch):
    space, rows = table
    draws = draw_seeds(rows, 3)
    assert draws == draw_seeds(rows, 3) and len(set(draws.values())) == 1  # one seed for every policy, as a sweep
    assert len({next(iter(draw_seeds(rows, s).values())) for s in range(10)}) > 1
    study_values = []
    sampler = optuna.samplers.RandomSampler(seed=0)
    orig_tell = optuna.Study.tell

    def spy(self, trial, values=None, **kw):
        study_values.append(values)
        return orig_tell(self, trial, values, **kw)

    monkeypatch.setattr(optuna.Study, "tell", spy)
    seen = replay(space, rows, sampler, 16, draws)
    assert len(seen) == 16 and all(r["key"] in rows for r in seen)
    told = [[seen_run(r, draws)["flops_ratio"], seen_run(r, draws)["synergy_gain"]] for r in seen]
    assert study_values == told  # the sampler sees one seed, never the mean
    curve = hv_curve(seen, REF)
    assert curve == sorted(curve) and curve[-1] == pytest.approx(hypervolume(seen, REF)[0])


def test_moasha_once_compares_at_equal_steps(table):
    rows = list(table[1].values())[:30]
    out = moasha_once(rows, draw_seeds(table[1], 0), 75, 3.0, 300, {"r": REF})
    assert 0 < out["steps_ratio"] < 1 and out["k"] == int(out["steps_ratio"] * 30 * 300) // 300
    r = out["r"]
    assert r["moasha"] <= r["full"] and r["random_equal_steps"] == hypervolume(rows[: out["k"]], REF)[0]
    cheapest = sorted(rows, key=lambda x: x["flops_ratio"])[: out["k"]]
    assert r["flops_only_equal_steps"] == hypervolume(cheapest, REF)[0]


def test_ratio_ci_brackets_the_ratio_of_means():
    a, b = [1.2, 1.1, 1.3, 1.25] * 10, [1.0, 0.9, 1.1, 1.0] * 10
    out = ratio_ci(a, b)
    assert out["ratio"] == pytest.approx(sum(a) / sum(b))
    assert out["ci95"][0] < out["ratio"] < out["ci95"][1] and out["ci95"][0] > 1.0


def test_cheapest_and_the_claimed_front(table):
    """cheapest-k is the k lowest FLOPs; a claimed front (observed on one seed) is part of what
    was visited, so its volume at the means is at most the visited volume."""
    space, rows = table
    first = cheapest(rows, 8)
    assert [r["flops_ratio"] for r in first] == sorted(r["flops_ratio"] for r in rows.values())[:8]
    draws = draw_seeds(rows, 1)
    seen = replay(space, rows, optuna.samplers.RandomSampler(seed=1), 16, draws)
    claimed, visited = claimed_curve(seen, draws, REF), hv_curve(seen, REF)
    assert all(c <= v + 1e-12 for c, v in zip(claimed, visited)) and claimed[-1] > 0
    assert diff_ci([1.0, 2.0, 3.0], [0.5, 1.5, 2.5])["diff"] == pytest.approx(0.5)


def test_decision_replay_scores_both_rules_on_one_world():
    """benchmarks/decision_replay.py: where no policy qualifies the mean rule picks one most of
    the time and decide almost never (seeded, so the counts are exact for this seed)."""
    import numpy as np

    from decision_replay import World, mean_rule, simulate

    flops = np.linspace(0.55, 0.95, 24)
    w = World(flops, "none", np.random.default_rng(0))
    assert (w.true < 0.1 - 0.035).all()
    pick = mean_rule(w, list(range(16)))
    assert w.trainings == 16 * 3 + 3 and (pick is None or w.true[pick] < 0.065)
    out = simulate(lambda rng: World(flops, "none", rng), "none", 40, 0)
    assert out["mean"]["wrong_choice"] > 0.5 and out["decide"]["wrong_choice"] <= 0.1
    assert sum(out["decide_verdicts"].values()) == 40


def test_decision_replay_on_a_tables_seeds_pairs_every_policy_with_dense():
    """decision_replay's TableWorld (PROXY_TABLE_PLAN.md analysis 3): a simulated seed is one
    table seed for every policy and dense; the truth is each row's mean synergy_vs_dense."""
    import numpy as np

    from decision_replay import TableWorld, simulate

    seeds = [50, 51, 52, 53, 54]
    dense = [{"seed": s, "synergy_gain": 0.1 * k} for k, s in enumerate(seeds)]
    vs = lambda p, k: -0.01 * p + 0.002 * (k - 2)  # noqa: E731 - policy p's difference on table seed k
    rows = [{"status": "ok", "flops_ratio": 0.5 + 0.02 * p,
             "seeds": [{"seed": s, "synergy_gain": 0.1 * k + vs(p, k), "synergy_vs_dense": vs(p, k)}
                       for k, s in enumerate(seeds)]}
            for p in range(20)]  # fmt: skip
    table = {"rows": rows, "reference": {"seeds": dense}}
    w = TableWorld(table, 0.05, np.random.default_rng(0))
    assert w.true_vs == pytest.approx([-0.01 * p for p in range(20)])
    for i in range(8):
        k = round(w.dense(i) / 0.1)  # dense's synergy on seed i names the table seed drawn
        assert w.shows(3, i) == pytest.approx(0.1 * k + vs(3, k))  # the same table seed
        assert w.vs_dense(3, i) == pytest.approx(w.shows(3, i) - w.dense(i))
    assert w.trainings == 8 * 5  # each call is one training
    out = simulate(lambda rng: TableWorld(table, 0.05, rng), "table", 20, 0)
    # the 4 cheapest are within delta and the seeds barely differ: decide never accepts a policy
    # truly worse than dense by delta; it accepts when the most expensive of its shortlist (the 3
    # cheapest of the sweep's 16) is within delta, and else stops there (a fixed-sequence test
    # stops at its first failure): none qualifies, 7 of 20 sweeps at this seed
    assert out["decide"]["wrong_choice"] == 0.0 and out["decide_verdicts"] == {"accepted": 13, "none_qualifies": 7}


def test_lean_step_yardstick_trains_and_compares_the_presets():
    """benchmarks/lean_step.py: the lean decoder's loss starts near ln(V) and falls with its
    steps; a run times the four presets against it with their exact FLOPs."""
    import argparse
    import math

    import torch

    from lean_step import LeanLM, run
    from searchvlm.schema.config import ModelConfig
    from step_time import VOCAB, make_batches

    torch.manual_seed(0)
    cfg = ModelConfig(num_layers=2, hidden_size=32, num_heads=2, num_kv_heads=1, intermediate_size=64)
    model, batches = LeanLM(cfg, VOCAB.size), make_batches(4)
    ids, _, labels = batches["generation"]
    first = model(ids, labels).item()
    assert first == pytest.approx(math.log(VOCAB.size), rel=0.15)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(20):
        opt.zero_grad()
        model(ids, labels).backward()
        opt.step()
    assert model(ids, labels).item() < first - 0.5
    out = run(argparse.Namespace(space=ROOT / "search_spaces" / "quick.yaml", image_tokens=16, reps=1, warmup=0))
    assert [r["policy"] for r in out["rows"]] == ["dense", "fastv", "himix", "himix_hmgen"]
    assert out["rows"][0]["flops_ratio"] == 1.0 and all(r["flops_ratio"] < 1 for r in out["rows"][1:])


# --------------------------------------------------------------------------- restricted tables


@pytest.fixture(scope="module")
def continuous():
    """A made-up table of 24 policies drawn from default.yaml's continuous space (params kept),
    plus one preset row without params; FLOPs and synergy are arbitrary but fixed."""
    import numpy as np

    from searchvlm.schema.policy.presets import preset
    from searchvlm.sweep._known_cost import _Draw

    space = load_space(ROOT / "search_spaces" / "default.yaml")
    rng, rows = np.random.default_rng(0), {}
    while len(rows) < 24:
        params = space.suggest(_Draw(rng))
        try:
            policy = space.policy_from_params(params)
        except ValueError:
            continue
        i = len(rows)
        seeds = [{"seed": s, "status": "ok", "flops_ratio": 0.3 + 0.02 * i, "synergy_gain": 0.01 * ((i * 7 + s) % 9)}
                 for s in range(3)]  # fmt: skip
        key, flops = policy_key(policy), 0.3 + 0.02 * i
        rows[key] = {"key": key, "params": params, "status": "ok", "seeds": seeds,
                     "policy": policy.model_dump(mode="json"), "flops_ratio": flops}  # fmt: skip
    hmgen = preset("hmgen", space.model.num_layers)
    seeds = [{"seed": s, "status": "ok", "flops_ratio": 0.2, "synergy_gain": 0.05} for s in range(3)]
    rows[policy_key(hmgen)] = {"key": policy_key(hmgen), "status": "ok", "seeds": seeds, "flops_ratio": 0.2,
                               "policy": hmgen.model_dump(mode="json")}  # fmt: skip
    return space, rows


def test_param_distance_scales_numbers_by_bounds_and_counts_categoricals():
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from search_replay import param_distance

    dists = {
        "r": FloatDistribution(0.0, 2.0),
        "s": FloatDistribution(0.5, 1.0),
        "m": CategoricalDistribution(["a", "b"]),
    }
    mine = {"r": 0.0, "s": 0.5, "m": "a"}
    assert param_distance(mine, dists, {"r": 1.2, "s": 0.9, "m": "a"}) == pytest.approx((0.6**2 + 0.8**2) ** 0.5)
    assert param_distance(mine, dists, {"r": 0.0, "s": 0.5, "m": "b"}) == 1.0
    assert param_distance(mine, dists, {"m": "a"}) == 2.0  # two dimensions of another branch: 1 each
    assert param_distance(mine, dists, {"r": 0.0, "s": 0.5, "m": "a", "x": 3}) == 0.0  # only the proposal's own


def test_a_proposal_trains_its_own_row_or_the_nearest_with_params(continuous):
    from search_replay import answer, param_distance

    space, rows = continuous
    with_params = [r for r in rows.values() if r.get("params")]
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(12):
        trial = study.ask()
        params = space.suggest(trial)
        got = answer(space, rows, params, trial.distributions)
        assert got.get("params"), "the preset row has no params: a sampler's proposal never trains it"
        best = min(param_distance(params, trial.distributions, r["params"]) for r in with_params)
        assert param_distance(params, trial.distributions, got["params"]) == best
        study.tell(trial, [got["flops_ratio"], 0.0])
    for row in with_params[:5]:  # a table policy's own params: that row
        trial = optuna.create_study().ask()
        params = space.suggest(_Fixed(trial, row["params"]))
        assert params == row["params"] and answer(space, rows, params, trial.distributions) is row


class _Fixed:
    """A trial that answers every suggestion from `params` (and records distributions on `trial`)."""

    def __init__(self, trial, params):
        self.trial, self.params = trial, params

    def suggest_float(self, name, low, high, **kw):
        self.trial.suggest_float(name, low, high, **kw)
        return self.params[name]

    def suggest_int(self, name, low, high, **kw):
        self.trial.suggest_int(name, low, high, **kw)
        return self.params[name]

    def suggest_categorical(self, name, choices):
        self.trial.suggest_categorical(name, choices)
        return self.params[name]


@pytest.mark.slow  # 10-20 s: kept out of the fast tier
def test_known_cost_on_a_restricted_table_trains_distinct_rows_presets_included(continuous):
    from search_replay import replay_known_cost

    space, rows = continuous
    seen = replay_known_cost(space, rows, 10, draw_seeds(rows, 0), seed=0)
    assert len(seen) == 10 and len({r["key"] for r in seen}) == 10
    assert seen[0]["flops_ratio"] == min(r["flops_ratio"] for r in rows.values())  # a flat prior: the cheapest
    assert not seen[0].get("params")  # the preset, which no Optuna proposal can reach
    everything = replay_known_cost(space, rows, 40, draw_seeds(rows, 0), seed=0)
    assert len(everything) == len(rows)  # stops when every table policy is trained

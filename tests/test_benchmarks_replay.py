"""The tabular replay harness (benchmarks/_tabular.py, benchmarks/search_replay.py) on a synthetic table."""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _tabular import enumerate_space, policy_key  # noqa: E402
from search_replay import full_trace, hv_at, moasha_trace, replay  # noqa: E402

from searchvlm.pareto import default_ref  # noqa: E402
from searchvlm.space import load_space  # noqa: E402

SPACE = ROOT / "benchmarks" / "data" / "tabular_quick_space.yaml"


@pytest.fixture(scope="module")
def table():
    """Every point of the tabular space with made-up objectives and a 3-round curve."""
    space = load_space(SPACE)
    rows = {}
    for i, key in enumerate(enumerate_space(space)):
        flops = 0.4 + 0.5 * ((i * 37) % 100) / 100
        syn = -0.2 + 0.3 * ((i * 53) % 100) / 100
        curve = [[30, syn - 0.05, 0, 0, 0, 0], [60, syn, 0, 0, 0, 0], [90, syn, 0, 0, 0, 0]]
        rows[key] = {"key": key, "status": "ok", "flops_ratio": flops, "synergy_gain": syn, "curve": curve}
    return space, rows


def test_space_has_at_least_200_distinct_policies(table):
    assert len(table[1]) >= 200


def test_policy_key_ignores_name_and_a_dense_tasks_mode(table):
    space, _ = table
    params = next(iter(enumerate_space(space).values()))
    a = space.policy_from_params({**params, "gen.cosine.floor": 1.0, "gen.mode": "skip"}, name="a")
    b = space.policy_from_params({**params, "gen.cosine.floor": 1.0, "gen.mode": "query_drop"}, name="b")
    assert policy_key(a) == policy_key(b)


def test_replay_looks_every_suggestion_up(table):
    space, rows = table
    seen = replay(space, rows, optuna.samplers.RandomSampler(seed=0), 16)
    assert len(seen) == 16 and all(r["key"] in rows for r in seen)
    hv = hv_at(seen, default_ref(list(rows.values())), (8, 16))
    assert 0 <= hv[8] <= hv[16]


def test_moasha_spends_fewer_steps_than_full_fidelity(table):
    rows = list(table[1].values())[:30]
    ref = default_ref(rows)
    ma, ff = moasha_trace(rows, 30, 3.0, 90, ref), full_trace(rows, 90, ref)
    assert ff[-1][0] == 30 * 90
    assert ma[-1][0] < ff[-1][0] and ma[-1][1] <= ff[-1][1]
    assert [s for s, _ in ma] == sorted(s for s, _ in ma)

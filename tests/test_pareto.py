"""Tests of searchvlm.objectives.pareto: fronts, ranks, hypervolume by hand, knee and selection rules."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from searchvlm.objectives.pareto import (
    confirm_candidates,
    default_ref,
    default_ref_source,
    finite_number,
    front,
    hypervolume,
    hypervolume_history,
    is_valid,
    knee,
    near_front,
    nondominated,
    objectives,
    paired_se,
    pareto_ranks,
    per_seed,
    pooled_seed_sd,
    select,
    ties,
)
from searchvlm.schema.errors import ConfigError


def row(
    tid: str, flops: float | None, syn: float | None, status: str = "ok", number: int | None = None
) -> dict[str, Any]:
    num = int(tid.lstrip("t")) if number is None else number
    return {
        "trial_id": tid,
        "number": num,
        "status": status,
        "flops_ratio": flops,
        "synergy_gain": syn,
    }


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["trial_id"] for r in rows]


# t0 dense, t1..t3 front, t4 dominated by t2, t5 failed, t6 pruned, t7 ok but missing synergy
TABLE = [
    row("t0", 1.0, 0.05),
    row("t1", 0.3, -0.10),
    row("t2", 0.5, 0.02),
    row("t3", 0.8, 0.10),
    row("t4", 0.6, 0.00),
    row("t5", 0.2, 0.50, status="failed"),
    row("t6", 0.1, 0.90, status="pruned"),
    row("t7", 0.4, None),
]


def test_objectives_minimise_and_invalid_inf() -> None:
    pts = objectives(TABLE)
    assert pts.shape == (8, 2)
    np.testing.assert_allclose(pts[1], [0.3, 0.10])
    assert np.isinf(pts[5:]).all()


def test_nondominated_mask_known() -> None:
    pts = np.array([[1, 1], [0, 1], [1, 0], [1, 0], [np.inf, np.inf], [2, 2]], dtype=float)
    assert nondominated(pts).tolist() == [False, True, True, True, False, False]
    assert nondominated(pts, keep_duplicates=False).tolist() == [
        False,
        True,
        True,
        False,
        False,
        False,
    ]
    assert nondominated(np.empty((0, 2))).tolist() == []


def test_front_excludes_failed_pruned_missing_and_dominated() -> None:
    assert ids(front(TABLE)) == ["t1", "t2", "t3"]


def test_ranks_invalid_last() -> None:
    ranks = pareto_ranks(TABLE)
    assert ranks[[1, 2, 3]].tolist() == [0, 0, 0]
    assert ranks[4] == 1 and ranks[0] == 1
    assert ranks[5:].tolist() == [2, 2, 2]
    assert pareto_ranks([row("t0", None, None, "failed")]).tolist() == [0]


def test_hypervolume_by_hand_default_ref() -> None:
    # ref = (1.0, worst synergy -0.10). Staircase (flops x, synergy y) over the front:
    #   t2: (1.0-0.5) * (0.02+0.10) = 0.06
    #   t3 above t2:  (1.0-0.8) * (0.10-0.02) = 0.016
    #   t1 sits on the ref synergy: 0;  t4 (0.6, 0.00) is inside t2's box: 0
    hv, ref = hypervolume(TABLE)
    assert ref == (1.0, -0.10)
    assert hv == pytest.approx(0.076)


def test_hypervolume_user_ref_and_outside_points() -> None:
    hv, ref = hypervolume(TABLE, ref=(1.0, -0.2))
    # t1: 0.7*0.1 = 0.07; t2 adds (0.5*0.22 - overlap 0.5*0.1) = 0.06; t3 adds 0.2*0.08 = 0.016
    assert ref == (1.0, -0.2)
    assert hv == pytest.approx(0.07 + 0.06 + 0.016)
    assert hypervolume(TABLE, ref=(0.1, 1.0))[0] == 0.0
    with pytest.raises(ConfigError, match="ref"):
        hypervolume(TABLE, ref=(1.0, math.nan))


def test_hypervolume_history_monotone_fixed_ref() -> None:
    hist = hypervolume_history(TABLE)
    assert [n for n, _ in hist] == list(range(8))
    hvs = [h for _, h in hist]
    assert hvs[0] == 0.0  # dense point at the reference FLOPs adds nothing
    assert hvs[2] == pytest.approx(0.06)
    assert hvs[3] == pytest.approx(0.076)
    assert hvs[3:] == [hvs[3]] * 5  # dominated / failed / pruned / missing leave it unchanged
    assert all(b >= a for a, b in zip(hvs, hvs[1:]))


def test_single_point_and_all_failed() -> None:
    one = [row("t0", 0.5, 0.1)]
    assert ids(front(one)) == ["t0"]
    assert knee(one)["trial_id"] == "t0"
    assert hypervolume(one) == (0.0, (1.0, 0.1))
    for rule in ("knee", "max-synergy", "min-flops"):
        assert select(one, rule)["trial_id"] == "t0"
    dead = [row("t0", None, None, "failed"), row("t1", 0.4, 0.2, "pruned")]
    assert front(dead) == []
    assert hypervolume(dead) == (0.0, (1.0, 0.0))
    assert hypervolume_history(dead) == [(0, 0.0), (1, 0.0)]
    with pytest.raises(ConfigError, match=r"1 failed, 1 pruned"):
        select(dead, "knee")
    with pytest.raises(ConfigError, match="no trial finished"):
        knee(dead)


def test_duplicates_and_ties() -> None:
    rows = [row("t0", 0.5, 0.1), row("t1", 0.5, 0.1), row("t2", 0.5, 0.05), row("t3", 0.3, 0.0)]
    assert ids(front(rows)) == ["t3", "t0", "t1"]  # duplicates both kept, earlier first
    assert select(rows, "max-synergy")["trial_id"] == "t0"
    assert select(rows, "min-flops")["trial_id"] == "t3"
    hv, _ = hypervolume(rows)
    assert hv == pytest.approx(0.5 * 0.1)  # duplicates add no volume
    tied = [row("t0", 0.4, 0.1), row("t1", 0.4, 0.1)]
    assert knee(tied)["trial_id"] == "t0"


def test_knee_known_shape() -> None:
    # L-shaped front: one point sits far inside the line between the extremes
    rows = [row("t0", 0.1, 0.0), row("t1", 0.2, 0.9), row("t2", 0.6, 0.95), row("t3", 1.0, 1.0)]
    assert knee(rows)["trial_id"] == "t1"
    # collinear front: no bulge -> lowest FLOPs point
    line = [row("t0", 0.2, 0.0), row("t1", 0.4, 0.5), row("t2", 0.6, 1.0)]
    assert knee(line)["trial_id"] == "t0"
    # two points -> lowest FLOPs
    assert knee(line[1:])["trial_id"] == "t1"


def test_select_rules_on_table() -> None:
    assert select(TABLE, "min-flops")["trial_id"] == "t1"
    assert select(TABLE, "max-synergy")["trial_id"] == "t3"
    assert select(TABLE, "knee")["trial_id"] == "t2"
    assert select(TABLE, "max-synergy", max_flops=0.7)["trial_id"] == "t2"
    assert select(TABLE, "min-flops", min_synergy=0.0)["trial_id"] == "t2"
    # feasible front {t1, t2}: two points have no knee -> the lower-FLOPs one
    assert select(TABLE, "knee", max_flops=0.55, min_synergy=-0.2)["trial_id"] == "t1"


def test_select_infeasible_names_closest_trial() -> None:
    with pytest.raises(ConfigError) as err:
        select(TABLE, "knee", max_flops=0.25, source="runs/s/trials.csv")
    text = str(err.value)
    assert "runs/s/trials.csv" in text and "--max-flops = 0.25" in text
    assert "closest is trial t1" in text
    with pytest.raises(ConfigError, match="closest is trial t3"):
        select(TABLE, "min-flops", min_synergy=0.5)
    with pytest.raises(ConfigError, match=r"flops_ratio <= 0.35 and synergy_gain >= 0.05.*trial t(1|2)"):
        select(TABLE, "knee", max_flops=0.35, min_synergy=0.05)


def test_select_unknown_rule() -> None:
    with pytest.raises(ConfigError, match=r"rule = 'best'.*knee, max-synergy, min-flops") as err:
        select(TABLE, "best", source="runs/s/trials.csv")
    assert str(err.value).startswith("command line: --rule")  # the argument, not the table


@pytest.mark.parametrize(
    "to_np",
    [
        lambda v: np.float32(v),
        lambda v: np.float64(v),
        lambda v: np.float16(v),
    ],
    ids=["float32", "float64", "float16"],
)
def test_numpy_scalars_are_numbers(to_np: Any) -> None:
    """Rows from a DataFrame or numpy arrays hold numpy scalars: the same front and choices."""
    np_rows = [
        {**r, "number": np.int64(r["number"]),
         **{k: to_np(r[k]) for k in ("flops_ratio", "synergy_gain") if r[k] is not None}}
        for r in TABLE
    ]  # fmt: skip
    assert ids(front(np_rows)) == ids(front(TABLE)) == ["t1", "t2", "t3"]
    assert pareto_ranks(np_rows).tolist() == pareto_ranks(TABLE).tolist()
    assert select(np_rows, "knee")["trial_id"] == select(TABLE, "knee")["trial_id"]
    assert hypervolume(np_rows)[0] == pytest.approx(hypervolume(TABLE)[0], abs=1e-3)


def test_numpy_ints_and_non_numbers() -> None:
    rows = [row("t0", 1, 0), row("t1", 0.5, 0.1)]
    rows[0].update(flops_ratio=np.int64(1), synergy_gain=np.int64(1), number=np.int64(0))
    assert ids(front(rows)) == ["t1", "t0"] and is_valid(rows[0])
    for bad in (np.float32("nan"), np.float64("inf"), np.bool_(True), True, "0.5", None):
        assert not is_valid({**rows[1], "synergy_gain": bad}), bad
    assert finite_number(np.float32(0.25)) == 0.25 and type(finite_number(np.int64(3))) is float


def test_default_ref_uses_valid_rows_only() -> None:
    assert default_ref(TABLE) == (1.0, -0.10)


def test_default_ref_is_the_dense_trials_synergy_when_there_is_one() -> None:
    rows = [
        {"trial_id": "d", "status": "ok", "preset": "dense", "flops_ratio": 1.0, "synergy_gain": 0.05},
        {"trial_id": "a", "status": "ok", "preset": "", "flops_ratio": 0.5, "synergy_gain": 0.10},
        {"trial_id": "b", "status": "ok", "preset": "", "flops_ratio": 0.3, "synergy_gain": -0.20},
        {"trial_id": "f", "status": "failed", "preset": "dense", "flops_ratio": 1.0, "synergy_gain": -0.5},
    ]
    assert default_ref(rows) == (1.0, 0.05) and default_ref_source(rows) == "dense"
    # b is below dense's synergy: only a adds volume, (1 - 0.5) * (0.10 - 0.05)
    assert hypervolume(rows)[0] == pytest.approx(0.025)
    no_dense = rows[1:]  # the failed dense trial does not count
    assert default_ref(no_dense) == (1.0, -0.20) and default_ref_source(no_dense) == "worst"


def test_moocore_meets_the_pin() -> None:
    """pyproject pins moocore>=0.3.2 (0.1.x ranks from 1, 0.3.1 can crash on duplicates)."""
    import re
    import tomllib
    from importlib.metadata import version
    from pathlib import Path

    import moocore
    from packaging.version import Version

    deps = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(d for d in deps if d.startswith("moocore"))
    floor = re.fullmatch(r"moocore>=([\d.]+)", pin)
    assert floor and Version(floor.group(1)) >= Version("0.3.2"), pin
    assert Version(version("moocore")) >= Version(floor.group(1))
    dup = np.array([[0.5, -0.1], [0.5, -0.1], [0.3, 0.0], [0.9, 0.2]])  # (n, 2) with a duplicate
    assert np.asarray(moocore.pareto_rank(dup)).tolist() == [0, 0, 0, 1]  # from 0, duplicates fine


# --------------------------------------------------------------------------- noise


def noisy(tid: str, flops: float, syn: float, se: float | None = None, seeds: list | None = None,
          per: list | None = None) -> dict[str, Any]:  # fmt: skip
    r = row(tid, flops, syn)
    r.update(synergy_gain_stderr=se, seeds=json.dumps(seeds or [0]), synergy_per_seed=json.dumps(per) if per else "")
    return r


def test_per_seed_and_paired_se_pair_by_seed() -> None:
    a = noisy("t0", 0.5, 0.2, 0.1, [0, 1, 2], [0.1, 0.2, 0.3])
    b = noisy("t1", 0.6, 0.1, 0.1, [0, 1, 2], [0.0, 0.1, 0.2])  # a - b = 0.1 on every seed
    assert per_seed(a) == {0: 0.1, 1: 0.2, 2: 0.3}
    assert paired_se(a, b) == pytest.approx(0.0)  # the seed noise cancels
    c = noisy("t2", 0.6, 0.1, 0.05, [5, 6], [0.05, 0.15])  # no common seed: unpaired
    assert paired_se(a, c) == pytest.approx(math.hypot(0.1, 0.05))
    assert paired_se(row("t3", 0.5, 0.1), row("t4", 0.4, 0.0)) is None
    assert paired_se(row("t3", 0.5, 0.1), row("t4", 0.4, 0.0), default=0.03) == pytest.approx(math.hypot(0.03, 0.03))


def test_pooled_seed_sd() -> None:
    rows = [noisy("t0", 0.5, 0.1, 0.1, [0, 1, 2, 3]), noisy("t1", 0.5, 0.1, 0.2, [0, 1, 2, 3]), noisy("t2", 0.5, 0.1)]
    # sd = se * sqrt(n): 0.2 and 0.4, pooled over 3 + 3 degrees of freedom
    assert pooled_seed_sd(rows) == pytest.approx(math.sqrt((0.2**2 + 0.4**2) / 2))
    assert pooled_seed_sd([noisy("t0", 0.5, 0.1)]) is None


def test_ties_on_the_front_are_within_two_paired_se() -> None:
    rows = [
        noisy("t0", 0.3, 0.10, 0.02),
        noisy("t1", 0.5, 0.12, 0.02),  # +0.02 for more FLOPs: within 2 * 0.028, a tie
        noisy("t2", 0.9, 0.30, 0.02),  # clearly better
        noisy("t3", 0.6, 0.11, 0.02),  # dominated by t1: never in `ties`
    ]
    assert ties(rows) == {"t0": ["t1"], "t1": ["t0"], "t2": []}
    # paired seeds can separate what unpaired errors cannot
    paired = [noisy("t0", 0.3, 0.10, 0.05, [0, 1, 2], [0.05, 0.10, 0.15]),
              noisy("t1", 0.5, 0.12, 0.05, [0, 1, 2], [0.07, 0.12, 0.17])]  # fmt: skip
    assert ties(paired) == {"t0": [], "t1": []}
    assert ties([row("t0", 0.3, 0.1), row("t1", 0.5, 0.12)]) == {"t0": [], "t1": []}  # unknown noise: no tie


def test_near_front_and_candidates() -> None:
    rows = [
        noisy("t0", 0.3, 0.10, 0.02),
        noisy("t1", 0.8, 0.30, 0.02),
        noisy("t2", 0.5, 0.08, 0.02),  # 0.02 behind t0 at more FLOPs: 0.7 s.e., near
        noisy("t3", 0.9, 0.27, 0.01),  # 0.03 behind t1: 1.3 s.e., near
        noisy("t4", 0.4, 0.00, 0.02),  # 0.1 behind t0: 3.5 s.e., not near
        noisy("t5", 0.2, 0.9, 0.02) | {"status": "failed"},
        noisy("t6", 0.7, 0.05),  # no s.e. of its own and none by default: beaten for sure
    ]
    assert ids(near_front(rows)) == ["t2", "t3"]
    assert ids(confirm_candidates(rows)) == ["t0", "t1", "t2", "t3"]
    assert ids(confirm_candidates(rows, top=3)) == ["t0", "t1", "t2"]
    assert "t6" in ids(near_front(rows, default_se=0.2))  # a pooled s.e. stands in for its own
    assert ids(near_front([row("t0", 0.3, 0.1), row("t1", 0.5, 0.05)])) == []  # one seed: the front only

"""Decision rules on simulated sweeps: how often each picks a policy worse than dense.

DECIDE_PLAN.md section 3. Worlds come from `synthetic_table.py`'s generator on the former
quick proxy's 72 policies (their exact FLOPs): true synergy s_p = 0.10 - 0.40 (1 - f)^2 +
N(0, 0.05); seed i shows s_p + u_i + N(0, 0.03) with u_i ~ N(0, 0.03) shared by every
policy and dense (paired differences have SD 0.042). Each simulated sweep trains 16 random
policies. Two rules answer "the cheapest policy that keeps dense's synergy within delta":

- **mean**: every sweep policy and dense on 3 seeds; the cheapest whose 3-seed mean is at
  least dense's 3-seed mean - delta;
- **decide**: the sweep on one seed; `searchvlm.records.decide`'s shortlist (3 cheapest of the
  front and near-front, one seed's SD 0.042 standing in for the noise) and its race
  (`searchvlm.objectives.noninferiority.race`, looks 5 and 10 on fresh seeds, alpha 0.05).

Scenarios: `tradeoff` (the generator) and `none` (every policy's true synergy is dense's
- delta - 0.01: no policy qualifies). Read per rule: wrong-choice rate (accepted, but truly
worse than dense by delta or more), undetermined rate, trainings, FLOPs regret (accepted
minus the cheapest truly qualifying sweep policy).

    .venv/bin/python benchmarks/decision_replay.py [--sims 400] [--out benchmarks/results/decision_replay.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from _tabular import complete_rows, load_table
from searchvlm.objectives.noninferiority import look_schedule, race
from searchvlm.objectives.pareto import confirm_candidates
from synthetic_table import CURVE, NOISE_SD, POLICY_SD, S_DENSE, SEED_SD

ROOT = Path(__file__).resolve().parents[1]
SWEEP, SHORTLIST, DELTA, ALPHA, MEAN_SEEDS = 16, 3, 0.035, 0.05, 3
LOOKS = look_schedule(5, 10)
PAIRED_SD = math.sqrt(2) * NOISE_SD


class World:
    """One simulated proxy: true synergies, and seeds drawn on demand (shared seed effects)."""

    def __init__(self, flops: np.ndarray, scenario: str, rng: np.random.Generator) -> None:
        self.flops, self.rng = flops, rng
        if scenario == "none":
            self.true = np.full(len(flops), S_DENSE - DELTA - 0.01)
        else:
            self.true = S_DENSE - CURVE * (1 - flops) ** 2 + rng.normal(0, POLICY_SD, len(flops))
        self.true_vs = self.true - S_DENSE  # what a policy truly keeps of dense's synergy
        self.shortlist_sd = PAIRED_SD
        self.seeds: dict[int, tuple[float, np.ndarray, float]] = {}
        self.trainings = 0

    def _seed(self, i: int) -> tuple[float, np.ndarray, float]:
        if i not in self.seeds:  # shared effect, per-policy noise, dense's noise
            self.seeds[i] = (self.rng.normal(0, SEED_SD), self.rng.normal(0, NOISE_SD, len(self.flops)),
                             self.rng.normal(0, NOISE_SD))  # fmt: skip
        return self.seeds[i]

    def shows(self, p: int, i: int) -> float:
        self.trainings += 1
        u, n, _ = self._seed(i)
        return float(self.true[p] + u + n[p])

    def dense(self, i: int) -> float:
        self.trainings += 1
        u, _, nd = self._seed(i)
        return float(S_DENSE + u + nd)

    def vs_dense(self, p: int, i: int) -> float:
        """Policy p's synergy minus dense's on seed i (one training: dense's is counted by `dense`)."""
        u, _, nd = self._seed(i)
        return self.shows(p, i) - float(S_DENSE + u + nd)


class TableWorld:
    """A proxy table's noise (PROXY_TABLE_PLAN.md analysis 3): the truth is each policy's
    5-seed mean of synergy_vs_dense; a simulated seed is one of the table's seeds, drawn with
    replacement and shared by every policy and dense (a sweep's pairing)."""

    def __init__(self, table: dict[str, Any], shortlist_sd: float, rng: np.random.Generator) -> None:
        self.rows = [r for r in table["rows"] if r["status"] == "ok"]
        self.dense_by_seed = {x["seed"]: x for x in table["reference"]["seeds"]}
        self.table_seeds = sorted(self.dense_by_seed)
        self.flops = np.array([r["flops_ratio"] for r in self.rows])
        self.true_vs = np.array([np.mean([x["synergy_vs_dense"] for x in r["seeds"]]) for r in self.rows])
        self.shortlist_sd, self.rng, self.trainings = shortlist_sd, rng, 0
        self.seeds: dict[int, int] = {}

    def _run(self, p: int, i: int) -> dict[str, Any]:
        if i not in self.seeds:
            self.seeds[i] = int(self.table_seeds[self.rng.integers(0, len(self.table_seeds))])
        return next(x for x in self.rows[p]["seeds"] if x["seed"] == self.seeds[i])

    def shows(self, p: int, i: int) -> float:
        self.trainings += 1
        return float(self._run(p, i)["synergy_gain"])

    def dense(self, i: int) -> float:
        self.trainings += 1
        self._run(0, i)  # draws the table seed
        return float(self.dense_by_seed[self.seeds[i]]["synergy_gain"])

    def vs_dense(self, p: int, i: int) -> float:
        self.trainings += 1
        return float(self._run(p, i)["synergy_vs_dense"])


def mean_rule(w: World, sweep: list[int]) -> int | None:
    dense = np.mean([w.dense(i) for i in range(MEAN_SEEDS)])
    means = {p: np.mean([w.shows(p, i) for i in range(MEAN_SEEDS)]) for p in sweep}
    ok = [p for p in sweep if means[p] >= dense - DELTA]
    return min(ok, key=lambda p: w.flops[p]) if ok else None


def decide_rule(w: World, sweep: list[int]) -> tuple[int | None, str]:
    rows = [{"trial_id": str(p), "number": j, "status": "ok", "flops_ratio": float(w.flops[p]),
             "synergy_gain": w.shows(p, 0)} for j, p in enumerate(sweep)]  # fmt: skip
    w.dense(0)
    near = [r for r in confirm_candidates(rows, default_se=w.shortlist_sd) if r["flops_ratio"] < 1]
    order = sorted(near, key=lambda r: r["flops_ratio"])[:SHORTLIST][::-1]
    fresh = list(range(100, 100 + LOOKS[-1]))
    cache: dict[tuple[str, int], float] = {}
    dense_cache: dict[int, float] = {}

    def sample(name: str, n: int) -> list[float]:
        out = []
        for i in fresh[:n]:
            if i not in dense_cache:
                dense_cache[i] = w.dense(i)
            if (name, i) not in cache:
                cache[(name, i)] = w.vs_dense(int(name), i)
            out.append(cache[(name, i)])
        return out

    result = race([(r["trial_id"], r["flops_ratio"]) for r in order], sample, DELTA, ALPHA, LOOKS)
    return (int(result.accepted.name) if result.accepted else None), result.verdict


def simulate(make_world: Callable[[np.random.Generator], Any], scenario: str, sims: int, seed: int) -> dict[str, Any]:
    stats: dict[str, dict[str, list]] = {r: {"wrong": [], "none": [], "trainings": [], "regret": []}
                                         for r in ("mean", "decide")}  # fmt: skip
    verdicts: dict[str, int] = {}
    for s in range(sims):
        for rule in ("mean", "decide"):
            w = make_world(np.random.default_rng([seed, s]))
            sweep = list(np.random.default_rng([seed, s, 1]).choice(len(w.flops), SWEEP, replace=False))
            if rule == "mean":
                pick = mean_rule(w, sweep)
            else:
                pick, verdict = decide_rule(w, sweep)
                verdicts[verdict] = verdicts.get(verdict, 0) + 1
            good = [p for p in sweep if w.true_vs[p] > -DELTA]
            st = stats[rule]
            st["wrong"].append(pick is not None and w.true_vs[pick] <= -DELTA)
            st["none"].append(pick is None)
            st["trainings"].append(w.trainings)
            if pick is not None and good:
                st["regret"].append(float(w.flops[pick] - min(w.flops[p] for p in good)))
    out: dict[str, Any] = {"scenario": scenario, "sims": sims, "decide_verdicts": verdicts}
    for rule, st in stats.items():
        wrong = float(np.mean(st["wrong"]))
        out[rule] = {"wrong_choice": wrong, "wrong_choice_mc_se": math.sqrt(max(wrong * (1 - wrong), 1e-12) / sims),
                     "no_choice": float(np.mean(st["none"])), "trainings": float(np.mean(st["trainings"])),
                     "flops_regret": float(np.mean(st["regret"])) if st["regret"] else None}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=ROOT / "benchmarks/data/tabular_quick.json")
    ap.add_argument("--sims", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--table-noise",
        type=Path,
        default=None,
        help="a proxy table (proxy_table.py): replay the rules on its seeds instead (scenario 'table')",
    )
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/results/decision_replay[_proxy].json")
    args = ap.parse_args()
    command = f"python benchmarks/decision_replay.py --sims {args.sims} --seed {args.seed}"
    if args.table_noise is not None:
        return table_noise(args.table_noise, args.sims, args.seed, args.out, command)
    flops = np.array([r["flops_ratio"] for r in load_table(args.source)["rows"] if r["status"] == "ok"])
    results = [simulate(functools.partial(World, flops, sc), sc, args.sims, args.seed) for sc in ("tradeoff", "none")]
    none = results[1]["decide"]
    target = none["wrong_choice"] <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / args.sims)
    doc = {"command": command, "delta": DELTA, "alpha": ALPHA, "looks": LOOKS, "sweep": SWEEP,
           "shortlist": SHORTLIST, "results": results,
           "target_decide_wrong_within_alpha_none": bool(target)}  # fmt: skip
    write(doc, results, args.out or ROOT / "benchmarks/results/decision_replay.json")
    print(f"target (decide wrong choice <= alpha + 3 MC s.e. where none qualifies): {'met' if target else 'MISSED'}")


def table_noise(path: Path, sims: int, seed: int, out: Path | None, command: str) -> None:
    """PROXY_TABLE_PLAN.md analysis 3: both rules on the proxy table's own seeds (complete rows only)."""
    from searchvlm.schema.space import load_space

    table = load_table(path)
    n = len(table["seeds"])
    table = {**table, "rows": complete_rows(table)}
    if len(table["rows"]) < SWEEP:
        raise SystemExit(f"{path}: {len(table['rows'])} complete rows; a simulated sweep takes {SWEEP}")
    sd = load_space(ROOT / table["space"]).calibration.synergy_sd  # what decide's shortlist uses
    results = [simulate(lambda rng: TableWorld(table, sd, rng), "table", sims, seed)]
    doc = {"command": f"{command} --table-noise {path}", "delta": DELTA, "alpha": ALPHA, "looks": LOOKS,
           "sweep": SWEEP, "shortlist": SHORTLIST, "complete_rows": len(table["rows"]), "table_seeds": n,
           "policies_truly_within_delta": int(sum(TableWorld(table, sd, None).true_vs > -DELTA)),
           "results": results}  # fmt: skip
    write(doc, results, out or ROOT / "benchmarks/results/decision_replay_proxy.json")


def write(doc: dict[str, Any], results: list[dict[str, Any]], out: Path) -> None:
    out.write_text(json.dumps(doc, indent=2) + "\n")
    for r in results:
        print(f"scenario {r['scenario']} ({r['sims']} sims), decide verdicts {r['decide_verdicts']}")
        for rule in ("mean", "decide"):
            x = r[rule]
            regret = "-" if x["flops_regret"] is None else f"{x['flops_regret']:+.3f}"
            print(f"  {rule:<7} wrong choice {x['wrong_choice']:.3f} ± {x['wrong_choice_mc_se']:.3f}, no choice "
                  f"{x['no_choice']:.3f}, trainings {x['trainings']:.1f}, FLOPs regret {regret}")  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

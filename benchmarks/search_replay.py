"""Search efficiency on a stored table: replay samplers and MO-ASHA without training.

The table (`tabular_build.py`, format v2) holds real trials of every policy of a finite
space on 3 seeds, with per-seed learning curves, and the dense policy on the same seeds; or
(`proxy_table.py`) a sample of 48 policies of a continuous space on 5 seeds. On such a
*restricted* table a sampler's proposal trains the nearest table policy (`answer`, the
distance fixed in PROXY_TABLE_PLAN.md), `known_cost` chooses among the table's untrained
policies (`TablePool`), and only rows with every seed trained are used.

- **What a search sees.** Each replay draws one seed of the table, shared by every policy
  (a sweep trains every policy on the same seeds; `--draws independent`, the former rule,
  draws one per policy): a sampler is told that seed's objectives, MO-ASHA is fed that
  seed's per-round validation curve. A repeated proposal gets the same answer.
- **What a search is scored on.** The hypervolume of the policies it trained (*visited*), at
  their seed means (a synthetic table's true synergy), and of the front it *claims* (the
  non-dominated set of what it observed on its one seed), scored at the same means: a lucky
  draw does not score, and a claim that noise made is paid for.
- **Reference point.** FLOPs 1.0 and the dense policy's mean synergy on the same seeds: the
  volume counts only policies that are cheaper than dense AND keep at least its synergy.
  The earlier reference (the worst synergy seen) put nearly all the volume on the single
  cheapest point, so any FLOPs ranking looked like a good search; it is reported beside.
- **Strategies**: Optuna random, TPE, NSGA-II, GP (through the sweep's `make_sampler`),
  `known_cost` (the sweep's `KnownCostSampler`, told the table's exact FLOPs) and
  `cheapest` (the k cheapest policies by exact FLOPs, no training signal); `--seeds`
  replays each: hypervolume after 8, 16, 32 trials (proposals, repeats included) as a
  share of the table's, mean ± s.e., the ratio of means to random and known_cost's paired
  difference from cheapest, with 95% bootstrap intervals (DECIDE_PLAN.md's targets).
- **MO-ASHA** (the sweep's `MOASHA.decide`) on `--seeds` random orders of `--configs`
  policies, against (a) full fidelity on all of them, (b) random search at equal steps (the
  first k of the same order trained fully, k = MO-ASHA's steps / max steps) and (c) FLOPs-only
  ranking at equal steps (the k cheapest of the same policies, known before training).

    .venv/bin/python benchmarks/search_replay.py [--table benchmarks/data/tabular_quick.json] [--seeds 100]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from _tabular import complete_rows, load_table, policy_key
from searchvlm.objectives.pareto import hypervolume
from searchvlm.objectives.synergy import mean_stderr
from searchvlm.schema.policy import ReductionPolicy
from searchvlm.schema.space import SearchSpace, load_space
from searchvlm.sweep._keys import POLICY_ATTR
from searchvlm.sweep._known_cost import KnownCostSampler
from searchvlm.sweep._known_cost import _key as policy_identity

ROOT = Path(__file__).resolve().parents[1]
SAMPLERS = ("random", "tpe", "nsga2", "gp", "known_cost", "cheapest")
CHECKPOINTS = (8, 16, 32)
STARTUP = 5  # TPE / GP random start-up trials (Optuna's default 10 is a third of a 32-trial run)
POPULATION = 8  # NSGA-II population (the default 50 never leaves its random first generation)
BOOT = 10_000
Row = dict[str, Any]


# --------------------------------------------------------------------------- statistics


def ratio_ci(a: list[float], b: list[float], seed: int = 0, paired: bool = False) -> dict[str, float]:
    """mean(a) / mean(b) with a 95% percentile bootstrap interval: a and b resampled
    independently, or (`paired`) the same indices for both (paired samples)."""
    rng = np.random.default_rng(seed)
    a_, b_ = np.asarray(a), np.asarray(b)
    ia = rng.integers(0, len(a_), (BOOT, len(a_)))
    ib = ia if paired else rng.integers(0, len(b_), (BOOT, len(b_)))
    ma, mb = a_[ia].mean(1), b_[ib].mean(1)
    boot = ma[mb > 0] / mb[mb > 0]
    point = float(a_.mean() / b_.mean()) if b_.mean() > 0 else float("nan")
    lo, hi = np.percentile(boot, [2.5, 97.5]) if len(boot) else (np.nan, np.nan)
    return {"ratio": point, "ci95": [float(lo), float(hi)]}


# --------------------------------------------------------------------------- draws


DRAWS = {"mode": "shared"}  # set by --draws


def draw_seeds(rows: dict[str, Row], seed: int) -> dict[str, int]:
    """Per policy key, the index of the seed this replay sees (a one-seed sweep's luck): one
    seed for every policy (`shared`, as a sweep trains them), or one each (`independent`)."""
    rng = np.random.default_rng(seed)
    if DRAWS["mode"] == "shared":
        i = int(rng.integers(0, min(len(row["seeds"]) for row in rows.values())))
        return {k: i for k in sorted(rows)}
    return {k: int(rng.integers(0, len(row["seeds"]))) for k, row in sorted(rows.items())}


def seen_run(row: Row, draws: dict[str, int]) -> Row:
    return row["seeds"][draws[row["key"]]]


# --------------------------------------------------------------------------- samplers


def sampler_space(space: SearchSpace, name: str, seed: int) -> SearchSpace:
    search = space.search.model_copy(
        update={"sampler": name, "seed": seed, "startup_trials": STARTUP, "population_size": POPULATION}
    )
    return space.model_copy(update={"search": search})


def param_distance(params: dict[str, Any], dists: dict[str, BaseDistribution], other: dict[str, Any]) -> float:
    """PROXY_TABLE_PLAN.md's distance from a proposal to a table policy: Euclidean over the
    proposal's numeric dimensions scaled to [0, 1] by their bounds, plus 1 per differing
    categorical; a dimension the table policy lacks (another branch of a conditional) counts 1."""
    squares, differing = 0.0, 0
    for name, value in params.items():
        dist, theirs = dists[name], other.get(name)
        if isinstance(dist, (FloatDistribution, IntDistribution)) and isinstance(theirs, (int, float)):
            squares += ((value - theirs) / ((dist.high - dist.low) or 1.0)) ** 2
        else:
            differing += int(theirs != value)
    return squares**0.5 + differing


def answer(space: SearchSpace, rows: dict[str, Row], params: dict[str, Any],
           dists: dict[str, BaseDistribution]) -> Row:  # fmt: skip
    """The table row a proposal trains: the same policy when the table has it (a finite
    table has every one), else the nearest table policy that has sampler parameters (a
    finite table of a continuous space; presets carry none, so only cheapest-k and
    known_cost can reach them). Ties go to the smaller key."""
    try:
        key = policy_key(space.policy_from_params(params))
    except ValueError:  # a proposal the space refuses still has a nearest table policy
        key = None
    if key in rows:
        return rows[key]
    pool = [row for row in rows.values() if row.get("params")]
    if not pool:
        raise ValueError(f"policy {key} is not in the table and no table row carries sampler parameters")
    return min(pool, key=lambda row: (param_distance(params, dists, row["params"]), row["key"]))


def replay(space: SearchSpace, rows: dict[str, Row], sampler: optuna.samplers.BaseSampler, n: int,
           draws: dict[str, int]) -> list[Row]:  # fmt: skip
    """Run `n` ask/tell trials of `sampler` on the table, told the drawn seed's values of the
    row that answers each proposal (`answer`); the rows visited."""
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=sampler)
    seen: list[Row] = []
    for _ in range(n):
        trial = study.ask()
        row = answer(space, rows, space.suggest(trial), trial.distributions)
        run = seen_run(row, draws)
        if run["status"] == "ok":
            study.tell(trial, [run["flops_ratio"], run["synergy_gain"]])
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        seen.append(row)
    return seen


def replay_known_cost(space: SearchSpace, rows: dict[str, Row], n: int, draws: dict[str, int],
                      seed: int) -> list[Row]:  # fmt: skip
    """`known_cost` restricted to a table: its candidate pool is the table's untrained
    policies (presets included), priced at their exact FLOPs; each choice is told the drawn
    seed's values, as a sweep's trials are. The rows visited."""
    sampler = TablePool(space, rows, seed)
    trials, seen = [], []
    for number in range(n):
        key = sampler.propose(trials, number)
        if key is None:  # every table policy trained
            break
        row = rows[key]
        run = seen_run(row, draws)
        attrs = {POLICY_ATTR: ReductionPolicy.model_validate(row["policy"]).model_dump_json()}
        ok = run["status"] == "ok"
        trials.append(create_trial(state=TrialState.COMPLETE if ok else TrialState.FAIL, user_attrs=attrs,
                                   values=[run["flops_ratio"], run["synergy_gain"]] if ok else None))  # fmt: skip
        seen.append(row)
    return seen


class TablePool(KnownCostSampler):
    """`known_cost` whose candidates are a table's policies (`propose` returns a row key)."""

    def __init__(self, space: SearchSpace, rows: dict[str, Row], seed: int) -> None:
        super().__init__(space, cost=lambda p: 1.0, seed=seed)  # never called: the pool carries its FLOPs
        self.table = [(k, ReductionPolicy.model_validate(r["policy"]), r["flops_ratio"]) for k, r in rows.items()]

    def _draw(self, number: int, seen: set[str]) -> list[tuple[Any, ReductionPolicy, float]]:
        return [(k, p, c) for k, p, c in self.table if policy_identity(p) not in seen]


def is_finite(space: SearchSpace) -> bool:
    """A finite space's table has every policy; a continuous one's is a sample (restricted replays)."""
    from searchvlm.schema.errors import ConfigError

    try:
        space.grid_space()
    except ConfigError:
        return False
    return True


def cheapest(rows: dict[str, Row], n: int) -> list[Row]:
    """The `n` cheapest policies by exact FLOPs (ties by key): no training signal at all."""
    return sorted(rows.values(), key=lambda r: (r["flops_ratio"], r["key"]))[:n]


def hv_curve(seen: list[Row], ref: tuple[float, float]) -> list[float]:
    """Hypervolume (of the visited policies at their seed means) after each trial."""
    return [hypervolume(seen[:k], ref)[0] for k in range(1, len(seen) + 1)]


def claimed_curve(seen: list[Row], draws: dict[str, int], ref: tuple[float, float]) -> list[float]:
    """Hypervolume, at their seed means, of the front a search claims after each trial: the
    non-dominated set of what it observed (the drawn seed's values)."""
    from searchvlm.objectives.pareto import front

    observed = [{**seen_run(r, draws), "trial_id": i, "number": i, "row": r} for i, r in enumerate(seen)]
    return [hypervolume([o["row"] for o in front(observed[:k])], ref)[0] for k in range(1, len(seen) + 1)]


_WORK: dict[str, Any] = {}  # the space and rows, inherited by forked workers


def _one_replay(job: tuple[str, int]) -> tuple[list[Row], dict[str, int]]:
    from searchvlm.sweep._searcher import make_sampler

    name, seed = job
    space, rows = _WORK["space"], _WORK["rows"]
    draws = draw_seeds(rows, 10_000 + seed)
    if name == "cheapest":
        return cheapest(rows, max(CHECKPOINTS)), draws
    if name == "known_cost" and _WORK.get("restricted"):
        return replay_known_cost(space, rows, max(CHECKPOINTS), draws, seed), draws
    if name == "known_cost":
        sampler = KnownCostSampler(space, lambda p: rows[policy_key(p)]["flops_ratio"], seed=seed)
    else:
        sampler = make_sampler(sampler_space(space, name, seed))
    return replay(space, rows, sampler, max(CHECKPOINTS), draws), draws


def sampler_runs(space: SearchSpace, rows: dict[str, Row], seeds: range, refs: dict[str, tuple], jobs: int) -> dict:
    """Per reference, per sampler, per replay seed: the hypervolume curve up to max(CHECKPOINTS)."""
    import multiprocessing as mp

    import torch

    torch.set_num_threads(1)  # GP's fits; one replay per process
    _WORK.update(space=space, rows=rows, restricted=not is_finite(space))
    out: dict[str, dict[str, list[list[float]]]] = {f"{r}{how}": {} for r in refs for how in ("", ":claimed")}
    with mp.get_context("fork").Pool(jobs) as pool:
        for name in SAMPLERS:
            seen_runs = pool.map(_one_replay, [(name, seed) for seed in seeds])
            for r, ref in refs.items():
                out[r][name] = [hv_curve(seen, ref) for seen, _ in seen_runs]
                out[f"{r}:claimed"][name] = [claimed_curve(seen, draws, ref) for seen, draws in seen_runs]
            print(f"  {name}: {len(seeds)} replays", flush=True)
    return out


def summarise(curves: dict[str, list[list[float]]], table_hv: float) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, runs in curves.items():
        out[name] = {}
        for k in CHECKPOINTS:
            vals = [r[k - 1] for r in runs]
            m, se = mean_stderr(vals)
            out[name][f"hv@{k}"] = {"mean": m, "stderr": se, "share_of_table": m / table_hv if table_hv else None}
            if name != "random":
                out[name][f"hv@{k}"]["vs_random"] = ratio_ci(vals, [r[k - 1] for r in curves["random"]], seed=k)
            if name == "known_cost" and table_hv:
                base = [r[k - 1] / table_hv for r in curves["cheapest"]]
                out[name][f"hv@{k}"]["minus_cheapest"] = diff_ci([v / table_hv for v in vals], base, seed=k)
    return out


def diff_ci(a: list[float], b: list[float], seed: int = 0) -> dict[str, Any]:
    """mean(a - b) over paired replays with a 95% percentile bootstrap interval."""
    d = np.asarray(a) - np.asarray(b)
    boot = d[np.random.default_rng(seed).integers(0, len(d), (BOOT, len(d)))].mean(1)
    return {"diff": float(d.mean()), "ci95": [float(v) for v in np.percentile(boot, [2.5, 97.5])]}


# --------------------------------------------------------------------------- MO-ASHA


def steps_until_stop(sched: Any, trial_id: str, run: Row, flops: float, max_steps: int) -> int:
    """Feed one seed's per-round reports to the scheduler; the steps the trial trained."""
    for step, synergy, *_ in run["curve"]:
        if step >= max_steps:
            return max_steps
        if sched.decide(trial_id, int(step), {"flops_ratio": flops, "synergy_gain": synergy}) == "STOP":
            return int(step)
    return int(run["curve"][-1][0]) if run["curve"] else 0


def moasha_once(order: list[Row], draws: dict[str, int], grace: int, eta: float, max_steps: int,
                refs: dict[str, tuple]) -> dict[str, Any]:  # fmt: skip
    """One random order: MO-ASHA's completed set and steps, and the equal-step comparisons."""
    from searchvlm.sweep._moasha import MOASHA

    sched = MOASHA(["flops_ratio", "synergy_gain"], ["min", "max"], grace, max_steps, eta)
    spent, done = 0, []
    for i, row in enumerate(order):
        steps = steps_until_stop(sched, str(i), seen_run(row, draws), row["flops_ratio"], max_steps)
        spent += steps
        if steps == max_steps and seen_run(row, draws)["status"] == "ok":
            done.append(row)
    k = spent // max_steps  # full trials the same budget buys
    cheapest = sorted(order, key=lambda r: r["flops_ratio"])[:k]
    out: dict[str, Any] = {"steps_ratio": spent / (len(order) * max_steps), "completed": len(done), "k": k}
    for r, ref in refs.items():
        full = hypervolume(order, ref)[0]
        out[r] = {"full": full, "moasha": hypervolume(done, ref)[0],
                  "random_equal_steps": hypervolume(order[:k], ref)[0],
                  "flops_only_equal_steps": hypervolume(cheapest, ref)[0]}  # fmt: skip
    return out


def moasha_runs(rows: list[Row], n: int, seeds: int, grace: int, eta: float, max_steps: int, refs: dict) -> dict:
    runs = []
    keyed = {r["key"]: r for r in rows}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        order = [rows[i] for i in rng.choice(len(rows), size=min(n, len(rows)), replace=False)]
        runs.append(moasha_once(order, draw_seeds(keyed, 20_000 + seed), grace, eta, max_steps, refs))
    out: dict[str, Any] = {"grace": grace, "eta": eta, "configs": min(n, len(rows)), "orders": seeds}
    out["steps_ratio"] = dict(zip(("mean", "stderr"), mean_stderr([r["steps_ratio"] for r in runs])))
    for r in refs:
        full = [x[r]["full"] for x in runs]
        mo = [x[r]["moasha"] for x in runs]
        out[r] = {
            "moasha_vs_full": ratio_ci(mo, full, 1, paired=True),
            "moasha_vs_random_equal_steps": ratio_ci(mo, [x[r]["random_equal_steps"] for x in runs], 2, paired=True),
            "moasha_vs_flops_only_equal_steps": ratio_ci(
                mo, [x[r]["flops_only_equal_steps"] for x in runs], 3, paired=True
            ),
            "flops_only_vs_full": ratio_ci([x[r]["flops_only_equal_steps"] for x in runs], full, 4, paired=True),
            "random_vs_full": ratio_ci([x[r]["random_equal_steps"] for x in runs], full, 5, paired=True),
        }
        beats = out[r]["moasha_vs_flops_only_equal_steps"]["ci95"][0] > 1.0
        out[r]["target_met"] = bool(out[r]["moasha_vs_full"]["ratio"] >= 0.95 and out["steps_ratio"]["mean"] <= 0.5
                                    and beats)  # fmt: skip
    return out


# --------------------------------------------------------------------------- report


def plot(curves: dict, table_hv: float, moasha: list[dict], ref_name: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if moasha else 1, figsize=(11 if moasha else 6, 4), squeeze=False)
    a, b = axes[0][0], (axes[0][1] if moasha else None)
    x = np.arange(1, max(CHECKPOINTS) + 1)
    for name, runs in curves.items():
        arr = np.asarray(runs) / table_hv
        m, se = arr.mean(0), arr.std(0, ddof=1) / np.sqrt(len(arr))
        a.plot(x, m, label=name)
        a.fill_between(x, m - 2 * se, m + 2 * se, alpha=0.15)
    a.set(xlabel="trials", ylabel="hypervolume / whole table's",
          title=f"samplers (mean ± 2 s.e., {len(next(iter(curves.values())))} replays)")  # fmt: skip
    a.legend()
    if b is None:  # a table without learning curves (synthetic): no MO-ASHA panel
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        return
    labels = ("MO-ASHA", "random,\nequal steps", "FLOPs-only,\nequal steps")
    keys = ("moasha_vs_full", "random_vs_full", "flops_only_vs_full")
    for j, m in enumerate(moasha):
        vals = [m[ref_name][k]["ratio"] for k in keys]
        errs = np.abs(np.asarray([m[ref_name][k]["ci95"] for k in keys]).T - vals)
        b.bar(np.arange(3) + j * 0.4, vals, 0.4, yerr=errs, capsize=3,
              label=f"grace {m['grace']}, η {m['eta']:g}: {m['steps_ratio']['mean']:.0%} of the steps")  # fmt: skip
    b.axhline(0.95, color="k", lw=0.8, ls="--")
    b.set_xticks(np.arange(3) + 0.2 * (len(moasha) - 1), labels)
    b.set(ylabel="hypervolume / full fidelity's", title="MO-ASHA vs equal-step baselines (95% CI)")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", type=Path, default=ROOT / "benchmarks/data/tabular_quick.json")
    ap.add_argument("--seeds", type=int, default=100, help="replays per sampler, and MO-ASHA orders")
    ap.add_argument("--configs", type=int, default=32, help="random policies per MO-ASHA order")
    ap.add_argument("--grace", type=int, action="append", help="MO-ASHA grace steps (repeat; default max/4, max/2)")
    ap.add_argument("--eta", type=float, default=3.0)
    ap.add_argument("--jobs", type=int, default=2, help="replay processes")
    ap.add_argument("--first-seed", type=int, default=0, help="first sampler seed (fresh seeds confirm a 'best')")
    ap.add_argument(
        "--draws",
        choices=("shared", "independent"),
        default="shared",
        help="one seed per replay for every policy (as a sweep), or one per policy (the former rule)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/search_replay.json")
    ap.add_argument("--plot", type=Path, default=ROOT / "benchmarks/results/search_replay.png")
    args = ap.parse_args()
    DRAWS["mode"] = args.draws
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("optuna").setLevel(logging.ERROR)
    table = load_table(args.table)
    space = load_space(ROOT / table["space"])
    ok = complete_rows(table)
    rows = {r["key"]: r for r in ok}
    syn = sorted(r["synergy_gain"] for r in ok)
    refs = {"dense": (1.0, table["reference"]["synergy_gain"]), "worst": (1.0, syn[0])}
    table_hv = {r: hypervolume(ok, ref)[0] for r, ref in refs.items()}
    print(f"{len(ok)} policies; references {refs}; table hypervolume {table_hv}", flush=True)
    curves = sampler_runs(space, rows, range(args.first_seed, args.first_seed + args.seeds), refs, args.jobs)
    summary = {key: summarise(curves[key], table_hv[key.split(":")[0]]) for key in curves}
    graces = args.grace or [table["max_steps"] // 4, table["max_steps"] // 2]
    has_curves = all(run.get("curve") for r in ok for run in r["seeds"])
    moasha = [moasha_runs(ok, args.configs, args.seeds, g, args.eta, table["max_steps"], refs) for g in graces
              if has_curves]  # fmt: skip
    dense = summary["dense"]
    best = max((n for n in SAMPLERS if n not in ("random", "cheapest")), key=lambda n: dense[n]["hv@16"]["mean"])
    vs = dense[best]["hv@16"]["vs_random"]
    kc = dense["known_cost"]["hv@16"]
    targets = {"T1 known_cost HV@16 >= 1.2 x random": {**kc["vs_random"], "met": kc["vs_random"]["ratio"] >= 1.2},
               "T2 known_cost HV@16 >= cheapest + 0.2": {**kc["minus_cheapest"],
                                                         "met": kc["minus_cheapest"]["diff"] >= 0.2}}  # fmt: skip
    result = {
        "draws": args.draws, "targets": targets, "synthetic": table.get("synthetic"),
        "table": str(args.table.relative_to(ROOT)) if args.table.is_relative_to(ROOT) else str(args.table),
        "command": "python benchmarks/search_replay.py " + " ".join(
            f"--{k} {v}" for k, v in (("table", args.table), ("seeds", args.seeds), ("first-seed", args.first_seed),
                                      ("configs", args.configs), ("eta", args.eta), ("draws", args.draws))),
        "policies": len(ok), "seeds_per_policy": len(ok[0]["seeds"]),
        "dense_synergy": [table["reference"]["synergy_gain"], table["reference"]["synergy_gain_stderr"]],
        "policies_above_dense_synergy": sum(1 for r in ok if r["synergy_gain"] > refs["dense"][1]),
        "refs": refs, "table_hv": table_hv, "replays": args.seeds, "bootstrap": BOOT,
        "settings": {"tpe_gp_startup_trials": STARTUP, "nsga2_population": POPULATION},
        "samplers": summary, "best_sampler": best, "best_vs_random_hv@16": vs,
        "sampler_target_met": bool(vs["ratio"] >= 1.15 and vs["ci95"][0] > 1.05),
        "moasha": moasha,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(curves["dense"], table_hv["dense"], moasha, "dense", args.plot)
    print_tables(result)
    print(f"wrote {args.out} and {args.plot}")


def print_tables(result: dict) -> None:
    print(f"{result['policies']} policies x {result['seeds_per_policy']} seeds; dense synergy "
          f"{result['dense_synergy'][0]:+.4f} ± {result['dense_synergy'][1]:.4f}; "
          f"{result['policies_above_dense_synergy']} policies above it")  # fmt: skip
    for r, summary in result["samplers"].items():
        base = r.split(":")[0]
        print(f"\nreference {r} {tuple(round(v, 4) for v in result['refs'][base])}: "
              f"table hypervolume {result['table_hv'][base]:.5f}")  # fmt: skip
        print(f"{'sampler':<8}" + "".join(f"{'HV@' + str(k) + ' / random [95% CI]':>34}" for k in (16, 32)))
        for name, s in summary.items():
            cells = ""
            for k in (16, 32):
                h = s[f"hv@{k}"]
                vr = h.get("vs_random")
                tail = f" {vr['ratio']:.3f} [{vr['ci95'][0]:.3f}, {vr['ci95'][1]:.3f}]" if vr else " 1"
                cells += f"{h['share_of_table']:>10.3f} ±{h['stderr'] / result['table_hv'][base]:.3f}{tail:>22}"
            print(f"{name:<8}{cells}")
    vs = result["best_vs_random_hv@16"]
    print(f"\nbest sampler (reference dense) {result['best_sampler']}: HV@16 {vs['ratio']:.3f} x random "
          f"[{vs['ci95'][0]:.3f}, {vs['ci95'][1]:.3f}] (target >= 1.15, CI above 1.05: "
          f"{'met' if result['sampler_target_met'] else 'MISSED'})")  # fmt: skip
    for name, t in result["targets"].items():
        point = t.get("ratio", t.get("diff"))
        print(f"{name}: {point:.3f} [{t['ci95'][0]:.3f}, {t['ci95'][1]:.3f}] {'met' if t['met'] else 'MISSED'}")
    for m in result["moasha"]:
        for r in result["refs"]:
            x = m[r]
            fmt = lambda d: f"{d['ratio']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]"  # noqa: E731
            print(f"MO-ASHA grace {m['grace']} η {m['eta']:g}, ref {r}: {m['steps_ratio']['mean']:.2f} of the steps; "
                  f"HV vs full {fmt(x['moasha_vs_full'])}, vs random at equal steps "
                  f"{fmt(x['moasha_vs_random_equal_steps'])}, "
                  f"vs FLOPs-only {fmt(x['moasha_vs_flops_only_equal_steps'])}"
                  f" (target {'met' if x['target_met'] else 'MISSED'})")  # fmt: skip


if __name__ == "__main__":
    main()

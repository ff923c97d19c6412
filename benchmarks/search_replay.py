"""Search efficiency on a stored table: replay samplers and MO-ASHA without training.

The table (`tabular_build.py`) holds one real trial per policy of a finite space, with its
learning curve. Each sampler (Optuna TPE, NSGA-II, GP, random; the sweep's own
`make_sampler`) proposes points through `SearchSpace.suggest`; the answer is looked up, not
trained. Hypervolume (`searchvlm.pareto.hypervolume`, one fixed reference point for every
run: FLOPs 1.0 and the worst synergy gain in the table) after 8, 16, 32 trials, 5 seeds.
MO-ASHA (the sweep's `MOASHA.decide`, fed the stored per-round validation metrics the way
Ray feeds it reports) is compared with full fidelity on the same sequence of random
configurations: hypervolume of the completed trials vs training steps spent.

    .venv/bin/python benchmarks/search_replay.py [--table benchmarks/data/tabular_quick.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from _tabular import load_table, policy_key, rows_by_key
from searchvlm.pareto import default_ref, hypervolume
from searchvlm.space import SearchSpace, load_space

ROOT = Path(__file__).resolve().parents[1]
SAMPLERS = ("random", "tpe", "nsga2", "gp")
CHECKPOINTS = (8, 16, 32)
STARTUP = 5  # TPE / GP random start-up trials (Optuna's default 10 is a third of a 32-trial run)
POPULATION = 8  # NSGA-II population (the default 50 never leaves its random first generation)
Row = dict[str, Any]


def sampler_space(space: SearchSpace, name: str, seed: int) -> SearchSpace:
    search = space.search.model_copy(
        update={"sampler": name, "seed": seed, "startup_trials": STARTUP, "population_size": POPULATION}
    )
    return space.model_copy(update={"search": search})


def replay(space: SearchSpace, rows: dict[str, Row], sampler: optuna.samplers.BaseSampler, n: int) -> list[Row]:
    """Run `n` ask/tell trials of `sampler` on the table; the rows it visited, in order."""
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=sampler)
    seen: list[Row] = []
    for _ in range(n):
        trial = study.ask()
        row = rows[policy_key(space.policy_from_params(space.suggest(trial)))]
        if row["status"] == "ok":
            study.tell(trial, [row["flops_ratio"], row["synergy_gain"]])
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        seen.append(row)
    return seen


def hv_at(seen: list[Row], ref: tuple[float, float], checkpoints=CHECKPOINTS) -> dict[int, float]:
    return {k: hypervolume(seen[:k], ref)[0] for k in checkpoints}


def sampler_runs(space: SearchSpace, rows: dict[str, Row], ref, seeds: int) -> dict[str, list[list[float]]]:
    """Per sampler, per seed: hypervolume after every trial up to max(CHECKPOINTS)."""
    from searchvlm.sweep._searcher import make_sampler

    out: dict[str, list[list[float]]] = {}
    n = max(CHECKPOINTS)
    for name in SAMPLERS:
        out[name] = []
        for seed in range(seeds):
            seen = replay(space, rows, make_sampler(sampler_space(space, name, seed)), n)
            out[name].append([hypervolume(seen[:k], ref)[0] for k in range(1, n + 1)])
    return out


def moasha_trace(order: list[Row], grace: int, eta: float, max_steps: int, ref) -> list[tuple[int, float]]:
    """(steps spent, hypervolume of completed trials) after each trial, MO-ASHA deciding."""
    from searchvlm.sweep._moasha import MOASHA

    sched = MOASHA(["flops_ratio", "synergy_gain"], ["min", "max"], grace, max_steps, eta)
    spent, done, trace = 0, [], [(0, 0.0)]
    for i, row in enumerate(order):
        steps = _run_until_stop(sched, str(i), row, max_steps)
        spent += steps
        if steps == max_steps and row["status"] == "ok":
            done.append(row)
        trace.append((spent, hypervolume(done, ref)[0]))
    return trace


def _run_until_stop(sched: Any, trial_id: str, row: Row, max_steps: int) -> int:
    """Feed the stored per-round reports to the scheduler; the steps the trial trained."""
    for step, synergy, *_ in row["curve"]:
        if step >= max_steps:
            return max_steps
        if sched.decide(trial_id, int(step), {"flops_ratio": row["flops_ratio"], "synergy_gain": synergy}) == "STOP":
            return int(step)
    return int(row["curve"][-1][0]) if row["curve"] else 0


def full_trace(order: list[Row], max_steps: int, ref) -> list[tuple[int, float]]:
    trace = [(0, 0.0)]
    for i in range(len(order)):
        trace.append(((i + 1) * max_steps, hypervolume(order[: i + 1], ref)[0]))
    return trace


def moasha_runs(table_rows: list[Row], n: int, seeds: int, grace: int, eta: float, max_steps: int, ref) -> dict:
    """Per seed: one random order of `n` configurations, MO-ASHA vs full fidelity."""
    runs = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        order = [table_rows[i] for i in rng.choice(len(table_rows), size=n, replace=False)]
        ma, ff = moasha_trace(order, grace, eta, max_steps, ref), full_trace(order, max_steps, ref)
        runs.append({"moasha": ma, "full": ff, "hv_ratio": ma[-1][1] / ff[-1][1] if ff[-1][1] else None,
                     "steps_ratio": ma[-1][0] / ff[-1][0]})  # fmt: skip
    ratios = [r["hv_ratio"] for r in runs if r["hv_ratio"] is not None]
    return {"grace": grace, "eta": eta, "configs": n, "runs": runs,
            "median_hv_ratio": statistics.median(ratios), "median_steps_ratio": statistics.median(r["steps_ratio"] for r in runs),
            "target_met": statistics.median(ratios) >= 0.95 and statistics.median(r["steps_ratio"] for r in runs) <= 0.5}  # fmt: skip


def summarise(curves: dict[str, list[list[float]]], best_hv: float) -> dict[str, dict[str, Any]]:
    out = {}
    for name, runs in curves.items():
        out[name] = {
            f"hv@{k}": {"median": statistics.median(r[k - 1] for r in runs), "per_seed": [r[k - 1] for r in runs]}
            for k in CHECKPOINTS
        }
        out[name]["share_of_table_hv@16"] = out[name]["hv@16"]["median"] / best_hv
    return out


def plot(curves: dict, moasha: list[dict], best_hv: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(1, max(CHECKPOINTS) + 1)
    for name, runs in curves.items():
        arr = np.asarray(runs) / best_hv  # (seeds, n)
        a.plot(x, np.median(arr, 0), label=name)
        a.fill_between(x, np.percentile(arr, 25, 0), np.percentile(arr, 75, 0), alpha=0.15)
    a.set(xlabel="trials", ylabel="hypervolume / table's best", title="samplers (median, IQR; 5 seeds)")
    a.legend()
    for cfg, style in zip(moasha, ("-", "--")):
        for key, color in (("moasha", "C3"), ("full", "C0")):
            if key == "full" and style == "--":
                continue
            for i, run in enumerate(cfg["runs"]):
                s, h = zip(*run[key])
                lab = (f"MO-ASHA grace {cfg['grace']}, η {cfg['eta']:g}" if key == "moasha" else "full fidelity") if i == 0 else None
                b.plot(s, np.asarray(h) / best_hv, style, color=color if style == "-" else "C2", alpha=0.6, label=lab)
    b.set(xlabel="training steps spent", ylabel="hypervolume / table's best",
          title=f"MO-ASHA vs full fidelity ({moasha[0]['configs']} random configs, 5 orders)")  # fmt: skip
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", type=Path, default=ROOT / "benchmarks/data/tabular_quick.json")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--configs", type=int, default=64, help="random configurations per MO-ASHA run")
    ap.add_argument("--grace", type=int, action="append", help="MO-ASHA grace steps (repeat; default max/6, max/2)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/search_replay.json")
    ap.add_argument("--plot", type=Path, default=ROOT / "benchmarks/results/search_replay.png")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("optuna").setLevel(logging.ERROR)
    table = load_table(args.table)
    space = load_space(ROOT / table["space"])
    rows = rows_by_key(table)
    ref = default_ref(table["rows"])
    best_hv = hypervolume(table["rows"], ref)[0]
    curves = sampler_runs(space, rows, ref, args.seeds)
    summary = summarise(curves, best_hv)
    base = summary["random"]["hv@16"]["median"]
    best = max((n for n in SAMPLERS if n != "random"), key=lambda n: summary[n]["hv@16"]["median"])
    ok = [r for r in table["rows"] if r["status"] == "ok"]
    graces = args.grace or [table["max_steps"] // 6, table["max_steps"] // 2]  # 60 steps: 10, 30; 300: 50, 150
    moasha = [moasha_runs(ok, args.configs, args.seeds, g, 3.0, table["max_steps"], ref) for g in graces]
    result = {
        "table": str(args.table.relative_to(ROOT)) if args.table.is_relative_to(ROOT) else str(args.table),
        "points": len(table["rows"]), "ref": ref, "table_hv": best_hv, "seeds": args.seeds,
        "settings": {"tpe_gp_startup_trials": STARTUP, "nsga2_population": POPULATION},
        "samplers": summary, "best_sampler": best,
        "best_vs_random_hv@16": summary[best]["hv@16"]["median"] / base if base else None,
        "moasha": [{k: v for k, v in m.items() if k != "runs"} | {"per_seed": [
            {"hv_ratio": r["hv_ratio"], "steps_ratio": r["steps_ratio"]} for r in m["runs"]]} for m in moasha],
    }  # fmt: skip
    result["sampler_target_met"] = bool(result["best_vs_random_hv@16"] and result["best_vs_random_hv@16"] >= 1.15)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(curves, moasha, best_hv, args.plot)
    print_tables(result)
    print(f"wrote {args.out} and {args.plot}")


def print_tables(result: dict) -> None:
    print(f"table: {result['points']} points, hypervolume {result['table_hv']:.4f} (ref {result['ref']})")
    print(f"{'sampler':<8}" + "".join(f"{'hv@' + str(k):>10}" for k in CHECKPOINTS) + f"{'share@16':>10}")
    for name, s in result["samplers"].items():
        vals = "".join(f"{s[f'hv@{k}']['median']:>10.4f}" for k in CHECKPOINTS)
        print(f"{name:<8}{vals}{s['share_of_table_hv@16']:>10.2f}")
    print(f"best sampler {result['best_sampler']}: {result['best_vs_random_hv@16']:.2f} x random at 16 trials")
    for m in result["moasha"]:
        print(f"MO-ASHA grace {m['grace']} eta {m['eta']:g}: hv {m['median_hv_ratio']:.3f} of full fidelity "
              f"with {m['median_steps_ratio']:.2f} of the steps (target {'met' if m['target_met'] else 'MISSED'})")


if __name__ == "__main__":
    main()

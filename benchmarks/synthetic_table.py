"""A synthetic trade-off table for ranking searchers: the generator is the definition.

Same format as `tabular_build.py`'s tables (`searchvlm.tabular/v2`), built without training
from a real table's policies and their exact FLOPs ratios (default: the former quick proxy's
72 policies). A row's `synergy_gain` is its TRUE synergy (what a search is scored on); its
`seeds` hold what one seed shows (what a search sees). Generator (DECIDE_PLAN.md section 2):

    true synergy   s_p = S_DENSE - CURVE * (1 - f_p)^2 + e_p,   e_p ~ N(0, POLICY_SD)
    seed i shows   s_p + u_i + n_pi,   u_i ~ N(0, SEED_SD) shared by every policy, n_pi ~ N(0, NOISE_SD)

so cheaper policies lose synergy on average, some beat the trend, and one seed's view is
noisy (paired across policies through u_i, as a sweep's seeds are). The dense reference
row's true synergy is S_DENSE; its seeds show S_DENSE + u_i + its own n.

    .venv/bin/python benchmarks/synthetic_table.py [--seed 0] [--out benchmarks/data/synthetic_tradeoff.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from _tabular import FORMAT, load_table

ROOT = Path(__file__).resolve().parents[1]
S_DENSE, CURVE, POLICY_SD, SEED_SD, NOISE_SD, SEEDS = 0.10, 0.40, 0.05, 0.03, 0.03, 10


def true_synergy(flops: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return S_DENSE - CURVE * (1.0 - flops) ** 2 + rng.normal(0.0, POLICY_SD, size=len(flops))


def seed_runs(true: float, flops: float, shared: np.ndarray, rng: np.random.Generator) -> list[dict]:
    shows = true + shared + rng.normal(0.0, NOISE_SD, size=len(shared))  # (SEEDS,)
    return [{"seed": i, "status": "ok", "error": None, "flops_ratio": flops, "synergy_gain": float(v), "curve": []}
            for i, v in enumerate(shows)]  # fmt: skip


def build(source: dict, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    rows = [r for r in source["rows"] if r["status"] == "ok"]
    flops = np.array([r["flops_ratio"] for r in rows])
    true = true_synergy(flops, rng)
    shared = rng.normal(0.0, SEED_SD, size=SEEDS)  # (SEEDS,) seed effects shared by all policies
    out = []
    for r, f, s in zip(rows, flops, true):
        out.append({"key": r["key"], "params": r["params"], "status": "ok", "error": None, "flops_ratio": float(f),
                    "synergy_gain": float(s), "seeds": seed_runs(float(s), float(f), shared, rng)})  # fmt: skip
    dense = {"key": "dense", "params": None, "status": "ok", "error": None, "flops_ratio": 1.0,
             "synergy_gain": S_DENSE, "synergy_gain_stderr": 0.0,
             "seeds": seed_runs(S_DENSE, 1.0, shared, rng)}  # fmt: skip
    generator = {"S_DENSE": S_DENSE, "CURVE": CURVE, "POLICY_SD": POLICY_SD, "SEED_SD": SEED_SD,
                 "NOISE_SD": NOISE_SD, "SEEDS": SEEDS, "seed": seed}  # fmt: skip
    return {"format": FORMAT, "space": source["space"], "space_hash": source["space_hash"], "synthetic": generator,
            "command": f"python benchmarks/synthetic_table.py --seed {seed}", "curve_columns": [],
            "max_steps": source["max_steps"], "rows": out, "reference": dense}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=ROOT / "benchmarks/data/tabular_quick.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/data/synthetic_tradeoff.json")
    args = ap.parse_args()
    table = build(load_table(args.source), args.seed)
    args.out.write_text(json.dumps(table) + "\n")
    above = sum(r["synergy_gain"] > S_DENSE for r in table["rows"])
    print(f"wrote {args.out}: {len(table['rows'])} policies x {SEEDS} seeds, {above} truly above dense's synergy")


if __name__ == "__main__":
    main()

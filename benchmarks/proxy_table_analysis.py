"""PROXY_TABLE_PLAN.md's analyses 1 and 4 on the proxy table (complete rows only).

1. Is there a policy effect? Two-way ANOVA without interaction, y ~ policy + seed, over the
   complete non-dense rows (F test), Friedman's test beside it; for synergy_gain and
   synergy_vs_dense; the share of the variance each term explains.
4. Noise for MO-ASHA rungs: at each evaluation round, the seed SD of validation synergy
   (from the curves), pooled over policies (root mean of the per-policy variances).

    .venv/bin/python benchmarks/proxy_table_analysis.py [--table benchmarks/data/proxy_table.json]

A partial table is analysed as partial: the output says how many rows were complete.
Writes `benchmarks/results/proxy_table_analysis.json`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from _tabular import complete_rows

ROOT = Path(__file__).resolve().parents[1]


def matrix(rows: list[dict[str, Any]], key: str, seeds: list[int]) -> np.ndarray:
    """(policies, seeds) of `key`, seeds in `seeds` order."""
    return np.array([[next(s[key] for s in r["seeds"] if s["seed"] == seed) for seed in seeds] for r in rows])


def two_way_anova(y: np.ndarray) -> dict[str, Any]:
    """y (P, S), one observation per cell: y = mu + policy + seed + e."""
    p, s = y.shape
    mu = y.mean()
    ss_pol = s * ((y.mean(1) - mu) ** 2).sum()
    ss_seed = p * ((y.mean(0) - mu) ** 2).sum()
    ss_tot = ((y - mu) ** 2).sum()
    ss_res = max(ss_tot - ss_pol - ss_seed, 0.0)  # rounding can leave a tiny negative
    df_pol, df_seed, df_res = p - 1, s - 1, (p - 1) * (s - 1)
    f_pol = (ss_pol / df_pol) / (ss_res / df_res)
    f_seed = (ss_seed / df_seed) / (ss_res / df_res)
    return {
        "policy": {"F": float(f_pol), "df": [df_pol, df_res], "p": float(stats.f.sf(f_pol, df_pol, df_res)),
                   "share_of_variance": float(ss_pol / ss_tot)},
        "seed": {"F": float(f_seed), "df": [df_seed, df_res], "p": float(stats.f.sf(f_seed, df_seed, df_res)),
                 "share_of_variance": float(ss_seed / ss_tot)},
        "residual_sd": float(np.sqrt(ss_res / df_res)),
    }  # fmt: skip


def friedman(y: np.ndarray) -> dict[str, float]:
    """Policies as treatments, seeds as blocks."""
    res = stats.friedmanchisquare(*y)
    return {"chi2": float(res.statistic), "p": float(res.pvalue)}


def rung_noise(rows: list[dict[str, Any]], columns: list[str]) -> list[dict[str, float]]:
    """Per evaluation round: the pooled seed SD of validation synergy (curves' synergy_gain)."""
    col = columns.index("synergy_gain")
    by_step: dict[int, list[float]] = {}
    for r in rows:
        curves = [{int(c[0]): c[col] for c in s["curve"]} for s in r["seeds"]]
        for step in curves[0]:
            vals = [c[step] for c in curves if step in c]
            if len(vals) > 1:
                by_step.setdefault(step, []).append(float(np.var(vals, ddof=1)))
    return [{"step": k, "seed_sd": float(np.sqrt(np.mean(v))), "policies": len(v)} for k, v in sorted(by_step.items())]


def analyse(table: dict[str, Any]) -> dict[str, Any]:
    rows = complete_rows(table)
    out: dict[str, Any] = {"table": table.get("space"), "plan": table.get("plan"), "complete_rows": len(rows),
                           "rows_planned": 48, "seeds": table["seeds"], "machine": table.get("machine")}  # fmt: skip
    machines = {s.get("machine") for r in rows for s in r["seeds"]}
    out["cpu_models"] = sorted(m for m in machines if m)
    if len(out["cpu_models"]) > 1:  # PROXY_TABLE_PLAN.md addendum 3
        out["pooled"] = ("runs from several CPU models are pooled: every start of proxy_table.py retrains the "
                         "held dense references and stops unless they are reproduced exactly (addendum 3); "
                         "kernels per run: " + ", ".join(sorted({str(s.get("isa") or "native, not recorded")
                                                                for r in rows for s in r["seeds"]})))  # fmt: skip
    if len(rows) < 2:
        out["note"] = "fewer than 2 complete rows: nothing to test yet"
        return out
    for key in ("synergy_gain", "synergy_vs_dense"):
        y = matrix(rows, key, table["seeds"])
        out[key] = {"anova": two_way_anova(y), "friedman": friedman(y) if len(rows) > 2 else None,
                    "policy_means_range": [float(y.mean(1).min()), float(y.mean(1).max())]}  # fmt: skip
    out["rung_noise"] = rung_noise(rows, table["curve_columns"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", type=Path, default=ROOT / "benchmarks/data/proxy_table.json")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/proxy_table_analysis.json")
    args = ap.parse_args()
    result = analyse(json.loads(args.table.read_text()))
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rung_noise"}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

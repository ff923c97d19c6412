"""Does the gradient conflict predict the synergy a policy loses? docs/diagnose.md's rule.

Fixed in docs/diagnose.md before any correlation was computed: the predictor is each
policy's whole-model gradient cosine at initialisation (`searchvlm diagnose --steps 0`,
`overall.cosine` at `init`), the target its mean Δsynergy against dense (`synergy_vs_dense`)
in the proxy table (`proxy_table.py`), the statistic Kendall's tau over the table's complete
rows with a 95% percentile bootstrap interval (10,000 resamples of the policies), and the
rule: a search prior if |tau| >= 0.4 with the interval excluding 0.

    python benchmarks/diagnose_tau.py --cosines   # measure every table policy's init cosine (about 3 s each)
    python benchmarks/diagnose_tau.py             # the tau on the table's complete rows

The cosines are written once to `benchmarks/results/diagnose_init.json` (keyed by the table's
row keys, seed 0, the command's defaults: 4 batches of 16 per task) and reused.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from _tabular import complete_rows

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "benchmarks/data/proxy_table.json"
POINTS = ROOT / "benchmarks/data/proxy_table_points.json"
COSINES = ROOT / "benchmarks/results/diagnose_init.json"
BOOT, THRESHOLD = 10_000, 0.4


def init_cosine(space: Path, policy: dict[str, Any]) -> float:
    """`overall.cosine` at initialisation of one explicit policy (diagnose --steps 0)."""
    from searchvlm.records.diagnose import DiagnoseRequest, run_diagnose

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.json"
        path.write_text(json.dumps(policy))
        outcome = run_diagnose(space, DiagnoseRequest(policy=path, steps=0, threads=1), out_dir=Path(tmp) / "out")
    (init,) = [c for c in outcome.report.checkpoints if c.label == "init"]
    return float(init.overall["cosine"])


def measure_cosines() -> dict[str, Any]:
    """Every table policy's init cosine (the table's order), resumable."""
    from _tabular import policy_key
    from searchvlm.schema.policy import ReductionPolicy

    points = json.loads(POINTS.read_text())
    done = json.loads(COSINES.read_text()) if COSINES.exists() else {"space": points["space"], "cosines": {}}
    space = ROOT / points["space"]
    for point in points["points"]:
        key = policy_key(ReductionPolicy.model_validate(point["policy"]))
        if key not in done["cosines"]:
            done["cosines"][key] = round(init_cosine(space, point["policy"]), 6)
            COSINES.write_text(json.dumps(done, indent=1) + "\n")
            print(f"{len(done['cosines'])}/{len(points['points'])}: {done['cosines'][key]:+.4f}", flush=True)
    return done


def kendall_tau(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b (ties in either variable reduce the denominator)."""
    from scipy.stats import kendalltau

    return float(kendalltau(x, y).statistic)


def tau_with_interval(x: np.ndarray, y: np.ndarray, seed: int = 0, boot: int = BOOT) -> dict[str, Any]:
    """tau and its 95% percentile bootstrap interval over `boot` resamples of the policies."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), (boot, len(x)))
    boot = np.array([kendall_tau(x[i], y[i]) for i in idx])
    lo, hi = np.nanpercentile(boot, [2.5, 97.5])
    return {"tau": kendall_tau(x, y), "ci95": [float(lo), float(hi)]}


def verdict(t: dict[str, Any]) -> str:
    lo, hi = t["ci95"]
    prior = abs(t["tau"]) >= THRESHOLD and (lo > 0 or hi < 0)
    return "a search prior (|tau| >= 0.4, interval excludes 0)" if prior else "not a search prior"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cosines", action="store_true", help="measure the table policies' init cosines first")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/diagnose_tau.json")
    args = ap.parse_args()
    cosines = measure_cosines()["cosines"] if args.cosines else json.loads(COSINES.read_text())["cosines"]
    table = json.loads(TABLE.read_text())
    rows = [r for r in complete_rows(table) if r["key"] in cosines]
    x = np.array([cosines[r["key"]] for r in rows])
    y = np.array([r["synergy_vs_dense"] for r in rows])
    result = {"rows": len(rows), "of": len(table["rows"]), "partial": len(rows) < 48,
              "predictor": "overall.cosine at init", "target": "mean synergy_vs_dense"}  # fmt: skip
    if len(rows) >= 3:
        result.update(tau_with_interval(x, y))
        result["verdict"] = verdict(result) + (" (a partial table: not the rule's reading)" if len(rows) < 48 else "")
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

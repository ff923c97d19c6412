"""CONTROLS_PLAN.md's C3: is the joint model's g_G only an under-regularised isolated generator?

Retrains the isolated generator alone at stronger AdamW weight decays (every other setting of
the space as shipped), picks each seed's weight decay by the baseline's OWN validation caption
accuracy at its best round (the plain row's 0.01 run is a candidate too), and scores the plain
row's joint model against that tuned baseline: C = g_G against it, D = C minus the plain g_G,
paired by seed, and the plan's rule (A / B / inconclusive).

The plain row is a `calibrate_proxy.py` file (its per-seed joint and isolated caption accuracy).
The retrained baselines are cached like every reference run (`runs/cache`, keyed by their
training config), so a rerun trains nothing.

    python benchmarks/regularised_baseline.py --seeds 60,61,62,63,64 --weight-decay 0.1,0.5 \
        --plain benchmarks/results/controls_plain.json --out benchmarks/results/controls_c3.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from searchvlm.objectives.synergy import checkpoint, mean_stderr, relative_gain
from searchvlm.schema.policy import ReductionPolicy
from searchvlm.schema.space import load_space
from searchvlm.train.baselines import RunRecord, baseline_key, get_baseline
from searchvlm.train.training import RunSpec

ROOT = Path(__file__).resolve().parents[1]
METRIC = "gen_caption_acc"


def tuned_baseline(space_path: Path, seed: int, decays: list[float], cache: Path) -> dict[str, Any]:
    """The isolated generator of `seed` at each weight decay (trained once, cached), and the one
    its own validation picks: {weight decay: (best validation, test at that round, round)}."""
    from searchvlm.train.trial import warm_reference

    space = load_space(space_path)
    runs = {}
    for wd in decays:
        config = space.trial_config(ReductionPolicy.dense(space.model.num_layers), "c3", str(cache))
        training = config.training.model_copy(update={"weight_decay": wd})
        config = config.model_copy(update={"seeds": [seed], "training": training})
        warm_reference(config, seed, "generation")
        runs[wd] = _scored(_record(config, seed, cache))
    pick = max(runs, key=lambda wd: (runs[wd]["val"], -wd))  # ties: the weaker decay
    return {"runs": {str(wd): r for wd, r in runs.items()}, "picked_weight_decay": pick, **runs[pick]}


def _record(config: Any, seed: int, cache: Path) -> RunRecord:
    from searchvlm.train.trial import prepare

    _, model_cfg = prepare(config, seed)
    policy = ReductionPolicy.dense(model_cfg.num_layers)
    spec = RunSpec(model_cfg, policy, config.training, ("generation",), seed)
    key = baseline_key(spec, config.data, config.synergy.fidelity)  # as searchvlm.train.trial keys it

    def missing() -> RunRecord:
        raise RuntimeError(f"seed {seed}: the warmed baseline is not in {cache} under {key}")

    return get_baseline(cache, key, missing)


def _scored(record: RunRecord) -> dict[str, Any]:
    c = checkpoint(METRIC, record.val[METRIC], record.test[METRIC], record.test_se[METRIC], "best")
    return {"val": record.val[METRIC][c.step], "test": c.value, "round": c.step, "last_round": max(record.val[METRIC])}


def plain_seeds(path: Path) -> dict[int, dict[str, float]]:
    """seed -> the plain row's joint and isolated caption accuracy (its last row in the file)."""
    row = json.loads(path.read_text())[-1]
    joint, iso = row[METRIC]["per_seed"], row[f"{METRIC}_iso"]["per_seed"]
    return {s: {"joint": j, "iso": i} for s, j, i in zip(row["seeds"], joint, iso)}


def verdict(c: tuple[float, float | None], d: tuple[float, float | None]) -> str:
    """CONTROLS_PLAN.md's rule for C3 on (mean, s.e.) of C and D."""
    (cm, cse), (dm, dse) = c, d
    if cse is None or dse is None:
        return "inconclusive (one seed)"
    if abs(cm) <= 2 * cse and dm < -2 * dse:
        return "A: the gain is not there once the baseline is regularised"
    if cm > 2 * cse:
        return "B: regularisation does not explain the gain"
    return "inconclusive at these seeds"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", type=Path, default=ROOT / "search_spaces/default.yaml")
    ap.add_argument("--seeds", default="60,61,62,63,64")
    ap.add_argument("--weight-decay", default="0.1,0.5", help="the stronger decays (the space's own is added)")
    ap.add_argument("--plain", type=Path, default=ROOT / "benchmarks/results/controls_plain.json")
    ap.add_argument("--cache", type=Path, default=ROOT / "runs/cache")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/controls_c3.json")
    args = ap.parse_args()
    plain = plain_seeds(args.plain)
    own = load_space(args.space).training.weight_decay
    decays = sorted({own, *(float(w) for w in args.weight_decay.split(","))})
    seeds = [int(s) for s in args.seeds.split(",")]
    if missing := [s for s in seeds if s not in plain]:
        raise SystemExit(f"{args.plain}: no plain row for seeds {missing}")
    rows = []
    for seed in seeds:
        tuned = tuned_baseline(args.space, seed, decays, args.cache)
        p = plain[seed]
        c, g = relative_gain(p["joint"], tuned["test"], True), relative_gain(p["joint"], p["iso"], True)
        rows.append({"seed": seed, "joint": p["joint"], "iso_plain": p["iso"], "g_G_plain": g, "C": c, "D": c - g,
                     **tuned})  # fmt: skip
        print(f"seed {seed}: weight decay {tuned['picked_weight_decay']:g} (round {tuned['round']}), "
              f"g_G {g:+.4f} -> {c:+.4f}", flush=True)  # fmt: skip
    cs, ds = mean_stderr([r["C"] for r in rows]), mean_stderr([r["D"] for r in rows])
    result = {"plan": "benchmarks/calibration/CONTROLS_PLAN.md (C3)", "space": str(args.space.relative_to(ROOT)),
              "weight_decays": decays, "seeds": seeds, "rows": rows, "C": cs, "D": ds, "verdict": verdict(cs, ds),
              "command": "python benchmarks/regularised_baseline.py --seeds " + args.seeds
              + f" --weight-decay {args.weight_decay} --plain {args.plain}"}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"C {cs[0]:+.4f} ± {cs[1] or 0:.4f}, D {ds[0]:+.4f} ± {ds[1] or 0:.4f}: {result['verdict']}")


if __name__ == "__main__":
    main()

"""Does the dense unified model beat both isolated baselines on a proxy? (issue: trials)

Runs the dense policy with several seeds for one or more variants of a search space's fixed
sections and prints joint vs isolated per task with standard errors. Results go to
`benchmarks/results/calibrate_proxy.json` (appended per variant).

    python benchmarks/calibrate_proxy.py search_spaces/default.yaml \
        --set data.train_size=1000 --set data.task_images=disjoint --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from searchvlm.policy import ReductionPolicy
from searchvlm.space import load_space
from searchvlm.synergy import mean_stderr
from searchvlm.trial import run_trial


def _parse_value(raw: str):
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("space")
    ap.add_argument("--set", action="append", default=[], help="dotted.key=value override")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="benchmarks/results/calibrate_proxy.json")
    args = ap.parse_args()
    space = load_space(args.space)
    base = space.trial_config(ReductionPolicy.dense(space.model.num_layers), name="calibrate")
    cfg = base.model_dump()
    for assignment in args.set:
        key, _, raw = assignment.partition("=")
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[leaf] = _parse_value(raw)
    cfg["seeds"] = [int(s) for s in args.seeds.split(",")]
    config = type(base).model_validate(cfg)
    start = time.perf_counter()
    result = run_trial(config)
    if result.status != "ok":
        raise SystemExit(f"trial failed: {result.error}")
    summary = _summary(result, args.set, time.perf_counter() - start, config)
    print(json.dumps(summary, indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    history = json.loads(out.read_text()) if out.exists() else []
    history.append(summary)
    out.write_text(json.dumps(history, indent=2))


def _summary(result, overrides, seconds, config) -> dict:
    ps = result.per_seed
    row = {"overrides": overrides, "seeds": result.seeds, "wall_seconds": round(seconds, 1),
           "config": {k: config.model_dump()[k] for k in ("model", "data", "training")}}
    for key in ("und_acc", "und_acc_iso", "gen_nll", "gen_nll_iso", "und_gain", "gen_gain", "synergy_gain"):
        mean, se = mean_stderr([p[key] for p in ps])
        row[key] = {"mean": round(mean, 5), "stderr": None if se is None else round(se, 5),
                    "per_seed": [round(p[key], 5) for p in ps]}
    row["both_gain_beyond_stderr"] = all(
        row[k]["mean"] > 0 and (row[k]["stderr"] or 0) < row[k]["mean"] for k in ("und_gain", "gen_gain")
    )
    row["train_seconds_per_seed"] = round(result.train_seconds / max(1, len(ps)), 1)
    return row


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()

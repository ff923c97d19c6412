"""Does the dense unified model beat both isolated baselines on a proxy?

Runs the dense policy with several seeds for one variant of a search space's fixed sections
and prints joint vs isolated per task: each run scored at its own best validation
checkpoint (`synergy.at: best`, unless `--set synergy.at=final`), gains paired by seed with
their standard errors, the test-set standard error beside the seed spread, and the steps
picked. A variant passes when both gains are more than 2 paired standard errors above
zero. Results are appended to `benchmarks/results/calibrate_proxy_best.json`
(`calibrate_proxy.json` holds the earlier rows, scored at the final step).

    python benchmarks/calibrate_proxy.py search_spaces/default.yaml \
        --set data.train_size=1000 --set data.task_images=disjoint --seeds 0,1,2,3,4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from searchvlm.objectives.synergy import mean_stderr
from searchvlm.schema.config import TrialConfig
from searchvlm.schema.errors import ConfigError
from searchvlm.schema.overrides import validate_overridden
from searchvlm.schema.space import load_space
from searchvlm.train.trial import run_trial


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("space")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        help="key.path=value override of the trial config (YAML value; searchvlm.schema.overrides)",
    )
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--out", default="benchmarks/results/calibrate_proxy_best.json")
    args = ap.parse_args()
    space = load_space(args.space)
    base = space.trial_config(None, name="calibrate")  # dense at the (possibly overridden) depth
    cfg = base.model_dump()
    cfg["seeds"] = [int(s) for s in args.seeds.split(",")]
    try:  # the library's --set: validated like the file, a bad key named with --set
        config = validate_overridden(TrialConfig, cfg, args.space, args.set)
    except ConfigError as err:
        raise SystemExit("\n".join(f"error: {line}" for line in str(err).splitlines())) from None
    start = time.perf_counter()
    result = run_trial(config)
    if result.status != "ok":
        raise SystemExit(f"trial failed: {result.error}")
    summary = _summary(result, args.set, time.perf_counter() - start, config, args.space)
    print(json.dumps(summary, indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    history = json.loads(out.read_text()) if out.exists() else []
    history.append(summary)
    out.write_text(json.dumps(history, indent=2))


def _entry(values: list[float]) -> dict:
    mean, se = mean_stderr(values)
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return {
        "mean": round(mean, 5),
        "stderr": None if se is None else round(se, 5),
        "sd": None if sd is None else round(sd, 5),
        "per_seed": [round(v, 5) for v in values],
    }


def _summary(result, overrides, seconds, config, space_path: str) -> dict:
    ps = result.per_seed
    row = {
        "space": Path(space_path).stem,
        "overrides": overrides,
        "seeds": result.seeds,
        "wall_seconds": round(seconds, 1),
        "at": config.synergy.at,
        "config": {k: config.model_dump()[k] for k in ("model", "data", "training")},
    }
    keys = (
        "und_acc",
        "und_acc_iso",
        "gen_nll",
        "gen_nll_iso",
        "und_gain",
        "gen_gain",
        "synergy_gain",
        "und_acc_test_se",
        "gen_nll_test_se",
    )
    caption = ("gen_caption_acc", "gen_caption_acc_iso", "gen_caption_nats", "gen_caption_nats_iso")
    for key in keys + tuple(k for k in caption if all(getattr(p, k) is not None for p in ps)):
        row[key] = _entry([getattr(p, key) for p in ps])
    row["gen_metric"] = config.synergy.gen_metric
    for key in ("und_step_joint", "und_step_iso", "gen_step_joint", "gen_step_iso"):
        row[key] = [getattr(p, key) for p in ps]
    row["both_gain_beyond_2se"] = all(
        row[k]["mean"] > 0 and row[k]["mean"] > 2 * (row[k]["stderr"] or float("inf")) for k in ("und_gain", "gen_gain")
    )
    row["train_seconds_per_seed"] = round(result.train_seconds / max(1, len(ps)), 1)
    return row


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()

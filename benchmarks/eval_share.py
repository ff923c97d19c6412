"""Where a default trial's evaluation goes, and whether a cheaper metric picks the same rounds (issue 34 item 2).

1. **Time of one evaluation round** against 75 training steps (default.yaml's `eval_every`), CPU
   seconds on one thread, best of 3: understanding accuracy, generation NLL, and the caption
   scoring (one forward per swapped caption, 10 per image); and the swapped captions scored
   batched together (all hypotheses of the split in one pass, chunk sizes 256 / 1024 / 2200),
   which must give identical hits and margins.
2. **Round picks** (`--cache DIR`): for every cached run record that scored captions (baselines
   and dense joint references under `DIR/baselines`), the validation round the generation NLL
   picks (its earliest minimum) against the round caption accuracy picks (its earliest maximum,
   what `synergy.at: best` scores): picking caption rounds by the cheap NLL would remove the
   per-round caption scoring only if the two agree.

    .venv/bin/python benchmarks/eval_share.py [--cache runs/cache] [--out benchmarks/results/eval_share.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from searchvlm.data._types import TaskSplit
from searchvlm.objectives.synergy import best_step
from searchvlm.schema.policy import TASKS, ReductionPolicy
from searchvlm.schema.space import load_space
from searchvlm.train.training import Run, RunSpec, caption_scores, generation_example_nll, understanding_hits
from searchvlm.train.trial import prepare

ROOT = Path(__file__).resolve().parents[1]


def _best_of(fn, n: int = 3) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(n):
        t = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t)
    return best, out


def _all_hypotheses(gen: TaskSplit) -> TaskSplit:
    splits = [gen.with_caption(k) for k in range(gen.swaps.shape[1])]
    cat = lambda key: torch.cat([getattr(s, key) for s in splits])  # noqa: E731
    return TaskSplit(cat("input_ids"), cat("segments"), cat("labels"), np.concatenate([s.targets for s in splits]),
                     np.concatenate([s.image_codes for s in splits]))  # fmt: skip


def round_time(space_path: Path) -> dict[str, Any]:
    torch.set_num_threads(1)
    space = load_space(space_path)
    cfg = space.trial_config(None, name="eval-share")
    data, model_cfg = prepare(cfg)
    policy = ReductionPolicy.dense(model_cfg.num_layers)
    run = Run(RunSpec(model_cfg, policy, cfg.training, TASKS, 0), data, torch.device("cpu"))
    every = cfg.training.eval_every
    t = time.process_time()
    run.train_until(every)
    train = time.process_time() - t
    gen, und = data.split("val", "generation"), data.split("val", "understanding")
    t_und, _ = _best_of(lambda: understanding_hits(run.model, und))
    t_nll, nll = _best_of(lambda: generation_example_nll(run.model, gen))
    t_cap, (hit, nats) = _best_of(lambda: caption_scores(run.model, gen, nll))
    k = gen.swaps.shape[1]
    batched = {}
    for chunk in (256, 1024, 2200):
        tb, alts = _best_of(lambda c=chunk: generation_example_nll(run.model, _all_hypotheses(gen), batch=c))
        alts = alts.view(k, -1).T
        same = bool(((nll[:, None] < alts).all(1) == hit).all()) and bool(
            torch.allclose((alts - nll[:, None]).mean(1), nats)
        )
        batched[str(chunk)] = {"seconds": round(tb, 3), "identical": same}
    round_s = t_und + t_nll + t_cap
    return {"space": str(space_path.relative_to(ROOT)), "val_images": len(gen), "swaps_per_image": k,
            "train_steps": every, "train_cpu_s": round(train, 3), "und_acc_s": round(t_und, 3),
            "gen_nll_s": round(t_nll, 3), "caption_swaps_s": round(t_cap, 3), "round_s": round(round_s, 3),
            "eval_share_of_train_plus_eval": round(round_s / (train + round_s), 3),
            "batched_caption_swaps": batched}  # fmt: skip


def round_picks(cache: Path) -> dict[str, Any]:
    rows = []
    for f in sorted((cache / "baselines").glob("*.json")):
        rec = json.loads(f.read_text())
        val = rec.get("val", {})
        if "gen_caption_acc" not in val or "gen_nll" not in val:
            continue
        curve = {m: {int(s): v for s, v in val[m].items()} for m in ("gen_nll", "gen_caption_acc")}
        rows.append({"tasks": rec["tasks"], "seed": rec["seed"], "nll_round": best_step(curve["gen_nll"], False),
                     "caption_round": best_step(curve["gen_caption_acc"], True)})  # fmt: skip
    agree = sum(r["nll_round"] == r["caption_round"] for r in rows)
    return {"cache": str(cache), "runs": len(rows), "same_round": agree, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", type=Path, default=ROOT / "search_spaces/default.yaml")
    ap.add_argument("--cache", type=Path, default=None, help="a runs cache whose records to read for round picks")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/eval_share.json")
    args = ap.parse_args()
    out: dict[str, Any] = {"round_time": round_time(args.space.resolve())}
    if args.cache:
        out["round_picks"] = round_picks(args.cache)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "rows"} for k, v in out.items()}, indent=1))


if __name__ == "__main__":
    main()

"""Benchmark (issue 34 item 4): a default trial with its baselines cached against 600 x the lean step.

In one run, one thread: the lean reference decoder's dense step at the space's shape
(`benchmarks/lean_step.py`'s `lean_step`, median CPU time of interleaved repetitions), then one
trial of a preset on one seed whose baselines and dense reference are already in `--cache`
(so the trial trains the policy's joint run only, with its evaluation rounds). Target: the
trial's CPU time <= 1.15 x (steps x the lean dense step). The trial's own split (training vs
evaluation) is in `benchmarks/results/eval_share.json` (docs/performance.md section 8).

    .venv/bin/python benchmarks/trial_vs_lean.py --cache runs/cache-proxytable --seed 50 --preset himix
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lean_step import lean_step
from searchvlm.schema._host import machine
from searchvlm.schema.policy import preset
from searchvlm.schema.space import load_space
from searchvlm.train.trial import run_trial
from step_time import VOCAB, make_batches, time_interleaved

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.15


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", type=Path, default=ROOT / "search_spaces/default.yaml")
    ap.add_argument("--cache", type=Path, default=ROOT / "runs/cache-proxytable")
    ap.add_argument("--seed", type=int, default=50)
    ap.add_argument("--preset", default="himix")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/trial_vs_lean.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    space = load_space(args.space)
    cfg = space.model.model_copy(update={"vocab": VOCAB})
    batches = make_batches(space.training.batch_size, image_tokens=64)
    lean = time_interleaved({"lean dense": lean_step(cfg, batches)}, args.reps, 3)["lean dense"]["cpu"]
    config = space.trial_config(preset(args.preset, space.model.num_layers), name=args.preset,
                                cache_dir=str(args.cache)).model_copy(update={"seeds": [args.seed]})  # fmt: skip
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = run_trial(config)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    budget = space.training.steps * lean
    cache = args.cache.resolve().relative_to(ROOT) if args.cache.resolve().is_relative_to(ROOT) else args.cache
    out = {"command": f"python benchmarks/trial_vs_lean.py --cache {cache} --seed {args.seed} "
                      f"--preset {args.preset}",
           "machine": machine(), "space": str(args.space.relative_to(ROOT)), "steps": space.training.steps,
           "lean_dense_step_cpu_s": round(lean, 5), "budget_cpu_s": round(budget, 2),
           "trial": {"preset": args.preset, "seed": args.seed, "status": result.status, "cpu_s": round(cpu, 2),
                     "wall_s": round(wall, 2), "train_seconds": round(result.train_seconds, 2),
                     "baselines_cached": result.per_seed[0].baseline_cached if result.per_seed else None},
           "ratio": round(cpu / budget, 3), "target": TARGET, "met": cpu / budget <= TARGET}  # fmt: skip
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"lean dense step {lean * 1e3:.1f} ms CPU; {space.training.steps} steps = {budget:.1f} s; trial "
          f"{args.preset} seed {args.seed}: {cpu:.1f} s CPU ({wall:.1f} s wall) = {cpu / budget:.2f} x "
          f"(target <= {TARGET}: {'met' if cpu / budget <= TARGET else 'MISSED'})")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

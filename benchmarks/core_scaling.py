"""Do two trials at once run as fast as one? Per-process step time alone vs side by side (issue 23).

    .venv/bin/python benchmarks/core_scaling.py [--space search_spaces/quick.yaml] [--steps 100] [--rounds 3]

Each worker process builds the space's dense joint run (one torch thread) and times
`--steps` training steps. Rounds alternate 1 process alone and 2 processes at once (a
2-trial sweep's load, without Ray); the ratio of the per-process times says how much of a
second core a second trial really gets on this machine. Writes `--out` (JSON).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _work(space_path: str, steps: int, ready: mp.Queue, start: mp.Event, out: mp.Queue) -> None:
    import torch

    from searchvlm.schema.policy import TASKS, ReductionPolicy
    from searchvlm.schema.space import load_space
    from searchvlm.train.training import Run, RunSpec
    from searchvlm.train.trial import prepare

    torch.set_num_threads(1)
    space = load_space(space_path)
    cfg = space.trial_config(ReductionPolicy.dense(space.model.num_layers), "scaling")
    data, model_cfg = prepare(cfg)
    run = Run(RunSpec(model_cfg, cfg.resolved_policy(), cfg.training, TASKS, 0), data, torch.device("cpu"))
    run.train_until(5)  # warm-up
    ready.put(True)
    start.wait()
    t0 = time.perf_counter()
    run.train_until(5 + steps)
    out.put((time.perf_counter() - t0) / steps)


def _round(space: str, steps: int, n: int) -> list[float]:
    ctx = mp.get_context("spawn")
    ready, start, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_work, args=(space, steps, ready, start, out)) for _ in range(n)]
    for p in procs:
        p.start()
    for _ in procs:  # every process has built and warmed its run before the clock starts
        ready.get()
    start.set()
    times = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="search_spaces/quick.yaml")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/core_scaling.json")
    args = ap.parse_args()
    alone, pair = [], []
    for _ in range(args.rounds):
        alone += _round(args.space, args.steps, 1)
        pair += _round(args.space, args.steps, 2)
    res = {
        "space": args.space,
        "steps": args.steps,
        "alone_ms_per_step": [round(1000 * t, 2) for t in alone],
        "side_by_side_ms_per_step": [round(1000 * t, 2) for t in pair],
        "slowdown_median": round(statistics.median(pair) / statistics.median(alone), 3),
    }
    print(json.dumps(res, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Benchmark: joint training-step time of the literature presets relative to dense, vs analytic FLOPs.

One step = understanding + generation batches (forward with labels), summed loss, backward,
AdamW step. Presets are timed side by side in one run (interleaved repetitions, median), so
machine load hits them alike. Target: for every preset whose analytic FLOPs ratio is <= 0.6,
the measured time ratio is <= FLOPs ratio + 0.10. Time is the median CPU (process) time
of a step, robust to other processes sharing the cores; wall-clock ratios are reported too.

    .venv/bin/python benchmarks/step_time.py [--layers 4] [--hidden 96] [--reps 30] [--out PATH]
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from searchvlm.config import ModelConfig, VocabLayout
from searchvlm.flops import TaskLayout, flops_ratio
from searchvlm.model import apply_policy, build_model
from searchvlm.policy import Segment, preset

PRESET_NAMES = ("dense", "fastv", "pyramiddrop", "himix", "hmgen", "himix_hmgen")
VOCAB = VocabLayout(num_special=8, num_text=24, num_image=17)
# digits-like layouts, 72 tokens with 64 image tokens (segment, length)
LAYOUT = {
    "understanding": [(Segment.SYSTEM, 2), (Segment.IMAGE, 64), (Segment.INSTRUCTION, 3), (Segment.OUTPUT, 3)],
    "generation": [(Segment.SYSTEM, 1), (Segment.INSTRUCTION, 5), (Segment.IMAGE, 64), (Segment.SYSTEM, 2)],
}
TARGET = {"understanding": Segment.OUTPUT, "generation": Segment.IMAGE}
Batch = dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def make_batches(batch_size: int, seed: int = 0) -> Batch:
    """Random token ids per task: (input_ids, segments, labels), each (B, T)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for task, runs in LAYOUT.items():
        seg = torch.cat([torch.full((n,), int(s)) for s, n in runs]).expand(batch_size, -1).clone()
        ids = torch.randint(0, VOCAB.size, seg.shape, generator=g)
        labels = ids.masked_fill(seg != TARGET[task], -100)
        out[task] = (ids, seg, labels)
    return out


def layouts(batches: Batch) -> dict[str, TaskLayout]:
    out = {}
    for task, (ids, seg, labels) in batches.items():
        n_logit = int((labels[0, 1:] != -100).sum())
        out[task] = TaskLayout(ids.shape[1], int((seg[0] == Segment.IMAGE).sum()), n_logit)
    return out


def make_step(model: torch.nn.Module, name: str, layers: int, batches: Batch) -> Callable[[], None]:
    """A closure running one joint training step of `name` on its own copy of `model`."""
    reduced = apply_policy(copy.deepcopy(model), preset(name, layers))
    opt = torch.optim.AdamW(reduced.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = sum(
            reduced(ids, segments=seg, task=task, labels=labels).loss
            for task, (ids, seg, labels) in batches.items()
        )
        loss.backward()
        opt.step()

    return step


def time_interleaved(
    steps: dict[str, Callable[[], None]], reps: int, warmup: int
) -> dict[str, dict[str, float]]:
    """Median step seconds per preset, CPU ('cpu') and wall-clock ('wall').

    Every repetition runs each preset once, in shuffled order. CPU time (process time) is
    what a step costs; wall-clock time also holds the waits when other processes share the
    cores, so it is the noisier of the two on a loaded machine.
    """
    for _ in range(warmup):
        for step in steps.values():
            step()
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    wall: dict[str, list[float]] = {name: [] for name in steps}
    rng = random.Random(0)
    for _ in range(reps):
        order = list(steps)
        rng.shuffle(order)
        for name in order:
            c0, w0 = time.process_time(), time.perf_counter()
            steps[name]()
            cpu[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - w0)
    return {
        name: {"cpu": statistics.median(cpu[name]), "wall": statistics.median(wall[name])} for name in steps
    }


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    cfg = ModelConfig(num_layers=args.layers, hidden_size=args.hidden, vocab=VOCAB)
    torch.manual_seed(0)
    model = build_model(cfg)
    batches = make_batches(args.batch_size)
    lay = layouts(batches)
    steps = {name: make_step(model, name, args.layers, batches) for name in PRESET_NAMES}
    median = time_interleaved(steps, args.reps, args.warmup)
    rows = []
    for name in PRESET_NAMES:
        f = flops_ratio(cfg, preset(name, args.layers), lay, args.batch_size)
        t = median[name]["cpu"] / median["dense"]["cpu"]
        rows.append(
            {"preset": name, "flops_ratio": round(f, 4), "time_ratio": round(t, 4),
             "wall_time_ratio": round(median[name]["wall"] / median["dense"]["wall"], 4),
             "step_ms": round(1e3 * median[name]["cpu"], 2), "wall_step_ms": round(1e3 * median[name]["wall"], 2),
             "target_applies": f <= 0.6, "target_met": (t <= f + 0.10) if f <= 0.6 else None}
        )
    met = all(r["target_met"] for r in rows if r["target_applies"])
    return {"model": cfg.model_dump(), "batch_size": args.batch_size, "threads": args.threads,
            "reps": args.reps, "layouts": {t: vars(v) for t, v in lay.items()},
            "torch": torch.__version__, "rows": rows, "target_met": met}


def print_table(result: dict) -> None:
    print(f"{'preset':<14}{'flops':>8}{'time':>8}{'wall':>8}{'cpu ms':>9}{'wall ms':>9}  target")
    for r in result["rows"]:
        target = "-" if r["target_met"] is None else ("ok" if r["target_met"] else "MISSED")
        print(
            f"{r['preset']:<14}{r['flops_ratio']:>8.3f}{r['time_ratio']:>8.3f}{r['wall_time_ratio']:>8.3f}"
            f"{r['step_ms']:>9.1f}{r['wall_step_ms']:>9.1f}  {target}"
        )
    print(f"target (time <= flops + 0.10 where flops <= 0.6): {'met' if result['target_met'] else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4, help="decoder layers")
    parser.add_argument("--hidden", type=int, default=96, help="model width")
    parser.add_argument("--batch-size", type=int, default=32, help="examples per task per step")
    parser.add_argument("--reps", type=int, default=30, help="timed repetitions per preset")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per preset first")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a 1-CPU trial has 1)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/step_time.json"))
    args = parser.parse_args()
    result = run(args)
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Benchmark: why a reduced step can cost more than its FLOPs: fixed per-op cost vs per-example work.

`step_time.py` compares step time with analytic FLOPs at one batch size. This benchmark
splits a step's time into a part that does not grow with the batch (dispatching each
operator: Python, autograd, allocation; the same at batch 1 and 32) and a part that does.
For each chosen policy, its `:shared` variant (same keep schedule and selectors, every
weight shared) and dense, it times a joint training step side by side at a small and a
large batch (interleaved, shuffled repetitions, median CPU time), fits t(B) = a + b·B, and
counts the operators one step dispatches (forward, backward and AdamW, counted with a
`TorchDispatchMode`). Reported per policy: the time ratio at both batches, the intercept a
and slope b as ratios to dense, ops per step, and `if_fixed_scaled`: the large-batch ratio
the policy would have if its fixed cost shrank with its FLOPs ratio like its matmuls do.

`--fused-adamw` adds a `+fused` row per policy: the same step with `AdamW(fused=True)`
(not what training uses: its updates differ from the default AdamW's in the last bits).

    .venv/bin/python benchmarks/step_overhead.py [--policies random16,random07] [--hidden 96]
        [--batches 1,32] [--reps 15] [--fused-adamw] [--out benchmarks/results/step_overhead.json]

Policy names: a preset (`himix_hmgen`) or `randomNN`, the NN-th policy `step_time.py --random`
draws with the same `--seed` and `--space`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from searchvlm.model import build_model
from searchvlm.objectives.flops import flops_ratio
from searchvlm.schema.config import ModelConfig
from searchvlm.schema.policy import PRESETS, ReductionPolicy, Sharing, preset
from step_time import (
    VOCAB,
    add_common_args,
    layouts,
    make_batches,
    make_step,
    random_policies,
    run_main,
    time_interleaved,
)


class _OpCounter(TorchDispatchMode):
    """Counts every aten operator dispatched while active (backward ops included)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        self.ops += 1
        return func(*args, **(kwargs or {}))


def policies(args: argparse.Namespace) -> dict[str, ReductionPolicy]:
    """dense, then each named policy followed by its `:shared` variant (if it splits weights)."""
    wanted = [n for n in args.policies.split(",") if n]
    n_random = max((1 + int(n.removeprefix("random")) for n in wanted if n.startswith("random")), default=0)
    pool = random_policies(args.space, args.layers, n_random, args.seed) if n_random else {}
    out = {"dense": preset("dense", args.layers)}
    for name in wanted:
        if name.startswith("random"):
            pol = pool[name]
        elif name in PRESETS:
            pol = preset(name, args.layers)
        else:
            raise SystemExit(f"--policies: {name!r} is neither a preset ({', '.join(PRESETS)}) nor randomNN")
        out[name] = pol
        if pol.sharing != Sharing():
            out[f"{name}:shared"] = pol.model_copy(update={"sharing": Sharing(), "name": f"{name}:shared"})
    return out


def count_ops(step: Callable[[], None]) -> int:
    with _OpCounter() as counter:
        step()
    return counter.ops


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    cfg = ModelConfig(num_layers=args.layers, hidden_size=args.hidden, vocab=VOCAB)
    torch.manual_seed(0)
    model = build_model(cfg)
    pols = policies(args)
    small, large = (int(b) for b in args.batches.split(","))
    timed: dict[int, dict[str, dict[str, float]]] = {}
    ops: dict[str, int] = {}
    lay = None
    for b in (small, large):
        batches = make_batches(b)
        lay = layouts(batches)
        steps = {}
        for name, pol in pols.items():
            steps[name] = make_step(model, pol, batches)
            if args.fused_adamw:
                steps[f"{name}+fused"] = make_step(model, pol, batches, fused_adamw=True)
        timed[b] = time_interleaved(steps, args.reps, args.warmup)
        if b == small:
            ops = {name: count_ops(step) for name, step in steps.items()}
    rows = []
    d_small, d_large = timed[small]["dense"]["cpu"], timed[large]["dense"]["cpu"]
    d_slope = (d_large - d_small) / (large - small)
    d_fixed = d_small - small * d_slope
    for name in timed[large]:
        pol = pols[name.removesuffix("+fused")]
        f = flops_ratio(cfg, pol, lay, large)
        t_small, t_large = timed[small][name]["cpu"], timed[large][name]["cpu"]
        slope = (t_large - t_small) / (large - small)
        fixed = t_small - small * slope
        rows.append({
            "policy": name, "flops_ratio": round(f, 4),
            f"ms_b{small}": round(1e3 * t_small, 2), f"ms_b{large}": round(1e3 * t_large, 2),
            f"ratio_b{small}": round(t_small / d_small, 4), f"ratio_b{large}": round(t_large / d_large, 4),
            "fixed_ms": round(1e3 * fixed, 2), "fixed_ratio": round(fixed / d_fixed, 4),
            "slope_ratio": round(slope / d_slope, 4), "ops_per_step": ops[name],
            "ops_ratio": round(ops[name] / ops["dense"], 4),
            "if_fixed_scaled": round((f * d_fixed + large * slope) / d_large, 4),
            "target": round(f + 0.10, 4) if f <= 0.6 else None,
        })  # fmt: skip
    return {
        "model": cfg.model_dump(), "batches": [small, large], "threads": args.threads, "reps": args.reps,
        "torch": torch.__version__, "random_seed": args.seed, "random_space": str(args.space),
        "dense_fixed_ms": round(1e3 * d_fixed, 2), "dense_slope_ms": round(1e3 * d_slope, 3), "rows": rows,
    }  # fmt: skip


def print_table(result: dict) -> None:
    small, large = result["batches"]
    print(
        f"{'policy':<22}{'flops':>7}{f'b{small}':>8}{f'b{large}':>8}{'fixed ms':>10}{'fixed':>8}"
        f"{'slope':>8}{'ops':>7}{'ops×':>7}{'if fixed∝flops':>16}{'target':>8}"
    )
    for r in result["rows"]:
        target = "-" if r["target"] is None else f"{r['target']:.3f}"
        print(
            f"{r['policy']:<22}{r['flops_ratio']:>7.3f}{r[f'ratio_b{small}']:>8.3f}{r[f'ratio_b{large}']:>8.3f}"
            f"{r['fixed_ms']:>10.1f}{r['fixed_ratio']:>8.3f}{r['slope_ratio']:>8.3f}{r['ops_per_step']:>7}"
            f"{r['ops_ratio']:>7.2f}{r['if_fixed_scaled']:>16.3f}{target:>8}"
        )
    print(f"dense: fixed {result['dense_fixed_ms']:.1f} ms per step, {result['dense_slope_ms']:.2f} ms per example")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, reps=15)
    parser.add_argument("--policies", default="random16,random07,himix_hmgen", help="comma-separated names")
    parser.add_argument("--batches", default="1,32", help="small,large examples per task per step")
    parser.add_argument("--fused-adamw", action="store_true", help="also time each policy with fused AdamW")
    run_main(parser, run, print_table, "benchmarks/results/step_overhead.json")


if __name__ == "__main__":
    main()

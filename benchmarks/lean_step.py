"""Benchmark: searchvlm's joint training step against a lean reference decoder of the same shape.

A yardstick, never a code path (issue 34): a nanoGPT-style decoder written for speed alone
(one fused q/k/v matrix, SDPA with `is_causal`, RMSNorm, rotary positions, one fused SwiGLU
gate/up matrix, AdamW), at a space's model shape and batch, trained on the same two task
batches as `benchmarks/step_time.py`'s. Timed side by side with the project's step for dense
and three presets (interleaved repetitions, median CPU time of a step, one thread). Targets:
dense <= 1.1 x lean dense; each preset <= its FLOPs ratio + 0.10 (in units of lean dense).

    .venv/bin/python benchmarks/lean_step.py [--space search_spaces/default.yaml] [--reps 15]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from searchvlm.model import build_model
from searchvlm.objectives.flops import flops_ratio
from searchvlm.schema.config import ModelConfig
from searchvlm.schema.policy import preset
from searchvlm.schema.space import load_space
from step_time import VOCAB, layouts, make_batches, make_step, time_interleaved

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ("dense", "fastv", "himix", "himix_hmgen")


def _rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)  # (B, h, T, hs/2) each
    return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)


class LeanBlock(nn.Module):
    def __init__(self, d: int, heads: int, kv_heads: int, mlp: int) -> None:
        super().__init__()
        self.h, self.kv, self.hs = heads, kv_heads, d // heads
        self.n1, self.n2 = nn.RMSNorm(d), nn.RMSNorm(d)
        self.qkv = nn.Linear(d, (heads + 2 * kv_heads) * self.hs, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.gate_up = nn.Linear(d, 2 * mlp, bias=False)
        self.down = nn.Linear(mlp, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.qkv(self.n1(x)).split([self.h * self.hs, self.kv * self.hs, self.kv * self.hs], dim=-1)
        q = _rotary(q.view(B, T, self.h, self.hs).transpose(1, 2), cos, sin)  # (B, h, T, hs)
        k = _rotary(k.view(B, T, self.kv, self.hs).transpose(1, 2), cos, sin)  # (B, kv, T, hs)
        v = v.view(B, T, self.kv, self.hs).transpose(1, 2)  # (B, kv, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)  # (B, h, T, hs)
        x = x + self.o(y.transpose(1, 2).reshape(B, T, -1))
        g, u = self.gate_up(self.n2(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(g) * u)


class LeanLM(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab: int) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.emb = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(LeanBlock(d, cfg.num_heads, cfg.num_kv_heads, cfg.intermediate_size)
                                    for _ in range(cfg.num_layers))  # fmt: skip
        self.norm, self.head = nn.RMSNorm(d), nn.Linear(d, vocab, bias=False)
        hs = d // cfg.num_heads
        self.register_buffer("inv", 1.0 / (10000 ** (torch.arange(0, hs, 2).float() / hs)), persistent=False)

    def forward(self, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        T = ids.shape[1]
        ang = torch.arange(T).float()[:, None] * self.inv[None]  # (T, hs/2)
        cos, sin = ang.cos(), ang.sin()
        x = self.emb(ids)
        for block in self.blocks:
            x = block(x, cos, sin)
        keep = labels[:, 1:] != -100  # (B, T-1) positions predicting a labelled token
        logits = self.head(self.norm(x[:, :-1][keep]))  # (N, V): the head only where a loss is
        return F.cross_entropy(logits, labels[:, 1:][keep])


def lean_step(cfg: ModelConfig, batches: dict) -> callable:
    model = LeanLM(cfg, VOCAB.size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = sum(model(ids, labels) for ids, _, labels in batches.values())
        loss.backward()
        opt.step()

    return step


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    space = load_space(args.space)
    cfg = space.model.model_copy(update={"vocab": VOCAB})
    batches = make_batches(space.training.batch_size, image_tokens=args.image_tokens)
    model = build_model(cfg)
    policies = {name: preset(name, cfg.num_layers) for name in PRESETS}
    steps = {"lean dense": lean_step(cfg, batches)}
    steps.update({name: make_step(model, pol, batches) for name, pol in policies.items()})
    median = time_interleaved(steps, args.reps, args.warmup)
    lean = median["lean dense"]["cpu"]
    rows = []
    for name, pol in policies.items():
        f = flops_ratio(cfg, pol, layouts(batches), space.training.batch_size)
        ratio = median[name]["cpu"] / lean
        target = 1.1 if name == "dense" else f + 0.10
        rows.append({"policy": name, "flops_ratio": f, "cpu_s": median[name]["cpu"], "vs_lean_dense": ratio,
                     "target": target, "met": ratio <= target})  # fmt: skip
    return {"command": f"python benchmarks/lean_step.py --space {args.space} --reps {args.reps}",
            "space": str(args.space), "shape": cfg.model_dump(exclude={"vocab"}),
            "batch": {t: list(b[0].shape) for t, b in batches.items()}, "lean_dense_cpu_s": lean,
            "threads": 1, "reps": args.reps, "rows": rows}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", type=Path, default=ROOT / "search_spaces/default.yaml")
    ap.add_argument("--image-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/lean_step.json")
    args = ap.parse_args()
    result = run(args)
    result["space"] = str(Path(result["space"]).resolve().relative_to(ROOT))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"lean dense step {result['lean_dense_cpu_s'] * 1e3:.1f} ms CPU (shape {result['shape']}, batch "
          f"{result['batch']})")  # fmt: skip
    for r in result["rows"]:
        print(
            f"  {r['policy']:<12} FLOPs {r['flops_ratio']:.3f}  {r['cpu_s'] * 1e3:7.1f} ms  "
            f"{r['vs_lean_dense']:.3f} x lean dense (target <= {r['target']:.2f}: {'met' if r['met'] else 'MISSED'})"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

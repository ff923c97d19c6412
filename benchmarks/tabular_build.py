"""Build the tabular search benchmark: train every policy of a finite space once (real trials).

Each distinct policy of the space (`_tabular.enumerate_space`) runs `run_trial` with a
report callback that records the learning curve (per evaluation round: FLOPs ratio,
synergy gain and the per-task gains on the validation split). The dense single-task
baselines are cached once and shared, so only the joint runs cost. The table is written
after every trial (`--resume` continues a partial one).

    .venv/bin/python benchmarks/tabular_build.py [--space benchmarks/data/tabular_quick_space.yaml]
        [--out benchmarks/data/tabular_quick.json] [--resume] [--shard I/N]

`--shard I/N` runs every N-th policy starting at I into `<out>.part-I-of-N.json` (one
process per core); `--merge N` then joins the N parts into `<out>` in enumeration order.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from _tabular import FORMAT, enumerate_space, load_table
from searchvlm.space import load_space
from searchvlm.trial import run_trial

ROOT = Path(__file__).resolve().parents[1]
CURVE_KEYS = ("synergy_gain", "und_gain", "gen_gain", "und_acc", "gen_nll")


def one_row(space, key: str, params: dict[str, Any], cache_dir: str, index: int) -> dict[str, Any]:
    """Run one real trial of the policy behind `params`; its results and learning curve."""
    curve: list[list[float]] = []

    def report(step: int, metrics: dict[str, float]) -> None:
        curve.append([step, *(round(float(metrics[k]), 6) for k in CURVE_KEYS)])

    policy = space.policy_from_params(params, name=f"tab{index:03d}")
    res = run_trial(space.trial_config(policy, name=policy.name, cache_dir=cache_dir), report)
    num = lambda v: None if v is None else round(float(v), 6)  # noqa: E731
    return {
        "key": key, "params": params, "status": res.status, "error": res.error,
        "flops_ratio": num(res.flops_ratio), "synergy_gain": num(res.synergy_gain),
        "und_gain": num(res.und_gain), "gen_gain": num(res.gen_gain),
        "und_acc": num(res.und_acc), "gen_nll": num(res.gen_nll),
        "train_seconds": round(res.train_seconds, 3), "steps": res.steps_done, "curve": curve,
    }  # fmt: skip


def _header(space_path: Path, space, command: str) -> dict[str, Any]:
    return {
        "format": FORMAT, "space": str(space_path.relative_to(ROOT)), "space_hash": space.space_hash(),
        "command": command, "curve_columns": ["step", *CURVE_KEYS], "max_steps": space.training.steps,
        "machine": f"{platform.machine()} x{__import__('os').cpu_count()}, torch {torch.__version__}, 1 thread",
        "rows": [],
    }  # fmt: skip


def _rel(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def part_path(out: Path, shard: tuple[int, int]) -> Path:
    return out.with_name(f"{out.stem}.part-{shard[0]}-of-{shard[1]}{out.suffix}")


def build(space_path: Path, out: Path, resume: bool, limit: int | None,
          shard: tuple[int, int] = (0, 1)) -> dict[str, Any]:  # fmt: skip
    space = load_space(space_path)
    points = enumerate_space(space)
    command = f"python benchmarks/tabular_build.py --space {_rel(space_path)} --out {_rel(out)}"
    if shard[1] > 1:
        command += f" --shard I/{shard[1]} (I = 0..{shard[1] - 1}, one process each) && ... --merge {shard[1]}"
        out = part_path(out, shard)
    table = load_table(out) if resume and out.exists() else _header(space_path, space, command)
    done = {row["key"] for row in table["rows"]}
    mine = [(k, p) for i, (k, p) in enumerate(points.items()) if i % shard[1] == shard[0]]
    todo = [(k, p) for k, p in mine if k not in done][:limit]
    print(f"{len(points)} distinct policies, {len(done)} done, {len(todo)} to run")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        for i, (key, params) in enumerate(todo):
            table["rows"].append(one_row(space, key, params, cache, len(done) + i))
            table["build_seconds"] = round(table.get("build_seconds", 0.0) + time.perf_counter() - t0, 1)
            t0 = time.perf_counter()
            out.write_text(json.dumps(table, separators=(",", ":")) + "\n")
            r = table["rows"][-1]
            print(f"[{len(table['rows'])}/{len(points)}] flops {r['flops_ratio']} synergy {r['synergy_gain']} "
                  f"({r['train_seconds']:.1f}s) {r['status']}", flush=True)  # fmt: skip
    return table


def merge(space_path: Path, out: Path, n: int) -> dict[str, Any]:
    """Join the N shard tables into `out`, rows in enumeration order (all must be complete)."""
    order = {k: i for i, k in enumerate(enumerate_space(load_space(space_path)))}
    parts = [load_table(part_path(out, (i, n))) for i in range(n)]
    table = {**parts[0], "rows": sorted((r for p in parts for r in p["rows"]), key=lambda r: order[r["key"]])}
    table["build_seconds"] = round(sum(p.get("build_seconds", 0.0) for p in parts), 1)
    table["build_wall_seconds"] = round(max(p.get("build_seconds", 0.0) for p in parts), 1)
    missing = len(order) - len(table["rows"])
    if missing:
        raise SystemExit(f"{missing} of {len(order)} policies missing from the {n} parts: finish them first")
    out.write_text(json.dumps(table, separators=(",", ":")) + "\n")
    return table


def _shard(text: str) -> tuple[int, int]:
    i, _, n = text.partition("/")
    if not (i.isdigit() and n.isdigit() and 0 <= int(i) < int(n)):
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected I/N with 0 <= I < N")
    return int(i), int(n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", type=Path, default=ROOT / "benchmarks/data/tabular_quick_space.yaml")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/data/tabular_quick.json")
    ap.add_argument("--resume", action="store_true", help="keep the rows already in --out")
    ap.add_argument("--limit", type=int, default=None, help="run at most this many new trials")
    ap.add_argument("--shard", type=_shard, default=(0, 1), help="I/N: this process's share of the policies")
    ap.add_argument("--merge", type=int, default=None, metavar="N", help="join N finished shards into --out")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = args.out.resolve()
    if args.merge:
        merge(args.space.resolve(), out, args.merge)
    else:
        build(args.space.resolve(), out, args.resume, args.limit, args.shard)
        out = part_path(out, args.shard) if args.shard[1] > 1 else out
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

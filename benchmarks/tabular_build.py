"""Build the tabular search benchmark: train every policy of a finite space on every seed (real trials).

Each distinct policy of the space (`_tabular.enumerate_space`) runs `run_trial` once per
seed of the space, with a report callback that records the learning curve (per evaluation
round: synergy gain, the per-task gains, accuracy and NLL on the validation split). A row
keeps the per-seed results and their mean ± standard error; the dense policy is trained on
the same seeds as the table's `reference` (the hypervolume reference point's synergy). The
dense single-task baselines are cached once per seed and shared, so only the joint runs
cost. The table is written after every policy (`--resume` continues a partial one).

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
from searchvlm.objectives.synergy import mean_stderr
from searchvlm.schema.space import load_space
from searchvlm.train.trial import run_trial

ROOT = Path(__file__).resolve().parents[1]
CURVE_KEYS = ("synergy_gain", "und_gain", "gen_gain", "und_acc", "gen_nll")
METRICS = CURVE_KEYS  # per seed, and their mean and standard error per policy


def _seed_run(space, policy, seed: int, cache_dir: str) -> dict[str, Any]:
    """One real trial of `policy` (None: dense) with one seed: its results and learning curve."""
    curve: list[list[float]] = []

    def report(step: int, metrics: dict[str, float]) -> None:
        curve.append([step, *(round(float(metrics[k]), 6) for k in CURVE_KEYS)])

    cfg = space.trial_config(policy, name=policy.name if policy else "dense", cache_dir=cache_dir)
    res = run_trial(cfg.model_copy(update={"seeds": [seed]}), report)
    return {"seed": seed, "status": res.status, "error": res.error, "flops_ratio": _num(res.flops_ratio),
            **{k: _num(getattr(res, k)) for k in METRICS},
            "train_seconds": round(res.train_seconds, 3), "steps": res.steps_done, "curve": curve}  # fmt: skip


def _num(v: Any) -> float | None:
    return None if v is None else round(float(v), 6)


def one_row(space, key: str, params: dict[str, Any] | None, cache_dir: str, index: int) -> dict[str, Any]:
    """Every seed of the space for the policy behind `params` (None: dense); per-seed runs and
    their means (the policy's value in the table, what a replayed search is scored on)."""
    policy = None if params is None else space.policy_from_params(params, name=f"tab{index:03d}")
    runs = [_seed_run(space, policy, seed, cache_dir) for seed in space.seeds]
    ok = [r for r in runs if r["status"] == "ok"]
    row = {"key": key, "params": params, "status": "ok" if len(ok) == len(runs) else "failed",
           "error": next((r["error"] for r in runs if r["error"]), None),
           "flops_ratio": runs[0]["flops_ratio"], "seeds": runs}  # fmt: skip
    for k in METRICS:
        vals = [r[k] for r in ok]
        mean, se = mean_stderr(vals) if vals else (None, None)
        row[k], row[f"{k}_stderr"] = _num(mean), _num(se)
    return row


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
            _log(table["rows"][-1], f"[{len(table['rows'])}/{len(points)}]")
        if shard[0] == 0 and "reference" not in table and (limit is None or len(todo) < limit):
            table["reference"] = one_row(space, "dense", None, cache, -1)  # the HV reference point's synergy
            out.write_text(json.dumps(table, separators=(",", ":")) + "\n")
            _log(table["reference"], "[dense]")
    return table


def _log(r: dict[str, Any], head: str) -> None:
    se = r["synergy_gain_stderr"]
    print(f"{head} flops {r['flops_ratio']} synergy {r['synergy_gain']} ± {se} "
          f"({sum(x['train_seconds'] for x in r['seeds']):.1f}s) {r['status']}", flush=True)  # fmt: skip


def merge(space_path: Path, out: Path, n: int) -> dict[str, Any]:
    """Join the N shard tables into `out`, rows in enumeration order (all must be complete)."""
    order = {k: i for i, k in enumerate(enumerate_space(load_space(space_path)))}
    parts = [load_table(part_path(out, (i, n))) for i in range(n)]
    table = {**parts[0], "rows": sorted((r for p in parts for r in p["rows"]), key=lambda r: order[r["key"]])}
    table["reference"] = next(p["reference"] for p in parts if "reference" in p)
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

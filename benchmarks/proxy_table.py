"""The two-sided proxy's table: 48 policies of default.yaml's space x 5 seeds + dense (real trials).

The rules (which policies, which seeds, in which order, what is analysed) are fixed in
`benchmarks/calibration/PROXY_TABLE_PLAN.md`, written before the first run.

    .venv/bin/python benchmarks/proxy_table.py --points   # draw the 48 policies once (no training)
    nice -n 19 .venv/bin/python benchmarks/proxy_table.py  # train; resumable, writes after every seed

Each (policy, seed) is one `run_trial` on default.yaml with that one seed; the dense single-task
baselines and the dense joint run (the vs-dense reference) are cached per seed in
`runs/cache-proxytable`, so a policy costs one joint run per seed. The table
(`benchmarks/data/proxy_table.json`, format `searchvlm.tabular/v2` plus `policy`/`preset` per row
and `synergy_vs_dense` per seed) is rewritten after every seed; a killed run loses at most the
seed in progress.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _tabular import FORMAT, policy_key
from searchvlm.objectives.synergy import mean_stderr
from searchvlm.schema._host import cpu_model
from searchvlm.schema.identity import canonical_policy
from searchvlm.schema.policy import ReductionPolicy
from searchvlm.schema.policy.presets import preset
from searchvlm.schema.space import load_space
from searchvlm.sweep._known_cost import SpaceCost, _Draw
from searchvlm.train.training import check_layout
from searchvlm.train.trial import prepare, run_trial

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces/default.yaml"
POINTS = ROOT / "benchmarks/data/proxy_table_points.json"
OUT = ROOT / "benchmarks/data/proxy_table.json"
CACHE = ROOT / "runs/cache-proxytable"
SEEDS = (50, 51, 52, 53, 54)
DRAWS, SAMPLED, DRAW_SEED = 4000, 41, 2026
CURVE_KEYS = ("synergy_gain", "und_gain", "gen_gain", "und_acc", "gen_nll")
# PROXY_TABLE_PLAN.md addendum 3: ATen's, MKL's (conditional numerical reproducibility) and
# oneDNN's AVX2 kernels, set before torch loads (the script re-executes itself with them): on a
# CPU that would run AVX-512 kernels they reproduce the first session's rows bit for bit.
ISA_PIN = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
           "ONEDNN_MAX_CPU_ISA": "AVX2"}  # fmt: skip
SEED_KEYS = ("synergy_gain", "synergy_vs_dense", "und_gain", "gen_gain", "gen_gain_below_chance", "und_acc",
             "und_acc_iso", "gen_caption_acc", "gen_caption_acc_iso", "gen_nll", "gen_nll_iso")  # fmt: skip


# --------------------------------------------------------------------------- the policies


def draw_points(space_path: Path = SPACE) -> dict[str, Any]:
    """The plan's 41 FLOPs-stratified draws and the 7 non-dense presets, in the training order."""
    space = load_space(space_path)
    data, _ = prepare(space.trial_config(None))
    cost = SpaceCost(space)
    dense = _ckey(ReductionPolicy.dense(space.model.num_layers))
    rng = np.random.default_rng(DRAW_SEED)
    seen, pool = {dense}, []  # pool: (draw index, params, policy, flops)
    for i in range(DRAWS):
        params = space.suggest(_Draw(rng))
        try:
            policy = space.policy_from_params(params)
            check_layout(policy, data)
        except ValueError:
            continue
        key = _ckey(policy)
        if key not in seen:
            seen.add(key)
            pool.append((i, params, policy, float(cost(policy))))
    lo = min(p[3] for p in pool)
    edges = np.linspace(lo, 1.0, SAMPLED + 1)
    bins: list[list[int]] = [[] for _ in range(SAMPLED)]
    for j, p in enumerate(pool):  # pool is in drawing order
        bins[min(int(np.searchsorted(edges, p[3], side="right")) - 1, SAMPLED - 1)].append(j)
    chosen: list[int] = []
    for b in range(SAMPLED):
        for other in [b, *range(b - 1, -1, -1), *range(b + 1, SAMPLED)]:  # own bin, nearest below, then above
            free = [j for j in bins[other] if j not in chosen]
            if free:
                chosen.append(free[0])
                break
    points = [{"kind": "sampled", "bin": b, "draw": pool[j][0], "params": pool[j][1],
               "policy": pool[j][2].model_dump(mode="json"), "flops_ratio": round(pool[j][3], 6)}
              for b, j in enumerate(chosen)]  # fmt: skip
    for name in space.presets:
        if name != "dense":
            pol = preset(name, space.model.num_layers)
            points.append({"kind": "preset", "preset": name, "policy": pol.model_dump(mode="json"),
                           "flops_ratio": round(float(cost(pol)), 6)})  # fmt: skip
    order = np.random.default_rng(DRAW_SEED).permutation(len(points))
    return {"space": str(space_path.relative_to(ROOT)), "space_hash": space.space_hash(), "draws": DRAWS,
            "valid_distinct_draws": len(pool), "flops_min": round(lo, 6), "seed": DRAW_SEED,
            "points": [points[i] for i in order]}  # fmt: skip


def _ckey(policy: ReductionPolicy) -> str:
    return canonical_policy(policy).model_copy(update={"name": None, "seed": 0}).model_dump_json()


# --------------------------------------------------------------------------- training


def _seed_run(space, policy: ReductionPolicy | None, seed: int) -> dict[str, Any]:
    curve: list[list[float]] = []

    def report(step: int, metrics: dict[str, float]) -> None:
        curve.append([step, *(round(float(metrics[k]), 6) for k in CURVE_KEYS)])

    name = policy.name if policy else "dense"
    cfg = space.trial_config(policy, name=name, cache_dir=str(CACHE)).model_copy(update={"seeds": [seed]})
    res = run_trial(cfg, report)
    rec = res.per_seed[0] if res.per_seed else None
    return {"seed": seed, "status": res.status, "error": res.error, "flops_ratio": _num(res.flops_ratio),
            **{k: _num(getattr(rec, k, None)) for k in SEED_KEYS}, "train_seconds": round(res.train_seconds, 3),
            "steps": res.steps_done, "curve": curve, "machine": cpu_model(),
            "isa": torch.backends.cpu.get_cpu_capability()}  # fmt: skip


def _num(v: Any) -> float | None:
    return None if v is None else round(float(v), 6)


def _summarise(row: dict[str, Any]) -> None:
    ok = [r for r in row["seeds"] if r["status"] == "ok"]
    row["status"] = "ok" if len(ok) == len(SEEDS) else ("running" if len(row["seeds"]) < len(SEEDS) else "failed")
    for k in ("synergy_gain", "synergy_vs_dense", "und_gain", "gen_gain"):
        vals = [r[k] for r in ok if r[k] is not None]
        mean, se = mean_stderr(vals) if vals else (None, None)
        row[k], row[f"{k}_stderr"] = _num(mean), _num(se)


def verify_reference(table: dict[str, Any], space) -> None:
    """Retrain (into the cache, as the rows need it anyway) the dense reference of every seed
    the table already holds and stop unless every recorded number is reproduced exactly: rows
    from this session are pooled with earlier ones only when the machine reproduces them."""
    for old in (table.get("reference") or {}).get("seeds", []):
        new = _seed_run(space, None, old["seed"])
        diff = {k: (old[k], new[k]) for k in (*SEED_KEYS, "curve") if old[k] != new[k]}
        if diff:
            raise SystemExit(f"dense seed {old['seed']} is not reproduced on {new['machine']} "
                             f"({new['isa']}): {sorted(diff)}; the table must be split by machine")  # fmt: skip
        print(f"dense seed {old['seed']} reproduced exactly on {new['machine']} ({new['isa']})", flush=True)


def _load(space, points: dict[str, Any]) -> dict[str, Any]:
    return json.loads(OUT.read_text()) if OUT.exists() else {
        "format": FORMAT, "space": points["space"], "space_hash": points["space_hash"],
        "command": "nice -n 19 python benchmarks/proxy_table.py", "plan": "benchmarks/calibration/PROXY_TABLE_PLAN.md",
        "curve_columns": ["step", *CURVE_KEYS], "max_steps": space.training.steps, "seeds": list(SEEDS),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread per run",
        "rows": [],
    }  # fmt: skip


def _row(table: dict[str, Any], key: str, point: dict[str, Any] | None) -> dict[str, Any]:
    """The table's row for `key` (the reference when `point` is None), created when missing."""
    row = table.get("reference") if point is None else next((r for r in table["rows"] if r["key"] == key), None)
    if row is None:
        row = {"key": key, "seeds": [], "flops_ratio": 1.0 if point is None else point["flops_ratio"]}
        if point is None:
            table["reference"] = row
        else:
            row.update({k: point.get(k) for k in ("kind", "preset", "params", "bin", "policy")})
            table["rows"].append(row)
    return row


@contextlib.contextmanager
def _locked(space, points: dict[str, Any], write: bool = True) -> Iterator[dict[str, Any]]:
    """The table as on disk, written back on exit (`write`); shards share the file, so a writer
    holds the lock alone and a reader shares it with other readers (never sees half a write)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "proxy_table.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
        table = _load(space, points)
        yield table
        if write:
            OUT.write_text(json.dumps(table, separators=(",", ":")) + "\n")


def build(limit_seconds: float | None, shard: int = 0, shards: int = 1) -> None:
    """Train the runs the table lacks, in the plan's order; with `shards` > 1, this process takes
    every `shards`-th policy from the `shard`-th (the reference stays with shard 0), and the
    processes share the table file under a lock, so rows are independent and none is trained twice."""
    space = load_space(SPACE)
    points = json.loads(POINTS.read_text())
    if points["space_hash"] != space.space_hash():
        raise SystemExit(f"{SPACE.name} changed since {POINTS.name} was drawn: the table would mix two proxies")
    with _locked(space, points, write=False) as table:
        pass
    verify_reference(table, space)
    policies = [(p, ReductionPolicy.model_validate(p["policy"])) for p in points["points"]]
    todo = [("dense", None, None)] + [(policy_key(pol), p, pol) for p, pol in policies]
    mine = [t for i, t in enumerate(todo) if (i == 0 and shard == 0) or (i > 0 and (i - 1) % shards == shard)]
    t0 = time.perf_counter()
    for key, point, policy in mine:
        for seed in SEEDS:
            with _locked(space, points, write=False) as now:
                if any(r["seed"] == seed for r in _row(now, key, point)["seeds"]):
                    continue
            if limit_seconds is not None and time.perf_counter() - t0 > limit_seconds:
                return
            named = None if policy is None else policy.model_copy(update={"name": point.get("preset") or "sampled"})
            r = _seed_run(space, named, seed)
            with _locked(space, points) as table:
                row = _row(table, key, point)
                row["seeds"].append(r)
                _summarise(row)
                done = sum(len(x["seeds"]) for x in table["rows"]) + len(table["reference"]["seeds"])
            print(f"[{done}/{(len(todo)) * len(SEEDS)}] {point.get('preset') if point else 'dense'} "
                  f"flops {row['flops_ratio']:.3f} seed {seed}: synergy {r['synergy_gain']} vs dense "
                  f"{r['synergy_vs_dense']} ({r['train_seconds']:.0f}s) {r['status']}", flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", action="store_true", help=f"draw the policies into {POINTS.name} (once)")
    ap.add_argument("--shard", default="0/1", help="I/N: this process's share of the policies (N processes)")
    ap.add_argument("--hours", type=float, default=None, help="stop starting new runs after this long")
    args = ap.parse_args()
    if any(os.environ.get(k) != v for k, v in ISA_PIN.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **ISA_PIN})
    torch.set_num_threads(1)
    if args.points:
        if POINTS.exists():
            raise SystemExit(f"{POINTS} exists: the plan draws the policies once")
        POINTS.write_text(json.dumps(draw_points(), indent=1) + "\n")
        print(f"wrote {POINTS}")
        return
    shard, shards = (int(x) for x in args.shard.split("/"))
    build(None if args.hours is None else args.hours * 3600, shard, shards)


if __name__ == "__main__":
    main()

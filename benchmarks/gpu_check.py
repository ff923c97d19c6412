"""GPU check: the measurements a CUDA machine gives that CI (no GPU) cannot, in one run.

1. the presets' joint step time on the GPU (`step_time.py --device cuda`), fp32 (TF32
   matmuls) and bf16 (`training.dtype: bf16`), at gpu.yaml's model width and depth;
2. one gpu.yaml dense trial with fewer steps (`searchvlm trial --preset dense`, bf16);
3. a packed sweep: 8 quick trials at `search.gpus_per_trial: 0.125`, `concurrency: auto`
   (eight at once on one GPU), with where each trial ran read back from trials.csv.

Each stage runs in its own process with its own time limit (the whole check is sized for
under 8 minutes on one GPU); a stage that fails or runs out of time is recorded with its
error and the check goes on. Writes one JSON (`--out`). Without a CUDA GPU it says so and
exits 0, writing nothing.

    .venv/bin/python benchmarks/gpu_check.py [--out benchmarks/results/gpu_check.json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
# gpu.yaml's proxy: 16 layers, width 512 (step_time.py's own head counts and MLP width)
STEP_ARGS = ["--layers", "16", "--hidden", "512", "--batch-size", "64", "--reps", "10", "--warmup", "3"]
TRIAL_SETS = ["training.steps=200", "training.eval_every=100", "training.batch_size=16", "training.dtype=bf16",
              "seeds=[0]", "search.scheduler.kind=none", "data.train_size=4000", "data.val_size=500",
              "data.test_size=500"]  # fmt: skip
SWEEP_SETS = ["search.gpus_per_trial=0.125", "search.sampler=random", "training.device=cuda", "training.steps=100",
              "training.eval_every=50", "search.scheduler.kind=none"]  # fmt: skip
LIMITS = {"step_time": 75, "trial": 150, "sweep": 180}  # seconds per stage (step_time: each dtype); 8 min in all


def _cuda() -> str | None:
    """The GPU's name, or None without a CUDA device."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def _run(cmd: list[str], limit: float, cwd: Path) -> tuple[float, str | None, str]:
    """(wall seconds, error or None, stdout) of one stage's command."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - start, f"timed out after {limit:.0f} s", ""
    wall = time.perf_counter() - start
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        return wall, f"exit {done.returncode}: {' | '.join(tail)}", done.stdout
    return wall, None, done.stdout


def step_times(work: Path) -> dict[str, Any]:
    """Per dtype: each preset's step ms, time and FLOPs ratios, and the dense step's GFLOP/s."""
    out: dict[str, Any] = {}
    for dtype in ("fp32", "bf16"):
        path = work / f"step_time_{dtype}.json"
        cmd = [PY, str(ROOT / "benchmarks" / "step_time.py"), "--device", "cuda", "--dtype", dtype, *STEP_ARGS,
               "--out", str(path)]  # fmt: skip
        wall, error, _ = _run(cmd, LIMITS["step_time"], ROOT)
        if error:
            out[dtype] = {"error": error, "wall_s": round(wall, 1)}
            continue
        res = json.loads(path.read_text())
        keep = ("preset", "step_ms", "time_ratio", "flops_ratio", "target_met")
        out[dtype] = {"wall_s": round(wall, 1), "rows": [{k: r[k] for k in keep} for r in res["rows"]],
                      "dense_step_gflops": res["hardware"]["dense_step_gflops"],
                      "mm_peak_gflops": res["hardware"]["peak_gflops"]}  # fmt: skip
    return out


def dense_trial(work: Path) -> dict[str, Any]:
    """gpu.yaml's dense preset with fewer steps and a smaller data set, on the GPU."""
    sets = [x for s in TRIAL_SETS for x in ("--set", s)]
    cmd = [PY, "-m", "searchvlm", "trial", str(ROOT / "search_spaces" / "gpu.yaml"), "--preset", "dense", "--json",
           "--cache-dir", str(work / "cache"), *sets]  # fmt: skip
    wall, error, stdout = _run(cmd, LIMITS["trial"], work)
    if error:
        return {"error": error, "wall_s": round(wall, 1), "sets": TRIAL_SETS}
    result = json.loads(stdout)
    keep = ("status", "error", "und_acc", "gen_nll", "und_acc_iso", "gen_nll_iso", "synergy_gain", "train_seconds",
            "steps_done")  # fmt: skip
    return {"wall_s": round(wall, 1), "sets": TRIAL_SETS, **{k: result.get(k) for k in keep}}


def packed_sweep(work: Path) -> dict[str, Any]:
    """8 quick trials sharing one GPU: statuses, devices, GPU ids and trial overlap."""
    runs = work / "runs"
    sets = [x for s in SWEEP_SETS for x in ("--set", s)]
    cmd = [PY, "-m", "searchvlm", "sweep", str(ROOT / "search_spaces" / "quick.yaml"), "--name", "packed",
           "--samples", "8", "--concurrency", "auto", "--runs-dir", str(runs), "--no-progress", *sets]  # fmt: skip
    wall, error, _ = _run(cmd, LIMITS["sweep"], work)
    out: dict[str, Any] = {"wall_s": round(wall, 1), "sets": SWEEP_SETS}
    table = runs / "packed" / "trials.csv"
    if error:
        out["error"] = error
    if table.exists():
        with table.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        out.update(trials=len(rows), status=sorted({r["status"] for r in rows}),
                   gpu_ids=sorted({r["gpu_ids"] for r in rows}), devices=sorted({r["device"] for r in rows}),
                   trial_seconds=[round(float(r["train_seconds"] or 0), 1) for r in rows],
                   errors=[r["error"] for r in rows if r["error"]][:3])  # fmt: skip
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_check.json")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    args = parser.parse_args()
    gpu = _cuda()
    if gpu is None:
        print("gpu_check: no GPU (torch.cuda.is_available() is False): nothing to measure here; run it on a "
              "CUDA machine")  # fmt: skip
        return 0
    import torch

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check.") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        result: dict[str, Any] = {"gpu": gpu, "torch": torch.__version__, "gpus": torch.cuda.device_count()}
        for name, stage in (("step_time", step_times), ("trial", dense_trial), ("sweep", packed_sweep)):
            print(f"gpu_check: {name} ...", flush=True)
            result[name] = stage(work)
            print(json.dumps(result[name])[:2000], flush=True)
    result["wall_s"] = round(time.perf_counter() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out} ({result['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

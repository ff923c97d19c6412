"""Default trial time per seed (issue: trials): wall time and peak memory of one seed.

    .venv/bin/python benchmarks/trial_time.py [--space search_spaces/default.yaml] [--repeats 3]

Runs `searchvlm trial SPACE --preset dense --seeds 0` as a user does, in a fresh process:
once to fill a private baseline cache (not timed), then `--repeats` times with the
baselines cached, which is the case the target is about (a sweep never retrains them).
Each timed run is the whole command: interpreter start, imports, data, the joint run,
evaluation. Peak memory is the child's max RSS (`os.wait4`). Writes
`benchmarks/results/trial_time.json`. Target: <= 60 s per seed (default), <= 10 s (quick:
`--space search_spaces/quick.yaml --target 10`), < 2 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("searchvlm"))


def timed(cmd: list[str]) -> tuple[float, float, dict]:
    """(wall seconds, peak RSS MiB, parsed --json result) of one command."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {os.waitstatus_to_exitcode(status)}")
    return wall, usage.ru_maxrss / 1024, json.loads(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="search_spaces/default.yaml")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--target", type=float, default=60.0, help="target seconds per seed")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/trial_time.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        cmd = [CLI, "trial", args.space, "--preset", "dense", "--seeds", "0", "--json", "--cache-dir", cache]
        timed(cmd)  # fills the baseline cache
        runs = []
        for i in range(args.repeats):
            wall, rss, result = timed(cmd)
            cached = all(result["per_seed"][0]["baseline_cached"].values())
            runs.append({"wall_s": round(wall, 2), "peak_rss_mib": round(rss, 1),
                         "train_seconds": round(result["train_seconds"], 2), "baselines_cached": cached})  # fmt: skip
            print(f"run {i + 1}: {wall:.1f} s wall, {result['train_seconds']:.1f} s training, "
                  f"peak RSS {rss:.0f} MiB, baselines cached: {cached}")  # fmt: skip
    walls = [r["wall_s"] for r in runs]
    summary = {
        "command": " ".join(["searchvlm", *cmd[1:-2]]),
        "space": args.space,
        "machine": f"{platform.machine()} x{os.cpu_count()}, torch {torch.__version__}",
        "runs": runs,
        "median_wall_s": statistics.median(walls),
        "max_peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "target_wall_s": args.target,
        "target_rss_mib": 2048,
    }
    summary["met"] = summary["median_wall_s"] <= args.target and summary["max_peak_rss_mib"] < 2048
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"median {summary['median_wall_s']:.1f} s per seed (target {args.target:g} s); "
        f"met: {summary['met']}; wrote {args.out}"
    )


if __name__ == "__main__":
    main()

"""Sweep overhead on quick.yaml: the share of sweep time not spent inside trials.

    .venv/bin/python benchmarks/sweep_overhead.py [--space search_spaces/quick.yaml]

overhead = 1 - sum(trial wall time inside run_trial) / ((Ray start + sweep wall) x concurrency)

Everything outside `run_trial` counts as overhead: Ray start, worker start-up and
imports, Optuna sampling, scheduling, MLflow and trials-table writes, idle slots at the
end. Writes benchmarks/results/sweep_overhead.json and prints a table. Target <= 10%.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from searchvlm.space import load_space
from searchvlm.sweep import ensure_ray, run_sweep, shutdown_ray

ROOT = Path(__file__).resolve().parents[1]


def measure(space_path: Path) -> dict[str, float | int | str]:
    space = load_space(space_path)
    conc = space.search.concurrency
    t0 = time.perf_counter()
    ensure_ray(num_cpus=conc)
    ray_start = time.perf_counter() - t0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            s = run_sweep(space_path, name="bench", runs_dir=tmp, progress=False)
    finally:
        shutdown_ray()
    wall = ray_start + s.wall_seconds
    return {
        "space": str(space_path.relative_to(ROOT)),
        "trials": sum(s.counts[k] for k in ("ok", "failed", "pruned")),
        "ok": s.counts["ok"],
        "concurrency": conc,
        "ray_start_s": round(ray_start, 2),
        "sweep_wall_s": round(wall, 2),
        "trial_s_total": round(s.trial_seconds, 2),
        "overhead_share": round(1 - s.trial_seconds / (wall * conc), 4),
        "target": 0.10,
        "cpus": platform.machine() + f" x{__import__('os').cpu_count()}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", type=Path, default=ROOT / "search_spaces" / "quick.yaml")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sweep_overhead.json")
    args = ap.parse_args()
    res = measure(args.space.resolve())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    table = Table(title="sweep overhead")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for k, v in res.items():
        table.add_row(k, str(v))
    Console().print(table)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

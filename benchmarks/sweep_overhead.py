"""Sweep overhead on quick.yaml: the share of sweep time not spent inside trials.

    .venv/bin/python benchmarks/sweep_overhead.py [--space search_spaces/quick.yaml]

overhead = 1 - sum(trial wall time inside run_trial) / (sweep wall x concurrency)

The sweep wall is `run_sweep` as `searchvlm sweep` runs it: it starts (and stops) Ray
itself, so Ray's start is inside it (`ray_start_s`: from the call until Ray is up).

Everything outside `run_trial` counts as overhead: Ray start, worker start-up and
imports, Optuna sampling, scheduling, MLflow and trials-table writes, idle slots at the
end. Writes benchmarks/results/sweep_overhead.json and prints a table. Target <= 10%.

The overhead is decomposed (`breakdown`, core-seconds and shares of the total) from
driver-side timestamps (the sweep callback's `setup`, `on_trial_start` and
`on_trial_complete`, wrapped here, nothing changed in the sweep): Ray start; driver set-up
before the first trial starts (MLflow, Tune); in-slot time outside `run_trial` (worker
start-up and imports, result hand-back); the tail (slots idle while the last trials run
alone); the rest (gaps between trials: scheduling, sampling, table and MLflow writes).
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

import searchvlm.sweep._driver as sweep_mod
from searchvlm.schema.space import load_space
from searchvlm.sweep import run_sweep
from searchvlm.sweep._callback import SweepCallback

ROOT = Path(__file__).resolve().parents[1]
EVENTS: dict[str, list] = {"setup": [], "start": [], "complete": []}


def _wrap(name: str, key: str) -> None:
    """Record time.time() around a SweepCallback hook (driver side; behaviour unchanged)."""
    orig = getattr(SweepCallback, name)

    def hook(self, *args, **kwargs):
        t0 = time.time()
        out = orig(self, *args, **kwargs)
        trial = kwargs.get("trial")
        EVENTS[key].append((t0, time.time(), None if trial is None else trial.trial_id,
                            None if trial is None else (trial.last_result or {}).get("trial_wall_s")))  # fmt: skip
        return out

    setattr(SweepCallback, name, hook)


for _name, _key in (("setup", "setup"), ("on_trial_start", "start"), ("on_trial_complete", "complete")):
    _wrap(_name, _key)
RAY_START: list[float] = []
_ensure_ray = sweep_mod.ensure_ray


def _timed_ensure_ray(*args, **kwargs):
    """run_sweep starts Ray itself (as `searchvlm sweep` does); record when it is up."""
    out = _ensure_ray(*args, **kwargs)
    RAY_START.append(time.time())
    return out


sweep_mod.ensure_ray = _timed_ensure_ray


def breakdown(t0: float, t_ray: float, t_end: float, conc: int, trial_s: float) -> dict[str, float]:
    """Overhead core-seconds by cause (see the module docs)."""
    starts = {tid: a for a, _, tid, _ in EVENTS["start"]}
    done = {tid: (b, w or 0.0) for _, b, tid, w in EVENTS["complete"]}
    total = conc * (t_end - t0)
    ray = conc * (t_ray - t0)
    setup = conc * (min(starts.values()) - t_ray) if starts else 0.0
    in_slot = sum(done[t][0] - starts[t] - done[t][1] for t in done if t in starts)
    ends = sorted(b for b, _ in done.values())
    tail = sum(ends[-1] - e for e in ends[-conc:]) + conc * (t_end - ends[-1]) if ends else 0.0
    busy = sum(done[t][0] - starts[t] for t in done if t in starts)
    rest = total - ray - setup - busy - tail
    parts = {"ray_start": ray, "driver_setup_before_first_trial": setup, "in_slot_outside_run_trial": in_slot,
             "tail_last_trials_alone": tail, "gaps_between_trials": rest}  # fmt: skip
    out = {f"{k}_core_s": round(v, 1) for k, v in parts.items()}
    out.update({f"{k}_share": round(v / total, 4) for k, v in parts.items()})
    out["mlflow_setup_s"] = round(EVENTS["setup"][0][1] - EVENTS["setup"][0][0], 2) if EVENTS["setup"] else 0.0
    out["trial_share"] = round(trial_s / total, 4)
    return out


def measure(space_path: Path) -> dict[str, float | int | str]:
    space = load_space(space_path)
    conc = space.search.concurrency
    w0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        s = run_sweep(space_path, name="bench", runs_dir=tmp, progress=False)
        w_end = time.time()
    w_ray = RAY_START[0]
    ray_start = w_ray - w0  # run_sweep's set-up before Ray is up, Ray start included
    wall = s.wall_seconds
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
        "breakdown": breakdown(w0, w_ray, w_end, conc, s.trial_seconds),
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

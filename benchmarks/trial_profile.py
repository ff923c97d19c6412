"""Where a quick trial's time goes, inside a sweep and alone (issue 23).

    .venv/bin/python benchmarks/trial_profile.py [--space search_spaces/quick.yaml] [--samples 2]

1. A sweep of `--samples` trials, 2 at a time, as `make sweep` runs them (a fresh runs
   folder, local Ray, MLflow on SQLite), with `SEARCHVLM_PROFILE` set so every trial runs
   under cProfile inside its Ray worker, and the driver itself under cProfile.
2. The same space's dense trial alone (`searchvlm trial ... --preset dense --seeds 0`, its
   baselines cached by step 1) under cProfile, the way `benchmarks/trial_time.py` times it.
Prints one table (seconds per phase: the sweep's trials as a mean, and the lone trial) and
writes it with the raw numbers to `--out` (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("searchvlm"))

#: phase -> (file suffix, function name) whose cumulative time it is, in a trial's profile
TRIAL_PHASES: dict[str, tuple[str, str]] = {
    "trial total (profiled call)": ("", ""),
    "imports inside the trial": ("searchvlm/train/trial.py", "<module>"),
    "data: load + tokenise (prepare)": ("searchvlm/train/trial.py", "prepare"),
    "baselines: cache lookups": ("searchvlm/train/trial.py", "_references"),
    "model construction (Run.__init__)": ("searchvlm/train/training.py", "__init__"),
    "training steps (_one_step)": ("searchvlm/train/training.py", "_one_step"),
    "  forward": ("searchvlm/model/reduced.py", "forward"),
    "  backward": ("torch/_tensor.py", "backward"),
    "  optimizer step": ("torch/optim/optimizer.py", "wrapper"),
    "evaluation (Run.scores, val + test)": ("searchvlm/train/training.py", "scores"),
    "  caption accuracy": ("searchvlm/train/training.py", "caption_scores"),
    "test of the picked rounds (_test_picks)": ("searchvlm/train/trial.py", "_test_picks"),
    "state copies (_keep_picks)": ("searchvlm/train/trial.py", "_keep_picks"),
    "round reports to Tune (_report)": ("searchvlm/sweep/_trainable.py", "_report"),
}
#: the same for the driver's profile (its main thread: Tune's loop, the searcher, the callback)
DRIVER_PHASES: dict[str, tuple[str, str]] = {
    "driver total": ("", ""),
    "sampler suggestions (searcher.suggest)": ("searchvlm/sweep/_searcher.py", "suggest"),
    "  GP fits (GPSampler.sample_relative)": ("optuna/samplers/_gp/sampler.py", "sample_relative"),
    "trials.csv + MLflow child runs (callback._record)": ("searchvlm/sweep/_callback.py", "_record"),
    "baselines up front (_warm_baselines)": ("searchvlm/sweep/_driver.py", "_warm_baselines"),
}


def cumulative(stats: pstats.Stats, where: tuple[str, str]) -> float:
    """Cumulative seconds of the functions matching (file suffix, name), summed over the
    matches that are not called by another match (no double counting of recursion)."""
    if where == ("", ""):
        return stats.total_tt
    hits = {f: v for f, v in stats.stats.items() if f[0].endswith(where[0]) and f[2] == where[1]}  # type: ignore[attr-defined]
    return sum(v[3] for f, v in hits.items() if not any(c in hits for c in v[4]))


def table(profiles: list[Path], phases: dict[str, tuple[str, str]]) -> dict[str, float]:
    per = [pstats.Stats(str(p)) for p in profiles]
    return {name: round(sum(cumulative(s, w) for s in per) / len(per), 2) for name, w in phases.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="search_spaces/quick.yaml")
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/trial_profile.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "prof").mkdir()
        env = {**os.environ, "SEARCHVLM_PROFILE": str(work / "prof")}
        cmd = [sys.executable, "-m", "cProfile", "-o", str(work / "driver.prof"), CLI, "sweep", args.space,
               "--name", "profile", "--samples", str(args.samples), "--concurrency", "2",
               "--runs-dir", str(work / "runs"), "--no-progress"]  # fmt: skip
        start, cpu = time.perf_counter(), _CpuByProcess()
        cpu.start()
        subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        sweep_wall = time.perf_counter() - start
        cpu.stop()
        trials = sorted((work / "prof").glob("*.prof"))
        rows = _trial_rows(work / "runs" / "profile" / "trials.csv")
        cache = work / "runs" / "cache"
        alone_cmd = [sys.executable, "-m", "cProfile", "-o", str(work / "alone.prof"), CLI, "trial", args.space,
                     "--preset", "dense", "--seeds", "0", "--json", "--cache-dir", str(cache)]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(alone_cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        alone_wall = time.perf_counter() - start
        in_sweep, alone = table(trials, TRIAL_PHASES), table([work / "alone.prof"], TRIAL_PHASES)
        driver = table([work / "driver.prof"], DRIVER_PHASES)
    out = {
        "space": args.space,
        "samples": args.samples,
        "sweep_wall_s": round(sweep_wall, 1),
        "alone_command_wall_s": round(alone_wall, 1),
        "trials_in_sweep": rows,
        "phases_in_sweep_mean": in_sweep,
        "phases_alone": alone,
        "driver": driver,
        "cpu_seconds_by_process": cpu.totals(),
        "note": "cProfile adds per-call overhead (about 1.4x on the training loop): compare its columns "
        "with each other, not with unprofiled times",
    }
    print(f"{'phase (s)':48s} {'in sweep':>9s} {'alone':>9s}")
    for name in TRIAL_PHASES:
        print(f"{name:48s} {in_sweep[name]:9.2f} {alone[name]:9.2f}")
    for name, v in driver.items():
        print(f"{name:48s} {v:9.2f}")
    print(f"CPU seconds during the sweep by process: {cpu.totals()}")
    print(f"sweep wall {sweep_wall:.1f} s; lone command wall {alone_wall:.1f} s; trials: {rows}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


class _CpuByProcess(threading.Thread):
    """Samples every process's CPU time (`ps`) every second while the sweep runs; `totals`:
    the last seen CPU seconds per process kind (trial workers, the driver, Ray's daemons)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self._seen: dict[int, tuple[str, float]] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(1.0):
            ps = subprocess.run(["ps", "-eo", "pid=,times=,args="], capture_output=True, text=True).stdout
            for line in ps.splitlines():
                pid, secs, args = line.strip().split(None, 2)
                self._seen[int(pid)] = (args, float(secs))

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def totals(self) -> dict[str, float]:
        kinds = {"trial workers (ray::ImplicitFunc / IDLE)": ("ray::",), "sweep driver": ("searchvlm sweep",),
                 "raylet": ("raylet",), "gcs_server": ("gcs_server",),
                 "other Ray processes": ("ray/", "ray_", "/ray")}  # fmt: skip
        out = dict.fromkeys(kinds, 0.0)
        for args, secs in self._seen.values():
            kind = next((k for k, marks in kinds.items() if any(m in args for m in marks)), None)
            if kind:
                out[kind] += secs
        return {k: round(v, 1) for k, v in out.items()}


def _trial_rows(path: Path) -> list[dict]:
    import csv

    with path.open() as f:
        return [{k: r.get(k) for k in ("trial", "status", "train_seconds", "trial_wall_s")} for r in csv.DictReader(f)]


if __name__ == "__main__":
    main()

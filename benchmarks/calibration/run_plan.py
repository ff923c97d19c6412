"""Runs the two-sided synergy calibration of PLAN.md (beside this file) and renders its table.

Each job is one variant x one seed of the dense policy (joint run + cached isolated
baselines, each scored at its best validation round); jobs run in `--workers` processes and
append one JSON line each to `--out`, so an interrupted calibration resumes where it
stopped (finished jobs are skipped).

    python benchmarks/calibration/run_plan.py --stage screen --workers 2
    python benchmarks/calibration/run_plan.py --stage extend --variants P-10,PT-10
    python benchmarks/calibration/run_plan.py --stage confirm --variants P-10
    python benchmarks/calibration/run_plan.py --table          # the README's calibration table
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

from searchvlm.overrides import validate_overridden

HERE = Path(__file__).resolve().parent
BASE = HERE / "base.yaml"
OUT = HERE.parent / "results" / "calibration.jsonl"
CACHE = "runs/cache-calibration"

_PIXEL = ["data.tokenizer={kind: pixel}", "data.image_size=12"]
_GEN10 = ["data.train_size={understanding: 2000, generation: 200}"]
_TIED = ["model.tie_embeddings=true"]
_W128 = ["model.hidden_size=128", "model.intermediate_size=384"]
#: PLAN.md's variants: id -> overrides of base.yaml
VARIANTS: dict[str, list[str]] = {
    "P-100": [],
    "P-10": _GEN10,
    "PT-100": _TIED,
    "PT-10": _TIED + _GEN10,
    "X-100": _PIXEL,
    "X-10": _PIXEL + _GEN10,
    # beyond the screen (run only if CPU time remains; PLAN.md)
    "XT-100": _PIXEL + _TIED,
    "XT-10": _PIXEL + _TIED + _GEN10,
    "P-100-w128": _W128,
    "P-10-w128": _W128 + _GEN10,
}
SCREEN = ["P-100", "P-10", "PT-100", "PT-10", "X-100", "X-10"]
STAGES = {"screen": (0, 1, 2), "extend": (3, 4), "confirm": (10, 11, 12, 13, 14), "control": (10, 11, 12, 13, 14)}
CONTROL = ["data.permute_answers=true"]


def trial_config(variant: str, seed: int, control: bool):
    from searchvlm.config import TrialConfig
    from searchvlm.policy import ReductionPolicy
    from searchvlm.space import load_space

    space = load_space(BASE)
    cfg = space.trial_config(ReductionPolicy.dense(space.model.num_layers), name=variant).model_dump()
    cfg.update(seeds=[seed], cache_dir=CACHE)
    sets = VARIANTS[variant] + (CONTROL if control else [])
    return validate_overridden(TrialConfig, cfg, str(BASE), sets)


def run_job(job: tuple[str, int, bool]) -> dict:
    from searchvlm.trial import run_trial

    variant, seed, control = job
    config = trial_config(variant, seed, control)
    start = time.perf_counter()
    result = run_trial(config)
    row = {
        "variant": variant,
        "seed": seed,
        "control": control,
        "status": result.status,
        "error": result.error,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "train_seconds": round(result.train_seconds, 1),
        "last_step": config.training.steps,
        "overrides": VARIANTS[variant] + (CONTROL if control else []),
    }
    if result.per_seed:
        row.update({k: v for k, v in result.per_seed[0].items() if k != "baseline_cached"})
    return row


def done(out: Path) -> set[tuple[str, int, bool]]:
    if not out.exists():
        return set()
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return {(r["variant"], r["seed"], r["control"]) for r in rows if r["status"] == "ok"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", choices=sorted(STAGES))
    ap.add_argument("--variants", default=",".join(SCREEN))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--table", action="store_true", help="print the calibration table of --out")
    args = ap.parse_args()
    if args.table:
        from calibration_table import render  # noqa: PLC0415 - beside this script

        print(render(args.out))
        return
    control = args.stage == "control"
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"error: --variants: unknown {unknown}; known: {', '.join(VARIANTS)}")
    finished = done(args.out)
    order = sorted(variants, key=lambda v: v.startswith("X"))  # patch variants first (PLAN.md)
    jobs = [(v, s, control) for v in order for s in STAGES[args.stage] if (v, s, control) not in finished]
    print(f"{len(jobs)} jobs ({len(finished)} already in {args.out})", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with mp.get_context("spawn").Pool(args.workers, maxtasksperchild=1) as pool:
        for row in pool.imap_unordered(run_job, jobs):
            with args.out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            gains = f"g_U {row.get('und_gain', float('nan')):+.3f} g_G {row.get('gen_gain', float('nan')):+.3f}"
            print(f"{row['variant']} seed {row['seed']}{' control' if control else ''}: {row['status']} "
                  f"{gains} ({row['wall_seconds']} s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

"""Runs the two-sided synergy calibration of PLAN.md (beside this file) and renders its table.

Each job is one variant x one seed of the dense policy (joint run + cached isolated
baselines, each scored at its best validation round); jobs run in `--workers` processes and
append one JSON line each to `--out`, so an interrupted calibration resumes where it
stopped (finished jobs are skipped).

    python benchmarks/calibration/run_plan.py --stage screen --workers 2
    python benchmarks/calibration/run_plan.py --stage extend --variants P-10,PT-10
    python benchmarks/calibration/run_plan.py --stage confirm --variants P-10
    python benchmarks/calibration/run_plan.py --stage auto     # every remaining stage, PLAN.md's rules
    python benchmarks/calibration/run_plan.py --table          # the table of benchmarks/calibration/README.md
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

from searchvlm.objectives.synergy import mean_stderr
from searchvlm.schema.overrides import validate_overridden

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
    from searchvlm.schema.config import TrialConfig
    from searchvlm.schema.policy import ReductionPolicy
    from searchvlm.schema.space import load_space

    space = load_space(BASE)
    cfg = space.trial_config(ReductionPolicy.dense(space.model.num_layers), name=variant).model_dump()
    cfg.update(seeds=[seed], cache_dir=CACHE)
    sets = VARIANTS[variant] + (CONTROL if control else [])
    return validate_overridden(TrialConfig, cfg, str(BASE), sets)


def run_job(job: tuple[str, int, bool]) -> dict:
    from searchvlm.train.trial import run_trial

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
        row.update(result.per_seed[0].model_dump(exclude={"baseline_cached"}))
    return row


def done(out: Path) -> set[tuple[str, int, bool]]:
    if not out.exists():
        return set()
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return {(r["variant"], r["seed"], r["control"]) for r in rows if r["status"] == "ok"}


def read_rows(out: Path) -> list[dict]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def summary(rows: list[dict], variant: str, seeds: tuple[int, ...], control: bool = False) -> dict | None:
    """Mean and paired s.e. over `seeds` of each gain of one variant; None when a seed is missing."""
    by_seed = {
        r["seed"]: r for r in rows if r["variant"] == variant and r["control"] == control and r["status"] == "ok"
    }
    if any(s not in by_seed for s in seeds):
        return None
    picked = [by_seed[s] for s in seeds]
    out = {"variant": variant, "seeds": list(seeds), "control": control}
    for key in ("und_gain", "gen_gain"):
        mean, se = mean_stderr([p[key] for p in picked])
        out[key] = (mean, se)
    for name, metric, higher in (("gen_gain_nll", "gen_nll", False), ("gen_gain_nats", "gen_caption_nats", True)):
        gains = [(p[metric] - p[f"{metric}_iso"]) / abs(p[f"{metric}_iso"]) * (1 if higher else -1) for p in picked]
        out[name] = mean_stderr(gains)
    out["ratio"] = min(m / se if se else float("inf") for m, se in (out["und_gain"], out["gen_gain"]))
    out["qualifies"] = all(m > 0 and se is not None and m > 2 * se for m, se in (out["und_gain"], out["gen_gain"]))
    last = picked[0]["last_step"]
    steps = ("und_step_joint", "und_step_iso", "gen_caption_acc_step_joint", "gen_caption_acc_step_iso")
    out["best_before_last"] = {k: sum(p[k] < last for p in picked) for k in steps}
    out["rows"] = picked
    return out


def select(rows: list[dict], variants: list[str], seeds: tuple[int, ...], top: int = 2) -> list[str]:
    """PLAN.md's stage-1 rule: variants with both mean gains > 0, by min(g/se), the top `top`."""
    sums = [summary(rows, v, seeds) for v in variants]
    eligible = [x for x in sums if x and x["und_gain"][0] > 0 and x["gen_gain"][0] > 0]
    return [x["variant"] for x in sorted(eligible, key=lambda x: -x["ratio"])[:top]]


def run_jobs(jobs: list[tuple[str, int, bool]], out: Path, workers: int) -> None:
    finished = done(out)
    jobs = [j for j in jobs if j not in finished]
    print(f"{len(jobs)} jobs ({len(finished)} already in {out})", flush=True)
    if not jobs:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with mp.get_context("spawn").Pool(workers, maxtasksperchild=1) as pool:
        for row in pool.imap_unordered(run_job, jobs):
            with out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            gains = f"g_U {row.get('und_gain', float('nan')):+.3f} g_G {row.get('gen_gain', float('nan')):+.3f}"
            print(f"{row['variant']} seed {row['seed']}{' control' if row['control'] else ''}: {row['status']} "
                  f"{gains} ({row['wall_seconds']} s)", flush=True)  # fmt: skip


def auto(out: Path, workers: int) -> None:
    """Every stage of PLAN.md in the addendum's order; each decision printed as it is made."""
    patch = [v for v in SCREEN if not v.startswith("X")]
    run_jobs([(v, s, False) for v in patch for s in STAGES["screen"]], out, workers)
    chosen = select(read_rows(out), patch, STAGES["screen"])
    print(f"stage 1 -> 2 (rule: both gains > 0, top 2 by min(g/se)): {chosen or 'none'}", flush=True)
    run_jobs([(v, s, False) for v in chosen for s in STAGES["extend"]], out, workers)
    five = (*STAGES["screen"], *STAGES["extend"])
    sums = [x for x in (summary(read_rows(out), v, five) for v in chosen) if x and x["qualifies"]]
    winner = max(sums, key=lambda x: x["ratio"])["variant"] if sums else None
    print(f"stage 2 (both gains > 2 s.e. over seeds 0-4): qualifying {[x['variant'] for x in sums]}; "
          f"winner {winner}", flush=True)  # fmt: skip
    if winner:
        fresh = STAGES["confirm"]
        run_jobs([(winner, s, c) for c in (False, True) for s in fresh], out, workers)
    pixel = [v for v in SCREEN if v.startswith("X")]
    run_jobs([(v, s, False) for v in pixel for s in STAGES["screen"]], out, workers)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", choices=sorted(STAGES) + ["auto"])
    ap.add_argument("--variants", default=",".join(SCREEN))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--table", action="store_true", help="print the calibration table of --out")
    args = ap.parse_args()
    if args.table:
        print(render(read_rows(args.out)))
        return
    if args.stage == "auto":
        auto(args.out, args.workers)
        return
    control = args.stage == "control"
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"error: --variants: unknown {unknown}; known: {', '.join(VARIANTS)}")
    order = sorted(variants, key=lambda v: v.startswith("X"))  # patch variants first (PLAN.md)
    run_jobs([(v, s, control) for v in order for s in STAGES[args.stage]], args.out, args.workers)


def _cell(pair: tuple[float, float | None]) -> str:
    mean, se = pair
    return f"{mean:+.3f}" + ("" if se is None else f" ± {se:.3f}")


def render(rows: list[dict]) -> str:
    """The calibration table: every variant and stage measured, gains as mean ± paired s.e."""
    head = (
        "| variant | overrides of base.yaml | seeds | g_U (accuracy) | g_G (caption acc.) | g_G (NLL) | "
        "g_G (caption margin) | both > 2 s.e. | best round before the last (U joint/iso, G joint/iso) | s/job |"
    )
    lines = [head, "|" + "---|" * 10]
    groups = [
        ("screen", STAGES["screen"]),
        ("0-4", (*STAGES["screen"], *STAGES["extend"])),
        ("fresh", STAGES["confirm"]),
    ]
    for variant in VARIANTS:
        for control in (False, True):
            for label, seeds in groups:
                x = summary(rows, variant, seeds, control)
                if x is None or (label == "screen" and summary(rows, variant, groups[1][1], control)):
                    continue
                b = x["best_before_last"]
                steps = (
                    f"{b['und_step_joint']}/{b['und_step_iso']}, "
                    f"{b['gen_caption_acc_step_joint']}/{b['gen_caption_acc_step_iso']} of {len(seeds)}"
                )
                secs = sum(r["wall_seconds"] for r in x["rows"]) / len(x["rows"])
                sets = ", ".join(o.split(".", 1)[1] for o in x["rows"][0]["overrides"]) or "(base)"
                name = variant + (" control (answers permuted)" if control else "")
                lines.append(f"| {name} | {sets} | {','.join(map(str, seeds))} | {_cell(x['und_gain'])} | "
                             f"{_cell(x['gen_gain'])} | {_cell(x['gen_gain_nll'])} | {_cell(x['gen_gain_nats'])} | "
                             f"{'yes' if x['qualifies'] else 'no'} | {steps} | {secs:.0f} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""TEXT_ONLY_PLAN.md's readings: does P-10's generation gain survive understanding without images?

Reads the two `calibrate_proxy.py` rows of `benchmarks/results/text_only_control.json` (P-10 and
the control, `data.blank_understanding_images=true`, seeds 10-14), pairs them by seed and
applies the plan's rule: C = the control's g_G (caption accuracy), D = control minus P-10,
each mean +- standard error over the seeds. NLL and caption-margin gains are shown beside
it. The P-10 re-run is also compared with the committed calibration row for the same seeds
(`calibration.jsonl`: another machine, another session).

    python benchmarks/text_only_control.py [--out benchmarks/results/text_only_control.md]
    python benchmarks/text_only_control.py --stage2 [--out ...]   # TEXT_ONLY_PLAN.md's addendum: seeds 10-24
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from search_replay import ratio_ci
from searchvlm.objectives.synergy import HIGHER_IS_BETTER, mean_stderr, relative_gain

RESULTS = Path(__file__).parent / "results"
CONTROL = "data.blank_understanding_images=true"
STAGE2 = (RESULTS / "text_only_control_stage2_p10.json", RESULTS / "text_only_control_stage2_control.json")
#: gain column -> (joint key, isolated key, metric)
GAINS = {
    "g_U (accuracy)": ("und_acc", "und_acc_iso", "und_acc"),
    "g_G (caption acc.)": ("gen_caption_acc", "gen_caption_acc_iso", "gen_caption_acc"),
    "g_G (NLL)": ("gen_nll", "gen_nll_iso", "gen_nll"),
    "g_G (caption margin)": ("gen_caption_nats", "gen_caption_nats_iso", "gen_caption_nats"),
}


def per_seed(row: dict) -> dict[int, dict[str, float]]:
    """seed -> {gain column: value} of one calibrate_proxy.py row."""
    out = {}
    for k, seed in enumerate(row["seeds"]):
        out[seed] = {
            col: relative_gain(row[j]["per_seed"][k], row[i]["per_seed"][k], HIGHER_IS_BETTER[m])
            for col, (j, i, m) in GAINS.items()
        }
        out[seed]["accuracy joint / alone"] = (row["und_acc"]["per_seed"][k], row["und_acc_iso"]["per_seed"][k])
        out[seed]["caption acc. joint / alone"] = (
            row["gen_caption_acc"]["per_seed"][k],
            row["gen_caption_acc_iso"]["per_seed"][k],
        )
    return out


def _merged(rows: list[dict]) -> dict[int, dict]:
    """seed -> gains over several rows of one run (a seed in two rows is an error)."""
    out: dict[int, dict] = {}
    for row in rows:
        for seed, gains in per_seed(row).items():
            if seed in out:
                raise SystemExit(f"seed {seed} appears in two rows of the same run")
            out[seed] = gains
    return out


def _pm(values: list[float]) -> tuple[float, float]:
    mean, se = mean_stderr(values)
    return mean, float("nan") if se is None else se


def _fmt(mean: float, se: float) -> str:
    return f"{mean:+.3f} ± {se:.3f}"


def verdict(c: tuple[float, float], d: tuple[float, float], n: int = 5) -> str:
    """TEXT_ONLY_PLAN.md's outcomes, in its words."""
    (cm, cs), (dm, ds) = c, d
    if abs(cm) <= 2 * cs and dm < -2 * ds:
        return "A: the generation gain needs understanding's images"
    if cm > 2 * cs and abs(dm) <= 2 * ds:
        return "B: the generation gain does not need understanding's images"
    return f"inconclusive at {n} seeds"


def committed_p10() -> dict[int, dict]:
    """The committed P-10 calibration rows of seeds 10-14 (not the control), seed -> row."""
    rows = [json.loads(line) for line in (RESULTS / "calibration.jsonl").read_text().splitlines() if line.strip()]
    return {r["seed"]: r for r in rows if r["variant"] == "P-10" and not r["control"] and r["seed"] >= 10}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, nargs="+", default=[RESULTS / "text_only_control.json"])
    ap.add_argument("--stage2", action="store_true", help="the addendum's stage 2: seeds 10-24 (adds its two files)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    paths = list(args.results) + (list(STAGE2) if args.stage2 else [])
    rows = [row for path in paths for row in json.loads(path.read_text())]
    control = [r for r in rows if CONTROL in r["overrides"]]
    plain = [r for r in rows if CONTROL not in r["overrides"]]
    if not control or not plain:
        raise SystemExit(
            f"{', '.join(map(str, paths))}: needs P-10 rows and control rows, has {len(plain)} and {len(control)}"
        )
    p10, ctl = _merged(plain), _merged(control)
    seeds = sorted(p10)
    if sorted(ctl) != seeds:
        raise SystemExit(f"{', '.join(map(str, paths))}: the runs' seeds differ ({seeds} vs {sorted(ctl)})")
    lines = [
        f"Seeds {','.join(map(str, seeds))}; every run at its own best validation round; mean ± s.e. over seeds.",
        "",
        "| run | " + " | ".join(GAINS) + " | U acc. joint / alone | caption acc. joint / alone |",
        "|---|" + "---|" * (len(GAINS) + 2),
    ]
    for name, gains in (("P-10 (default.yaml)", p10), ("text-only understanding (control)", ctl)):
        cells = [_fmt(*_pm([gains[s][col] for s in seeds])) for col in GAINS]
        pairs = [
            "{:.3f} / {:.3f}".format(*(sum(gains[s][k][i] for s in seeds) / len(seeds) for i in (0, 1)))
            for k in ("accuracy joint / alone", "caption acc. joint / alone")
        ]
        lines.append(f"| {name} | " + " | ".join(cells + pairs) + " |")
    diff = [_fmt(*_pm([ctl[s][col] - p10[s][col] for s in seeds])) for col in GAINS]
    lines.append("| control − P-10 (paired) | " + " | ".join(diff) + " | – | – |")
    col = "g_G (caption acc.)"
    c = _pm([ctl[s][col] for s in seeds])
    d = _pm([ctl[s][col] - p10[s][col] for s in seeds])
    lines += ["", f"C = {_fmt(*c)}, D = {_fmt(*d)}: outcome **{verdict(c, d, len(seeds))}** (TEXT_ONLY_PLAN.md)."]
    lost = ratio_ci([p10[s][col] - ctl[s][col] for s in seeds], [p10[s][col] for s in seeds], paired=True)
    lines.append(
        f"Share of P-10's g_G lost without understanding's images (-D / P-10's g_G, not a planned reading): "
        f"{lost['ratio']:.2f}, 95% paired bootstrap interval [{lost['ci95'][0]:.2f}, {lost['ci95'][1]:.2f}]."
    )
    old = committed_p10()
    if len(seeds) == 5 and sorted(old) == seeds:
        gain = lambda r: relative_gain(r["gen_caption_acc"], r["gen_caption_acc_iso"], True)  # noqa: E731
        same = sum(abs(gain(old[s]) - p10[s][col]) < 1e-4 for s in seeds)
        was = _pm([gain(old[s]) for s in seeds])
        lines.append(
            f"P-10's committed calibration (seeds {seeds[0]}-{seeds[-1]}, an earlier session): g_G {_fmt(*was)}; "
            f"{same} of {len(seeds)} seeds equal to this re-run's."
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

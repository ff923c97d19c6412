"""Combine single-seed `reproduce` runs (table3.csv each) into mean ± standard error.

    python benchmarks/table3_seeds.py runs/reproduce-default runs/reproduce-default-s1 \
        runs/reproduce-default-s2 --out benchmarks/results/table3_default.md
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from searchvlm.synergy import mean_stderr

METRICS = ("und_acc", "gen_nll", "flops_ratio", "und_gain", "gen_gain", "synergy_gain")


def _rows(folder: Path) -> dict[str, dict]:
    with (folder / "table3.csv").open() as fh:
        return {r["model"]: r for r in csv.DictReader(fh)}


def _cell(values: list[str], spec: str) -> str:
    nums = [float(v) for v in values if v not in ("", "None")]
    if not nums:
        return "–"
    mean, se = mean_stderr(nums)
    return f"{mean:{spec}}" + ("" if se is None else f" ± {se:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    runs = [_rows(f) for f in args.folders]
    lines = [
        f"| model ({len(runs)} seeds) | U: accuracy | G: NLL ↓ | FLOPs | g_U | g_G | synergy |",
        "|---|---|---|---|---|---|---|",
    ]
    for model in runs[0]:
        vals = {m: [r[model][m] for r in runs] for m in METRICS}
        lines.append(
            f"| {model} | {_cell(vals['und_acc'], '.3f')} | {_cell(vals['gen_nll'], '.3f')} | "
            f"{_cell(vals['flops_ratio'], '.2f')} | {_cell(vals['und_gain'], '+.3f')} | "
            f"{_cell(vals['gen_gain'], '+.3f')} | {_cell(vals['synergy_gain'], '+.3f')} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()

"""Render benchmarks/results/calibrate_proxy.json as a Markdown table (the former proxies' rows: docs/archive.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _cell(entry: dict, spec: str = ".3f") -> str:
    se = entry["stderr"]
    return f"{entry['mean']:{spec}}" + ("" if se is None else f" ± {se:.3f}")


def _sizes(r: dict) -> str:
    return f"{r['config']['data']['val_size']}/{r['config']['data']['test_size']}"


def _steps(r: dict, task: str) -> str:
    return "/".join(str(s) for s in r[f"{task}_step_joint"]) + " vs " + "/".join(str(s) for s in r[f"{task}_step_iso"])


def main(path: str = "benchmarks/results/calibrate_proxy_best.json") -> None:
    rows = json.loads(Path(path).read_text())
    print(
        "| space: variant | val/test | seeds | U acc joint / alone | G NLL joint / alone | g_U | g_G | "
        "both > 2 s.e. | test s.e. U / G | best steps U (joint vs alone) | best steps G | s/seed |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        shown = [o.split(".", 1)[-1] for o in r["overrides"] if not o.startswith(("cache_dir", "training.threads"))]
        name = f"{r.get('space', '?')}: " + (", ".join(shown) or "(as is)")
        print(
            f"| {name} | {_sizes(r)} | {len(r['seeds'])} | {_cell(r['und_acc'])} / {_cell(r['und_acc_iso'])} | "
            f"{_cell(r['gen_nll'])} / {_cell(r['gen_nll_iso'])} | {_cell(r['und_gain'], '+.3f')} | "
            f"{_cell(r['gen_gain'], '+.3f')} | {'yes' if r['both_gain_beyond_2se'] else 'no'} | "
            f"{r['und_acc_test_se']['mean']:.3f} / {r['gen_nll_test_se']['mean']:.3f} | "
            f"{_steps(r, 'und')} | {_steps(r, 'gen')} | {r['train_seconds_per_seed']} |"
        )


if __name__ == "__main__":
    main(*sys.argv[1:])

"""The presets' `diagnose` results side by side: one Markdown row per diagnose.json.

For each preset folder under DIR (written by `searchvlm diagnose ... --out DIR/<preset>`):
the whole model's gradient cosine (mean ± s.e. over the batches) and understanding's share
of the gradient norm at initialisation and at each task's best validation round, the image
q/k/v cosine averaged over the layers where both tasks reach it, and the run's seconds:

    for p in dense fastv himix hmgen himix_hmgen himix_hmgen_partial pmod tied; do
      searchvlm diagnose search_spaces/default.yaml --preset $p --out benchmarks/results/diagnose/$p
    done
    python benchmarks/diagnose_table.py benchmarks/results/diagnose > benchmarks/results/diagnose/summary.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

from searchvlm.records.diagnose import DIAGNOSE_FILE, CheckpointGradients, load_report
from searchvlm.schema.policy.presets import PRESETS

#: the table's columns
HEADER = (
    "preset",
    "budget",
    "init: whole model cosine ± s.e. (und share)",
    "best G round: step, cosine (share)",
    "best U round: step, cosine (share)",
    "image q/k/v cosine, init → best G",
    "seconds: CPU / wall",
)


def _whole(c: CheckpointGradients) -> str:
    s = c.overall
    se = "" if s["cosine_se"] is None else f" ± {s['cosine_se']:.3f}"
    return f"{s['cosine']:+.3f}{se} ({s['und_share']:.2f})"


def _image_qkv(c: CheckpointGradients) -> str:
    values = [layer["qkv_image"]["cosine"] for layer in c.layers if layer["qkv_image"]["cosine"] is not None]
    return f"{sum(values) / len(values):+.3f} ({len(values)} layers)" if values else "–"


def _at(checkpoints: list[CheckpointGradients], metric: str) -> CheckpointGradients | None:
    return next((c for c in checkpoints if metric in c.picked_by), None)


def table(folder: Path) -> str:
    """The Markdown table of every preset folder under `folder` (presets in `PRESETS` order)."""
    found = {p.parent.name: load_report(p) for p in folder.glob(f"*/{DIAGNOSE_FILE}")}
    names = [n for n in PRESETS if n in found] + sorted(set(found) - set(PRESETS))
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for name in names:
        r = found[name]
        init = r.checkpoints[0]
        gen = _at(r.checkpoints, next((m for m in r.val_curves if m != "und_acc"), ""))
        und = _at(r.checkpoints, "und_acc")
        cell = lambda c: "–" if c is None else f"{c.step}: {_whole(c)}"  # noqa: E731
        image = _image_qkv(init) + ("" if gen is None else f" → {_image_qkv(gen)}")
        secs = f"{r.seconds.get('cpu', float('nan')):.0f} / {r.seconds['total']:.0f}"
        lines.append(f"| {name} | {r.budget} ({r.steps} steps) | {_whole(init)} | {cell(gen)} | {cell(und)} "
                     f"| {image} | {secs} |")  # fmt: skip
    first = found[names[0]]
    machine = f"{first.machine['cpu']} ({first.machine['cores']} cores, shared), torch {first.machine['torch']}"
    lines += ["", f"seed {first.seed}, {first.batches} batches of {first.batch_size} per task; machine: {machine}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="the folder holding one <preset>/diagnose.json each")
    print(table(parser.parse_args().folder))


if __name__ == "__main__":
    main()

"""The attention-allocation figure (the study's figure 3): `AllocationInfo` (per task, the
share α of each key segment across depth) drawn as a PNG, one panel per task.

L3 module: one of `searchvlm.train.analysis`'s two figures, drawn by its `write_outputs`
(matplotlib's object API, no pyplot). It reads the report's type only for annotations, so
analysis and its figures import no circle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from searchvlm.schema.policy import SEGMENTS, TASKS

if TYPE_CHECKING:
    from searchvlm.train.analysis import AnalysisReport

__all__ = ["AllocationInfo", "allocation_info", "allocation_png"]


@dataclass(frozen=True)
class AllocationInfo:
    """Per task: α per layer of each segment (in `SEGMENTS` order) and the image share that
    uniform causal attention would give (None when the report did not measure it)."""

    curves: dict[str, dict[str, list[float]]]
    uniform_image: dict[str, float | None]


def allocation_info(report: AnalysisReport) -> AllocationInfo:
    """The allocation figure of an analysis."""
    return AllocationInfo(
        curves={t: {seg: report.alpha[t][seg] for seg in SEGMENTS} for t in TASKS},
        uniform_image={t: report.uniform[t]["image"] if report.uniform.get(t) else None for t in TASKS},
    )


def allocation_png(info: AllocationInfo, path: Path) -> Path:
    """One panel per task: α of each segment across depth, the uniform image share dotted."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3))
    axes = fig.subplots(1, len(info.curves), sharey=True)
    for ax, (task, curves) in zip(axes, info.curves.items()):
        x = range(1, len(curves["image"]) + 1)
        for i, (seg, values) in enumerate(curves.items()):
            ax.plot(x, values, marker="o", ms=3, label=seg, color=f"C{i}")
        if info.uniform_image[task] is not None:
            ax.axhline(info.uniform_image[task], color="C2", ls=":", lw=1, label="image, uniform")
        ax.set(title=task, xlabel="layer", xticks=list(x))
    axes[0].set_ylabel("attention share α")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    return path

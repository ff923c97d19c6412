"""The attention-heatmap figure (the study's figure 2): `HeatmapInfo` (one layer's attention
per task, averaged over heads and examples, with its segment boundaries) drawn as a PNG.

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

__all__ = ["HeatmapInfo", "heatmap_info", "heatmap_png"]


@dataclass(frozen=True)
class HeatmapInfo:
    """Per task: the (T, T) mean attention and where each segment starts (position, name);
    `layer` is 1-based, as the title shows it."""

    layer: int
    grids: dict[str, list[list[float]]]
    starts: dict[str, list[tuple[int, str]]]


def _segment_starts(layout: list[int]) -> list[tuple[int, str]]:
    return [(i, SEGMENTS[s]) for i, s in enumerate(layout) if i == 0 or layout[i - 1] != s]


def heatmap_info(report: AnalysisReport) -> HeatmapInfo:
    """The heatmap figure of an analysis."""
    return HeatmapInfo(
        layer=report.heatmap_layer + 1,
        grids={t: report.heatmap[t] for t in TASKS},
        starts={t: _segment_starts(report.segment_layout[t]) for t in TASKS},
    )


def heatmap_png(info: HeatmapInfo, path: Path) -> Path:
    """One panel per task, log10 colour from 1e-4 to 1, segments ticked where they start."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.6))
    axes = fig.subplots(1, len(info.grids))
    for ax, (task, grid) in zip(axes, info.grids.items()):
        ax.imshow(np.log10(np.asarray(grid) + 1e-4), cmap="viridis", vmin=-4, vmax=0)
        starts = info.starts[task]
        ax.set_xticks([p for p, _ in starts], [s[:3] for _, s in starts], fontsize=6, rotation=90)
        ax.set_yticks([p for p, _ in starts], [s[:3] for _, s in starts], fontsize=6)
        ax.set_title(f"{task}, layer {info.layer}", fontsize=9)
    fig.suptitle("attention (log10, mean over heads and examples)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    return path

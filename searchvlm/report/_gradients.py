"""The `diagnose` figure: `GradientsInfo` (per checkpoint, the layers x groups grids of the
two tasks' gradient cosine and of understanding's share of the gradient norm) drawn as a PNG.

Cells where a task does not reach the group are blank (grey): the cosine needs both tasks'
gradients there, the share either's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from searchvlm.report._canvas import save

__all__ = ["GradientsInfo", "gradients_info", "gradients_png"]

Grid = list[list[float | None]]  # (layers, groups)


@dataclass(frozen=True)
class GradientsInfo:
    """The figure's numbers: title, group names, and per checkpoint (label, cosine grid,
    understanding-share grid); rows are layers (0-based in the data, 1-based on the axis)."""

    title: str
    groups: list[str]
    panels: list[tuple[str, Grid, Grid]]


def gradients_info(report: Any) -> GradientsInfo:
    """The figure of a `searchvlm.records.diagnose.DiagnoseReport`."""
    panels = []
    for c in report.checkpoints:
        cos = [[layer[g]["cosine"] for g in report.groups] for layer in c.layers]
        share = [[layer[g]["und_share"] for g in report.groups] for layer in c.layers]
        panels.append((f"{c.label} (step {c.step})", cos, share))
    overall = report.checkpoints[-1].overall["cosine"]
    title = (
        f"{report.policy.name or 'policy'}: task gradients per layer and group\n(seed {report.seed}, "
        f"{report.batches} batches of {report.batch_size}; whole-model cosine at {report.checkpoints[-1].label}: "
        f"{'-' if overall is None else f'{overall:+.3f}'})"
    )
    return GradientsInfo(title, list(report.groups), panels)


def gradients_png(info: GradientsInfo, path: Path) -> Path:
    """Two rows of heatmaps (cosine in [-1, 1]; understanding's share in [0, 1]), one column
    per checkpoint, every cell labelled with its value."""
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    n = len(info.panels)
    layers = len(info.panels[0][1])
    fig = Figure(figsize=(1.0 + 4.2 * n, 1.6 + 0.7 * layers * 2), dpi=120, layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    rows = (("cosine(g_U, g_G)", "RdBu_r", -1.0, 1.0), ("understanding share of |g|", "PuOr", 0.0, 1.0))
    for col, (label, *grids) in enumerate(info.panels):
        for row, ((name, cmap, lo, hi), grid) in enumerate(zip(rows, grids)):
            ax = axes[row][col]
            values = np.array([[np.nan if v is None else v for v in r] for r in grid], dtype=float)  # (L, G)
            cm = colormaps[cmap].with_extremes(bad="lightgrey")
            image = ax.imshow(np.ma.masked_invalid(values), cmap=cm, vmin=lo, vmax=hi, aspect="auto")
            for (i, j), v in np.ndenumerate(values):
                dark = not np.isnan(v) and abs(v - (lo + hi) / 2) > 0.35 * (hi - lo)  # ends of both maps are dark
                ax.text(j, i, "–" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if dark else "black")  # fmt: skip
            ax.set_xticks(range(len(info.groups)), info.groups, fontsize=6, rotation=45, ha="right")
            ax.set_yticks(range(layers), [f"L{i + 1}" for i in range(layers)], fontsize=6)
            ax.set_title(f"{name}\n{label}", fontsize=8)
            if col == n - 1:
                fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle(info.title, fontsize=8)
    return save(fig, path)

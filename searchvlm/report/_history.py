"""The hypervolume-history figure: `HistoryInfo` (the search's volume after each trial) as PNG.

The history is the search's (trials.csv as it ran), also when confirmed numbers rank the front.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from searchvlm.objectives.pareto import Row, hypervolume_history
from searchvlm.report._canvas import new_axes, save

__all__ = ["HistoryInfo", "history_info", "history_png"]


@dataclass(frozen=True)
class HistoryInfo:
    """The hypervolume after each trial number, against the reference point `ref`."""

    title: str
    numbers: list[int]
    volumes: list[float]


def history_info(search: Sequence[Row], name: str, ref: tuple[float, float]) -> HistoryInfo:
    """The history of the search's rows `search` (sweep `name`) against `ref`."""
    hist = hypervolume_history(search, ref)
    return HistoryInfo(
        title=f"{name}: hypervolume (ref: FLOPs ratio {ref[0]:g}, synergy gain {ref[1]:+.4g})",
        numbers=[n for n, _ in hist],
        volumes=[h for _, h in hist],
    )


def history_png(info: HistoryInfo, path: Path) -> Path:
    """The history as a step curve with a dot per trial."""
    fig, ax = new_axes((7.0, 4.0))
    if info.numbers:
        ax.step(info.numbers, info.volumes, where="post", color="C0")
        ax.plot(info.numbers, info.volumes, "o", ms=3, color="C0")
    ax.set_xlabel("trial number")
    ax.set_ylabel("hypervolume")
    ax.set_title(info.title)
    ax.grid(alpha=0.3)
    return save(fig, path)

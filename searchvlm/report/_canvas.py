"""What every figure draws on: a matplotlib Figure (object API, Agg canvas, no pyplot
state), the one offline plotly bundle beside the HTML reports, and file-name slugs.

matplotlib and plotly are imported inside the functions, so importing the report package
loads neither.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

PLOTLY_JS = "plotly.min.js"

__all__ = ["PLOTLY_JS", "new_axes", "plotly_js", "save", "slug"]


def new_axes(figsize: tuple[float, float] = (7.5, 5.0)) -> tuple[Any, Any]:
    """A figure (120 dpi, constrained layout) and its one axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=120, layout="constrained")
    return fig, fig.add_subplot()


def save(fig: Any, path: Path) -> Path:
    """Write `fig` to `path` (its folder made) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def slug(text: str) -> str:
    """`text` as a file-name part: runs of other characters become `_`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "objective"


def plotly_js(folder: Path) -> Path:
    """One plotly.min.js beside the HTML reports (`include_plotlyjs="directory"`: offline, one
    copy per folder); replaced when it is not this plotly's bundle (plotly keeps any file)."""
    from plotly.offline import get_plotlyjs

    path = folder / PLOTLY_JS
    bundle = get_plotlyjs()
    if not path.exists() or path.stat().st_size != len(bundle.encode()):
        path.write_text(bundle, encoding="utf-8")
    return path

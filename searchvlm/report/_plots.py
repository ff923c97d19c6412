"""A sweep's report files: every figure drawn into one folder (`pareto_plots`), with a stamp
of the inputs beside them so `plots_current` can tell, without drawing, that they are current.

The drawing never logs to MLflow: it returns file paths, and the `pareto` command
(`searchvlm.report._pareto`) hands them to the tracking module.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from searchvlm.objectives.pareto import hypervolume
from searchvlm.report._canvas import PLOTLY_JS
from searchvlm.report._front import front_html, front_info, front_png
from searchvlm.report._history import history_info, history_png
from searchvlm.report._importance import importance_plots
from searchvlm.report._summary import Sweep, Volume, read_sweep
from searchvlm.schema.results import CONFIRMED_FILE, SWEEP_FILE, TRIALS_FILE, resolve_run_dir

log = logging.getLogger("searchvlm.report")

STAMP_FILE = ".inputs.json"  # in the report folder: what the plots were drawn from
_INPUT_FILES = (TRIALS_FILE, CONFIRMED_FILE, SWEEP_FILE)

__all__ = ["STAMP_FILE", "draw", "inputs_key", "pareto_plots", "plots_current", "report_dir", "stamped"]


def pareto_plots(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    ref: Sequence[float] | None = None,
    runs_dir: str | Path = "runs",
) -> dict[str, Path]:
    """Write the sweep's report files; returns `{name: path}` for the tracking module to log.

    Keys: `front_png`, `front_html` (interactive; loads `plotly_js`, the one plotly.min.js
    beside it, so it works offline), `plotly_js`, `hypervolume_png`, and
    `importance_<metric>` per objective when the Optuna study allows it (otherwise the
    reason is logged as a warning). `out_dir` defaults to `<run_dir>/report`. Both fronts
    mark the knee (the trial `export` picks by default). A stamp of the inputs is written
    beside them: `plots_current` then answers without drawing anything.
    """
    run = resolve_run_dir(run_dir, runs_dir)
    s = read_sweep(run)
    return draw(s, report_dir(run, out_dir), hypervolume(s.rows, ref), inputs_key(run, ref))


def report_dir(run: Path, out_dir: str | Path | None) -> Path:
    """Where a sweep's report files go: `out_dir`, else `<run>/report`."""
    return Path(out_dir) if out_dir is not None else run / "report"


def draw(s: Sweep, out: Path, hv: Volume, key: str) -> dict[str, Path]:
    """`pareto_plots` of a sweep read once; `hv`: `hypervolume(s.rows, ref)`, `key`: the inputs stamp."""
    out.mkdir(parents=True, exist_ok=True)
    front = front_info(s, hv)
    html = front_html(front, out / "pareto_front.html")
    paths = {
        "front_png": front_png(front, out / "pareto_front.png"),
        "front_html": html,
        "plotly_js": html.parent / PLOTLY_JS,
        "hypervolume_png": history_png(history_info(s.search, s.name, hv[1]), out / "hypervolume_history.png"),
    }
    extra, reason = importance_plots(s.run, out, s.name)
    if reason:
        log.warning(reason)
    paths = {**paths, **extra}
    _write_stamp(out, key, paths)
    return paths


# --------------------------------------------------------------------------- up-to-date check


def inputs_key(run: Path, ref: Sequence[float] | None) -> str:
    """SHA-256 of what the plots show: trials.csv, confirmed.csv, sweep.json (a few kB to
    read), the reference point and the package version (a new version may draw differently)."""
    from searchvlm import __version__

    h = hashlib.sha256(f"{__version__}|{None if ref is None else [float(v) for v in ref]}".encode())
    for name in _INPUT_FILES:
        h.update(f"|{name}|".encode())
        h.update((run / name).read_bytes() if (run / name).exists() else b"-")
    return h.hexdigest()


def _write_stamp(out: Path, key: str, paths: dict[str, Path]) -> None:
    data = {"inputs_sha256": key, "files": {k: p.name for k, p in paths.items()}}
    (out / STAMP_FILE).write_text(json.dumps(data, indent=1) + "\n")


def plots_current(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    ref: Sequence[float] | None = None,
    runs_dir: str | Path = "runs",
) -> dict[str, Path] | None:
    """The report files `pareto_plots` wrote, when its inputs (trials.csv, confirmed.csv,
    sweep.json, `ref`) are unchanged since and every file is still there; else None (draw
    again). Reads a few kB: `pareto` uses it to skip redrawing and re-logging."""
    run = resolve_run_dir(run_dir, runs_dir)
    return stamped(report_dir(run, out_dir), inputs_key(run, ref))


def stamped(out: Path, key: str) -> dict[str, Path] | None:
    """The files of `out`'s stamp when it was written for inputs `key` and all still exist."""
    try:
        stamp = json.loads((out / STAMP_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    paths = {k: out / v for k, v in stamp.get("files", {}).items()}
    if stamp.get("inputs_sha256") != key or not paths or not all(p.exists() for p in paths.values()):
        return None
    return paths

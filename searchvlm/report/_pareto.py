"""The `pareto` command: a sweep's summary, front table and report files from one read of its
tables, and their MLflow logging (through `searchvlm.tracking`, the one MLflow importer)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from searchvlm.objectives.pareto import hypervolume
from searchvlm.report._plots import draw, inputs_key, report_dir, stamped
from searchvlm.report._summary import front_cells, read_sweep, summary_metrics, summary_of, sweep_ties
from searchvlm.schema.errors import warn_damaged
from searchvlm.schema.results import SWEEP_FILE, read_meta, resolve_run_dir, store_problem, sweep_tracking_uri

__all__ = ["ParetoReport", "pareto_report"]


@dataclass(frozen=True)
class ParetoReport:
    """What `pareto_report` produced: the JSON summary (`pareto_summary`), the front as table
    cells (`front_table`), the report files and whether they were already current."""

    summary: dict[str, Any]
    table: list[dict[str, str]]
    plots: dict[str, Path] = field(default_factory=dict)
    plots_unchanged: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The summary with the plot paths (`pareto --json`)."""
        return {**self.summary, "plots": {k: str(v) for k, v in self.plots.items()},
                "plots_unchanged": self.plots_unchanged}  # fmt: skip


def pareto_report(
    run_dir: str | Path,
    ref: Sequence[float] | None = None,
    runs_dir: str | Path = "runs",
    *,
    plots: bool = True,
    force: bool = False,
) -> ParetoReport:
    """The `pareto` command: a sweep's summary, front table and plots from one read of its
    tables (one front, one hypervolume). Plots are drawn, and logged with the summary metrics
    to the sweep's MLflow parent run, only when the inputs changed since they were drawn
    (`plots_current`) or with `force`; `plots=False` reads only: nothing is written or logged."""
    run = resolve_run_dir(run_dir, runs_dir)
    key = inputs_key(run, ref)  # before reading: a table changed meanwhile is redrawn next time
    s = read_sweep(run)
    hv, tie = hypervolume(s.rows, ref), sweep_ties(s.rows, s.noise and s.noise.sd)
    summary = summary_of(s, ref, hv, tie)
    paths = stamped(report_dir(run, None), key) if plots and not force else None
    unchanged = paths is not None
    if plots and not unchanged:
        paths = draw(s, report_dir(run, None), hv, key)
        _log_report(summary, paths)
    return ParetoReport(summary, front_cells(s.front, tie), paths or {}, unchanged)


def _log_report(summary: dict[str, Any], paths: dict[str, Path]) -> None:
    """Log the plots and the summary metrics to the sweep's MLflow parent run when the
    sweep recorded one (in the store beside it when `runs/` was moved)."""
    run_dir = Path(summary["run_dir"])
    if not (run_dir / SWEEP_FILE).exists():
        return
    meta = read_meta(run_dir / SWEEP_FILE)
    uri = sweep_tracking_uri(meta, run_dir)
    if not (uri and meta.parent_run_id):
        return
    store = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    problem = store_problem(store, "runs") if store is not None else None
    if problem is not None:  # the report is written; only its MLflow copy is skipped
        warn_damaged(store, "", f"{problem}; the report was not logged to MLflow")
        return
    from searchvlm.tracking import log_report

    log_report(uri, run_dir.parent, meta.parent_run_id, list(paths.values()), summary_metrics(summary),
               summary["trials"])  # fmt: skip

"""Sweep reports: the numbers of a front, its figures (PNG, interactive HTML) and the
`pareto`, `show` and `export` commands.

L4 module. One module per job, each figure Optuna-style: a small typed "info" record
computed once from the sweep, then drawn by each backend (no drawing function re-derives
the data). matplotlib (object API, Agg canvas, no pyplot state), plotly and optuna are
imported inside the functions that draw, so `front_table` / `pareto_summary` stay light.

| module | owns |
|---|---|
| `_summary` | the numbers: a sweep read once, `pareto_summary`, `front_table`, `summary_metrics` |
| `_front` | the Pareto-front figure: `FrontInfo`, `front_png`, `front_html` |
| `_history` | the hypervolume history: `HistoryInfo`, `history_png` |
| `_importance` | PED-ANOVA importance per objective: `ImportanceInfo`, `importance_png` |
| `_policy` | one policy's picture (`PolicyInfo`, `policy_png`) and the `show` command |
| `_gradients` | the task-gradient heatmap of `diagnose` (`GradientsInfo`, `gradients_png`) |
| `_plots` | a sweep's report folder: every figure, the inputs stamp (`plots_current`) |
| `_pareto` | the `pareto` command and its MLflow logging |
| `_export` | the `export` command: the policy file and its picture |
| `_canvas` | what the figures draw on: a matplotlib Figure, the offline plotly bundle |
| `_console` | the tables the command line and a sweep print (rich), whole off a terminal |

When `searchvlm confirm` has written `confirmed.csv`, the front, knee, hypervolume and plots
use the confirmed policies' fresh-seed numbers (the summary says `numbers: confirmed`); the
hypervolume history stays the search's.
"""

from __future__ import annotations

from searchvlm.report._canvas import PLOTLY_JS
from searchvlm.report._export import ExportReport, export_report
from searchvlm.report._importance import MIN_IMPORTANCE_TRIALS, importance_plots
from searchvlm.report._pareto import ParetoReport, pareto_report
from searchvlm.report._plots import STAMP_FILE, pareto_plots, plots_current
from searchvlm.report._policy import policy_picture, policy_png
from searchvlm.report._summary import (
    SeedNoise,
    front_table,
    one_seed,
    pareto_summary,
    policy_summary,
    seed_noise,
    status_counts,
    summary_metrics,
)

__all__ = [
    "MIN_IMPORTANCE_TRIALS",
    "PLOTLY_JS",
    "STAMP_FILE",
    "ExportReport",
    "ParetoReport",
    "SeedNoise",
    "export_report",
    "front_table",
    "importance_plots",
    "one_seed",
    "pareto_plots",
    "pareto_report",
    "pareto_summary",
    "plots_current",
    "policy_picture",
    "policy_png",
    "policy_summary",
    "seed_noise",
    "status_counts",
    "summary_metrics",
]

"""The command line's tables: a renderer per command's table, and `print_table`, which keeps
them whole wherever they are printed: a terminal, a pipe, CI, nohup, a file.

rich lays a table out to the console's width, and a console that is not a terminal is 80
columns wide (or `$COLUMNS`): a wide table then gets one-character columns and numbers
cut to `-0.0…`. Off a terminal, `print_table` prints at the table's natural width instead
(no cell is cut, folded or wrapped), so logs hold the complete numbers. On a terminal the
table is laid out as rich does it (tables mark their number columns `no_wrap`, so the text
columns give way first).
"""

from __future__ import annotations

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from searchvlm.schema.metrics import UND_METRIC, gen_metric_choices, listed
from searchvlm.schema.trial_result import gen_gain_text, last_round_text

#: width a table is measured at off a terminal (wider than any table we print)
_UNBOUNDED = 100_000

__all__ = [
    "alpha_table",
    "cells_table",
    "compare_table",
    "confirm_table",
    "gradients_tables",
    "presets_table",
    "print_pareto",
    "print_table",
    "result_table",
    "runs_table",
]


def natural_width(console: Console, table: Table) -> int:
    """The width `table` takes when nothing limits it (cells, padding and borders)."""
    options = console.options.update_width(_UNBOUNDED)
    return max(1, Measurement.get(console, options, table).maximum)


def print_table(console: Console, table: Table) -> None:
    """Print `table` on `console`; off a terminal at its natural width (see the module doc)."""
    if console.is_terminal:
        console.print(table)
        return
    width = max(natural_width(console, table), console.width)
    Console(file=console.file, width=width, color_system=None, highlight=False).print(table)


# --------------------------------------------------------------------------- a table per command


def result_table(result, gen_metric: str = "nll", last_step: int | None = None) -> Table:
    """`trial`: one trial's joint, isolated and gain numbers per metric; g_G stands on the
    row of `gen_metric` (`synergy.gen_metric`), the other generation rows show none. With
    `last_step` (the training's last round, when each run is scored at its best one) the
    caption names the runs of g_U and g_G whose best round was the last (still improving)."""
    table = Table(title=f"trial: {result.policy.name if result.policy else ''} ({result.status})")
    table.add_column("metric")
    for col in ("joint", "isolated", "gain"):
        table.add_column(col, justify="right", no_wrap=True)
    fmt = lambda v, spec=".4f": "-" if v is None else format(v, spec)  # noqa: E731
    for m in listed():  # a row per metric (`searchvlm.schema.metrics`); those reported every round always,
        joint = getattr(result, m.name, None)  # the others where scored (not None)
        if joint is None and not m.per_round:
            continue
        if m.name == UND_METRIC:
            gain = fmt(result.und_gain)
        else:
            gain = gen_gain_text(result, ".4f") if m.choice is not None and m.choice == gen_metric else ""
        table.add_row(m.label, fmt(joint, m.fmt), fmt(getattr(result, m.iso, None), m.fmt), gain)
    se = "" if result.synergy_gain_stderr is None else f" ± {result.synergy_gain_stderr:.4f}"
    table.add_row("synergy gain", "", "", f"{fmt(result.synergy_gain)}{se}")
    table.add_row("FLOPs ratio", fmt(result.flops_ratio), "1.0000", "")
    table.caption = (f"seeds {result.seeds} · {result.steps_done} steps · {result.train_seconds:.1f}s joint training"
                     f" · measured on {result.cpu or 'an unrecorded CPU'}")  # fmt: skip
    if last_step is not None and result.per_seed:
        late = last_round_text(result.per_seed, last_step, (UND_METRIC, gen_metric_choices().get(gen_metric, "")))
        table.caption += (f"\nbest round = the last (step {last_step}), a gain at this budget: {late}" if late
                          else f"\nevery run of g_U and g_G peaked before its last round ({last_step})")  # fmt: skip
    return table


def presets_table(compiled: dict, layers: int) -> Table:
    """`presets`: each named policy compiled for `layers` layers (mode/selector, keep ratios,
    sharing and the layers it splits)."""
    table = Table(title=f"presets ({layers} layers)")
    for col in ("name", "understanding", "generation", "sharing"):
        table.add_column(col)
    for name, p in compiled.items():
        keep = lambda tp: f"{tp.mode}/{tp.selector} " + " ".join(f"{k:.2g}" for k in tp.keep)  # noqa: E731
        table.add_row(name, keep(p.understanding), keep(p.generation), _sharing_cell(p.sharing))
    return table


def _sharing_cell(sharing) -> str:
    """`qkv=modality mlp=shared`, then the layers a split applies to where it is not all of them."""
    cell = f"qkv={sharing.qkv} mlp={sharing.mlp}"
    split = sharing.qkv != "shared" or sharing.mlp != "shared"
    if split and sharing.scope is not None:
        cell += " in layers " + ",".join(map(str, sharing.scope))
    return cell


def cells_table(title: str, cells: list[dict]) -> Table:
    """`pareto`, `compare`: display cells (a dict per row, keys the headers; `searchvlm.report.front_table`)."""
    table = Table(title=title)
    for col in cells[0] if cells else {"trial": ""}:
        table.add_column(col, no_wrap=col != "policy")  # on a narrow terminal the policy wraps
    for row in cells:
        table.add_row(*row.values())
    return table


def confirm_table(summary) -> Table:
    """`confirm`: each confirmed policy, search and confirmed synergy, shrinkage, vs dense."""
    table = Table(title=f"confirmed on seeds {summary.seeds} ({summary.path})")
    if summary.margin:
        table.caption = (f"vs -δ: each row against dense at δ {summary.margin[0]:g} (the space's decision:), "
                         f"one-sided at α {summary.margin[1]:g} / {len(summary.verdicts)} rows")  # fmt: skip
    for col in ("trial", "#", "FLOPs", "search", "confirmed ± s.e.", "shrinkage", "vs dense ± s.e.", "vs -δ", "status"):
        table.add_column(col, justify="left" if col in ("trial", "status") else "right", no_wrap=True)
    f = lambda v, spec="+.4f": "-" if v is None else format(v, spec)  # noqa: E731
    for r in summary.rows:
        table.add_row(str(r["trial_id"]), str(r["number"]), f(r.get("flops_ratio"), ".3f"),
                      f(r.get("search_synergy_gain")),
                      f"{f(r.get('synergy_gain'))} ± {f(r.get('synergy_gain_stderr'), '.4f')}", f(r.get("shrinkage")),
                      f"{f(r.get('synergy_vs_dense'))} ± {f(r.get('synergy_vs_dense_stderr'), '.4f')}",
                      _verdict(summary.verdicts.get(str(r["trial_id"]))),
                      r["status"] + (f": {r['error'][:60]}" if r.get("error") else ""))  # fmt: skip
    return table


def _verdict(test) -> str:
    """A confirmed row's verdict cell: its state and lower bound."""
    return "-" if test is None else f"{test.state.replace('_', '-')} (LB {test.lower:+.4f})"


def runs_table(infos) -> Table:
    """`runs`: every sweep under the runs folder, its counts, front size and creation time."""
    table = Table(title=f"sweeps ({len(infos)})")
    for col in ("name", "trials", "ok", "failed", "pruned", "front", "best synergy", "created"):
        table.add_column(col, justify="left" if col in ("name", "created") else "right", no_wrap=True)
    for r in infos:
        best = "" if r.best_synergy is None else f"{r.best_synergy:+.4f}"
        trials = f"{r.trials}/{r.samples}" if r.samples else str(r.trials)
        table.add_row(r.name, trials, str(r.ok), str(r.failed), str(r.pruned), str(r.front), best, r.created or "")
    return table


def compare_table(cmp) -> Table:
    """`compare`: two sweeps' numbers side by side, the shared reference point in the caption."""
    fa, fb = cmp.fronts
    table = Table(title=f"{fa.sweep} vs {fb.sweep}")
    for col in ("", fa.sweep, fb.sweep):
        table.add_column(col, justify="left" if not col else "right", no_wrap=True)
    cell = lambda v: "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    for metric, va, vb in cmp.table():
        table.add_row(metric, cell(va), cell(vb))
    table.caption = f"hypervolume reference: flops_ratio {cmp.ref[0]:g}, synergy_gain {cmp.ref[1]:.4f} (both sweeps)"
    return table


def alpha_table(done) -> Table:
    """`analyze`: the attention share α per layer of each task and segment (`AnalysisOutcome.alpha_rows`)."""
    rows = done.alpha_rows()
    table = Table(title=f"attention share α per layer ({done.report.source}, {done.report.steps} steps)")
    table.add_column("task / segment")
    for i in range(len(rows[0][1])):
        table.add_column(f"L{i + 1}", justify="right", no_wrap=True)
    for label, vals in rows:
        table.add_row(label, *(f"{v:.3f}" for v in vals))
    return table


def gradients_tables(report) -> list[Table]:
    """`diagnose`: per checkpoint, the cosine of the two tasks' gradients and (in brackets)
    understanding's share of the gradient norm, per layer and group ('-': not reached)."""
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    tables = []
    for c in report.checkpoints:
        whole = f"{fmt(c.overall['cosine'], '+.3f')} ({fmt(c.overall['und_share'], '.2f')})"
        name = report.policy.name or "policy"
        table = Table(title=f"{name} at {c.label} (step {c.step}): cosine (und share); whole model {whole}")
        table.add_column("layer")
        for g in report.groups:
            table.add_column(g, justify="right", no_wrap=True)
        for i, layer in enumerate(c.layers):
            cells = [f"{fmt(layer[g]['cosine'], '+.3f')} ({fmt(layer[g]['und_share'], '.2f')})" for g in report.groups]
            table.add_row(f"L{i + 1}", *cells)
        tables.append(table)
    return tables


#: what `pareto` says after the hypervolume's reference synergy (`pareto.default_ref_source`, or --ref)
REF_SOURCE = {"dense": " = the dense trial's", "worst": " = worst seen", "user": ""}


def print_pareto(console: Console, report) -> None:
    """`pareto`: the front table of a `ParetoReport`, which numbers it is computed on, the
    near-front policies, the hypervolume with its reference point, the knee and the plots."""
    summary = report.summary
    title = f"Pareto front of {summary['sweep']} ({summary['trials']} trials: {summary['counts']})"
    print_table(console, cells_table(title, report.table))
    if summary["numbers"] == "confirmed":
        console.print(f"numbers: confirmed on fresh seeds {summary['confirmed_seeds']} for "
                      f"{summary['confirmed_policies']} policies (confirmed.csv); the front is computed on them",
                      highlight=False)  # fmt: skip
    else:
        console.print("numbers: the search's (not confirmed; `searchvlm confirm` retrains the front on fresh seeds)",
                      highlight=False)  # fmt: skip
    if summary["seed_noise_line"] and summary["numbers"] != "confirmed":
        console.print(summary["seed_noise_line"], highlight=False)
    if summary["near_front"]:
        console.print(f"near the front (within 2 s.e.): {', '.join(summary['near_front'])}", highlight=False)
    r = summary["ref"]
    console.print(
        f"hypervolume {summary['hypervolume']:.4f} (reference: flops_ratio {r['flops_ratio']:.3f}, "
        f"synergy_gain {r['synergy_gain']:.4f}{REF_SOURCE[summary['ref_source']]}); "
        f"knee: {summary['knee']}"
    )
    if report.plots_unchanged:
        console.print("plots unchanged since trials.csv was last drawn (--force redraws them):", highlight=False)
    for name, path in report.plots.items():
        console.print(f"  {name}: {path}")

"""The run-management commands of the `searchvlm` command line (L5; `searchvlm.cli`
registers them): `runs` (alias `ls`) with `--check` / `--repair`, `compare` and `rm`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from searchvlm.cli._base import console, out, print_json, ref_option
from searchvlm.report._console import cells_table, compare_table, print_table, runs_table
from searchvlm.schema.errors import COMMAND_LINE, ConfigError


def runs_(
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="where sweeps live"),
    as_json: bool = typer.Option(False, "--json", help="print the list as JSON"),
    check: Optional[str] = typer.Option(
        None, "--check", help="compare this sweep's trials.csv with its Optuna study and MLflow runs instead"
    ),
    repair: bool = typer.Option(False, "--repair", help="with --check: rebuild the rows trials.csv lost from them"),
) -> None:
    """List every sweep under the runs folder: trials ok / failed / pruned, front size, created (alias: ls).

    Example: searchvlm runs --check quick"""
    from searchvlm.records.runs import list_runs

    if check is not None or repair:
        _check_records(check, repair, runs_dir, as_json)
        return
    infos = list_runs(runs_dir)
    if as_json:
        print_json([r.to_dict() for r in infos])
        return
    print_table(out, runs_table(infos))
    for r in infos:
        if r.problem:
            console.print(f"[yellow]warning:[/yellow] {r.problem}", highlight=False, soft_wrap=True)


def _check_records(name: Optional[str], repair: bool, runs_dir: Path, as_json: bool) -> None:
    """`runs --check NAME [--repair]`: the findings, one line each; exit 1 while any remain."""
    from searchvlm.records.recover import check_run, repair_run

    if not name:
        raise ConfigError(COMMAND_LINE, "--check", name, "name the sweep to check (--repair needs it too)")
    found = (repair_run if repair else check_run)(name, runs_dir)
    if as_json:
        print_json({"ok": found.ok, "lines": found.lines(), "missing": found.missing, "repaired": found.repaired})
    else:
        for line in found.lines():
            out.print(line, highlight=False, markup=False)
    raise typer.Exit(0 if found.ok else 1)


def compare(
    a: str = typer.Argument(..., help="first sweep (name under --runs-dir, or folder)"),
    b: str = typer.Argument(..., help="second sweep"),
    ref: Optional[str] = typer.Option(None, "--ref", help="hypervolume reference FLOPS,SYNERGY for both"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="where sweeps live"),
    as_json: bool = typer.Option(False, "--json", help="print the comparison as JSON"),
) -> None:
    """Two sweeps side by side: counts, hypervolume (one reference point), best synergy, fronts.

    Example: searchvlm compare quick quick5 --ref 1.0,-0.2"""
    from searchvlm.records.runs import compare_runs

    cmp = compare_runs(a, b, runs_dir, ref_option(ref))
    if as_json:
        print_json(cmp.to_dict())
        return
    print_table(out, compare_table(cmp))
    for f, cells in zip(cmp.fronts, cmp.tables):
        print_table(out, cells_table(f"front of {f.sweep}", cells))


def rm(
    name: str = typer.Argument(..., help="sweep name under --runs-dir"),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="where sweeps live"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow URI (default: the sweep's)"),
    keep_storage: bool = typer.Option(
        False, "--keep-storage", help="leave Tune's state where --storage put it (prints the command that deletes it)"
    ),
) -> None:
    """Delete a sweep: runs/NAME, its MLflow runs (parent and every trial's child run) and Tune's state in --storage.

    Example: searchvlm rm quick5 --yes"""
    from searchvlm.records.runs import removable, remove_run

    target = removable(name, runs_dir)
    storage = _storage_of(target)
    what = f"its MLflow runs and Tune's state in {storage}" if storage and not keep_storage else "its MLflow runs"
    if not yes and not _confirm(f"delete {target}, {what}?"):
        console.print(f"kept {target}", highlight=False)
        raise typer.Exit(1)
    removed = remove_run(name, runs_dir, tracking_uri, keep_storage=keep_storage)
    out.print(f"deleted {removed.run_dir} and {removed.mlflow_runs} MLflow runs"
              f"{f' in {removed.tracking_uri}' if removed.tracking_uri else ''}", highlight=False)  # fmt: skip
    if removed.tune_state_kept:
        out.print(f"kept Tune's state in {removed.tune_state}: delete it with `{removed.tune_state_kept}`",
                  highlight=False, soft_wrap=True)  # fmt: skip
    elif removed.tune_state:
        done = "deleted" if removed.tune_state_removed else "found no"
        out.print(f"{done} Tune's state in {removed.tune_state}", highlight=False, soft_wrap=True)


def _storage_of(run_dir: Path) -> str | None:
    """Where the sweep kept Tune's state outside its folder (`--storage`, from sweep.json), to say so."""
    from searchvlm.schema.results import SWEEP_FILE, read_meta

    if not (run_dir / SWEEP_FILE).exists():
        return None
    storage = getattr(read_meta(run_dir / SWEEP_FILE), "storage", None)
    return f"{storage.rstrip('/')}/{run_dir.name}" if storage else None


def _confirm(question: str) -> bool:
    """Ask on the terminal; no answer (end of input, no terminal) is no."""
    try:
        return typer.confirm(question, default=False, err=True)
    except typer.Abort:
        console.print()
        return False

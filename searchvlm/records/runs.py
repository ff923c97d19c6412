"""Managing sweeps: list the sweeps of a runs folder, compare two, delete one (with its MLflow runs).

Reads the `results` contract (`trials.csv`, `sweep.json`); Pareto numbers come from
`searchvlm.objectives.pareto` through `searchvlm.records.frames`, so they are `searchvlm pareto`'s.
MLflow is reached only through `searchvlm.tracking`, imported when a sweep is deleted.
"""

from __future__ import annotations

import datetime as dt
import html
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from searchvlm.schema.errors import COMMAND_LINE, ConfigError
from searchvlm.schema.results import (
    SWEEP_FILE,
    TRIALS_FILE,
    read_meta,
    read_trials,
    sweep_lock,
    sweep_tracking_uri,
)

__all__ = ["Comparison", "RunInfo", "RunList", "Removed", "compare_runs", "list_runs", "remove_run", "removable"]


def _html_table(head: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "") -> str:
    cell = lambda v: html.escape("" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    thead = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f"<table>{cap}<thead><tr>{thead}</tr></thead><tbody>{body}</tbody></table>"


# --------------------------------------------------------------------------- list


@dataclass(frozen=True)
class RunInfo:
    """One sweep of a runs folder: trials per status, front size, when it was created."""

    name: str
    run_dir: str
    trials: int
    samples: int | None
    ok: int
    failed: int
    pruned: int
    front: int
    best_synergy: float | None
    created: str | None
    problem: str | None = None  # a table that cannot be read (the sweep is still listed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


COLUMNS = ("name", "trials", "ok", "failed", "pruned", "front", "best_synergy", "created")


class RunList(list):
    """`list_runs`'s answer: a list of RunInfo that shows as a table in a notebook."""

    def _repr_html_(self) -> str:
        rows = [[getattr(r, c) if c != "trials" else _trials_text(r) for c in COLUMNS] for r in self]
        return _html_table(COLUMNS, rows, "sweeps")

    def to_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame([r.to_dict() for r in self], columns=list(RunInfo.__dataclass_fields__))


def _trials_text(r: RunInfo) -> str:
    return f"{r.trials}/{r.samples}" if r.samples else str(r.trials)


def _created(run_dir: Path, meta: Any) -> str | None:
    if meta is not None and meta.created:
        return meta.created
    return dt.datetime.fromtimestamp(run_dir.stat().st_mtime).isoformat(timespec="seconds")


def _info(run_dir: Path) -> RunInfo:
    from searchvlm.objectives.pareto import front, is_valid

    meta = read_meta(run_dir / SWEEP_FILE) if (run_dir / SWEEP_FILE).exists() else None
    samples = (getattr(meta, "search", None) or {}).get("samples") if meta else None
    problem, rows = None, []
    try:
        rows = read_trials(run_dir / TRIALS_FILE) if (run_dir / TRIALS_FILE).exists() else []
    except ConfigError as err:
        problem = str(err)
    status = [r["status"] for r in rows]
    syn = [r["synergy_gain"] for r in rows if is_valid(r)]
    return RunInfo(name=meta.name if meta else run_dir.name, run_dir=str(run_dir), trials=len(rows),
                   samples=samples, ok=sum(is_valid(r) for r in rows), failed=status.count("failed"),
                   pruned=status.count("pruned"), front=len(front(rows)), best_synergy=max(syn) if syn else None,
                   created=_created(run_dir, meta), problem=problem)  # fmt: skip


def _is_sweep(path: Path) -> bool:
    return path.is_dir() and ((path / SWEEP_FILE).exists() or (path / TRIALS_FILE).exists())


def list_runs(runs_dir: str | Path = "runs") -> RunList:
    """Every sweep under `runs_dir` (`searchvlm runs`), oldest first: trials ok / failed /
    pruned, front size, best synergy gain, created. Other folders (cache, reports) are
    skipped; a missing `runs_dir` is a ConfigError naming it."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise ConfigError(COMMAND_LINE, "--runs-dir", str(root), "no such folder (where sweeps live)")
    infos = [_info(d) for d in sorted(root.iterdir()) if _is_sweep(d)]
    return RunList(sorted(infos, key=lambda r: (r.created or "", r.name)))


# --------------------------------------------------------------------------- compare


@dataclass(frozen=True)
class Comparison:
    """Two sweeps side by side (`searchvlm compare A B`): both fronts' hypervolume with ONE
    reference point, counts, best synergy, how much of each front the other covers, and
    each front as table cells."""

    fronts: tuple[Any, Any]  # (Front, Front)
    ref: tuple[float, float]
    best: tuple[dict[str, Any] | None, dict[str, Any] | None]  # the max-synergy trial of each
    coverage: tuple[float | None, float | None]  # share of the OTHER front each front weakly dominates
    tables: tuple[list[dict[str, str]], list[dict[str, str]]]  # each front as `report.front_table` cells

    def table(self) -> list[tuple[str, Any, Any]]:
        """(metric, A, B) rows."""
        a, b = self.fronts
        best = [None if x is None else f"{x['synergy_gain']:+.4f} ({x['trial_id']}, flops {x['flops_ratio']:.4f})"
                for x in self.best]  # fmt: skip
        rows = [("trials", sum(a.counts.values()), sum(b.counts.values()))]
        rows += [(s, a.counts.get(s, 0), b.counts.get(s, 0)) for s in ("ok", "failed", "pruned")]
        rows += [("front size", len(a), len(b)), ("hypervolume", a.hypervolume, b.hypervolume),
                 ("best synergy", best[0], best[1]), ("knee", a.knee, b.knee),
                 ("covers the other's front", self.coverage[0], self.coverage[1])]  # fmt: skip
        return rows

    def to_dict(self) -> dict[str, Any]:
        a, b = self.fronts
        return {"ref": {"flops_ratio": self.ref[0], "synergy_gain": self.ref[1]},
                "sweeps": [{**f.to_dict(), "best": best, "covers_other": cov}
                           for f, best, cov in zip((a, b), self.best, self.coverage)]}  # fmt: skip

    def _repr_html_(self) -> str:
        a, b = self.fronts
        caption = f"reference point: flops_ratio {self.ref[0]:g}, synergy_gain {self.ref[1]:.4f} (both sweeps)"
        return _html_table(("", a.sweep, b.sweep), self.table(), caption) + a._repr_html_() + b._repr_html_()


def _best(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    from searchvlm.objectives.pareto import is_valid, select

    if not any(is_valid(r) for r in rows):
        return None
    r = select(rows, "max-synergy")
    return {k: r[k] for k in ("trial_id", "number", "flops_ratio", "synergy_gain")}


def _coverage(mine: list[dict[str, Any]], other: list[dict[str, Any]]) -> float | None:
    """Zitzler's C(mine, other): the share of `other`'s front weakly dominated by `mine`'s."""
    import numpy as np

    from searchvlm.objectives.pareto import front, objectives

    a, b = objectives(front(mine)), objectives(front(other))  # (n, 2), (m, 2) minimised
    if len(b) == 0 or len(a) == 0:
        return None
    covered = (a[:, None, :] <= b[None, :, :]).all(axis=2).any(axis=0)  # (m,)
    return float(np.mean(covered))


def compare_runs(a: str | Path, b: str | Path, runs_dir: str | Path = "runs",
                 ref: Sequence[float] | None = None) -> Comparison:  # fmt: skip
    """Compare sweeps `a` and `b` (names under `runs_dir` or sweep folders).

    Both hypervolumes use one reference point: `ref`, else `default_ref` of the pooled rows
    (1.0, the lower dense-trial synergy, else the worst synergy seen in EITHER sweep), so
    the two numbers can be compared."""
    from searchvlm.objectives.pareto import default_ref
    from searchvlm.records.frames import _merged_rows, _sweep_name, front_of
    from searchvlm.schema.results import ranking_rows

    (da, all_a), (db, all_b) = _merged_rows(a, runs_dir), _merged_rows(b, runs_dir)
    ra, rb = ranking_rows(all_a), ranking_rows(all_b)  # what `pareto` ranks: confirmed numbers when any
    common = tuple(ref) if ref is not None else default_ref(ra + rb)
    fa, fb = front_of(all_a, da, _sweep_name(da), common), front_of(all_b, db, _sweep_name(db), common)
    return Comparison(fronts=(fa, fb), ref=fa.ref, best=(_best(ra), _best(rb)),
                      coverage=(_coverage(ra, rb), _coverage(rb, ra)),
                      tables=(_front_cells(fa, ra), _front_cells(fb, rb)))  # fmt: skip


def _front_cells(front: Any, rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The front's trials rows, in the Front's order, as `front_table` display cells (ties
    within the front)."""
    from searchvlm.report import front_table

    by_id = {r["trial_id"]: r for r in rows}
    return front_table([by_id[i] for i in front.trials["trial_id"]])


# --------------------------------------------------------------------------- remove


@dataclass(frozen=True)
class Removed:
    """What `remove_run` deleted."""

    run_dir: str
    mlflow_runs: int  # parent + children marked deleted (`mlflow gc` purges them for good)
    tracking_uri: str | None
    tune_state: str | None = None  # Tune's state outside the folder (`--storage`): where it is
    tune_state_removed: bool = False  # deleted now (False: kept on request, or none was there)
    tune_state_kept: str | None = None  # kept (`keep_storage`): the command that deletes it


def removable(name: str, runs_dir: str | Path = "runs") -> Path:
    """The sweep folder `runs_dir/name`, after checking it is one: a plain name (nothing that
    leaves the runs folder: no separator, `..`, absolute path or link out) of a folder holding
    a sweep. Raises ConfigError (command line, NAME) otherwise."""
    root = Path(runs_dir)
    if not name or name in (".", "..") or Path(name).name != name or "/" in name or "\\" in name:
        raise ConfigError(COMMAND_LINE, "NAME", name, f"must be the name of a sweep in {root} (no path)")
    target = root / name
    if target.is_symlink() or target.resolve().parent != root.resolve():
        raise ConfigError(COMMAND_LINE, "NAME", name, f"leads out of {root}; only sweeps inside it are deleted")
    if not _is_sweep(target):
        names = ", ".join(r.name for r in list_runs(root)) if root.is_dir() else ""
        raise ConfigError(COMMAND_LINE, "NAME", name, f"no sweep of this name in {root} (sweeps: {names or 'none'})")
    return target


def remove_run(name: str, runs_dir: str | Path = "runs", tracking_uri: str | None = None,
               keep_storage: bool = False) -> Removed:  # fmt: skip
    """Delete sweep `name`: Tune's state where the sweep kept it with `--storage` (its folder
    `<storage>/<name>` in a shared folder or S3 bucket, unless `keep_storage`), its MLflow runs
    (the parent run and every child, through `searchvlm.tracking`; the store is the one
    `sweep.json` records unless `tracking_uri`), then the folder `runs_dir/name`. A storage
    or MLflow store that fails leaves the folder in place (and sweep.json, which names them)."""
    target = removable(name, runs_dir)
    with sweep_lock(target, "NAME", "stop it first"):  # held while removing: no driver starts on it meanwhile
        return _remove(target, tracking_uri, keep_storage)


def _remove(target: Path, tracking_uri: str | None, keep_storage: bool) -> Removed:
    meta = read_meta(target / SWEEP_FILE) if (target / SWEEP_FILE).exists() else None
    uri = tracking_uri or (sweep_tracking_uri(meta, target) if meta else None)
    state, removed_state, kept = None, False, None
    if meta is not None and getattr(meta, "storage", None):
        from searchvlm.records._storage import tune_state

        tune = tune_state(target, meta.storage)
        state = tune.shown
        if keep_storage:
            kept = tune.removal_command
        else:
            removed_state = tune.remove(target / SWEEP_FILE)
    deleted = 0
    if uri and meta is not None and meta.parent_run_id:
        from searchvlm.tracking import delete_sweep_runs

        deleted = delete_sweep_runs(uri, meta.parent_run_id)
    if target.exists():  # (a storage path that was the sweep's own folder went with Tune's state)
        shutil.rmtree(target)
    return Removed(str(target), deleted, uri, state, removed_state, kept)

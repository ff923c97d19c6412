"""The tabular search benchmark's table: policy keys, enumeration of a finite space, file IO.

A table holds REAL trials (`run_trial`, one per seed) of every distinct policy of a finite
search space, with their final objectives and learning curves (the per-round `report` metrics), so
searches can be replayed on it without training (`search_replay.py`).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from searchvlm.schema.policy import TASKS, ReductionPolicy
from searchvlm.schema.space import SearchSpace

FORMAT = "searchvlm.tabular/v2"  # v2: per-seed runs, mean ± s.e. per row, a dense `reference` row


def policy_key(policy: ReductionPolicy) -> str:
    """Canonical key of what a policy computes: name dropped, a dense task's mode ignored."""
    data = policy.model_dump(mode="json", exclude={"name"})
    for task in TASKS:
        if all(k == 1.0 for k in data[task]["keep"]):
            data[task]["mode"] = "dense"
            data[task]["selector"] = "none"
    return json.dumps(data, sort_keys=True)


def enumerate_space(space: SearchSpace) -> dict[str, dict[str, Any]]:
    """Every distinct policy of a finite space: key -> the first params that give it."""
    grid = space.grid_space()
    out: dict[str, dict[str, Any]] = {}
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid, values))
        out.setdefault(policy_key(space.policy_from_params(params)), params)
    return out


def load_table(path: Path) -> dict[str, Any]:
    table = json.loads(Path(path).read_text())
    if table.get("format") != FORMAT:
        raise ValueError(f"{path}: format = {table.get('format')!r}, expected {FORMAT!r}")
    return table


def rows_by_key(table: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["key"]: row for row in table["rows"]}


def complete_rows(table: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows with every seed trained and ok: a proxy table's (`proxy_table.py`) against its
    planned `seeds` (a partial table's finished rows are a random subset: PROXY_TABLE_PLAN.md);
    a tabular table (complete by construction, no `seeds` list) by status and the most seeds
    any row has."""
    seeds = table.get("seeds")
    if seeds is None:
        n = max(len(r["seeds"]) for r in table["rows"])
        return [r for r in table["rows"] if r["status"] == "ok" and len(r["seeds"]) == n]
    return [r for r in table["rows"] if sorted(s["seed"] for s in r["seeds"] if s["status"] == "ok") == sorted(seeds)]

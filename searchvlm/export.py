"""Policy export: pick one trial of a sweep by a rule and write its validated PolicyFile.

L1 module (stdlib + pydantic + numpy through `pareto`): reads `runs/<sweep>/trials.csv`
and `sweep.json` (the `results` contract) and writes the JSON of DESIGN.md atomically
(a temporary file in the same folder, fsynced, then `os.replace`), so a crash never
leaves a partial policy file.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from searchvlm.errors import ConfigError, validate
from searchvlm.pareto import select
from searchvlm.policy import POLICY_SCHEMA, PolicyFile, ReductionPolicy
from searchvlm.results import (
    OBJECTIVE_COLUMNS,
    SWEEP_FILE,
    TRIALS_FILE,
    SweepMeta,
    read_meta,
    read_trials,
    resolve_run_dir,
)

#: trial columns copied into the file's `objectives` (what the trial reached)
OBJECTIVE_KEYS: tuple[str, ...] = OBJECTIVE_COLUMNS

__all__ = ["OBJECTIVE_KEYS", "build_policy_file", "export_policy", "write_policy_file"]


def _row_policy(row: dict[str, Any], trials: Path) -> ReductionPolicy:
    text = row.get("policy_json") or ""
    key = f"trial {row.get('trial_id')}.policy_json"
    if not text:
        raise ConfigError(trials, key, text, "the selected trial has no policy recorded")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(trials, key, text[:40], f"not valid JSON ({err})") from None
    policy = validate(ReductionPolicy, data, trials, prefix=key)
    if policy.name is None:
        policy = policy.model_copy(update={"name": str(row.get("trial_id"))})
    return policy


def _model(meta: SweepMeta, sweep_json: Path) -> dict[str, Any]:
    n = meta.model.get("num_layers")
    if not isinstance(n, int) or isinstance(n, bool):
        raise ConfigError(sweep_json, "model.num_layers", n, "must be the model's layer count")
    return dict(meta.model)


def _provenance(
    meta: SweepMeta,
    row: dict[str, Any],
    rule: str,
    max_flops: float | None,
    min_synergy: float | None,
) -> dict[str, str | int | float | None]:
    from searchvlm import __version__

    return {
        "sweep": meta.name,
        "trial_id": str(row.get("trial_id")),
        "trial_number": row.get("number") if isinstance(row.get("number"), int) else None,
        "preset": row.get("preset") or None,
        "space_path": meta.space_path,
        "space_hash": meta.space_hash,
        "package_version": meta.package_version,
        "exported_by": __version__,
        "rule": rule,
        "max_flops": max_flops,
        "min_synergy": min_synergy,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def build_policy_file(
    run_dir: str | Path,
    rule: str = "knee",
    max_flops: float | None = None,
    min_synergy: float | None = None,
    runs_dir: str | Path = "runs",
) -> PolicyFile:
    """The validated PolicyFile for the trial `rule` selects in sweep `run_dir` (name or path)."""
    run = resolve_run_dir(run_dir, runs_dir)
    trials, sweep_json = run / TRIALS_FILE, run / SWEEP_FILE
    rows = read_trials(trials)
    meta = read_meta(sweep_json)
    row = select(rows, rule, max_flops=max_flops, min_synergy=min_synergy, source=trials)
    policy = _row_policy(row, trials)
    data = {
        "schema": POLICY_SCHEMA,
        "policy": policy.model_dump(),
        "model": _model(meta, sweep_json),
        "objectives": {k: row.get(k) for k in OBJECTIVE_KEYS},
        "provenance": _provenance(meta, row, rule, max_flops, min_synergy),
    }
    return validate(PolicyFile, data, f"{trials} (trial {row.get('trial_id')})")


def write_policy_file(policy_file: PolicyFile, out_path: str | Path) -> Path:
    """Write atomically: temp file beside `out_path`, fsync, `os.replace`; returns the path."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(policy_file.dump() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def export_policy(
    run_dir: str | Path,
    rule: str = "knee",
    max_flops: float | None = None,
    min_synergy: float | None = None,
    out_path: str | Path = "policy.json",
    runs_dir: str | Path = "runs",
) -> Path:
    """Select a trial of sweep `run_dir` by `rule` (+ constraints) and write its policy file.

    `rule`: `knee` | `max-synergy` | `min-flops` (see `searchvlm.pareto.select`). The file
    loads back with `searchvlm.load_policy`. Errors are `ConfigError`s naming the file.
    """
    return write_policy_file(
        build_policy_file(run_dir, rule, max_flops, min_synergy, runs_dir), out_path
    )

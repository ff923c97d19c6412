"""Policy export: pick one trial of a sweep (by a rule, or the one you name) and write its
validated PolicyFile.

L1 module (stdlib + pydantic + numpy through `pareto`): reads `runs/<sweep>/trials.csv`,
`confirmed.csv` when `searchvlm confirm` wrote one (then a rule picks among the confirmed
policies, by their fresh-seed numbers, and the provenance says so) and `sweep.json` (the
`results` contract), and writes the file of docs/file-formats.md atomically
(a temporary file in the same folder, fsynced, then moved into place), so a crash never
leaves a partial policy file. An existing file is never replaced unless `force=True`.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from searchvlm.objectives.pareto import select
from searchvlm.schema.errors import COMMAND_LINE, ConfigError, validate
from searchvlm.schema.policy import POLICY_SCHEMA, PolicyFile, ReductionPolicy
from searchvlm.schema.results import (
    CONFIRMED_FILE,
    DECISION_FILE,
    OBJECTIVE_COLUMNS,
    SWEEP_FILE,
    TRIALS_FILE,
    SweepMeta,
    TrialRow,
    load_ranked,
    ranking_rows,
    read_decision,
    read_meta,
    resolve_run_dir,
)
from searchvlm.schema.search import EXPORT_RULES

#: trial columns copied into the file's `objectives` (what the trial reached)
OBJECTIVE_KEYS: tuple[str, ...] = OBJECTIVE_COLUMNS

__all__ = ["OBJECTIVE_KEYS", "build_policy_file", "export_policy", "find_trial", "write_policy_file"]

#: `--trial` spellings of a trial number besides the plain number: `#21` (Optuna) and
#: `t0021` / `t0021-himix` / `t0021-himix (<trial id>)` (the MLflow run name)
_NUMBER = re.compile(r"^(?:#|t)?(\d+)(?:-[^ ]+)?(?: \(.*\))?$")


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


def find_trial(rows: list[dict[str, Any]], trial: str | int, source: str | Path | None = None) -> dict[str, Any]:
    """The row whose `trial_id` is `trial`, else whose `number` it spells (`21`, `#21`,
    `t0021`, `t0021-himix`). Only a finished trial (status ok) has a policy to export."""
    text = str(trial).strip()
    row = next((r for r in rows if str(r.get("trial_id")) == text), None)
    match = _NUMBER.match(text)
    if row is None and match:
        row = next((r for r in rows if r.get("number") == int(match.group(1))), None)
    if row is None:
        numbers = sorted(r["number"] for r in rows if isinstance(r.get("number"), int))
        known = f"numbers {numbers[0]}..{numbers[-1]}" if numbers else "no trials"
        raise ConfigError(source, "--trial", trial, f"no trial with this id or number ({known})")
    if row.get("status") != "ok":
        why = f" ({row['error']})" if row.get("error") else ""
        raise ConfigError(
            source,
            "--trial",
            trial,
            f"trial {row.get('trial_id')} (number {row.get('number')}) "
            f"has status {row.get('status')!r}{why}; only finished trials (status ok) are exported",
        )
    return row


def _model(meta: SweepMeta, sweep_json: Path) -> dict[str, Any]:
    n = meta.model.get("num_layers")
    if not isinstance(n, int) or isinstance(n, bool):
        raise ConfigError(sweep_json, "model.num_layers", n, "must be the model's layer count")
    return dict(meta.model)


def _provenance(
    meta: SweepMeta,
    row: dict[str, Any],
    rule: str | None,
    max_flops: float | None,
    min_synergy: float | None,
    confirmed_file: Path | None = None,
) -> dict[str, str | int | float | None]:
    from searchvlm import __version__

    confirmed = bool(row.get("confirmed"))
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
        "numbers": "confirmed" if confirmed else "search",
        "confirmed_seeds": ",".join(map(str, TrialRow.of(row).seeds)) if confirmed else None,
        "confirmed_file": str(confirmed_file) if confirmed and confirmed_file else None,
        "search_synergy_gain": row.get("search_synergy_gain") if confirmed else None,
    }


def _decided(run: Path, rows: list[dict[str, Any]], max_flops: float | None,
             min_synergy: float | None) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """The trial `searchvlm decide` accepted (decision.json), and the decision's numbers for
    the file's provenance."""
    if max_flops is not None or min_synergy is not None:
        raise ConfigError(COMMAND_LINE, "--rule", "decision", "takes the decided policy: give it without "
                          "--max-flops/--min-synergy")  # fmt: skip
    decision = read_decision(run)
    accepted = decision.get("accepted")
    if decision.get("verdict") != "accepted" or not isinstance(accepted, dict):
        raise ConfigError(run / DECISION_FILE, "verdict", decision.get("verdict"),
                          f"no policy was accepted ({decision.get('line', '')}); nothing to export")  # fmt: skip
    row = find_trial(rows, str(accepted.get("trial_id")), run / TRIALS_FILE)
    race = decision.get("race") or {}
    test = race.get("accepted") or {}
    return row, {"decision_lower_bound": test.get("lower"), "decision_seeds": test.get("seeds"),
                 "decision_mean_vs_dense": test.get("mean"), "decision_p": test.get("p"),
                 "decision_delta": race.get("delta"), "decision_alpha": race.get("alpha"),
                 "decision_seed_list": ",".join(map(str, decision.get("seeds") or []))}  # fmt: skip


def _pick(rows: list[dict[str, Any]], rule: str, max_flops: float | None, min_synergy: float | None,
          trial: str | int | None, trials: Path) -> dict[str, Any]:  # fmt: skip
    if trial is None:
        return select(rows, rule, max_flops=max_flops, min_synergy=min_synergy, source=trials)
    if max_flops is not None or min_synergy is not None:
        raise ConfigError(
            COMMAND_LINE, "--trial", trial, "names the trial itself: give it without --max-flops/--min-synergy"
        )
    return find_trial(rows, trial, trials)


def build_policy_file(
    run_dir: str | Path,
    rule: str = "knee",
    max_flops: float | None = None,
    min_synergy: float | None = None,
    runs_dir: str | Path = "runs",
    trial: str | int | None = None,
) -> PolicyFile:
    """The validated PolicyFile of sweep `run_dir` (name or path) for the trial `rule`
    selects, or for `trial` (a trial id or number, see `find_trial`) when given. With a
    `confirmed.csv`, the rule picks among the confirmed policies, and the file's
    objectives are the confirmed numbers (provenance `numbers: confirmed`)."""
    if trial is None and rule not in EXPORT_RULES:  # an argument error, before any file is read
        raise ConfigError(COMMAND_LINE, "--rule", rule, f"must be one of {', '.join(EXPORT_RULES)}")
    run = resolve_run_dir(run_dir, runs_dir)
    trials, sweep_json = run / TRIALS_FILE, run / SWEEP_FILE
    rows, confirmed = load_ranked(run, strict=True)  # a file written from part of a table: no
    meta = read_meta(sweep_json)
    ranked = ranking_rows(rows)
    source = run / CONFIRMED_FILE if any(r.get("confirmed") for r in ranked) else trials
    if trial is None and rule == "decision":  # the accepted trial, its own (search) numbers
        row, decision = _decided(run, rows, max_flops, min_synergy)
    else:
        row, decision = _pick(ranked if trial is None else rows, rule, max_flops, min_synergy, trial, source), {}
    policy = _row_policy(row, trials)
    data = {
        "schema": POLICY_SCHEMA,
        "policy": policy.model_dump(),
        "model": _model(meta, sweep_json),
        "objectives": {k: row.get(k) for k in OBJECTIVE_KEYS},
        "provenance": _provenance(
            meta,
            row,
            None if trial is not None else rule,
            max_flops,
            min_synergy,
            run / CONFIRMED_FILE if confirmed else None,
        )
        | decision,
    }
    return validate(PolicyFile, data, f"{trials} (trial {row.get('trial_id')})")


def _check_target(out: Path, force: bool) -> None:
    if out.is_dir():
        raise ConfigError(COMMAND_LINE, "--output", str(out), "is a directory; give the policy file's path")
    if out.exists() and not force:
        raise _exists(out)


def _exists(out: Path) -> ConfigError:
    return ConfigError(
        COMMAND_LINE, "--output", str(out), "exists; pass --force to overwrite it, or choose another file"
    )


def _publish(tmp: str, out: Path, force: bool) -> None:
    """Move the finished temp file to `out`: `os.replace` with `force`, else a hard link,
    which fails rather than replace a file that appeared meanwhile."""
    if force:
        os.replace(tmp, out)
        return
    try:
        os.link(tmp, out)
    except FileExistsError:
        raise _exists(out) from None
    except OSError:  # a file system without hard links
        _check_target(out, force=False)
        os.replace(tmp, out)
    else:
        os.unlink(tmp)


def write_policy_file(policy_file: PolicyFile, out_path: str | Path, force: bool = False) -> Path:
    """Write atomically (temp file beside `out_path`, fsync, move); returns the path.

    An existing `out_path` is a `ConfigError` unless `force`, and is left untouched."""
    out = Path(out_path)
    _check_target(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(policy_file.dump() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        _publish(tmp, out, force)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


@dataclass(frozen=True)
class TrialChoice:
    """Which trial of a sweep to export: the one `rule` selects (`knee` | `max-synergy` |
    `min-flops`, see `searchvlm.objectives.pareto.select`) among the trials within `max_flops` and
    `min_synergy`, or `trial` itself (a trial id or number, see `find_trial`)."""

    rule: str = "knee"
    max_flops: float | None = None
    min_synergy: float | None = None
    trial: str | int | None = None


def export_policy(
    run_dir: str | Path,
    choice: TrialChoice = TrialChoice(),
    out_path: str | Path = "policy.json",
    runs_dir: str | Path = "runs",
    force: bool = False,
) -> Path:
    """Take the trial `choice` names in sweep `run_dir` and write its policy file to
    `out_path` (never over an existing file unless `force`).

    The file loads back with `searchvlm.load_policy`. Errors are `ConfigError`s naming the file.
    """
    _check_target(Path(out_path), force)  # before any work: the file you have is kept
    c = choice
    return write_policy_file(build_policy_file(run_dir, c.rule, c.max_flops, c.min_synergy, runs_dir, c.trial),
                             out_path, force)  # fmt: skip

"""The Ray trainable: one trial = one `run_trial` call in a worker, reported to Tune.

Intermediate rounds are reported as `{metrics..., step, final: False}` (what MO-ASHA
ranks); the last report is `{objectives..., status, error, result_json, step, final:
True, trial_wall_s}` where `result_json` is the whole `TrialResult`.
"""

from __future__ import annotations

import math
import time
from typing import Any

from ray import tune

from searchvlm.config import TrialResult
from searchvlm.policy import ReductionPolicy
from searchvlm.space import SearchSpace, preset_policy

from ._keys import NUMBER_KEY, POLICY_ATTR, PRESET_ATTR


def trial_name(config: dict[str, Any]) -> str:
    """`t0007` or `t0001-himix` (Optuna number, preset)."""
    base = f"t{int(config.get(NUMBER_KEY, 0)):04d}"
    return f"{base}-{config[PRESET_ATTR]}" if config.get(PRESET_ATTR) else base


def config_policy(space: SearchSpace, config: dict[str, Any]) -> ReductionPolicy:
    """The explicit policy of a trial config (a fixed policy, a preset or sampled params)."""
    if config.get(POLICY_ATTR):
        return ReductionPolicy.model_validate_json(config[POLICY_ATTR])
    if config.get(PRESET_ATTR):
        return preset_policy(space, config[PRESET_ATTR])
    params = {k: v for k, v in config.items() if k != NUMBER_KEY}
    return space.policy_from_params(params, name=trial_name(config))


def train(config: dict[str, Any], space_json: str, cache_dir: str, threads: int,
          done: dict[str, dict[str, Any]] | None = None) -> None:  # fmt: skip
    """Tune function trainable (module level, so workers import it by reference).
    `done`: trials already in the table (resume after a hard kill, when Tune's saved state
    predates them): their recorded result is reported again, nothing is trained."""
    recorded = (done or {}).get(tune.get_context().get_trial_id())
    if recorded is not None:
        tune.report({**recorded, "final": True, REPLAYED: True})
        return
    import torch

    from searchvlm.trial import run_trial

    torch.set_num_threads(max(1, threads))
    space = SearchSpace.model_validate_json(space_json)
    start = time.perf_counter()
    try:
        policy = config_policy(space, config)
    except ValueError as err:
        result = TrialResult(status="failed", error=f"invalid policy: {err}")
    else:
        trial_cfg = space.trial_config(policy, trial_name(config), cache_dir)
        result = run_trial(trial_cfg, report=_report)
    tune.report(final_metrics(result, time.perf_counter() - start))


REPLAYED = "replayed"


def replay_record(row: dict[str, Any]) -> dict[str, Any]:
    """What `train` reports for a trial the table already holds (its final numbers)."""
    return {**_numbers(row), "status": row["status"], "error": row.get("error") or "",
            "step": int(row.get("steps_done") or 0)}  # fmt: skip


def _report(step: int, metrics: dict[str, float]) -> None:
    tune.report({**_numbers(metrics), "step": int(step), "final": False})


def final_metrics(result: TrialResult, wall: float) -> dict[str, Any]:
    out = _numbers(result.model_dump(exclude={"policy", "per_seed", "seeds", "error"}))
    out.update(
        status=result.status,
        error=result.error or "",
        result_json=result.model_dump_json(),
        step=int(result.steps_done),
        final=True,
        trial_wall_s=float(wall),
    )
    return out


def _numbers(d: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in d.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }

"""The Ray trainable: one trial = one `run_trial` call in a worker, reported to Tune.

Intermediate rounds are reported as `{metrics..., step, final: False}` (what MO-ASHA
ranks); the last report is `{objectives..., status, error, result_json, step, final:
True, trial_wall_s, started_at}` where `result_json` is the whole `TrialResult` and
`started_at` the worker's clock (Unix seconds) when the trial began. Every report of a
trial that trains also says where it runs (`results.PLACEMENT_COLUMNS`: node, gpu_ids, device),
and each report carries the Python warnings the trial raised since the one before
(`WARNINGS_KEY`, one line each, each text once per trial): the worker's output stays in its
node's log (`log_to_driver=False`), so this is how they reach the driver (`_callback`).
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ray import tune

from searchvlm.schema.policy import ReductionPolicy
from searchvlm.schema.results import METRIC_COLUMNS, PLACEMENT_COLUMNS, TrialRow
from searchvlm.schema.space import SearchSpace, preset_policy
from searchvlm.schema.trial_result import TrialResult

from ._keys import DUPLICATE_OF, NUMBER_KEY, POLICY_ATTR, PRESET_ATTR, PROFILE_ENV, REUSE_ATTR, WARNINGS_KEY


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
    params = {k: v for k, v in config.items() if k not in (NUMBER_KEY, DUPLICATE_OF, REUSE_ATTR)}
    return space.policy_from_params(params, name=trial_name(config))


def train(config: dict[str, Any], space_json: str, cache_dir: str, threads: int,
          done: dict[str, dict[str, Any]] | None = None,
          baselines: dict[str, bytes] | None = None) -> None:  # fmt: skip
    """Tune function trainable (module level, so workers import it by reference).
    `done`: trials already in the table (resume after a hard kill, when Tune's saved state
    predates them): their recorded result is reported again, nothing is trained.
    `baselines`: the up-front baselines' cache entries and the codebooks they used ({name:
    bytes}, `searchvlm.train.baselines.cache_entry`), shipped through Ray's object store and
    written into this node's cache where missing (none made twice)."""
    if os.environ.get(PROFILE_ENV):  # benchmarks/trial_profile.py: this trial under cProfile
        return _profiled(train, config, space_json, cache_dir, threads, done, baselines)
    recorded = (done or {}).get(tune.get_context().get_trial_id())
    if recorded is not None:
        tune.report({**recorded, "final": True, REPLAYED: True})
        return
    space = SearchSpace.model_validate_json(space_json)
    if config.get(REUSE_ATTR):  # a repeat of a trained policy: its twin's result, nothing trained
        tune.report(reused_metrics(space, config))
        return
    import torch

    from searchvlm.train.baselines import store_entries
    from searchvlm.train.trial import run_trial

    if baselines:
        store_entries(cache_dir, baselines)
    torch.set_num_threads(max(1, threads))
    start, started_at = time.perf_counter(), time.time()
    where = placement(space.training.device)
    with caught_warnings() as new_warnings:
        try:
            policy = config_policy(space, config)
        except ValueError as err:
            result = TrialResult(status="failed", error=f"invalid policy: {err}")
        else:
            trial_cfg = space.trial_config(policy, trial_name(config), cache_dir)
            report = functools.partial(_report, where=where, new_warnings=new_warnings)
            result = run_trial(trial_cfg, report=report)
        final = {**final_metrics(result, time.perf_counter() - start), **where, "started_at": started_at}
        tune.report(_with_warnings(final, new_warnings()))


@contextmanager
def caught_warnings() -> Iterator[Any]:
    """Record the Python warnings raised inside (the filters in force decide which, as
    they would for printing); yields a function that returns those not returned before,
    one line each (`Category: message (file:line)`), each text once. A block that raises
    prints those it did not return to stderr (the worker's log), as they would have been."""
    seen: set[str] = set()
    with warnings.catch_warnings(record=True) as caught:

        def new() -> list[str]:
            lines = []
            while caught:
                w = caught.pop(0)
                text = " ".join(f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})".split())
                if text not in seen:
                    seen.add(text)
                    lines.append(text)
            return lines

        try:
            yield new
        except BaseException:
            for line in new():
                print(f"warning: {line}", file=sys.stderr, flush=True)
            raise


def _with_warnings(metrics: dict[str, Any], lines: list[str]) -> dict[str, Any]:
    return {**metrics, WARNINGS_KEY: lines} if lines else metrics


def _profiled(fn, config: dict[str, Any], *args: Any) -> None:
    """`fn(config, *args)` under cProfile, the environment variable cleared inside (so the
    call runs the plain path); stats written to $SEARCHVLM_PROFILE/<trial name>.prof, on the
    node the trial ran on (the driver passes the variable to every node: `_cluster.trial_env`)."""
    import cProfile

    folder = os.environ.pop(PROFILE_ENV)
    os.makedirs(folder, exist_ok=True)  # (on another node of a cluster the driver's folder may not exist)
    prof = cProfile.Profile()
    try:
        prof.runcall(fn, config, *args)
    finally:
        os.environ[PROFILE_ENV] = folder
        prof.dump_stats(os.path.join(folder, f"{trial_name(config)}.prof"))


def warm_reference(
    space_json: str, cache_dir: str, threads: int, seed: int, label: str
) -> tuple[int, str, bool, float, dict[str, bytes]]:
    """A Ray task: one reference run of the sweep's baselines into the cache of the node it
    runs on (`searchvlm.train.trial.warm_reference`); returns (seed, label, was cached, seconds,
    the cache entries it made or found: the run and its data's codebook) so that the driver
    caches and ships them."""
    import torch

    from searchvlm.train.baselines import cache_entry
    from searchvlm.train.trial import prepare, reference_key
    from searchvlm.train.trial import warm_reference as warm

    torch.set_num_threads(max(1, threads))
    space = SearchSpace.model_validate_json(space_json)
    config = space.trial_config(ReductionPolicy.dense(space.model.num_layers), "baselines", cache_dir)
    start = time.perf_counter()
    cached = warm(config, seed, label)
    seconds = time.perf_counter() - start
    names = [f"baselines/{reference_key(config, seed, label)}.json"]
    book = prepare(config, seed)[0].codebook
    if book is not None and book.cache_key is not None:
        names.append(f"codebooks/{book.cache_key}.npz")
    entries = {name: cache_entry(cache_dir, name) for name in names}
    return seed, label, cached, seconds, {name: blob for name, blob in entries.items() if blob is not None}


def placement(device: str) -> dict[str, str]:
    """Where this trial runs: its Ray node's IP, the GPU ids Ray gave it (its
    CUDA_VISIBLE_DEVICES, so `cuda:0` is the first of them) and the torch device that
    `training.device` resolves to here."""
    import ray

    from searchvlm.train.training import resolve_device

    try:
        dev = str(resolve_device(device))
    except RuntimeError as err:  # device cuda without one: the trial fails with this, and says where
        dev = f"none ({err})"
    gpus = ",".join(str(i) for i in ray.get_gpu_ids())
    return dict(zip(PLACEMENT_COLUMNS, (ray.util.get_node_ip_address(), gpus, dev), strict=True))


REPLAYED = "replayed"


def replay_record(row: dict[str, Any]) -> dict[str, Any]:
    """What `train` reports for a trial the table already holds (its final numbers, and
    the result they make, so the searcher can answer later repeats of its policy)."""
    return {**_numbers(row), "status": row["status"], "error": row.get("error") or "",
            "step": int(row.get("steps_done") or 0), "result_json": row_result(row).model_dump_json(),
            **{c: row.get(c) or "" for c in PLACEMENT_COLUMNS}}  # fmt: skip


def row_result(row: dict[str, Any]) -> TrialResult:
    """The TrialResult a trials-table row records (per-seed records are not in the table)."""
    fields = {c: row[c] for c in METRIC_COLUMNS if row.get(c) is not None}
    fields["steps_done"] = int(fields.get("steps_done", 0))
    policy = ReductionPolicy.model_validate_json(row["policy_json"]) if row.get("policy_json") else None
    seeds = TrialRow.of(row).seeds
    return TrialResult(status=row["status"], error=row.get("error") or None, seeds=seeds, policy=policy,
                       cpu=row.get("cpu") or None, **fields)  # fmt: skip


def reused_metrics(space: SearchSpace, config: dict[str, Any]) -> dict[str, Any]:
    """The final report of a repeat: the twin's result under this trial's own explicit
    policy, 0 s of training, and `duplicate_of` naming the twin."""
    twin = TrialResult.model_validate_json(config[REUSE_ATTR])
    result = twin.model_copy(update={"policy": config_policy(space, config), "train_seconds": 0.0})
    return {**final_metrics(result, 0.0), DUPLICATE_OF: str(config[DUPLICATE_OF])}


def _report(step: int, metrics: dict[str, float], where: dict[str, str], new_warnings: Any = None) -> None:
    report = {**_numbers(metrics), "step": int(step), "final": False, **where}
    tune.report(_with_warnings(report, new_warnings() if new_warnings else []))


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

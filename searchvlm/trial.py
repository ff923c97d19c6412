"""One trial: train the unified VLM jointly under a policy, compare with isolated baselines.

L3 module. `run_trial(config, report)` returns the two objectives (FLOPs ratio, synergy
gain) with everything behind them, and reports intermediate results after every
evaluation round (for multi-fidelity schedulers). It never raises: an exception or a
non-finite loss ends the trial as `failed` with the error and the step.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from searchvlm.baselines import BaselineRecord, baseline_key, get_baseline, isolated_policy
from searchvlm.config import ModelConfig, TrialConfig, TrialResult
from searchvlm.data import UnifiedData, load_data
from searchvlm.flops import TaskLayout, count_flops
from searchvlm.policy import TASKS, ReductionPolicy, Segment
from searchvlm.synergy import mean_stderr, seed_gains
from searchvlm.training import Run, RunSpec, resolve_device, sample_images

Report = Callable[[int, dict[str, float]], None]
Progress = Callable[[str, int, int], None]
_METRIC = {"understanding": "und_acc", "generation": "gen_nll"}


class _Tracker:
    """What a failed trial can still tell: last step and FLOPs ratio."""

    step: int = 0
    flops_ratio: float | None = None
    seconds: float = 0.0


def run_trial(
    config: TrialConfig, report: Report | None = None, progress: Progress | None = None
) -> TrialResult:
    """Train, evaluate and score one policy; never raises (failures come back as results)."""
    tracker = _Tracker()
    try:
        return _run(config, report, progress, tracker)
    except Exception as err:  # noqa: BLE001 - a trial records its failure, the sweep goes on
        return TrialResult(
            status="failed",
            error=f"{type(err).__name__}: {err}",
            flops_ratio=tracker.flops_ratio,
            steps_done=tracker.step,
            train_seconds=tracker.seconds,
            seeds=list(config.seeds),
            policy=config.resolved_policy(),
        )


@functools.lru_cache(maxsize=4)
def _load_data_cached(data_json: str) -> UnifiedData:
    from searchvlm.config import DataConfig

    return load_data(DataConfig.model_validate_json(data_json))


def prepare(config: TrialConfig) -> tuple[UnifiedData, ModelConfig]:
    """The trial's data and its model config with the data's vocabulary."""
    data = _load_data_cached(config.data.model_dump_json())
    if config.model.vocab is not None and config.model.vocab != data.vocab:
        raise ValueError(f"model.vocab = {config.model.vocab} does not match the data's {data.vocab}")
    return data, config.model.model_copy(update={"vocab": data.vocab})


def task_layouts(data: UnifiedData) -> dict[str, TaskLayout]:
    """Sequence layout of each task's training rows (for the FLOPs count)."""
    out = {}
    for task in TASKS:
        split = data.split("train", task)
        row_seg, row_lab = split.segments[0], split.labels[0]
        out[task] = TaskLayout(
            num_tokens=int(row_seg.numel()),
            num_image=int((row_seg == Segment.IMAGE).sum()),
            num_logit_positions=int((row_lab != -100).sum()),
        )
    return out


def eval_steps(steps: int, every: int) -> list[int]:
    return sorted({*range(every, steps, every), steps})


def _run(config: TrialConfig, report: Report | None, progress: Progress | None, tracker: _Tracker) -> TrialResult:
    if config.training.threads:
        torch.set_num_threads(config.training.threads)
    data, model_cfg = prepare(config)
    policy = config.resolved_policy()
    flops = count_flops(model_cfg, policy, task_layouts(data), batch_size=config.training.batch_size)
    tracker.flops_ratio = flops.ratio
    device = resolve_device(config.training.device)
    iso = {s: _baselines(config, data, model_cfg, policy, s, device, progress) for s in config.seeds}
    runs = [Run(RunSpec(model_cfg, policy, config.training, TASKS, s), data, device) for s in config.seeds]
    start = time.perf_counter()
    steps = eval_steps(config.training.steps, config.training.eval_every)
    for step in steps:
        for run in runs:
            run.train_until(step)
            tracker.step = run.step
        tracker.seconds = time.perf_counter() - start
        if progress:
            progress("joint", step, config.training.steps)
        if report:
            report(step, _intermediate(runs, iso, data, step, flops.ratio, config.synergy.aggregate))
    train_seconds = time.perf_counter() - start
    if config.save_model:
        save_model(runs[0], model_cfg, config)
    return _final(config, data, runs, iso, policy, flops.ratio, train_seconds)


CHECKPOINT_FORMAT = "searchvlm.checkpoint/v1"


def save_model(run: Run, model_cfg: ModelConfig, config: TrialConfig) -> str:
    """Save a trained joint model for `searchvlm analyze --checkpoint` (loadable with
    `torch.load(weights_only=True)`: configs as JSON strings, tensors in `state_dict`)."""
    path = Path(config.save_model.format(name=config.name, seed=run.spec.seed))  # type: ignore[union-attr]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({
        "format": CHECKPOINT_FORMAT, "model_config": model_cfg.model_dump_json(),
        "policy": run.spec.policy.model_dump_json(), "data_config": config.data.model_dump_json(),
        "steps": run.step, "state_dict": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
    }, path)  # fmt: skip
    return str(path)


def _baselines(config, data, model_cfg, policy, seed, device, progress) -> dict[str, BaselineRecord]:
    pol = isolated_policy(policy, config.synergy.baseline)
    out = {}
    for task in TASKS:
        key = baseline_key(model_cfg, config.data, config.training, task, seed, pol, config.synergy.fidelity)

        def train(task: str = task) -> BaselineRecord:
            return _train_baseline(config, data, model_cfg, pol, task, seed, device, progress)

        out[task] = get_baseline(config.cache_dir, key, train)
    return out


def _train_baseline(config, data, model_cfg, policy, task, seed, device, progress) -> BaselineRecord:
    run = Run(RunSpec(model_cfg, policy, config.training, (task,), seed), data, device)
    curve = {}
    for step in eval_steps(config.training.steps, config.training.eval_every):
        run.train_until(step)
        curve[step] = run.evaluate(data, "val")[_METRIC[task]]
        if progress:
            progress(f"{task} alone (seed {seed})", step, config.training.steps)
    test = run.evaluate(data, "test")[_METRIC[task]]
    fidelity = None
    if task == "generation" and config.synergy.fidelity:
        fidelity = _fidelity(run, data, seed, config.data.model_dump_json())
    return BaselineRecord(task=task, seed=seed, curve=curve, test=test, fidelity=fidelity)


def _intermediate(runs, iso, data, step, flops_ratio, how) -> dict[str, float]:
    per_seed = []
    for run in runs:
        val = run.evaluate(data, "val")
        base = iso[run.spec.seed]
        u_iso = base["understanding"].curve[step]
        g_iso = base["generation"].curve[step]
        gains = seed_gains(val["und_acc"], u_iso, val["gen_nll"], g_iso, how)
        per_seed.append((val["und_acc"], val["gen_nll"], gains))
    mean = lambda xs: float(np.mean(xs))  # noqa: E731
    return {
        "flops_ratio": flops_ratio,
        "und_acc": mean([p[0] for p in per_seed]),
        "gen_nll": mean([p[1] for p in per_seed]),
        "und_gain": mean([p[2].und_gain for p in per_seed]),
        "gen_gain": mean([p[2].gen_gain for p in per_seed]),
        "synergy_gain": mean([p[2].synergy_gain for p in per_seed]),
    }


@functools.lru_cache(maxsize=4)
def _classifiers(data_json: str):
    """One scikit-learn classifier per target attribute, trained on real training images."""
    from sklearn.linear_model import LogisticRegression

    data = _load_data_cached(data_json)
    split = data.split("train", "generation")
    x = split.image_codes.astype(np.float32)
    return [LogisticRegression(max_iter=2000).fit(x, split.targets[:, a]) for a in range(split.targets.shape[1])]


def _fidelity(run: Run, data: UnifiedData, seed: int, data_json: str) -> float:
    """Share of sampled test images a real-image classifier assigns to the prompted attributes."""
    split = data.split("test", "generation")
    split = split.batch(torch.arange(min(len(split), 200)))
    codes = sample_images(run.model, _device_split(split, run.device), data.vocab.image_offset, data.vocab.num_image, seed)
    clfs = _classifiers(data_json)
    accs = [float((clf.predict(codes.astype(np.float32)) == split.targets[:, a]).mean()) for a, clf in enumerate(clfs)]
    return float(np.mean(accs))


def _device_split(split, device):
    return split if split.input_ids.device == device else split.to(device)


def _final(config, data, runs, iso, policy: ReductionPolicy, flops_ratio, seconds) -> TrialResult:
    per_seed, how = [], config.synergy.aggregate
    for run in runs:
        test = run.evaluate(data, "test")
        base = iso[run.spec.seed]
        u_iso, g_iso = base["understanding"].test, base["generation"].test
        gains = seed_gains(test["und_acc"], u_iso, test["gen_nll"], g_iso, how)
        fid = None
        if config.synergy.fidelity:
            fid = _fidelity(run, data, run.spec.seed, config.data.model_dump_json())
        per_seed.append({
            "seed": run.spec.seed, "und_acc": test["und_acc"], "gen_nll": test["gen_nll"],
            "und_acc_iso": u_iso, "gen_nll_iso": g_iso, "gen_fidelity": fid,
            "gen_fidelity_iso": base["generation"].fidelity,
            "und_gain": gains.und_gain, "gen_gain": gains.gen_gain, "synergy_gain": gains.synergy_gain,
            "baseline_cached": {t: base[t].cached for t in TASKS},
        })
    return _aggregate(per_seed, config, policy, flops_ratio, seconds, runs[0].step)


def _mean_of(per_seed: list[dict], key: str) -> float | None:
    vals = [p[key] for p in per_seed if p[key] is not None]
    return float(np.mean(vals)) if vals else None


def _aggregate(per_seed, config, policy, flops_ratio, seconds, steps) -> TrialResult:
    synergy, stderr = mean_stderr([p["synergy_gain"] for p in per_seed])
    fields = ("und_gain", "gen_gain", "und_acc", "gen_nll", "und_acc_iso", "gen_nll_iso", "gen_fidelity", "gen_fidelity_iso")
    return TrialResult(
        status="ok",
        flops_ratio=flops_ratio,
        synergy_gain=synergy,
        synergy_gain_stderr=stderr,
        seeds=list(config.seeds),
        per_seed=per_seed,
        train_seconds=seconds,
        steps_done=steps,
        policy=policy,
        **{f: _mean_of(per_seed, f) for f in fields},
    )


__all__ = ["run_trial", "prepare", "task_layouts"]

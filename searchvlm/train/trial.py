"""One trial: train the unified VLM jointly under a policy, compare with isolated baselines.

L3 module. `run_trial(config, report)` returns the two objectives (FLOPs ratio, synergy
gain) with everything behind them, and reports intermediate results after every
evaluation round (for multi-fidelity schedulers). It never raises: an exception or a
non-finite loss ends the trial as `failed` with the error and the step.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from typing import Any, Callable, Literal

import numpy as np
import torch

from searchvlm.data import UnifiedData, load_data
from searchvlm.objectives.flops import TaskLayout, count_flops
from searchvlm.objectives.synergy import (
    GEN_METRICS,
    HIGHER_IS_BETTER,
    Checkpoint,
    SeedGains,
    best_step,
    checkpoint,
    mean_stderr,
    seed_gains,
)
from searchvlm.schema._host import joined, machine
from searchvlm.schema.config import ModelConfig, TrialConfig
from searchvlm.schema.identity import canonical_policy
from searchvlm.schema.metrics import REGISTRY, UND_METRIC, metric_info
from searchvlm.schema.policy import TASKS, ReductionPolicy, Segment
from searchvlm.schema.trial_result import ROUND_METRICS, SEED_MEANS, SEED_STDERRS, SeedResult, TrialResult, late_fields
from searchvlm.train.baselines import RunRecord, baseline_key, get_baseline, isolated_policy
from searchvlm.train.checkpoint import save_model
from searchvlm.train.distributed import on_rank0, rank_label, run_ranks, spawns
from searchvlm.train.training import Run, RunSpec, check_layout, resolve_device, sample_images

Report = Callable[[int, dict[str, float]], None]
Progress = Callable[[str, int, int], None]
Refs = dict[int, dict[str, RunRecord]]  # seed -> the runs it is compared with (`_references`)
Aggregate = Literal["min", "mean"]  # `synergy.aggregate`


@dataclasses.dataclass(frozen=True)
class _Context:
    """What every run of one trial shares: its config, each run seed's data (`prepare_seeds`),
    model config (vocabulary filled in), device and progress callback."""

    config: TrialConfig
    data: dict[int, UnifiedData]
    model_cfg: ModelConfig
    device: torch.device
    progress: Progress | None = None


class _Tracker:
    """What a failed trial can still tell: last step and FLOPs ratio."""

    step: int = 0
    flops_ratio: float | None = None
    seconds: float = 0.0


def run_trial(config: TrialConfig, report: Report | None = None, progress: Progress | None = None) -> TrialResult:
    """Train, evaluate and score one policy; never raises (failures come back as results).
    With `training.processes` > 1 it starts the ranks and each of them runs it (`_on_ranks`)."""
    tracker = _Tracker()
    try:
        if spawns(config.training.processes):
            return _on_ranks(run_trial, config, report=report, progress=progress)
        return _run(config, report, progress, tracker)
    except Exception as err:  # noqa: BLE001 - a trial records its failure, the sweep goes on
        return TrialResult(
            status="failed",
            error=f"{rank_label()}{type(err).__name__}: {err}",
            flops_ratio=tracker.flops_ratio,
            steps_done=tracker.step,
            train_seconds=tracker.seconds,
            seeds=list(config.seeds),
            policy=config.resolved_policy(),
            cpu=machine(),
        )


def _on_ranks(fn: Callable[..., Any], config: TrialConfig, *args: Any, **callbacks: Callable | None) -> Any:
    """`fn(config, *args)` in each rank of a data-parallel trial (`searchvlm.train.distributed`),
    rank 0 given the `callbacks`; rank 0's answer, or the first failed `TrialResult` of any
    rank. The data (and its cached codebook) are prepared here first, once for all ranks."""
    prepare_seeds(config)
    device = resolve_device(config.training.device)
    return run_ranks(config.training.processes, device, fn, (config, *args), callbacks,
                     failed=lambda answer: isinstance(answer, TrialResult) and answer.status == "failed")  # fmt: skip


@functools.lru_cache(maxsize=8)
def _load_data_cached(data_json: str, cache_dir: str | None = None) -> UnifiedData:
    from searchvlm.schema.config import DataConfig

    return load_data(DataConfig.model_validate_json(data_json), cache_dir)


def prepare(config: TrialConfig, seed: int | None = None) -> tuple[UnifiedData, ModelConfig]:
    """The data run seed `seed` trains on (None: the config's first seed; with a numeric
    `data.seed` every seed's data are the same) and the model config with its vocabulary."""
    data_cfg = config.data.for_seed(config.seeds[0] if seed is None else seed)
    data = _load_data_cached(data_cfg.model_dump_json(), config.cache_dir)
    if config.model.vocab is not None and config.model.vocab != data.vocab:
        raise ValueError(f"model.vocab = {config.model.vocab} does not match the data's {data.vocab}")
    return data, config.model.model_copy(update={"vocab": data.vocab})


#: the data draw FLOPs are counted on under `data.seed: run` (a numeric data.seed: its own)
PRICED_SEED = 0


def priced_data(config: TrialConfig) -> tuple[UnifiedData, ModelConfig]:
    """The data a policy's FLOPs ratio is counted on: `data.seed`'s, and under `data.seed:
    run` data seed 0's, whatever seeds train. `task_layouts` reads the first training row,
    whose answer length (logit positions) can differ between draws of shapes; one draw keeps
    a policy's ratio one number in a sweep, its confirmation and the known-cost sampler."""
    return prepare(config, PRICED_SEED)


def prepare_seeds(config: TrialConfig) -> tuple[dict[int, UnifiedData], ModelConfig]:
    """Each run seed's data (`data.seed: run`: its own draw, shared by every policy on that
    seed; a number: one object for all) and the model config. Every draw must have the
    priced draw's vocabulary and sequence lengths, as one model config and one FLOPs count
    serve them all: digits and tokens data vary only the split of a fixed file; shapes'
    captions have one length and its questions are padded to the longest of the corpus,
    the same for every draw that asks every kind of question."""
    data = {s: prepare(config, s)[0] for s in config.seeds}
    priced, model_cfg = priced_data(config)
    for seed, other in data.items():
        if other.vocab != priced.vocab or _lengths(other) != _lengths(priced):
            raise ValueError(
                f"data.seed = {config.data.seed!r}: seed {seed}'s data have another vocabulary or sequence "
                f"length than data seed {PRICED_SEED}'s ({_lengths(other)} vs {_lengths(priced)}); use more "
                "images (every question kind in every draw) or a numeric data.seed"
            )
    return data, model_cfg


def _lengths(data: UnifiedData) -> dict[str, tuple[int, int]]:
    """Per task, (tokens, image tokens) of a training row."""
    return {t: (layout.num_tokens, layout.num_image) for t, layout in task_layouts(data).items()}


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
    by_seed, model_cfg = prepare_seeds(config)
    data = priced_data(config)[0]  # the layout every seed shares (FLOPs, checks)
    policy = config.resolved_policy()
    for each in {id(d): d for d in (data, *by_seed.values())}.values():  # each draw once, before any training:
        check_layout(policy, each)  # a layout the policy cannot serve fails here
    if config.synergy.gen_metric == "caption_acc" and data.split("val", "generation").swaps is None:
        raise ValueError(
            f"synergy.gen_metric = 'caption_acc' needs captions that differ in one attribute; data.name = "
            f"{config.data.name!r} has none (use gen_metric: nll or fidelity)"
        )
    flops = count_flops(model_cfg, policy, task_layouts(data), batch_size=config.training.batch_size)
    tracker.flops_ratio = flops.ratio
    device = resolve_device(config.training.device)
    ctx = _Context(config, by_seed, model_cfg, device, progress)
    refs = {s: _references(ctx, policy, s) for s in config.seeds}
    if _is_dense_reference(config, model_cfg, policy):
        return _from_dense_reference(config, refs, flops.ratio, policy, report, tracker, caption_chance(data))
    runs = [Run(RunSpec(model_cfg, policy, config.training, TASKS, s), by_seed[s], device) for s in config.seeds]
    records = [RunRecord(TASKS, s) for s in config.seeds]
    kept: list[dict[str, tuple[int, dict]]] = [{} for _ in runs]  # per run: metric -> (step, state)
    start = time.perf_counter()
    for step in eval_steps(config.training.steps, config.training.eval_every):
        for run, record, states in zip(runs, records, kept):
            run.train_until(step)
            tracker.step = run.step
            record.add(step, run.scores(by_seed[record.seed], "val"), {})
            _keep_picks(run, record, states, step, config.synergy.at)
        tracker.seconds = time.perf_counter() - start
        if progress:
            progress("joint", step, config.training.steps)
        if report:
            report(step, _intermediate(records, refs, step, flops.ratio, config))
    for run, record, states in zip(runs, records, kept):
        _test_picks(run, record, states, by_seed[record.seed])
    train_seconds = time.perf_counter() - start
    if config.save_model:
        save_model(runs[0], model_cfg, config)
    if config.synergy.fidelity:
        for run, record in zip(runs, records):
            record.fidelity = _fidelity(run, by_seed[record.seed], run.spec.seed, config)
    done = TrialResult(flops_ratio=flops.ratio, train_seconds=train_seconds, steps_done=runs[0].step, policy=policy,
                       cpu=machine())  # fmt: skip
    return _final(config, records, refs, done, caption_chance(data))


def caption_chance(data: UnifiedData) -> float | None:
    """Caption accuracy at chance: 1 / (1 + swapped captions per image); None without swaps."""
    swaps = data.split("val", "generation").swaps
    return None if swaps is None else 1.0 / (1 + int(swaps.shape[1]))


def _is_dense_reference(config: TrialConfig, model_cfg: ModelConfig, policy: ReductionPolicy) -> bool:
    """The trial IS the dense joint reference run it is compared with (`synergy.vs_dense`,
    a policy that computes what dense computes), which is cached per seed: nothing to train.
    Not when the trial must hold a model (`save_model`, sample-based fidelity)."""
    if not config.synergy.vs_dense or config.save_model or config.synergy.fidelity:
        return False
    same = [canonical_policy(p).model_copy(update={"name": None, "seed": 0})
            for p in (policy, ReductionPolicy.dense(model_cfg.num_layers))]  # fmt: skip
    return same[0] == same[1]


def _from_dense_reference(config: TrialConfig, refs: Refs, flops_ratio: float, policy: ReductionPolicy,
                          report: Report | None, tracker: _Tracker, chance: float | None) -> TrialResult:  # fmt: skip
    """A dense trial's result from its cached dense joint runs (scored at every round on
    validation and test): the same numbers a training would give, its rounds reported as a
    trained trial reports them, `train_seconds` 0."""
    records = [refs[s]["dense"] for s in config.seeds]
    for step in eval_steps(config.training.steps, config.training.eval_every):
        tracker.step = step
        if report:
            report(step, _intermediate(records, refs, step, flops_ratio, config))
    done = TrialResult(flops_ratio=flops_ratio, train_seconds=0.0, steps_done=config.training.steps, policy=policy)
    return _final(config, records, refs, done, chance)


def _keep_picks(run: Run, record: RunRecord, states: dict, step: int, at: str) -> None:
    """Keep the joint model's state at the round `at` picks so far for each metric (the
    earliest best validation round, or the latest round), to score it on test afterwards:
    the joint run is tested once per metric instead of at every round."""
    picked = [m for m, curve in record.val.items()
              if at != "best" or best_step(curve, HIGHER_IS_BETTER[m]) == step]  # fmt: skip
    if picked:  # one copy of the state serves every metric that picks this round
        state = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
        states.update({m: (step, state) for m in picked})


def _test_picks(run: Run, record: RunRecord, states: dict, data: UnifiedData) -> None:
    """Test scores at the kept states, each state scored once for every metric that picked
    it (the caption metrics share their forwards with the NLL); the model ends in its final state."""
    final = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    by_state: dict[int, tuple[int, dict, list[str]]] = {}
    for metric, (step, state) in states.items():
        by_state.setdefault(id(state), (step, state, []))[2].append(metric)
    for step, state, metrics in by_state.values():
        run.model.load_state_dict(state)
        record.add(step, {}, run.scores(data, "test", tuple(metrics)))
    run.model.load_state_dict(final)


def _wanted(
    config: TrialConfig, model_cfg: ModelConfig, policy: ReductionPolicy
) -> list[tuple[str, tuple, ReductionPolicy]]:
    """The runs a seed is compared with, as (label, tasks, policy): each task alone, and
    (`synergy.vs_dense`) the dense joint model."""
    wanted = [(t, (t,), isolated_policy(policy, config.synergy.baseline)) for t in TASKS]
    if config.synergy.vs_dense:
        wanted.append(("dense", TASKS, ReductionPolicy.dense(model_cfg.num_layers)))
    return wanted


def _references(ctx: _Context, policy: ReductionPolicy, seed: int) -> dict[str, RunRecord]:
    """The cached runs one seed is compared with (`_wanted`), trained where not cached."""
    return {
        label: _reference(ctx, tasks, pol, seed) for label, tasks, pol in _wanted(ctx.config, ctx.model_cfg, policy)
    }


def _reference(ctx: _Context, tasks: tuple[str, ...], policy: ReductionPolicy, seed: int) -> RunRecord:
    """One reference run from the cache, trained (once, under the cache's lock) if absent."""
    key = _reference_key(ctx.config, ctx.model_cfg, tasks, policy, seed)
    train = functools.partial(_train_reference, ctx, policy, tasks, seed)
    return on_rank0(functools.partial(get_baseline, ctx.config.cache_dir, key), train)


def _reference_key(
    config: TrialConfig, model_cfg: ModelConfig, tasks: tuple[str, ...], policy: ReductionPolicy, seed: int
) -> str:
    spec = RunSpec(model_cfg, policy, config.training, tasks, seed)
    return baseline_key(spec, config.data, config.synergy.fidelity)


def reference_key(config: TrialConfig, seed: int, label: str) -> str:
    """The baseline cache key of `warm_reference(config, seed, label)`'s run (a sweep ships
    the entry under it from the node that trained it to the driver and the trials)."""
    _, model_cfg = prepare(config, seed)
    wanted = {lab: (tasks, pol) for lab, tasks, pol in _wanted(config, model_cfg, config.resolved_policy())}
    return _reference_key(config, model_cfg, *wanted[label], seed)  # data parallel: trained by all ranks


def reference_labels(config: TrialConfig) -> list[str]:
    """What `warm_reference` can train ahead of the trials: `understanding`, `generation`
    and (`synergy.vs_dense`) `dense`; none when the baselines depend on the trial's policy
    (`synergy.baseline: matched`)."""
    if config.synergy.baseline != "dense":
        return []
    return [label for label, _, _ in _wanted(config, config.model, config.resolved_policy())]


def warm_reference(config: TrialConfig, seed: int, label: str) -> bool:
    """Train (or find) one reference run of `seed` in the cache, as every trial of a
    `synergy.baseline: dense` sweep will compare with it; True when it was already cached
    (`training.processes` > 1: trained over that many ranks, as the trials train)."""
    if spawns(config.training.processes):
        return _on_ranks(warm_reference, config, seed, label)
    if config.training.threads:
        torch.set_num_threads(config.training.threads)
    data, model_cfg = prepare(config, seed)
    ctx = _Context(config, {seed: data}, model_cfg, resolve_device(config.training.device))
    wanted = {lab: (tasks, pol) for lab, tasks, pol in _wanted(config, model_cfg, config.resolved_policy())}
    return _reference(ctx, *wanted[label], seed).cached


def _train_reference(ctx: _Context, policy: ReductionPolicy, tasks: tuple[str, ...], seed: int) -> RunRecord:
    config, data, progress = ctx.config, ctx.data[seed], ctx.progress
    run = Run(RunSpec(ctx.model_cfg, policy, config.training, tasks, seed), data, ctx.device)
    record = RunRecord(tasks, seed)
    label = f"{tasks[0]} alone" if len(tasks) == 1 else "dense joint"
    for step in eval_steps(config.training.steps, config.training.eval_every):
        run.train_until(step)
        record.add(step, run.scores(data, "val"), run.scores(data, "test"))
        if progress:
            progress(f"{label} (seed {seed})", step, config.training.steps)
    if "generation" in tasks and config.synergy.fidelity:
        record.fidelity = _fidelity(run, data, seed, config)
    return record


def _round_gen_metric(config: TrialConfig, record: RunRecord) -> str:
    """The generation metric g_G reads per round: `synergy.gen_metric`'s, where it is scored
    every round (fidelity, scored on the final model only, reads the NLL meanwhile)."""
    metric = GEN_METRICS[config.synergy.gen_metric]
    return metric if metric in record.val else "gen_nll"


def _intermediate(records: list[RunRecord], refs: Refs, step: int, flops_ratio: float, config: TrialConfig) -> dict:
    """Running values at `step` (validation, joint vs isolated at the same step): the
    `ROUND_METRICS`, each per-seed one averaged over seeds."""
    per_seed = []
    for record in records:
        base, metric = refs[record.seed], _round_gen_metric(config, record)
        u, g = record.val[UND_METRIC][step], record.val[metric][step]
        gains = seed_gains(u, base["understanding"].val[UND_METRIC][step], g,
                           base["generation"].val[metric][step], config.synergy.aggregate,
                           HIGHER_IS_BETTER[metric])  # fmt: skip
        per_seed.append({**{m: curve[step] for m, curve in record.val.items() if m in ROUND_METRICS},
                         **dataclasses.asdict(gains)})  # fmt: skip
    out = {"flops_ratio": flops_ratio}
    out.update({k: float(np.mean([p[k] for p in per_seed])) for k in ROUND_METRICS if k != "flops_ratio"})
    return out


@functools.lru_cache(maxsize=4)
def _classifiers(data_json: str, cache_dir: str | None = None):
    """One scikit-learn classifier per target attribute, trained on the real pixels of the
    training images (patch tokens are judged after decoding, like any generated picture)."""
    from sklearn.linear_model import LogisticRegression

    data = _load_data_cached(data_json, cache_dir)
    split = data.split("train", "generation")
    x = data.real_pixels(split).astype(np.float32)
    return [LogisticRegression(max_iter=2000).fit(x, split.targets[:, a]) for a in range(split.targets.shape[1])]


def _fidelity(run: Run, data: UnifiedData, seed: int, config: TrialConfig) -> float:
    """Share of sampled test images a real-image classifier assigns to the prompted attributes."""
    split = data.split("test", "generation")
    split = split.batch(torch.arange(min(len(split), 200)))
    split = split if split.input_ids.device == run.device else split.to(run.device)
    codes = sample_images(run.model, split, data.vocab.image_offset, data.vocab.num_image, seed)
    clfs = _classifiers(config.data.for_seed(seed).model_dump_json(), config.cache_dir)
    pixels = data.to_pixels(codes).astype(np.float32)
    accs = [float((clf.predict(pixels) == split.targets[:, a]).mean()) for a, clf in enumerate(clfs)]
    return float(np.mean(accs))


def _scored(record: RunRecord, metric: str, at: str) -> Checkpoint:
    return checkpoint(metric, record.val[metric], record.test[metric], record.test_se[metric], at)


def _metric_rows(joint: RunRecord, base: dict[str, RunRecord], at: str) -> dict:
    """Each scored metric of a seed (`searchvlm.schema.metrics`), joint and its task's isolated run,
    each at its own scored round: value (and test s.e. where kept), scored steps; a metric
    the data set does not score (caption metrics without swapped captions) is absent."""
    row = {}
    for m in REGISTRY.values():
        iso = base.get(m.task)
        if m.scorer is None or iso is None or m.name not in joint.val or m.name not in iso.val:
            continue
        c, ci = _scored(joint, m.name, at), _scored(iso, m.name, at)
        row.update({m.name: c.value, **({f"{m.name}_test_se": c.se} if m.test_se else {}),
                    f"{m.step_key}_joint": c.step, m.iso: ci.value,
                    **({f"{m.iso}_test_se": ci.se} if m.test_se else {}), f"{m.step_key}_iso": ci.step})  # fmt: skip
    return row


def _gen_values(row: dict, joint: RunRecord, iso: RunRecord, metric: str) -> tuple[float, float]:
    """(joint, isolated) values of the metric g_G is computed on."""
    if metric_info(metric).scorer is None:  # sampled from the final model (fidelity)
        return joint.fidelity, iso.fidelity
    if metric not in row:
        raise ValueError(f"synergy.gen_metric needs {metric}, which this data set does not score (no swapped captions)")
    return row[metric], row[f"{metric}_iso"]


def _gains(
    joint: RunRecord, base: dict[str, RunRecord], at: str, how: Aggregate, metric: str = "gen_nll"
) -> tuple[dict, SeedGains]:
    """One seed's scored checkpoints (joint and isolated, per task) and its gains, g_U on
    `UND_METRIC`, g_G on `metric`."""
    row = _metric_rows(joint, base, at)
    gj, gi_value = _gen_values(row, joint, base["generation"], metric)
    gains = seed_gains(row[UND_METRIC], row[f"{UND_METRIC}_iso"], gj, gi_value, how, HIGHER_IS_BETTER[metric])
    return row, gains


def _final(config: TrialConfig, records: list[RunRecord], refs: Refs, done: TrialResult,
           chance: float | None = None) -> TrialResult:  # fmt: skip
    """The trial's result: per-seed gains of `records` against `refs`, aggregated into
    `done` (which carries the FLOPs ratio, seconds, steps, policy and its runs' CPU model),
    with the CPU models of the reference runs added (cached ones may have trained elsewhere).
    `chance`: caption accuracy at chance, which flags a g_G on caption accuracy over a
    below-chance baseline."""
    per_seed, at, how = [], config.synergy.at, config.synergy.aggregate
    metric = GEN_METRICS[config.synergy.gen_metric]
    for record in records:
        base = refs[record.seed]
        row, gains = _gains(record, base, at, how, metric)
        row.update({
            "seed": record.seed, "gen_fidelity": record.fidelity,
            "gen_fidelity_iso": base["generation"].fidelity,
            "und_gain": gains.und_gain, "gen_gain": gains.gen_gain, "synergy_gain": gains.synergy_gain,
            "baseline_cached": {t: base[t].cached for t in TASKS},
        })  # fmt: skip
        if metric == "gen_caption_acc" and chance is not None:
            row["gen_gain_below_chance"] = float(row["gen_caption_acc_iso"] < chance)
        if "dense" in base:
            _, dense = _gains(base["dense"], base, at, how, metric)
            row.update({
                "synergy_vs_dense": gains.synergy_gain - dense.synergy_gain,
                "und_gain_vs_dense": gains.und_gain - dense.und_gain,
                "gen_gain_vs_dense": gains.gen_gain - dense.gen_gain,
            })  # fmt: skip
        per_seed.append(SeedResult.model_validate(row))
    cpu = joined([done.cpu, *(ref.cpu for base in refs.values() for ref in base.values())])
    return _aggregate(per_seed, list(config.seeds), done.model_copy(update={"cpu": cpu}))


def _values(per_seed: list[SeedResult], key: str) -> list[float]:
    return [v for p in per_seed if (v := getattr(p, key, None)) is not None]


def _mean_of(per_seed: list[SeedResult], key: str) -> float | None:
    vals = _values(per_seed, key)
    return float(np.mean(vals)) if vals else None


def _stderr_of(per_seed: list[SeedResult], key: str) -> float | None:
    vals = _values(per_seed, key)
    return mean_stderr(vals)[1] if vals else None


def _aggregate(per_seed: list[SeedResult], seeds: list[int], done: TrialResult) -> TrialResult:
    """`done` with `SEED_MEANS` (and the late metrics' values) averaged over the per-seed
    records and the standard error over seeds of `SEED_STDERRS`."""
    return done.model_copy(update={
        "status": "ok", "seeds": seeds, "per_seed": per_seed,
        **{f: _mean_of(per_seed, f) for f in (*SEED_MEANS, *late_fields())},
        **{f"{f}_stderr": _stderr_of(per_seed, f) for f in SEED_STDERRS},
    })  # fmt: skip


def combine_seeds(results: Sequence[TrialResult]) -> TrialResult:
    """One policy's one-seed results (`run_trial` on one seed each, the same config otherwise)
    as one trial on all their seeds, in the order given: the per-seed records averaged as
    `run_trial` averages them, seconds summed, CPU models joined; the first failed one if any."""
    if not results:
        raise ValueError("no results to combine")
    failed = next((r for r in results if r.status != "ok"), None)
    if failed is not None:
        return failed
    done = results[0].model_copy(update={"train_seconds": sum(r.train_seconds for r in results),
                                         "cpu": joined([r.cpu for r in results])})  # fmt: skip
    return _aggregate([p for r in results for p in r.per_seed], [s for r in results for s in r.seeds], done)


__all__ = [
    "combine_seeds",
    "run_trial",
    "prepare",
    "prepare_seeds",
    "priced_data",
    "reference_key",
    "reference_labels",
    "task_layouts",
    "warm_reference",
]

"""The sweep driver: `run_sweep`'s run loop, the up-front baselines, the Tuner (searcher,
scheduler, callback) and the summary. Before Ray starts, the sweep's folder is checked and
set up by `_rundir`; Ray is started and the cluster sized by `_cluster`.

Driver side only; trial workers import `_trainable` alone (see the package docstring).
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from searchvlm.data import check_data
from searchvlm.records._storage import RAY_DIR, TuneState, check_storage, tune_state
from searchvlm.schema.policy import ReductionPolicy
from searchvlm.schema.results import STUDY_FILE, SWEEP_FILE, TRIALS_FILE, read_meta, read_trials, sweep_tracking_uri
from searchvlm.schema.space import SearchSpace, load_space
from searchvlm.tracking import Tracker, default_uri

from ._callback import SweepCallback
from ._cluster import (
    cluster_address,
    ensure_ray,
    fit_cluster,
    local_cpus,
    needs_cluster,
    quiet_ray,
    warn_unused_gpus,
)
from ._logs import LOG_FILE, routed_logs
from ._moasha import MOASHA
from ._preflight import preflight
from ._progress import counts, front_table
from ._rundir import (
    check_name,
    check_not_running,
    check_records,
    check_state,
    driver_lock,
    extra_trials,
    init_run_dir,
    record_cache_dir,
    record_extension,
    record_storage,
    recorded_storage,
    resume_space,
)
from ._searcher import make_searcher, study_url
from ._trainable import replay_record, train, warm_reference

__all__ = ["SweepOptions", "SweepSummary", "run_sweep"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepOptions:
    """What a sweep adds to its space file: `samples` / `concurrency` in place of the space's,
    `overrides` (`key.path=value` strings, `--set`, see `searchvlm.schema.overrides`) applied to the
    file, the Ray cluster to join (`address`, else `RAY_ADDRESS`, else a local Ray) and the
    MLflow store (`tracking_uri`, default the sqlite store under the runs folder), the
    baseline cache (`cache_dir`, default `<runs_dir>/cache`; a resumed sweep: the one it
    recorded), e.g. a folder every node of a cluster shares; where Tune keeps its state
    (`storage`: a shared folder, `file://PATH` or `s3://bucket/prefix`; default `ray/` in the
    sweep's folder; a resumed sweep: the one it recorded)."""

    samples: int | None = None
    concurrency: int | Literal["auto"] | None = None
    overrides: Sequence[str] | None = None
    address: str | None = None
    tracking_uri: str | None = None
    cache_dir: str | Path | None = None
    storage: str | None = None


@dataclass(frozen=True)
class _Sweep:
    """What the driver's steps share once the sweep's folder and MLflow store are settled."""

    space: SearchSpace
    run_dir: Path
    runs_dir: Path
    uri: str
    progress: bool
    cache: Path
    state: TuneState


@dataclass
class SweepSummary:
    """What a finished (or interrupted) sweep left behind."""

    name: str
    run_dir: Path
    counts: dict[str, int]
    front: list[dict[str, Any]]
    tracking_uri: str
    parent_run_id: str | None
    study: str
    wall_seconds: float
    trial_seconds: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)
    tune_state: str = ""  # where Tune's experiment state is (`--storage`, else <run_dir>/ray)


def run_sweep(
    space_path: str | Path,
    *,
    name: str | None = None,
    runs_dir: str | Path = "runs",
    resume: bool = False,
    progress: bool = True,
    options: SweepOptions = SweepOptions(),
) -> SweepSummary:
    """Run (or resume, or extend) a sweep of `space_path` into `<runs_dir>/<name>/`.

    `options`: what the command line adds to the space file (`SweepOptions`). A bad space
    raises ConfigError before Ray starts. `resume=True` continues an interrupted sweep (same
    space and overrides); on a finished sweep, `options.samples` above its count runs the
    extra trials (same study, same MLflow parent run, same trials table). `progress`: the
    live view on a terminal, one line per trial event elsewhere."""
    start = time.perf_counter()
    opt = options
    space = load_space(space_path, opt.overrides)
    check_data(space.data)  # a bad data file is one error here, not a failed trial each
    runs_dir = Path(runs_dir).resolve()
    name = check_name(Path(space_path).stem if name is None else name)  # "" is refused, not defaulted
    run_dir = runs_dir / name
    check_not_running(run_dir)  # one driver per sweep: a second one stops here, nothing written
    with contextlib.ExitStack() as lock:  # and from the first write on it holds the sweep's lock
        storage = check_storage(opt.storage) if opt.storage is not None else None
        if storage is None and resume:
            storage = recorded_storage(run_dir)
        state = tune_state(run_dir, storage)
        check_state(run_dir, name, resume, state)
        if resume:
            space = resume_space(run_dir, Path(space_path), space, opt.samples, opt.concurrency)
            check_records(run_dir, _tracking_uri(run_dir, runs_dir, resume, opt.tracking_uri), state)  # before Ray
        else:
            if storage is not None:
                state.prepare()  # an unwritable storage: one error before Ray starts
            space = space.with_search(samples=opt.samples, concurrency=opt.concurrency)
        cache = _cache_dir(run_dir, resume, opt.cache_dir)
        quiet_ray()
        # a sweep that asks for GPUs, sizes itself to the cluster or joins one (Ray Client refused here)
        # sees the cluster before it writes anything: its nodes are checked before any trial
        early = needs_cluster(space.search) or cluster_address(opt.address) is not None
        started = ensure_ray(opt.address, local_cpus(space.search)) if early else False
        try:
            at_once = fit_cluster(space, space_path) if early else int(space.search.concurrency)
            if ray.is_initialized() and sum(bool(n.get("Alive")) for n in ray.nodes()) > 1:  # one node: the driver's
                preflight(space, space_path, cache)
            lock.enter_context(driver_lock(run_dir))  # the first write: from here on, this driver's sweep
            uri = _tracking_uri(run_dir, runs_dir, resume, opt.tracking_uri)  # (creates runs_dir)
            extra = extra_trials(run_dir, space) if resume else 0
            if extra:
                record_extension(run_dir, space)
            elif not resume:
                init_run_dir(run_dir, Path(space_path), space, name, uri, opt.overrides,
                             cache_dir=cache if opt.cache_dir is not None else None, storage=storage)  # fmt: skip
            elif opt.cache_dir is not None:
                record_cache_dir(run_dir, cache)
            if resume and storage != recorded_storage(run_dir):
                record_storage(run_dir, storage)
            _warn_proxy(space, space_path)
            new_tuner = not resume or extra > 0
            # Ray, Optuna, MLflow from here on: INFO chatter (Ray's token line, MLflow's schema set-up)
            # in sweep.log, warnings as whole lines above the live view
            with routed_logs(run_dir / LOG_FILE):
                # MLflow store set-up and the Optuna study (sqlite, schema creation) overlap Ray's start
                with ThreadPoolExecutor(max_workers=1, thread_name_prefix="searchvlm-setup") as pool:
                    pool.submit(_warm_tracking, uri, runs_dir)
                    searcher = pool.submit(_searcher, space, run_dir, cache) if new_tuner else None
                    if not early:
                        started = ensure_ray(opt.address, local_cpus(space.search))
                        warn_unused_gpus(space, space_path)
                sweep = _Sweep(space, run_dir, runs_dir, uri, progress, cache, state)
                shipped = _warm_baselines(sweep)
                samples = extra or space.search.samples
                tuner = _tuner(sweep, searcher.result() if searcher else None, num_samples=samples,
                               at_once=at_once, baselines=shipped)  # fmt: skip
                grid = tuner.fit()
        finally:
            if started:
                ray.shutdown()
        trial_s = sum(float(r.metrics.get("trial_wall_s", 0.0) or 0.0) for r in grid if r.metrics)
        summary = _summary(run_dir, uri, time.perf_counter() - start, trial_s, state)
        if progress:
            _print_summary(summary)
        _confirm_at_end(sweep, summary)
        return summary


def _confirm_at_end(sweep: _Sweep, summary: SweepSummary) -> None:
    """`search.confirm`: confirm the front once every sample has finished (not after an
    interruption: the resumed sweep confirms)."""
    space = sweep.space
    settings = space.search.confirm
    done = sum(summary.counts[k] for k in ("ok", "failed", "pruned"))
    if settings is None or done < space.search.samples:
        return
    from searchvlm.records.confirm import run_confirm

    result = run_confirm(summary.run_dir, settings.seeds, settings.top, sweep.runs_dir, sweep.uri)
    if sweep.progress:
        print(f"confirmed {len(result.rows)} policies on seeds {result.seeds}: {result.path}", file=sys.stderr)


def _warm_tracking(uri: str, runs_dir: Path) -> None:
    """Create a sqlite MLflow store and experiment while Ray starts (seconds on a fresh
    store); the callback's own `Tracker` then finds them ready. Other URIs: no-op.
    A failure here is ignored: the callback's set-up reports it."""
    if not uri.startswith("sqlite"):
        return
    try:
        Tracker(uri, runs_dir)
    except Exception:  # noqa: BLE001 - the callback's Tracker raises it properly
        log.debug("tracking warm-up failed", exc_info=True)


def _tracking_uri(run_dir: Path, runs_dir: Path, resume: bool, given: str | None) -> str:
    """The sweep's MLflow store: `--tracking-uri`, else the one a resumed (or extended) sweep
    recorded (a tracking server it was started with: its runs go on there), else the sqlite
    store in the runs folder."""
    if given:
        return given
    if resume and (run_dir / SWEEP_FILE).exists():
        recorded = sweep_tracking_uri(read_meta(run_dir / SWEEP_FILE), run_dir)
        if recorded:
            return recorded
    return default_uri(runs_dir)


def _cache_dir(run_dir: Path, resume: bool, given: str | Path | None) -> Path:
    """The sweep's baseline cache: `--cache-dir`, else the one a resumed sweep recorded, else
    `cache/` beside the sweep's folder."""
    if given is not None:
        return Path(given).expanduser().resolve()
    return read_meta(run_dir / SWEEP_FILE).cache_path(run_dir).resolve() if resume else run_dir.parent / "cache"


def _searcher(space: SearchSpace, run_dir: Path, cache: Path) -> Any:
    """The new sweep's searcher on its persistent study (warm start and presets enqueued)."""
    meta = read_meta(run_dir / SWEEP_FILE)
    return make_searcher(space, meta.name, str(run_dir / STUDY_FILE), _warm_start(space, run_dir), str(cache))


def _trial_dirname(trial: Any) -> str:
    return str(trial.trial_id)


def _warm_baselines(sweep: _Sweep) -> dict[str, bytes]:
    """Train the reference runs every trial of the sweep compares with (`synergy.baseline:
    dense`: each task alone, and the dense joint model with `vs_dense`, per seed) once, up
    front and in parallel, so the first trials do not each wait for them; one progress line
    per reference. A failure is a warning: the trial that needs the run trains it itself.

    Each run comes back from the node that trained it (or found it cached) as its cache
    entry, with its data's codebook (a patch tokenizer): written into the driver's cache
    (`confirm`, `decide` and a resume find them) and returned ({name: bytes}) to be shipped
    to every trial, on whichever node it runs."""
    from searchvlm.train.baselines import store_entries
    from searchvlm.train.trial import reference_labels

    space, progress = sweep.space, sweep.progress
    cache = str(sweep.cache)
    config = space.trial_config(ReductionPolicy.dense(space.model.num_layers), "baselines", cache)
    jobs = [(seed, label) for seed in config.seeds for label in reference_labels(config)]
    entries: dict[str, bytes] = {}
    if not jobs:
        return entries
    cpus, gpus = space.search.cpus_per_trial, space.search.gpus_per_trial
    task = ray.remote(num_cpus=cpus, num_gpus=gpus)(warm_reference)  # num_gpus 0: a CPU task
    pending = [task.remote(space.model_dump_json(), cache, max(1, int(cpus)), seed, label) for seed, label in jobs]
    ready_count = 0
    while pending:
        (ready,), pending = ray.wait(pending, num_returns=1)
        try:
            seed, label, cached, seconds, made = ray.get(ready)
        except Exception as err:  # noqa: BLE001 - the trials train it; the sweep goes on
            print(
                f"warning: a baseline failed up front ({str(err).splitlines()[-1]}); trials train it", file=sys.stderr
            )
            continue
        ready_count += 1
        entries.update(made)
        if progress:
            how = "found in the cache" if cached else f"trained in {seconds:.0f} s"
            what = "dense joint" if label == "dense" else f"{label} alone"
            print(f"baselines: {ready_count} of {len(jobs)} cached ({what}, seed {seed}: {how})", file=sys.stderr)
    store_entries(sweep.cache, entries)  # the driver's cache holds every baseline, wherever it trained
    return entries


def _trainable(space: SearchSpace, cache_dir: Path, done: dict[str, dict[str, Any]] | None = None,
               baselines: dict[str, bytes] | None = None) -> Any:  # fmt: skip
    """`train` with its fixed arguments in Ray's object store (the shipped `baselines` too)."""
    cache = str(cache_dir)
    cpus, gpus = space.search.cpus_per_trial, space.search.gpus_per_trial
    fn = tune.with_parameters(train, space_json=space.model_dump_json(), cache_dir=cache,
                              threads=max(1, int(cpus)), done=done or {}, baselines=baselines or {})  # fmt: skip
    # Ray sets a trial's CUDA_VISIBLE_DEVICES to the GPUs it gave it (cuda:0 is the first of them)
    return tune.with_resources(fn, {"cpu": cpus, "gpu": gpus} if gpus else {"cpu": cpus})


def _tuner(sweep: _Sweep, searcher: Any | None, num_samples: int, at_once: int,
           baselines: dict[str, bytes] | None = None) -> tune.Tuner:  # fmt: skip
    """A new Tuner around `searcher` running `num_samples` trials (a new sweep, or the extra
    trials of an extended one: same study, table and MLflow parent), or (searcher None) the
    interrupted one restored. `at_once`: max concurrent trials (`auto` resolved); `baselines`:
    the up-front baselines' cache entries (and codebooks) every trial gets."""
    space, run_dir = sweep.space, sweep.run_dir
    resume = searcher is None
    trainable = _trainable(space, sweep.cache, _recorded(run_dir) if resume else None, baselines)
    state = sweep.state
    if resume:
        return tune.Tuner.restore(state.path, trainable, resume_unfinished=True, resume_errored=False,
                                  restart_errored=False, storage_filesystem=state.filesystem)  # fmt: skip
    tune_config = tune.TuneConfig(
        search_alg=searcher, scheduler=_scheduler(space), num_samples=num_samples,
        max_concurrent_trials=at_once, reuse_actors=True,
        trial_dirname_creator=_trial_dirname,
    )  # fmt: skip
    callback = SweepCallback(run_dir, space, sweep.uri, sweep.runs_dir, sweep.progress)
    loggers = [JsonLoggerCallback(), CSVLoggerCallback()]  # for ExperimentAnalysis
    run_config = tune.RunConfig(name=state.name, storage_path=state.storage_path, storage_filesystem=state.filesystem,
                                callbacks=[callback, *loggers], verbose=0,
                                failure_config=tune.FailureConfig(max_failures=0))  # fmt: skip
    return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)


def _warm_start(space: SearchSpace, run_dir: Path) -> Any:
    """`search.warm_start: analysis`: the analysis-derived policy (cached analysis.json)."""
    if space.search.warm_start != "analysis":
        return None
    from searchvlm.train.analysis import warm_start_policy

    return warm_start_policy(space, run_dir)


def _recorded(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Trials the table holds: a hard kill can leave Tune's saved state older than the
    table, and a trial that finished must not be trained again on resume."""
    table = run_dir / TRIALS_FILE
    return {r["trial_id"]: replay_record(r) for r in read_trials(table, strict=True)} if table.exists() else {}


def _scheduler(space: SearchSpace) -> tune.schedulers.TrialScheduler | None:
    sch = space.search.scheduler
    if sch.kind == "none":
        return None
    return MOASHA(space.metric_names, space.directions,
                  grace_steps=sch.grace_steps or space.training.eval_every,
                  max_steps=space.max_steps(), reduction_factor=sch.reduction_factor,
                  noise=_rung_noise(space))  # fmt: skip


def _rung_noise(space: SearchSpace) -> dict[str, float]:
    """What a rung cannot tell apart: 2 standard errors of the difference of two one-seed
    synergies (2 * sqrt(2) * the space's `calibration.synergy_sd`, the seed SD at the scored
    checkpoint; early rounds are noisier still, so this is a lower bound). Empty without it."""
    c = space.calibration
    if c is None or c.synergy_sd is None:
        return {}
    return {"synergy_gain": 2.0 * math.sqrt(2.0) * c.synergy_sd}


def _summary(run_dir: Path, uri: str, wall: float, trial_s: float, state: TuneState) -> SweepSummary:
    from searchvlm.objectives.pareto import front

    rows = read_trials(run_dir / TRIALS_FILE) if (run_dir / TRIALS_FILE).exists() else []
    meta = read_meta(run_dir / SWEEP_FILE)
    return SweepSummary(
        name=meta.name, run_dir=run_dir, counts=counts(rows), front=front(rows),
        tracking_uri=uri, parent_run_id=meta.parent_run_id,
        study=study_url(str(run_dir / STUDY_FILE)), wall_seconds=wall, trial_seconds=trial_s,
        rows=rows, tune_state=state.shown,
    )  # fmt: skip


def _warn_proxy(space: SearchSpace, space_path: str | Path) -> None:
    """Say once, as the sweep starts, when its proxy's dense synergy is unmeasured or not positive."""
    warning = space.synergy_warning()
    if warning:  # one line on stderr (a log record too would print it twice through logging's last resort)
        print(f"warning: {space_path}: {warning}", file=sys.stderr, flush=True)


def _print_summary(s: SweepSummary) -> None:
    from rich.console import Console

    from searchvlm.report._console import print_table

    con = Console(stderr=True, soft_wrap=True)  # lines stay whole in logs (commands to copy)
    print_table(con, front_table(s.rows, title=f"sweep {s.name}: Pareto front"))
    from searchvlm.report import one_seed, seed_noise

    noise = seed_noise(s.run_dir, s.rows)
    if noise is not None:
        con.print(noise.line(s.name, one_seed(s.rows)), highlight=False)
    c = s.counts
    con.print(f"{c['ok']} ok, {c['failed']} failed, {c['pruned']} pruned in {s.wall_seconds:.1f}s")
    if s.tune_state in ("", str(s.run_dir / RAY_DIR)):
        con.print(f"outputs: {s.run_dir}/{{{TRIALS_FILE}, {SWEEP_FILE}, {STUDY_FILE}, {RAY_DIR}/}}")
    else:
        con.print(f"outputs: {s.run_dir}/{{{TRIALS_FILE}, {SWEEP_FILE}, {STUDY_FILE}}}; Tune's state: {s.tune_state}/")
    con.print(f"mlflow: {s.tracking_uri} (experiment 'searchvlm', parent run {s.parent_run_id})")
    con.print(f"optuna-dashboard {s.study}")

"""The sweep driver: Ray start, the Tuner (searcher, scheduler, callback), the summary.

Driver side only; trial workers import `_trainable` alone (see the package docstring).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import re
import shutil
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
from searchvlm.errors import COMMAND_LINE, ConfigError
from searchvlm.policy import ReductionPolicy
from searchvlm.results import SWEEP_FILE, TRIALS_FILE, SweepMeta, read_meta, read_trials, store_problem, write_meta
from searchvlm.search import SearchSettings
from searchvlm.space import SearchSpace, load_space
from searchvlm.tracking import Tracker, default_uri

from ._callback import SweepCallback
from ._logs import LOG_FILE, routed_logs
from ._moasha import MOASHA
from ._progress import counts, front_table
from ._searcher import make_searcher, study_url
from ._trainable import replay_record, train, warm_reference

__all__ = ["SweepSummary", "ensure_ray", "run_sweep", "shutdown_ray"]

log = logging.getLogger(__name__)
RAY_DIR = "ray"
STUDY_FILE = "optuna.db"


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


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to `address` / `RAY_ADDRESS` (token from `RAY_AUTH_TOKEN`), or start a local
    Ray on 127.0.0.1 without dashboard. Returns True if this call started/connected Ray."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        return True
    _loopback_only()
    ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)  # fmt: skip
    return True


def _loopback_only() -> None:
    """Keep a local single-node Ray on 127.0.0.1. Ray (2.60) rewrites `127.0.0.1` to the
    machine's routable IP and then binds GCS, raylet and workers on every interface,
    unless it treats the machine as single-node (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`,
    read once at import, hence the constant too); its children inherit the variable."""
    from ray._private import ray_constants

    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def run_sweep(
    space_path: str | Path,
    *,
    name: str | None = None,
    samples: int | None = None,
    concurrency: int | Literal["auto"] | None = None,
    resume: bool = False,
    address: str | None = None,
    tracking_uri: str | None = None,
    runs_dir: str | Path = "runs",
    progress: bool = True,
    overrides: Sequence[str] | None = None,
) -> SweepSummary:
    """Run (or resume, or extend) a sweep of `space_path` into `<runs_dir>/<name>/`.

    `samples`/`concurrency` override the space's; `overrides` are `key.path=value` strings
    (`--set`, see `searchvlm.overrides`) applied to the space file. A bad space raises
    ConfigError before Ray starts. `resume=True` continues an interrupted sweep (same space
    and overrides); on a finished sweep, `samples` above its count runs the extra trials
    (same study, same MLflow parent run, same trials table). `progress`: the live view on a
    terminal, one line per trial event elsewhere."""
    start = time.perf_counter()
    space = load_space(space_path, overrides)
    check_data(space.data)  # a bad data file is one error here, not a failed trial each
    runs_dir = Path(runs_dir).resolve()
    name = _check_name(Path(space_path).stem if name is None else name)  # "" is refused, not defaulted
    run_dir = runs_dir / name
    _check_state(run_dir, name, resume)
    if resume:
        space = _resume_space(run_dir, Path(space_path), space, samples, concurrency)
        _check_records(run_dir, tracking_uri or default_uri(runs_dir))  # damaged records: before Ray starts
    else:
        space = space.with_search(samples=samples, concurrency=concurrency)
    _quiet_ray()
    # a sweep that asks for GPUs, or sizes itself to the cluster, sees the cluster before it writes anything
    early = _needs_cluster(space.search)
    started = ensure_ray(address, _local_cpus(space.search)) if early else False
    try:
        at_once = _fit_cluster(space, space_path) if early else int(space.search.concurrency)
        uri = tracking_uri or default_uri(runs_dir)  # (creates runs_dir)
        extra = _extra_trials(run_dir, space) if resume else 0
        if extra:
            _record_extension(run_dir, space)
        elif not resume:
            _init_run_dir(run_dir, Path(space_path), space, name, uri, overrides)
        _warn_proxy(space, space_path)
        new_tuner = not resume or extra > 0
        # MLflow store set-up and the Optuna study (sqlite, schema creation) overlap Ray's start
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="searchvlm-setup") as pool:
            pool.submit(_warm_tracking, uri, runs_dir)
            searcher = pool.submit(_searcher, space, run_dir) if new_tuner else None
            if not early:
                started = ensure_ray(address, _local_cpus(space.search))
                _warn_unused_gpus(space, space_path)
        _warm_baselines(space, run_dir, progress)
        tuner = _tuner(space, run_dir, runs_dir, uri, progress, searcher.result() if searcher else None,
                       num_samples=extra or space.search.samples, at_once=at_once)  # fmt: skip
        with routed_logs(run_dir / LOG_FILE):  # Ray, Optuna, MLflow: whole lines above the live view
            grid = tuner.fit()
    finally:
        if started:
            ray.shutdown()
    trial_s = sum(float(r.metrics.get("trial_wall_s", 0.0) or 0.0) for r in grid if r.metrics)
    summary = _summary(run_dir, uri, time.perf_counter() - start, trial_s)
    if progress:
        _print_summary(summary)
    _confirm_at_end(space, summary, runs_dir, uri, progress)
    return summary


def _needs_cluster(search: SearchSettings) -> bool:
    return search.gpus_per_trial > 0 or search.concurrency == "auto"


def _local_cpus(search: SearchSettings) -> int:
    """CPUs of a local Ray this sweep starts: what its trials use at once (auto: every core)."""
    cores = os.cpu_count() or 1
    return cores if search.concurrency == "auto" else min(cores, math.ceil(search.cpus_per_trial * search.concurrency))


def _fit_cluster(space: SearchSpace, space_path: str | Path) -> int:
    """The trials run at once on this Ray cluster (`search.concurrency`, `auto` resolved and
    printed); ConfigError when one trial asks for more CPUs or GPUs than the cluster has."""
    s, have = space.search, ray.cluster_resources()
    cpus, gpus = have.get("CPU", 0.0), have.get("GPU", 0.0)
    reports = f"ray.cluster_resources() reports CPU {cpus:g}, GPU {gpus:g}"
    for key, asked, there in (("gpus_per_trial", s.gpus_per_trial, gpus), ("cpus_per_trial", s.cpus_per_trial, cpus)):
        if asked > there:
            raise ConfigError(space_path, f"search.{key}", asked,
                              f"each trial asks Ray for {asked:g} {key[:3].upper()}s, but {reports}; "
                              "lower it or use a larger cluster (--address)")  # fmt: skip
    at_once = s.trials_at_once(have)
    if s.concurrency == "auto":
        per = f"{s.cpus_per_trial:g} CPU" + (f", {s.gpus_per_trial:g} GPU" if s.gpus_per_trial else "")
        print(f"concurrency auto: {at_once} trials at once ({reports}; each trial {per})", file=sys.stderr, flush=True)
    return at_once


def _warn_unused_gpus(space: SearchSpace, space_path: str | Path) -> None:
    """Say so when the cluster has GPUs that this sweep's trials do not ask for (every trial
    would then see all of its node's GPUs and train on cuda:0)."""
    gpus = ray.cluster_resources().get("GPU", 0.0)
    if gpus and not space.search.gpus_per_trial and space.training.device != "cpu":
        msg = (f"{space_path}: the cluster has {gpus:g} GPUs but search.gpus_per_trial = 0: Ray places trials "
               "by CPUs alone and every trial trains on its node's cuda:0; set search.gpus_per_trial")  # fmt: skip
        log.warning(msg)
        print(f"warning: {msg}", file=sys.stderr, flush=True)


def _confirm_at_end(space: SearchSpace, summary: SweepSummary, runs_dir: Path, uri: str, progress: bool) -> None:
    """`search.confirm`: confirm the front once every sample has finished (not after an
    interruption: the resumed sweep confirms)."""
    settings = space.search.confirm
    done = sum(summary.counts[k] for k in ("ok", "failed", "pruned"))
    if settings is None or done < space.search.samples:
        return
    from searchvlm.confirm import run_confirm

    result = run_confirm(summary.run_dir, settings.seeds, settings.top, runs_dir, uri)
    if progress:
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


def _searcher(space: SearchSpace, run_dir: Path) -> Any:
    """The new sweep's searcher on its persistent study (warm start and presets enqueued)."""
    meta = read_meta(run_dir / SWEEP_FILE)
    return make_searcher(space, meta.name, str(run_dir / STUDY_FILE), _warm_start(space, run_dir))


def _quiet_ray() -> None:
    """Our live view replaces Tune's reporter. Of its per-trial loggers only JSON and CSV
    are kept (`_tuner` passes them): Ray's `ExperimentAnalysis` reads a trial's metrics from
    its result.json / progress.csv; TensorBoard's needs tensorboardX and adds nothing."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # a failed trial's final report has no objectives; MOOptunaSearch tells it FAIL
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


def _trial_dirname(trial: Any) -> str:
    return str(trial.trial_id)


def shutdown_ray() -> None:
    """Stop the Ray session of this process (tests sharing one session call it once)."""
    ray.shutdown()


def _resume_space(
    run_dir: Path, space_path: Path, space: SearchSpace, samples: int | None, concurrency: int | str | None
) -> SearchSpace:
    """The space a resumed sweep continues with (see `_extra_trials` for an extension).

    `space` (from `space_path` and the overrides) must be the space the sweep started with
    (else trials of two configurations would mix). An interrupted sweep keeps its recorded
    `samples` and `concurrency` (Tune restores its own; other values are refused, not
    ignored). A finished sweep (every recorded sample in the table) given more `samples`
    is extended: the answer has the new `samples` and `concurrency` may change."""
    meta = read_meta(run_dir / SWEEP_FILE)
    recorded = getattr(meta, "search", None) or {}
    base = space.with_search(samples=recorded.get("samples"), concurrency=recorded.get("concurrency"))
    if base.space_hash() != meta.space_hash:
        raise ConfigError(space_path, "", f"hash {base.space_hash()}",
                          f"differs from the space sweep {run_dir.name!r} started with (hash {meta.space_hash}; "
                          f"its copy is in {run_dir}); resume with that file and the same --set overrides, "
                          "or start a new sweep")  # fmt: skip
    if samples is None or samples == base.search.samples:
        _same(run_dir, "concurrency", concurrency, base.search.concurrency)
        return base
    done = _done(run_dir)
    if samples < base.search.samples:
        raise ConfigError(None, "--samples", samples, f"sweep {run_dir.name!r} has {base.search.samples} samples; "
                          "a sweep can be extended, never shrunk")  # fmt: skip
    if done < base.search.samples:
        raise ConfigError(None, "--samples", samples,
                          f"sweep {run_dir.name!r} started with samples = {base.search.samples} and is "
                          f"unfinished ({done} trials recorded): finish it with --resume (without --samples), "
                          "then extend it")  # fmt: skip
    return base.with_search(samples=samples, concurrency=concurrency)


def _done(run_dir: Path) -> int:
    return len(read_trials(run_dir / TRIALS_FILE, strict=True)) if (run_dir / TRIALS_FILE).exists() else 0


def _extra_trials(run_dir: Path, space: SearchSpace) -> int:
    """Trials an extended sweep runs (0 for a plain resume): the new samples minus the table's."""
    recorded = (getattr(read_meta(run_dir / SWEEP_FILE), "search", None) or {}).get("samples")
    return 0 if space.search.samples == recorded else space.search.samples - _done(run_dir)


def _same(run_dir: Path, key: str, value: int | None, recorded: int) -> None:
    if value is not None and value != recorded:
        raise ConfigError(None, f"--{key}", value,
                          f"sweep {run_dir.name!r} started with {key} = {recorded} and a resumed sweep "
                          "keeps it (Tune restores its own); to run more trials once it has finished, "
                          "pass --resume --samples N")  # fmt: skip


def _record_extension(run_dir: Path, space: SearchSpace) -> None:
    """sweep.json of an extended sweep: the new search settings (and hash), the history."""
    meta = read_meta(run_dir / SWEEP_FILE)
    history = [*(getattr(meta, "extended", None) or []),
               {"samples": space.search.samples, "at": dt.datetime.now().isoformat(timespec="seconds")}]  # fmt: skip
    write_meta(
        run_dir / SWEEP_FILE,
        meta.model_copy(
            update={
                "search": space.search.model_dump(mode="json"),
                "space_hash": space.space_hash(),
                "extended": history,
            }
        ),
    )


_NAME = re.compile(r"^[\w][\w .+-]*$")


def _check_records(run_dir: Path, uri: str) -> None:
    """Before Ray starts, what a resumed sweep reads and then rewrites must be whole: the
    table (rewritten from the rows read), Tune's saved state, the study it tells, the MLflow
    store holding its runs. Each damage is a ConfigError naming the file (nothing is written)."""
    if (run_dir / TRIALS_FILE).exists():
        read_trials(run_dir / TRIALS_FILE, strict=True)
    elif store_problem(run_dir / STUDY_FILE, "studies") is None and _finished_in_study(run_dir):
        raise ConfigError(run_dir / TRIALS_FILE, "", str(run_dir / TRIALS_FILE),
                          f"missing, while {STUDY_FILE} holds finished trials: resuming would record none of them; "
                          f"`searchvlm runs --check {run_dir.name} --repair` rebuilds it")  # fmt: skip
    _check_pickle(run_dir / RAY_DIR / "tuner.pkl")
    stores = [(run_dir / STUDY_FILE, "studies", "the Optuna study the sweep tells")]
    if uri.startswith("sqlite:///") and Path(uri.removeprefix("sqlite:///")).exists():  # (a new one is made)
        stores.append((Path(uri.removeprefix("sqlite:///")), "runs", "the sweep's MLflow runs"))
    for path, table, what in stores:
        problem = store_problem(path, table)
        if problem is not None:
            raise ConfigError(path, "", str(path), f"{problem}: it holds {what}, so the sweep cannot resume; "
                              "restore it from a copy, or start a new sweep")  # fmt: skip


def _finished_in_study(run_dir: Path) -> int:
    """Finished trials of the sweep's study (0 when it has none or another name)."""
    import optuna

    try:
        study = optuna.load_study(
            study_name=read_meta(run_dir / SWEEP_FILE).name, storage=study_url(str(run_dir / STUDY_FILE))
        )
    except KeyError:
        return 0
    return sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))


def _check_pickle(path: Path) -> None:
    """Tune's `tuner.pkl` is a whole pickle stream (read as opcodes only: nothing is loaded)."""
    import pickletools

    try:
        ops = list(pickletools.genops(path.read_bytes()))
    except (OSError, ValueError) as err:
        raise ConfigError(path, "", str(path), f"Tune's saved state is unreadable ({err}); the sweep cannot "
                          "resume: restore the ray/ folder from a copy, or start a new sweep") from None  # fmt: skip
    if not ops or ops[-1][0].name != "STOP":
        raise ConfigError(path, "", str(path), "Tune's saved state is cut short; the sweep cannot resume")


def _check_name(name: str) -> str:
    """A sweep name is one folder under the runs directory: no separators, no leading dot."""
    if not _NAME.match(name) or len(name) > 128:
        raise ConfigError(None, "--name", name, "must be a plain folder name (letters, digits, "
                          "'_', '-', '.', '+', spaces; no '/' and no leading '.')")  # fmt: skip
    return name


def _check_state(run_dir: Path, name: str, resume: bool) -> None:
    exists = (run_dir / SWEEP_FILE).exists()
    if resume and not (run_dir / RAY_DIR / "tuner.pkl").exists():
        raise ConfigError(COMMAND_LINE, "--resume", name, f"no sweep in {run_dir} to resume or extend "
                          f"(no Tune state {RAY_DIR}/tuner.pkl there)")  # fmt: skip
    if not resume and exists:
        raise ConfigError(None, "--name", name,
                          f"sweep {run_dir} exists; pass --resume to continue it or choose another name")  # fmt: skip


def _init_run_dir(run_dir: Path, space_path: Path, space: SearchSpace, name: str, uri: str,
                  overrides: Sequence[str] | None = None) -> None:  # fmt: skip
    """sweep.json and the space as run: the file itself, or with `--set` the resolved space."""
    from searchvlm import __version__
    from searchvlm.overrides import dump_yaml

    run_dir.mkdir(parents=True, exist_ok=True)
    if overrides:
        (run_dir / space_path.name).write_text(f"# {space_path} with --set {' --set '.join(overrides)}\n"
                                               + dump_yaml(space))  # fmt: skip
    else:
        shutil.copy2(space_path, run_dir / space_path.name)
    meta = SweepMeta(
        name=name, space_path=str(space_path.resolve()), space_hash=space.space_hash(),
        package_version=__version__, model=space.model.model_dump(mode="json"),
        objectives=[o.model_dump() for o in space.objectives], tracking_uri=uri,
        created=dt.datetime.now().isoformat(timespec="seconds"),
        search=space.search.model_dump(mode="json"), overrides=list(overrides or []),
    )  # fmt: skip
    write_meta(run_dir / SWEEP_FILE, meta)


def _warm_baselines(space: SearchSpace, run_dir: Path, progress: bool) -> None:
    """Train the reference runs every trial of the sweep compares with (`synergy.baseline:
    dense`: each task alone, and the dense joint model with `vs_dense`, per seed) once, up
    front and in parallel, so the first trials do not each wait for them; one progress line
    per reference. A failure is a warning: the trial that needs the run trains it itself."""
    from searchvlm.trial import reference_labels

    cache = str((run_dir.parent / "cache").resolve())
    config = space.trial_config(ReductionPolicy.dense(space.model.num_layers), "baselines", cache)
    jobs = [(seed, label) for seed in config.seeds for label in reference_labels(config)]
    if not jobs:
        return
    cpus, gpus = space.search.cpus_per_trial, space.search.gpus_per_trial
    task = ray.remote(num_cpus=cpus, num_gpus=gpus)(warm_reference)  # num_gpus 0: a CPU task
    pending = [task.remote(space.model_dump_json(), cache, max(1, int(cpus)), seed, label) for seed, label in jobs]
    ready_count = 0
    while pending:
        (ready,), pending = ray.wait(pending, num_returns=1)
        try:
            seed, label, cached, seconds = ray.get(ready)
        except Exception as err:  # noqa: BLE001 - the trials train it; the sweep goes on
            print(
                f"warning: a baseline failed up front ({str(err).splitlines()[-1]}); trials train it", file=sys.stderr
            )
            continue
        ready_count += 1
        if progress:
            how = "found in the cache" if cached else f"trained in {seconds:.0f} s"
            what = "dense joint" if label == "dense" else f"{label} alone"
            print(f"baselines: {ready_count} of {len(jobs)} cached ({what}, seed {seed}: {how})", file=sys.stderr)


def _trainable(space: SearchSpace, run_dir: Path, done: dict[str, dict[str, Any]] | None = None) -> Any:
    cache = str((run_dir.parent / "cache").resolve())
    cpus, gpus = space.search.cpus_per_trial, space.search.gpus_per_trial
    fn = tune.with_parameters(train, space_json=space.model_dump_json(), cache_dir=cache,
                              threads=max(1, int(cpus)), done=done or {})  # fmt: skip
    # Ray sets a trial's CUDA_VISIBLE_DEVICES to the GPUs it gave it (cuda:0 is the first of them)
    return tune.with_resources(fn, {"cpu": cpus, "gpu": gpus} if gpus else {"cpu": cpus})


def _tuner(space: SearchSpace, run_dir: Path, runs_dir: Path, uri: str, progress: bool,
           searcher: Any | None, num_samples: int, at_once: int) -> tune.Tuner:  # fmt: skip
    """A new Tuner around `searcher` running `num_samples` trials (a new sweep, or the extra
    trials of an extended one: same study, table and MLflow parent), or (searcher None) the
    interrupted one restored. `at_once`: max concurrent trials (`auto` resolved)."""
    resume = searcher is None
    trainable = _trainable(space, run_dir, _recorded(run_dir) if resume else None)
    if resume:
        return tune.Tuner.restore(str(run_dir / RAY_DIR), trainable, resume_unfinished=True,
                                  resume_errored=False, restart_errored=False)  # fmt: skip
    tune_config = tune.TuneConfig(
        search_alg=searcher, scheduler=_scheduler(space), num_samples=num_samples,
        max_concurrent_trials=at_once, reuse_actors=True,
        trial_dirname_creator=_trial_dirname,
    )  # fmt: skip
    callback = SweepCallback(run_dir, space, uri, runs_dir, progress)
    loggers = [JsonLoggerCallback(), CSVLoggerCallback()]  # for ExperimentAnalysis
    run_config = tune.RunConfig(name=RAY_DIR, storage_path=str(run_dir), callbacks=[callback, *loggers],
                                verbose=0, failure_config=tune.FailureConfig(max_failures=0))  # fmt: skip
    return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)


def _warm_start(space: SearchSpace, run_dir: Path) -> Any:
    """`search.warm_start: analysis`: the analysis-derived policy (cached analysis.json)."""
    if space.search.warm_start != "analysis":
        return None
    from searchvlm.analysis import warm_start_policy

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
                  max_steps=space.max_steps(), reduction_factor=sch.reduction_factor)  # fmt: skip


def _summary(run_dir: Path, uri: str, wall: float, trial_s: float) -> SweepSummary:
    from searchvlm.pareto import front

    rows = read_trials(run_dir / TRIALS_FILE) if (run_dir / TRIALS_FILE).exists() else []
    meta = read_meta(run_dir / SWEEP_FILE)
    return SweepSummary(
        name=meta.name, run_dir=run_dir, counts=counts(rows), front=front(rows),
        tracking_uri=uri, parent_run_id=meta.parent_run_id,
        study=study_url(str(run_dir / STUDY_FILE)), wall_seconds=wall, trial_seconds=trial_s,
        rows=rows,
    )  # fmt: skip


def _warn_proxy(space: SearchSpace, space_path: str | Path) -> None:
    """Say once, as the sweep starts, when its proxy's dense synergy is unmeasured or not positive."""
    warning = space.synergy_warning()
    if warning:
        log.warning("%s: %s", space_path, warning)
        print(f"warning: {space_path}: {warning}", file=sys.stderr, flush=True)


def _print_summary(s: SweepSummary) -> None:
    from rich.console import Console

    from searchvlm._console import print_table

    con = Console(stderr=True, soft_wrap=True)  # lines stay whole in logs (commands to copy)
    print_table(con, front_table(s.rows, title=f"sweep {s.name}: Pareto front"))
    from searchvlm.report import one_seed, seed_noise

    noise = seed_noise(s.run_dir, s.rows)
    if noise is not None:
        con.print(noise.line(s.name, one_seed(s.rows)), highlight=False)
    c = s.counts
    con.print(f"{c['ok']} ok, {c['failed']} failed, {c['pruned']} pruned in {s.wall_seconds:.1f}s")
    con.print(f"outputs: {s.run_dir}/{{{TRIALS_FILE}, {SWEEP_FILE}, {STUDY_FILE}, {RAY_DIR}/}}")
    con.print(f"mlflow: {s.tracking_uri} (experiment 'searchvlm', parent run {s.parent_run_id})")
    con.print(f"optuna-dashboard {s.study}")

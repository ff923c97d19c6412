"""A sweep's folder before Ray starts (L4, inside `searchvlm.sweep`): its name, whether it
may start or resume there, the space a resumed or extended sweep continues with, the
records a resume rewrites checked whole, and a new sweep's sweep.json and space copy.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from searchvlm.records._storage import RAY_DIR, TUNER_FILE, TuneState, tune_state
from searchvlm.schema.errors import COMMAND_LINE, ConfigError
from searchvlm.schema.results import (
    STUDY_FILE,
    SWEEP_FILE,
    TRIALS_FILE,
    SweepMeta,
    check_unlocked,
    read_meta,
    read_trials,
    store_problem,
    sweep_lock,
    write_meta,
)
from searchvlm.schema.space import SearchSpace

from ._searcher import study_url


def resume_space(
    run_dir: Path, space_path: Path, space: SearchSpace, samples: int | None, concurrency: int | str | None
) -> SearchSpace:
    """The space a resumed sweep continues with (see `extra_trials` for an extension).

    `space` (from `space_path` and the overrides) must be the space the sweep started with
    (else trials of two configurations would mix). An interrupted sweep keeps its recorded
    `samples` and `concurrency` (Tune restores its own; other values are refused, not
    ignored). A finished sweep (every recorded sample in the table) given more `samples`
    is extended: the answer has the new `samples` and `concurrency` may change."""
    meta = read_meta(run_dir / SWEEP_FILE)
    base = meta.as_run(space)
    if not base.hash_matches(meta.space_hash):
        raise ConfigError(space_path, "", f"hash {base.space_hash()}",
                          f"differs from the space sweep {run_dir.name!r} started with (hash {meta.space_hash}; "
                          f"its copy is in {run_dir}); resume with that file and the same --set overrides, "
                          "or start a new sweep")  # fmt: skip
    if samples is None or samples == base.search.samples:
        _same(run_dir, "concurrency", concurrency, base.search.concurrency)
        return base
    done = _recorded_count(run_dir)
    if samples < base.search.samples:
        raise ConfigError(None, "--samples", samples, f"sweep {run_dir.name!r} has {base.search.samples} samples; "
                          "a sweep can be extended, never shrunk")  # fmt: skip
    if done < base.search.samples:
        raise ConfigError(None, "--samples", samples,
                          f"sweep {run_dir.name!r} started with samples = {base.search.samples} and is "
                          f"unfinished ({done} trials recorded): finish it with --resume (without --samples), "
                          "then extend it")  # fmt: skip
    return base.with_search(samples=samples, concurrency=concurrency)


def _recorded_count(run_dir: Path) -> int:
    return len(read_trials(run_dir / TRIALS_FILE, strict=True)) if (run_dir / TRIALS_FILE).exists() else 0


def extra_trials(run_dir: Path, space: SearchSpace) -> int:
    """Trials an extended sweep runs (0 for a plain resume): the new samples minus the table's."""
    recorded = (getattr(read_meta(run_dir / SWEEP_FILE), "search", None) or {}).get("samples")
    return 0 if space.search.samples == recorded else space.search.samples - _recorded_count(run_dir)


def _same(run_dir: Path, key: str, value: int | None, recorded: int) -> None:
    if value is not None and value != recorded:
        raise ConfigError(None, f"--{key}", value,
                          f"sweep {run_dir.name!r} started with {key} = {recorded} and a resumed sweep "
                          "keeps it (Tune restores its own); to run more trials once it has finished, "
                          "pass --resume --samples N")  # fmt: skip


def record_extension(run_dir: Path, space: SearchSpace) -> None:
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


def _relative_inputs(space_path: Path) -> bool:
    """The space file names `data.path` or `model.hf` relative to the working directory."""
    from searchvlm.schema.errors import load_yaml

    raw = load_yaml(space_path)
    given = [(raw.get(section) or {}).get(key) for section, key in (("data", "path"), ("model", "hf"))]
    return any(isinstance(p, str) and not Path(p).is_absolute() for p in given)


def record_cache_dir(run_dir: Path, cache_dir: Path) -> None:
    """sweep.json of a sweep resumed with `--cache-dir`: the cache `confirm` and `decide` then read."""
    meta = read_meta(run_dir / SWEEP_FILE)
    if meta.cache_dir != str(cache_dir):
        write_meta(run_dir / SWEEP_FILE, meta.model_copy(update={"cache_dir": str(cache_dir)}))


def record_storage(run_dir: Path, storage: str | None) -> None:
    """sweep.json of a sweep resumed with another `--storage` (its Tune state moved there)."""
    meta = read_meta(run_dir / SWEEP_FILE)
    write_meta(run_dir / SWEEP_FILE, meta.model_copy(update={"storage": storage}))


_NAME = re.compile(r"^[\w][\w .+-]*$")


def check_records(run_dir: Path, uri: str, state: TuneState | None = None) -> None:
    """Before Ray starts, what a resumed sweep reads and then rewrites must be whole: the
    table (rewritten from the rows read), Tune's saved state (`state`, default `<run_dir>/ray`),
    the study it tells, the MLflow store holding its runs. Each damage is a ConfigError naming
    the file (nothing is written)."""
    if (run_dir / TRIALS_FILE).exists():
        read_trials(run_dir / TRIALS_FILE, strict=True)
    elif store_problem(run_dir / STUDY_FILE, "studies") is None and _finished_in_study(run_dir):
        raise ConfigError(run_dir / TRIALS_FILE, "", str(run_dir / TRIALS_FILE),
                          f"missing, while {STUDY_FILE} holds finished trials: resuming would record none of them; "
                          f"`searchvlm runs --check {run_dir.name} --repair` rebuilds it")  # fmt: skip
    state = state or tune_state(run_dir, None)
    _check_pickle(f"{state.shown}/{TUNER_FILE}", state.read_tuner())
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


def _check_pickle(path: str, data: bytes | None) -> None:
    """Tune's `tuner.pkl` (`data`, read from `path`) is a whole pickle stream (read as opcodes
    only: nothing is loaded)."""
    import pickletools

    try:
        if data is None:
            raise OSError("missing")
        ops = list(pickletools.genops(data))
    except (OSError, ValueError) as err:
        raise ConfigError(path, "", str(path), f"Tune's saved state is unreadable ({err}); the sweep cannot "
                          "resume: restore the ray/ folder from a copy, or start a new sweep") from None  # fmt: skip
    if not ops or ops[-1][0].name != "STOP":
        raise ConfigError(path, "", str(path), "Tune's saved state is cut short; the sweep cannot resume")


def check_name(name: str) -> str:
    """A sweep name is one folder under the runs directory: no separators, no leading dot."""
    if not _NAME.match(name) or len(name) > 128:
        raise ConfigError(None, "--name", name, "must be a plain folder name (letters, digits, "
                          "'_', '-', '.', '+', spaces; no '/' and no leading '.')")  # fmt: skip
    return name


RUNNING = "wait for it to finish or stop it before resuming or extending it"  # what a refused driver is told


def driver_lock(run_dir: Path) -> contextlib.AbstractContextManager[None]:
    """The sweep's lock (`results.sweep_lock`), held by its driver while it starts, resumes or
    extends it: a second driver on the same sweep (a `--resume` while it runs, the same `--name`
    twice at once) would write the same trials table, study and MLflow parent run; it stops
    with one error naming the holder instead."""
    return sweep_lock(run_dir, "--name", RUNNING)


def check_not_running(run_dir: Path) -> None:
    """Stop a driver whose sweep another driver holds now, before Ray starts and before anything
    is written (`driver_lock` is taken later, at the driver's first write)."""
    check_unlocked(run_dir, "--name", RUNNING)


def check_state(run_dir: Path, name: str, resume: bool, state: TuneState | None = None) -> None:
    """A new sweep's folder and Tune state (`state`, default `<run_dir>/ray`) are free; a
    resumed one has both."""
    exists = (run_dir / SWEEP_FILE).exists()
    state = state or tune_state(run_dir, None)
    if resume and state.read_tuner() is None:
        default = state.local and state.name == RAY_DIR
        where = f"{RAY_DIR}/{TUNER_FILE} there" if default else f"{state.shown}/{TUNER_FILE}"
        raise ConfigError(COMMAND_LINE, "--resume", name, f"no sweep in {run_dir} to resume or extend "
                          f"(no Tune state {where})")  # fmt: skip
    if not resume and exists:
        raise ConfigError(None, "--name", name,
                          f"sweep {run_dir} exists; pass --resume to continue it or choose another name")  # fmt: skip
    if not resume and state.name != RAY_DIR and state.read_tuner() is not None:
        raise ConfigError(COMMAND_LINE, "--storage", state.shown,
                          f"already holds Tune's state of a sweep named {name!r}; choose another name "
                          "or storage, or remove that folder")  # fmt: skip


def recorded_storage(run_dir: Path) -> str | None:
    """The `--storage` a sweep recorded in sweep.json (None: Tune's state in its folder, or no sweep)."""
    if not (run_dir / SWEEP_FILE).exists():
        return None
    return getattr(read_meta(run_dir / SWEEP_FILE), "storage", None)


def init_run_dir(run_dir: Path, space_path: Path, space: SearchSpace, name: str, uri: str,
                  overrides: Sequence[str] | None = None, cache_dir: Path | None = None,
                  storage: str | None = None) -> None:  # fmt: skip
    """sweep.json and the space as run: the file itself, or with `--set` (or input paths
    relative to the working directory) the resolved space. `cache_dir`: `--cache-dir`;
    `storage`: `--storage` (where Tune keeps its state)."""
    from searchvlm import __version__
    from searchvlm.schema.overrides import dump_yaml

    run_dir.mkdir(parents=True, exist_ok=True)
    if overrides:
        (run_dir / space_path.name).write_text(f"# {space_path} with --set {' --set '.join(overrides)}\n"
                                               + dump_yaml(space))  # fmt: skip
    elif _relative_inputs(space_path):  # the copy names the files the sweep read, from any folder
        (run_dir / space_path.name).write_text(f"# {space_path} with its input paths made absolute\n"
                                               + dump_yaml(space))  # fmt: skip
    else:
        shutil.copy2(space_path, run_dir / space_path.name)
    meta = SweepMeta(
        name=name, space_path=str(space_path.resolve()), space_hash=space.space_hash(),
        package_version=__version__, model=space.model.model_dump(mode="json"),
        objectives=[o.model_dump() for o in space.objectives], tracking_uri=uri,
        created=dt.datetime.now().isoformat(timespec="seconds"),
        search=space.search.model_dump(mode="json"), overrides=list(overrides or []),
        cache_dir=None if cache_dir is None else str(cache_dir), storage=storage,
    )  # fmt: skip
    write_meta(run_dir / SWEEP_FILE, meta)

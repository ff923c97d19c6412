"""Reference runs (isolated single-task baselines, the dense joint model), trained once per
seed and cached on disk.

L3 module. The cache key holds everything that changes a run (model, data, training,
tasks, seed, the policy it trains under, fidelity scoring, a format version; a user's data
file by its content, not its path), so a sweep never retrains one; a file lock makes
concurrent trials wait for the first to finish.
A record keeps the validation AND test score of every evaluation round, so the rule that
picks the scored checkpoint (`synergy.at`) can change without retraining anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from filelock import FileLock

from searchvlm.schema._digest import file_sha256
from searchvlm.schema._host import machine
from searchvlm.schema.config import GENERATION_CONTROLS, UNDERSTANDING_CONTROLS, DataConfig
from searchvlm.schema.errors import warn_damaged
from searchvlm.schema.policy import ReductionPolicy
from searchvlm.train.training import RunSpec, Score

_FORMAT = "baseline/v3"  # v2: test score (and its s.e.) at every evaluation round; v3: caption metrics
# training fields that say how a run is computed, not what it computes (processes and
# shard: the data-parallel run gives the one-process numbers within float tolerance)
_HOW = {"threads", "processes", "shard"}
# training fields that do not change a single-task run
_IRRELEVANT = {"loss_weights", *_HOW}


@dataclass
class RunRecord:
    """One run's scores at every evaluation round: metric -> step -> value.

    `val` picks the checkpoint, `test` scores it, `test_se` is the test set's standard error
    at that step; metrics are `und_acc` and/or `gen_nll` (the tasks the run trains).
    `fidelity` is scored on the final model only (sampling is costly). `cpu`: the CPU model
    it trained on (None in entries cached before it was recorded).
    """

    tasks: tuple[str, ...]
    seed: int
    val: dict[str, dict[int, float]] = field(default_factory=dict)
    test: dict[str, dict[int, float]] = field(default_factory=dict)
    test_se: dict[str, dict[int, float]] = field(default_factory=dict)
    fidelity: float | None = None
    seconds: float = 0.0
    cpu: str | None = field(default=None, compare=False)
    cached: bool = field(default=False, compare=False)

    def add(self, step: int, val: dict[str, Score], test: dict[str, Score]) -> None:
        """Record one evaluation round."""
        for metric, score in val.items():
            self.val.setdefault(metric, {})[step] = score.value
        for metric, score in test.items():
            self.test.setdefault(metric, {})[step] = score.value
            self.test_se.setdefault(metric, {})[step] = score.se


def baseline_key(spec: RunSpec, data: DataConfig, fidelity: bool) -> str:
    """Cache key of the reference run `spec` (one task: isolated; both: joint) on `data`,
    the data as `spec.seed` draws them (`data.seed: run` keyed as the number it means, so a
    run on data seed s shares its cache with the same run under `data.seed: s`)."""
    model, training, tasks, seed, policy = spec.model, spec.training, spec.tasks, spec.seed, spec.policy
    data = data.for_seed(seed)
    exclude = _IRRELEVANT if len(tasks) == 1 else _HOW
    payload = {
        "format": _FORMAT,
        "model": model.model_dump(mode="json"),
        "data": data.model_dump(mode="json", exclude=_irrelevant_to(tasks) | _where(data)),
        "training": training.model_dump(mode="json", exclude=exclude),
        "tasks": list(tasks),
        "seed": seed,
        "policy": policy.model_dump(mode="json", exclude={"name"}),
        "fidelity": fidelity,
    }
    if data.path is not None:  # a user's data file: its content, wherever it lies on whichever node
        payload["data_sha256"] = file_sha256(data.path)
    if model.hf is not None:  # a user's model: its files, so a changed checkpoint is retrained
        payload["hf_files"] = _fingerprint(model.hf)
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def _irrelevant_to(tasks: tuple[str, ...]) -> set[str]:
    """Data fields that do not change a single-task run: for generation alone the controls
    that touch understanding data only (its answers' permutation, its blanked images), for
    understanding alone the one that touches generation's (its captions' permutation)."""
    if tuple(tasks) == ("generation",):
        return set(UNDERSTANDING_CONTROLS)
    return set(GENERATION_CONTROLS) if tuple(tasks) == ("understanding",) else set()


def _where(data: DataConfig) -> set[str]:
    """A data file's path is not keyed (its content is): a moved or copied file hits the cache."""
    return {"path"} if data.path is not None else set()


def _fingerprint(hf: str) -> list[tuple[str, int, int]]:
    """(name, size, mtime_ns) of the files of a model directory (or config file)."""
    root = Path(hf)
    files = sorted(root.iterdir()) if root.is_dir() else [root]
    return [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]


def _read(path: Path) -> RunRecord:
    raw = json.loads(path.read_text())
    for part in ("val", "test", "test_se"):
        raw[part] = {m: {int(k): v for k, v in curve.items()} for m, curve in raw[part].items()}
    raw["tasks"] = tuple(raw["tasks"])
    return RunRecord(**raw, cached=True)


def _write(path: Path, record: RunRecord) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".baseline.")
    with os.fdopen(fd, "w") as fh:
        payload = asdict(record)
        payload.pop("cached")
        json.dump(payload, fh)
    os.replace(tmp, path)


def get_baseline(
    cache_dir: str | Path,
    key: str,
    train: Callable[[], RunRecord],
) -> RunRecord:
    """The cached record for `key`, or train it (once, under a file lock) and cache it."""
    root = Path(cache_dir) / "baselines"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{key}.json"
    with FileLock(str(path) + ".lock"):
        if path.exists():
            try:
                return _read(path)
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:  # cut, edited, unreadable
                warn_damaged(path, "", f"corrupt baseline cache entry ({type(err).__name__}: {err}); retrained")
        start = time.perf_counter()
        record = train()
        record.seconds, record.cpu = time.perf_counter() - start, machine()
        _write(path, record)
        return record


#: the cache's folders whose entries a sweep ships between nodes
SHIPPED = ("baselines", "codebooks")


def cache_entry(cache_dir: str | Path, name: str) -> bytes | None:
    """The cache's entry `name` (`baselines/<key>.json`, `codebooks/<key>.npz`) as bytes
    (None when absent): what a sweep ships from the node that made it to the driver's cache
    and to every trial."""
    try:
        return (Path(cache_dir) / _entry(name)).read_bytes()
    except FileNotFoundError:
        return None


def store_entries(cache_dir: str | Path, entries: Mapping[str, bytes]) -> int:
    """Write the shipped entries ({name: bytes}, see `cache_entry`) this cache lacks, each
    whole (atomically); the number written. A node then finds every baseline and codebook
    the driver has, made once."""
    written = 0
    for name, blob in entries.items():
        path = Path(cache_dir) / _entry(name)
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".shipped.")
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.replace(tmp, path)
        written += 1
    return written


def _entry(name: str) -> Path:
    """`name` as a cache entry's relative path: one file in one of the SHIPPED folders."""
    path = Path(name)
    if len(path.parts) != 2 or path.parts[0] not in SHIPPED or path.name.startswith("."):
        raise ValueError(f"{name!r} is no shipped cache entry (baselines/<key>.json or codebooks/<key>.npz)")
    return path


def isolated_policy(policy: ReductionPolicy, baseline: str) -> ReductionPolicy:
    """`dense`: the dense model; `matched`: the trial's own policy."""
    if baseline == "dense":
        return ReductionPolicy.dense(policy.num_layers)
    return policy


__all__ = ["RunRecord", "baseline_key", "cache_entry", "store_entries", "get_baseline", "isolated_policy"]

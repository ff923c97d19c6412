"""Isolated single-task baselines, trained once per seed and cached on disk.

L3 module. The cache key holds everything that changes a baseline (model, data, training,
task, seed, the policy it trains under, fidelity scoring, a format version), so a sweep
never retrains one; a file lock makes concurrent trials wait for the first to finish.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from filelock import FileLock

from searchvlm.config import DataConfig, ModelConfig, TrainingConfig
from searchvlm.policy import ReductionPolicy

_FORMAT = "baseline/v1"
# training fields that do not change a single-task run
_IRRELEVANT = {"loss_weights", "threads"}


@dataclass
class BaselineRecord:
    """One isolated run: validation curve by step, held-out test metric, optional fidelity."""

    task: str
    seed: int
    curve: dict[int, float]
    test: float
    fidelity: float | None = None
    seconds: float = 0.0
    cached: bool = field(default=False, compare=False)


def baseline_key(
    model: ModelConfig, data: DataConfig, training: TrainingConfig, task: str, seed: int,
    policy: ReductionPolicy, fidelity: bool,
) -> str:
    payload = {
        "format": _FORMAT,
        "model": model.model_dump(mode="json"),
        "data": data.model_dump(mode="json"),
        "training": training.model_dump(mode="json", exclude=_IRRELEVANT),
        "task": task,
        "seed": seed,
        "policy": policy.model_dump(mode="json", exclude={"name"}),
        "fidelity": fidelity,
    }
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def _read(path: Path) -> BaselineRecord:
    raw = json.loads(path.read_text())
    raw["curve"] = {int(k): v for k, v in raw["curve"].items()}
    return BaselineRecord(**raw, cached=True)


def _write(path: Path, record: BaselineRecord) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".baseline.")
    with os.fdopen(fd, "w") as fh:
        payload = asdict(record)
        payload.pop("cached")
        json.dump(payload, fh)
    os.replace(tmp, path)


def get_baseline(
    cache_dir: str | Path,
    key: str,
    train: Callable[[], BaselineRecord],
) -> BaselineRecord:
    """The cached record for `key`, or train it (once, under a file lock) and cache it."""
    root = Path(cache_dir) / "baselines"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{key}.json"
    with FileLock(str(path) + ".lock"):
        if path.exists():
            return _read(path)
        start = time.perf_counter()
        record = train()
        record.seconds = time.perf_counter() - start
        _write(path, record)
        return record


def isolated_policy(policy: ReductionPolicy, baseline: str) -> ReductionPolicy:
    """`dense`: the dense model; `matched`: the trial's own policy."""
    if baseline == "dense":
        return ReductionPolicy.dense(policy.num_layers)
    return policy


__all__ = ["BaselineRecord", "baseline_key", "get_baseline", "isolated_policy"]

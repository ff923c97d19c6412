"""Sweeps on Ray Tune + Optuna: the only package importing ray.

`run_sweep(space)` samples policies with a multi-objective `OptunaSearch` (study persisted
in `runs/<sweep>/optuna.db`, presets enqueued first), trains each with `run_trial` in a
Ray worker (`reuse_actors=True`, `cpus_per_trial` CPUs = torch threads), optionally stops
poor trials early with MO-ASHA, and records every trial (failed and pruned included) in
`runs/<sweep>/trials.csv` and MLflow from the driver. `resume=True` continues an
interrupted sweep through `Tuner.restore` and the same study.

Outputs under `runs/<sweep>/`: `trials.csv`, `sweep.json`, `optuna.db`, `ray/` (the Tune
experiment), and a copy of the space file.

Workers import only `_trainable` (ray.tune, pydantic schemas, then torch and the trial
code); this `__init__` is lazy so they do not also pay for MLflow, Optuna, moocore and
rich, which only the driver uses.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["SweepOptions", "SweepSummary", "ensure_ray", "run_sweep", "shutdown_ray"]
_HOME = {"ensure_ray": "._cluster", "shutdown_ray": "._cluster"}  # every other name: the driver's


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    module = importlib.import_module(_HOME.get(name, "._driver"), __name__)
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None

"""searchvlm: search synergy-aware image-token reduction policies for unified VLMs.

Light names (schemas) import eagerly; torch-backed names (`apply_policy`, ...), the
results readers (`load_trials`, `load_front`: pandas) and the sweep commands load on first
use, so `import searchvlm` stays fast and free of torch / ray / mlflow / pandas.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from searchvlm.config import ModelConfig, TrialConfig, TrialResult
from searchvlm.errors import ConfigError
from searchvlm.policy import ReductionPolicy, Segment, load_policy
from searchvlm.presets import PRESETS, preset

__version__ = "0.1.0"

_LAZY = {
    "apply_policy": "searchvlm.model",
    "build_model": "searchvlm.model",
    "confirm": "searchvlm.confirm",
    "count_flops": "searchvlm.flops",
    "run_trial": "searchvlm.trial",
    # results as data (pandas loads on the first call) and managing sweeps
    "Front": "searchvlm.frames",
    "load_front": "searchvlm.frames",
    "load_trials": "searchvlm.frames",
    "compare_runs": "searchvlm.runs",
    "list_runs": "searchvlm.runs",
    "remove_run": "searchvlm.runs",
    "run_sweep": "searchvlm.sweep",
    "validate_files": "searchvlm.space",
    "space_reference": "searchvlm.schema_doc",
}

__all__ = [
    "PRESETS",
    "ConfigError",
    "ModelConfig",
    "ReductionPolicy",
    "Segment",
    "TrialConfig",
    "TrialResult",
    "load_policy",
    "preset",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'searchvlm' has no attribute {name!r}")

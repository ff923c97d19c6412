"""searchvlm: search synergy-aware image-token reduction policies for unified VLMs.

Light names (schemas) import eagerly; torch-backed names (`apply_policy`, ...) load on
first use, so `import searchvlm` stays fast and free of torch / ray / mlflow.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from searchvlm.config import ModelConfig, TrialConfig, TrialResult
from searchvlm.errors import ConfigError
from searchvlm.policy import PRESETS, ReductionPolicy, Segment, load_policy, preset

__version__ = "0.1.0"

_LAZY = {
    "apply_policy": "searchvlm.model",
    "build_model": "searchvlm.model",
    "confirm": "searchvlm.confirm",
    "count_flops": "searchvlm.flops",
    "run_trial": "searchvlm.trial",
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

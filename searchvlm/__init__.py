"""searchvlm: search synergy-aware image-token reduction policies for unified VLMs.

Light names (schemas) import eagerly; torch-backed names (`apply_policy`, ...), the
results readers (`load_trials`, `load_front`: pandas) and the commands (`run_sweep`,
`pareto_report`, `export_policy`, `analyze`, `run_reproduce`, `run_confirm`, ...) load on
first use, so `import searchvlm` stays fast and free of torch / ray / mlflow / pandas.
No lazy name is also a submodule's name: importing `searchvlm.X` makes the package
attribute `X` that module, which would replace a function of that name.

Importing it pins torch's CPU kernels to AVX2 (`_host.pin_kernels`; `SEARCHVLM_CPU_KERNELS=native`
opts out) for torch loaded after it and for every process started from here, so that numbers
reproduce across CPU types; results record the kernels they ran on.
"""

from __future__ import annotations

import warnings
from importlib import import_module
from typing import Any

from searchvlm._host import pin_kernels

try:
    pin_kernels()
except ValueError as bad:
    warnings.warn(f"{bad}: torch's CPU kernels are not pinned", stacklevel=2)

from searchvlm.config import ModelConfig, TrialConfig
from searchvlm.errors import ConfigError
from searchvlm.policy import ReductionPolicy, Segment, load_policy
from searchvlm.presets import PRESETS, preset
from searchvlm.trial_result import TrialResult

__version__ = "0.1.0"

_LAZY = {
    "apply_policy": "searchvlm.model",
    "build_model": "searchvlm.model",
    "count_flops": "searchvlm.flops",
    # the commands (DESIGN's user surface), each a function
    "load_space": "searchvlm.space",
    "validate_file": "searchvlm.file_checks",
    "validate_files": "searchvlm.file_checks",
    "compile_presets": "searchvlm.presets",
    "load_trial_config": "searchvlm.space",
    "run_trial": "searchvlm.trial",
    "run_sweep": "searchvlm.sweep",
    "pareto_report": "searchvlm.report",
    "export_policy": "searchvlm.export",
    "export_report": "searchvlm.report",
    "policy_picture": "searchvlm.report",
    "run_confirm": "searchvlm.confirm",
    "analyze": "searchvlm.analysis",
    "run_analysis": "searchvlm.analysis_run",
    "run_reproduce": "searchvlm.reproduce",
    "run_diagnose": "searchvlm.diagnose",
    # results as data (pandas loads on the first call) and managing sweeps
    "Front": "searchvlm.frames",
    "load_front": "searchvlm.frames",
    "load_trials": "searchvlm.frames",
    "compare_runs": "searchvlm.runs",
    "list_runs": "searchvlm.runs",
    "remove_run": "searchvlm.runs",
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

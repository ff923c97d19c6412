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

The flat module paths from before the packages by layer still import, each as the module at
its new path (`_OLD_PATHS` below).
"""

from __future__ import annotations

import sys
import warnings
from importlib import import_module
from importlib.abc import Loader, MetaPathFinder
from importlib.machinery import ModuleSpec
from importlib.util import find_spec, spec_from_loader
from types import ModuleType
from typing import Any

from searchvlm.schema._host import pin_kernels

try:
    pin_kernels()
except ValueError as bad:
    warnings.warn(f"{bad}: torch's CPU kernels are not pinned", stacklevel=2)

from searchvlm.schema.config import ModelConfig, TrialConfig
from searchvlm.schema.errors import ConfigError
from searchvlm.schema.policy import ReductionPolicy, Segment, load_policy
from searchvlm.schema.policy.presets import PRESETS, preset
from searchvlm.schema.trial_result import TrialResult

# --- old module paths: written by relayout.py, do not edit by hand ---
_OLD_PATHS = {  # old module path -> its module now
    "searchvlm._strict": "searchvlm.schema._strict",
    "searchvlm._digest": "searchvlm.schema._digest",
    "searchvlm._hf": "searchvlm.schema._hf",
    "searchvlm._host": "searchvlm.schema._host",
    "searchvlm._storage_uri": "searchvlm.schema._storage_uri",
    "searchvlm._tables": "searchvlm.schema._tables",
    "searchvlm.errors": "searchvlm.schema.errors",
    "searchvlm.overrides": "searchvlm.schema.overrides",
    "searchvlm.metrics": "searchvlm.schema.metrics",
    "searchvlm.policy": "searchvlm.schema.policy",
    "searchvlm.selectors": "searchvlm.schema.policy.selectors",
    "searchvlm.schedules": "searchvlm.schema.policy.schedules",
    "searchvlm.presets": "searchvlm.schema.policy.presets",
    "searchvlm.policy_space": "searchvlm.schema.policy.space",
    "searchvlm.config": "searchvlm.schema.config",
    "searchvlm.trial_result": "searchvlm.schema.trial_result",
    "searchvlm.search": "searchvlm.schema.search",
    "searchvlm.space": "searchvlm.schema.space",
    "searchvlm.results": "searchvlm.schema.results",
    "searchvlm.identity": "searchvlm.schema.identity",
    "searchvlm.file_checks": "searchvlm.schema.file_checks",
    "searchvlm.schema_doc": "searchvlm.schema.doc",
    "searchvlm.flops": "searchvlm.objectives.flops",
    "searchvlm.synergy": "searchvlm.objectives.synergy",
    "searchvlm.pareto": "searchvlm.objectives.pareto",
    "searchvlm.ehvi": "searchvlm.objectives.ehvi",
    "searchvlm.noninferiority": "searchvlm.objectives.noninferiority",
    "searchvlm.export": "searchvlm.objectives.export",
    "searchvlm.training": "searchvlm.train.training",
    "searchvlm.trial": "searchvlm.train.trial",
    "searchvlm.baselines": "searchvlm.train.baselines",
    "searchvlm.checkpoint": "searchvlm.train.checkpoint",
    "searchvlm.distributed": "searchvlm.train.distributed",
    "searchvlm.gradients": "searchvlm.train.gradients",
    "searchvlm.analysis": "searchvlm.train.analysis",
    "searchvlm.report._allocation": "searchvlm.train._allocation",
    "searchvlm.report._heatmap": "searchvlm.train._heatmap",
    "searchvlm._console": "searchvlm.report._console",
    "searchvlm.frames": "searchvlm.records.frames",
    "searchvlm.runs": "searchvlm.records.runs",
    "searchvlm.recover": "searchvlm.records.recover",
    "searchvlm.confirm": "searchvlm.records.confirm",
    "searchvlm.decide": "searchvlm.records.decide",
    "searchvlm.reproduce": "searchvlm.records.reproduce",
    "searchvlm.diagnose": "searchvlm.records.diagnose",
    "searchvlm.analysis_run": "searchvlm.records.analysis_run",
    "searchvlm.sweep._storage": "searchvlm.records._storage",
    "searchvlm._cli_base": "searchvlm.cli._base",
    "searchvlm._cli_request": "searchvlm.cli._request",
    "searchvlm._cli_runs": "searchvlm.cli._runs",
    "searchvlm._usage": "searchvlm.cli._usage",
    "searchvlm._help": "searchvlm.cli._help",
}


class _OldPaths(MetaPathFinder, Loader):
    """`import searchvlm.config` (a path from before the packages by layer) gives the module at
    its new path, the same object, so a user's imports, `mock.patch` targets and pickles keep
    working; the package itself uses only the new paths (tests/test_old_paths.py)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if fullname not in _OLD_PATHS:
            return None
        return spec_from_loader(fullname, self, origin=find_spec(_OLD_PATHS[fullname]).origin)  # type: ignore[union-attr]

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        module = import_module(_OLD_PATHS[spec.name])
        spec.loader_state = module.__spec__  # the import system sets __spec__ to the old path's
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = module.__spec__.loader_state  # type: ignore[union-attr]

    def get_code(self, fullname: str) -> Any:  # `python -m searchvlm.<old path>`
        new = _OLD_PATHS[fullname]
        return find_spec(new).loader.get_code(new)  # type: ignore[union-attr]


if not any(type(f).__name__ == "_OldPaths" for f in sys.meta_path):
    sys.meta_path.insert(0, _OldPaths())
# --- end of old module paths ---

__version__ = "0.1.0"

_LAZY = {
    "apply_policy": "searchvlm.model",
    "build_model": "searchvlm.model",
    "count_flops": "searchvlm.objectives.flops",
    # the commands (DESIGN's user surface), each a function
    "load_space": "searchvlm.schema.space",
    "validate_file": "searchvlm.schema.file_checks",
    "validate_files": "searchvlm.schema.file_checks",
    "compile_presets": "searchvlm.schema.policy.presets",
    "load_trial_config": "searchvlm.schema.space",
    "run_trial": "searchvlm.train.trial",
    "run_sweep": "searchvlm.sweep",
    "pareto_report": "searchvlm.report",
    "export_policy": "searchvlm.objectives.export",
    "export_report": "searchvlm.report",
    "policy_picture": "searchvlm.report",
    "run_confirm": "searchvlm.records.confirm",
    "analyze": "searchvlm.train.analysis",
    "run_analysis": "searchvlm.records.analysis_run",
    "run_reproduce": "searchvlm.records.reproduce",
    "run_diagnose": "searchvlm.records.diagnose",
    # results as data (pandas loads on the first call) and managing sweeps
    "Front": "searchvlm.records.frames",
    "load_front": "searchvlm.records.frames",
    "load_trials": "searchvlm.records.frames",
    "compare_runs": "searchvlm.records.runs",
    "list_runs": "searchvlm.records.runs",
    "remove_run": "searchvlm.records.runs",
    "space_reference": "searchvlm.schema.doc",
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

"""Shared test helpers: plain functions, classes and constants (fixtures stay in conftest.py).

Importable as `helpers` from every test (pyproject's `[tool.pytest.ini_options] pythonpath`
puts `tests/` on `sys.path`). Submodules by subject, so a light test does not import torch:
`models` (tiny VLM, batches, policies), `families` (tiny HF models of every supported
family), `data` (a small valid `tokens` data set), `sweeps` (tiny spaces, finished sweep
folders, consistency of table / study / MLflow), `services` (ports, process groups, a real
MLflow server, listening sockets).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout
PY = sys.executable
BIN = Path(PY).parent


def checkout_env() -> dict[str, str]:
    """A subprocess environment that imports this checkout, as a pipe on an 80-column CI."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "COLUMNS": "80", "TERM": "dumb"}

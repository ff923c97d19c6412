"""benchmarks/gpu_check.py without a GPU: says so, exits 0, writes nothing (with a GPU it
measures for minutes: run it by hand, see its docstring)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from helpers import PY, ROOT, checkout_env


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the check measures for minutes")
def test_gpu_check_without_a_gpu_says_so(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([PY, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(out)], env=checkout_env(),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "no GPU" in done.stdout and not out.exists()

"""Fault injection for Ray workers (a `worker_process_setup_hook`, test-only).

`install()` runs in every Ray worker of the test session. It reads the plan named by
`SEARCHVLM_FAULT_PLAN` (JSON `{policy name: {"kind": "diverge" | "raise" | "warn", "at": step}}`)
when a joint run trains and, past `at`, either poisons one weight with NaN (the real
training loop then sees a non-finite loss), raises, or raises a Python warning (`UserWarning:
injected warning past step <at>`, the training goes on). Isolated baselines are untouched.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

PLAN_ENV = "SEARCHVLM_FAULT_PLAN"


def _plan() -> dict[str, dict[str, Any]]:
    path = os.environ.get(PLAN_ENV, "")
    return json.loads(Path(path).read_text()) if path and Path(path).exists() else {}


def install() -> None:
    """Wrap `Run.train_until` with the planned faults (no-op without a plan)."""
    from searchvlm.train import training

    original = training.Run.train_until

    def train_until(self: Any, step: int) -> float:
        fault = _plan().get(str(self.spec.policy.name)) if len(self.spec.tasks) == 2 else None
        if fault and step > int(fault["at"]) and fault["kind"] == "warn":
            warnings.warn(f"injected warning past step {fault['at']}", UserWarning, stacklevel=1)
        elif fault and step > int(fault["at"]):
            _inject(self, fault["kind"])
        return original(self, step)

    training.Run.train_until = train_until


def _inject(run: Any, kind: str) -> None:
    import torch

    if kind == "raise":
        raise RuntimeError(f"injected fault at step {run.step}")
    with torch.no_grad():  # a numerical blow-up: the loss becomes NaN on the next step
        next(run.model.parameters()).fill_(float("nan"))

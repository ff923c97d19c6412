"""The tiny unified VLM (`build_model`) and the policy-aware reduced forward (`apply_policy`).

L2 package: imports torch and transformers.
"""

from __future__ import annotations

from searchvlm.model.build import build_model, llama_config
from searchvlm.model.reduced import ReducedLM, ReducedOutput, apply_policy

__all__ = ["ReducedLM", "ReducedOutput", "apply_policy", "build_model", "llama_config"]

"""Trained-model checkpoints: what a trial saves (`TrialConfig.save_model`) and
`searchvlm analyze --checkpoint` loads.

L3 module (torch, the model, a training run). A checkpoint is a dict that
`torch.load(weights_only=True)` reads: `format`, the configs as JSON strings
(`model_config`, `policy`, `data_config`), `steps`, and the tensors in `state_dict`;
loading never unpickles objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from searchvlm.model import ReducedLM, apply_policy, build_model
from searchvlm.model.build import data_token_map
from searchvlm.schema.config import ModelConfig, TrialConfig
from searchvlm.schema.errors import ConfigError
from searchvlm.schema.policy import ReductionPolicy
from searchvlm.train.distributed import full_state, is_writer
from searchvlm.train.training import Run

CHECKPOINT_FORMAT = "searchvlm.checkpoint/v1"


def save_model(run: Run, model_cfg: ModelConfig, config: TrialConfig) -> str:
    """Save a trained joint model for `searchvlm analyze --checkpoint` (loadable with
    `torch.load(weights_only=True)`: configs as JSON strings, tensors in `state_dict`).
    Data parallel: every rank calls it (FSDP's shards are gathered), rank 0 writes."""
    path = Path(config.save_model.format(name=config.name, seed=run.spec.seed))  # type: ignore[union-attr]
    state = full_state(run.model)
    if not is_writer():
        return str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data_cfg = config.data.for_seed(run.spec.seed)  # the data this run trained on (`data.seed: run`)
    torch.save({
        "format": CHECKPOINT_FORMAT, "model_config": model_cfg.model_dump_json(),
        "policy": run.spec.policy.model_dump_json(), "data_config": data_cfg.model_dump_json(),
        "steps": run.step, "state_dict": {k: v.detach().cpu() for k, v in state.items()},
    }, path)  # fmt: skip
    return str(path)


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[ReducedLM, ModelConfig, dict[str, Any]]:
    """A model saved by a trial (`TrialConfig.save_model`); never unpickles objects
    (`weights_only=True`). Returns the model, its config and the checkpoint's other entries."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except (OSError, RuntimeError) as err:
        raise ConfigError(path, "", None, f"cannot load the checkpoint: {err}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ConfigError(path, "format", found, f"expected a {CHECKPOINT_FORMAT} checkpoint saved by a trial")
    model_cfg = ModelConfig.model_validate_json(ckpt["model_config"])
    policy = ReductionPolicy.model_validate_json(ckpt["policy"])
    hf = build_model(model_cfg)
    model = apply_policy(hf, policy, attention="eager", token_map=data_token_map(hf, model_cfg))
    model.load_state_dict(ckpt["state_dict"])
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return model.to(device), model_cfg, meta


__all__ = ["CHECKPOINT_FORMAT", "load_checkpoint", "save_model"]

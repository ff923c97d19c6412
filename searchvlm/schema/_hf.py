"""Reads a local Hugging Face config (`config.json`) into the numbers `ModelConfig` holds.

L0 module: stdlib only (no transformers import). A user's model directory (`model.hf`) is
a `config.save_pretrained(dir)` or `model.save_pretrained(dir)` folder; the decoder's
numbers sit at the top level (Llama, Chameleon) or under `text_config` (Emu3, Janus).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# ModelConfig field <- config.json key of the decoder
_FIELDS = {
    "num_layers": "num_hidden_layers",
    "hidden_size": "hidden_size",
    "num_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "max_positions": "max_position_embeddings",
    "vocab_size": "vocab_size",
}


def config_path(hf: str | Path) -> Path:
    """`config.json` inside the directory `hf` (or `hf` itself when it names the file)."""
    path = Path(hf)
    return path if path.suffix == ".json" else path / "config.json"


def read_dims(hf: str | Path) -> dict[str, Any]:
    """The `ModelConfig` numbers of the HF config at `hf`; ValueError naming the file and key."""
    path = config_path(hf)
    if not path.is_file():
        raise ValueError(
            f"model.hf = {str(hf)!r}: {path} not found (a directory written by "
            "config.save_pretrained or model.save_pretrained)"
        )
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"model.hf: cannot read {path} as JSON ({err})") from None
    text = raw.get("text_config") if isinstance(raw.get("text_config"), dict) else raw
    where = f"{path}{' text_config' if text is not raw else ''}"
    missing = [key for key in _FIELDS.values() if key not in text]
    if missing:
        raise ValueError(f"model.hf: {where} has no {missing} (needed for the model and its FLOPs count)")
    dims = {field: text[key] for field, key in _FIELDS.items()}
    dims["num_kv_heads"] = text.get("num_key_value_heads") or dims["num_heads"]
    head_dim = text.get("head_dim")
    if head_dim is not None and head_dim * dims["num_heads"] != dims["hidden_size"]:
        raise ValueError(
            f"model.hf: {where} head_dim = {head_dim} with num_attention_heads = {dims['num_heads']} "
            f"is not hidden_size = {dims['hidden_size']}; the FLOPs count assumes heads * head_dim = hidden"
        )
    theta = (text.get("rope_parameters") or {}).get("rope_theta", text.get("rope_theta"))
    if isinstance(theta, (int, float)):
        dims["rope_theta"] = float(theta)
    return dims

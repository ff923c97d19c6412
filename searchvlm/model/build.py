"""Builds the small unified VLM: a `transformers.LlamaForCausalLM` from a `ModelConfig`.

The model is created locally from a `LlamaConfig` (nothing is downloaded); its state dict
keeps HF's names, so the reduced forward runs the same way on any Llama-family checkpoint.
Seeding the initialisation is the caller's job (`torch.manual_seed`).
"""

from __future__ import annotations

from transformers import LlamaConfig, LlamaForCausalLM

from searchvlm.config import ModelConfig


def llama_config(cfg: ModelConfig) -> LlamaConfig:
    """The `LlamaConfig` equivalent of `cfg` (untied embeddings, default RoPE)."""
    if cfg.vocab is None:
        raise ValueError(
            "model.vocab is None: build_model needs the vocabulary layout "
            "(set model.vocab, or let the data set fill it in before building)"
        )
    return LlamaConfig(
        vocab_size=cfg.vocab.size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_positions,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=False,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
    )


def build_model(cfg: ModelConfig) -> LlamaForCausalLM:
    """A freshly initialised `LlamaForCausalLM` shaped by `cfg` (fp32, on the CPU)."""
    return LlamaForCausalLM(llama_config(cfg))

"""Builds a trial's model: the small unified VLM from a `ModelConfig`'s numbers, or a user's
own HF architecture (`model.hf`), and the map of the data's token ids onto its vocabulary.

The built-in model is a `transformers.LlamaForCausalLM` created locally from a `LlamaConfig`
(nothing is downloaded); its state dict keeps HF's names, so the reduced forward runs the
same way on any Llama-family checkpoint. A `model.hf` directory is read with
`local_files_only` (config.json, and its weights when `pretrained`). Seeding the
initialisation is the caller's job (`torch.manual_seed`).
"""

from __future__ import annotations

import torch
import transformers
from torch import nn
from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM, PretrainedConfig

from searchvlm.model._family import SUPPORTED, describe
from searchvlm.schema.config import ModelConfig, VocabLayout

__all__ = ["build_model", "data_token_map", "llama_config", "token_map"]


def llama_config(cfg: ModelConfig) -> LlamaConfig:
    """The `LlamaConfig` equivalent of `cfg` (embeddings tied when `cfg.tie_embeddings`, default RoPE)."""
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
        tie_word_embeddings=cfg.tie_embeddings,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
    )


def build_model(cfg: ModelConfig) -> nn.Module:
    """A freshly initialised `LlamaForCausalLM` shaped by `cfg` (fp32, on the CPU), or with
    `cfg.hf` the user's architecture (random from config.json, or `pretrained` weights)."""
    if cfg.hf is not None:
        return _hf_model(cfg)
    return LlamaForCausalLM(llama_config(cfg))


def _hf_class(config: PretrainedConfig, where: str) -> type[nn.Module]:
    """The supported class for `config`: its `architectures` entry, else by model_type."""
    by_type = {getattr(transformers, n).config_class.model_type: n for n in SUPPORTED}
    named = [a for a in (config.architectures or []) if a in SUPPORTED]
    name = named[0] if named else by_type.get(config.model_type)
    if name is None:
        raise ValueError(
            f"model.hf = {where!r}: model_type {config.model_type!r} / architectures {config.architectures} "
            f"is not a supported family ({', '.join(SUPPORTED)})"
        )
    return getattr(transformers, name)


def _hf_model(cfg: ModelConfig) -> nn.Module:
    config = AutoConfig.from_pretrained(cfg.hf, local_files_only=True)
    cls = _hf_class(config, cfg.hf)
    if cfg.pretrained:
        model = cls.from_pretrained(cfg.hf, local_files_only=True, dtype=torch.float32)
    else:
        model = cls._from_config(config, dtype=torch.float32)
    dec = describe(model)  # refuses what the reduced loop cannot run, naming model, layer, feature
    if dec.image_token_id is not None:
        raise ValueError(
            f"model.hf = {cfg.hf!r}: {dec.name} takes understanding images as continuous features "
            "(inputs_embeds), which `data: tokens` trials (VQ codes) do not provide"
        )
    return model.train()


def token_map(model: nn.Module, vocab: VocabLayout, where: str = "model.hf") -> torch.Tensor:
    """The data's token ids -> the model's (vocab.size,): image code c -> the model's c-th
    image-token id (Chameleon / Emu3 vocabulary maps; a plain decoder's last num_image ids),
    special and text tokens -> the model's lowest ids that are no image tokens."""
    dec = describe(model)
    size = dec.head.out_features
    image = list(dec.image_token_ids) or list(range(size - vocab.num_image, size))
    if len(image) < vocab.num_image:
        raise ValueError(
            f"{where}: {dec.name} has {len(image)} image-token ids; the data has {vocab.num_image} "
            "image codes (num_image): use a model with a larger codebook or fewer codes"
        )
    taken = set(image[: vocab.num_image])
    text = [i for i in range(size) if i not in taken][: vocab.image_offset]
    if len(text) < vocab.image_offset:
        raise ValueError(
            f"{where}: {dec.name}'s vocabulary ({size}) has {len(text)} ids left for the data's "
            f"{vocab.image_offset} special and text tokens"
        )
    return torch.tensor(text + image[: vocab.num_image], dtype=torch.long)  # (vocab.size,)


def data_token_map(model: nn.Module, cfg: ModelConfig) -> torch.Tensor | None:
    """`token_map` for a user's model (`cfg.hf`, vocab filled from the data); None for the
    built-in model, whose vocabulary is the data's."""
    if cfg.hf is None:
        return None
    if cfg.vocab is None:
        raise ValueError(f"model.hf = {cfg.hf!r}: the data's vocabulary (model.vocab) is needed to map its tokens")
    return token_map(model, cfg.vocab, f"model.hf = {cfg.hf!r}")

"""Tiny HF models of every supported family (hidden 32, 2 layers, vocab 64), built locally.

Norm weights are perturbed away from their init (a skipped norm cannot hide), q/k weights
are scaled up (attention scores reach the softcap) and config multipliers, softcaps,
clipping and partial rotary are set away from their neutral values.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import transformers as T
from torch import nn

from helpers.models import HF_TEXT, janus_model
from searchvlm.model import apply_policy
from searchvlm.schema.policy import ReductionPolicy, Segment

LAYERS = 2
VOCAB = 64
IMAGE_IDS = list(range(40, 56))  # the image-token ids of the tiny Chameleon / Emu3 vocabularies
COMMON = dict(HF_TEXT, vocab_size=VOCAB, num_hidden_layers=LAYERS)
SLIDING = dict(sliding_window=6, layer_types=["sliding_attention", "full_attention"])


def _chameleon_vocab() -> dict[str, int]:
    names = {f"IMGIMG{chr(ord('A') + i // 10)}{chr(ord('A') + i % 10)}Z": tid for i, tid in enumerate(IMAGE_IDS)}
    return {"<image>": 3, **names}


def _emu3_vocab() -> dict[str, int]:
    names = {f"<|visual token{i:06d}|>": tid for i, tid in enumerate(IMAGE_IDS)}
    return {"<image>": 3, "<|extra_200|>": 4, **names}


def chameleon_config(swin: bool = False) -> T.ChameleonConfig:
    """The tiny Chameleon config (16-code VQ, image ids IMAGE_IDS)."""
    vq = dict(
        embed_dim=4,
        num_embeddings=len(IMAGE_IDS),
        base_channels=32,
        channel_multiplier=[1],
        num_res_blocks=1,
        latent_channels=4,
        resolution=8,
    )
    return T.ChameleonConfig(**COMMON, vocabulary_map=_chameleon_vocab(), vq_config=vq, swin_norm=swin)


def emu3_config(**text: object) -> T.Emu3Config:
    """The tiny Emu3 config (16-code VQ, image ids IMAGE_IDS); `text` overrides its text config."""
    vq = dict(
        codebook_size=len(IMAGE_IDS),
        embed_dim=4,
        latent_channels=4,
        base_channels=32,
        channel_multiplier=[1],
        num_res_blocks=1,
        attn_resolutions=[],
        hidden_size=32,
        temporal_downsample_factor=1,
    )
    text_config = dict(COMMON, pad_token_id=0, bos_token_id=1, eos_token_id=2, **text)
    return T.Emu3Config(text_config=text_config, vq_config=vq, vocabulary_map=_emu3_vocab())


def _chameleon(swin: bool = False) -> nn.Module:
    return T.ChameleonForConditionalGeneration(chameleon_config(swin))


def _emu3() -> nn.Module:
    return T.Emu3ForConditionalGeneration(emu3_config(attention_dropout=0.0))


BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "llama": lambda: T.LlamaForCausalLM(T.LlamaConfig(**COMMON, attention_bias=True)),
    "qwen2": lambda: T.Qwen2ForCausalLM(T.Qwen2Config(**COMMON)),
    "qwen3": lambda: T.Qwen3ForCausalLM(T.Qwen3Config(**COMMON, head_dim=8)),
    "mistral": lambda: T.MistralForCausalLM(T.MistralConfig(**COMMON, sliding_window=6)),
    "gemma": lambda: T.GemmaForCausalLM(T.GemmaConfig(**COMMON, head_dim=8)),
    "gemma2": lambda: T.Gemma2ForCausalLM(
        T.Gemma2Config(
            **COMMON,
            **SLIDING,
            head_dim=8,
            query_pre_attn_scalar=12,
            attn_logit_softcapping=3.0,
            final_logit_softcapping=2.0,
        )
    ),
    "gemma3": lambda: T.Gemma3ForCausalLM(
        T.Gemma3TextConfig(
            **COMMON,
            **SLIDING,
            head_dim=8,
            query_pre_attn_scalar=12,
            final_logit_softcapping=2.0,
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
                "full_attention": {"rope_type": "default", "rope_theta": 10000.0},
            },
        )
    ),
    "phi3": lambda: T.Phi3ForCausalLM(
        T.Phi3Config(
            **COMMON, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}
        )
    ),
    "olmo": lambda: T.OlmoForCausalLM(T.OlmoConfig(**COMMON, clip_qkv=0.3)),
    "olmo2": lambda: T.Olmo2ForCausalLM(T.Olmo2Config(**COMMON)),
    "granite": lambda: T.GraniteForCausalLM(
        T.GraniteConfig(
            **COMMON, embedding_multiplier=3.0, residual_multiplier=0.4, attention_multiplier=0.2, logits_scaling=2.5
        )
    ),
    "chameleon": _chameleon,
    "chameleon_swin": lambda: _chameleon(swin=True),
    "emu3": _emu3,
    "janus": janus_model,
}


def build_family(family: str) -> nn.Module:
    torch.manual_seed(0)
    model = BUILDERS[family]().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.split(".")[-2]:  # every norm's weight and bias, q/k norms included
                p.add_(0.5 * torch.randn(p.shape, generator=g))
            if name.endswith(("q_proj.weight", "k_proj.weight", "qkv_proj.weight")):
                p.mul_(10.0)  # sharp attention: softcapping and masks matter
    return model


def family_batch(model: nn.Module, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """ids, segments (B=2, T=16): [system 2][instruction 3][image 8][system 1][output 2] for
    understanding, [system 2][instruction 3][image 8][system 3] for generation; image ids
    are the model's image-token ids where it has them."""
    runs = [(0, 2), (1, 3), (2, 8), (0, 1), (3, 2)] if task == "understanding" else [(0, 2), (1, 3), (2, 8), (0, 3)]
    seg = torch.cat([torch.full((n,), s) for s, n in runs]).expand(2, -1).clone()
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 40, seg.shape, generator=g)
    image = apply_policy(model, ReductionPolicy.dense(LAYERS)).decoder.image_token_ids
    if image:
        pick = torch.randint(0, len(image), seg.shape, generator=g)
        ids = torch.where(seg == Segment.IMAGE, torch.tensor(image)[pick], ids)
    return ids, seg

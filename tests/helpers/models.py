"""Tiny models and batches for the reduced-forward tests (hidden 32, 4 layers, vocab 40)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from searchvlm.schema.config import VocabLayout
from searchvlm.schema.policy import ReductionPolicy, Segment

VOCAB = VocabLayout(num_special=4, num_text=16, num_image=20)
LAYERS = 4


@dataclass
class Batch:
    ids: torch.Tensor  # (B, T)
    segments: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, T), -100 where not a target
    image_positions: list[int]


def make_batch(segment_runs: list[tuple[int, int]], batch: int = 3, seed: int = 0) -> Batch:
    """Random ids over a segment layout [(segment, length), ...]; targets = OUTPUT or IMAGE."""
    seg = torch.cat([torch.full((n,), s, dtype=torch.long) for s, n in segment_runs])
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB.size, (batch, seg.numel()), generator=g)
    segments = seg.expand(batch, -1).clone()
    return Batch(ids, segments, ids.clone(), (seg == Segment.IMAGE).nonzero().flatten().tolist())


PolicyFactory = Callable[..., ReductionPolicy]

#: the text config every tiny HF test model shares (hidden 32, 2 layers, vocab 64; helpers.families)
HF_TEXT = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    pad_token_id=None,
    bos_token_id=None,
    eos_token_id=None,
    tie_word_embeddings=False,
)


def janus_model() -> torch.nn.Module:
    """A tiny JanusForConditionalGeneration (hidden 32, 2 layers, vocab 64; 16x16 images in
    4x4 patches = 16 image tokens, a 16-code VQ codebook); placeholder id 3."""
    from transformers import JanusConfig, JanusForConditionalGeneration

    text = dict(HF_TEXT, model_type="llama")
    vision = dict(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        image_size=16,
        patch_size=4,
        projection_dim=32,
        depth=1,
        num_image_tokens=16,
        mlp_ratio=2.0,
    )
    vq = dict(
        embed_dim=4,
        num_embeddings=16,
        latent_channels=4,
        base_channels=32,
        channel_multiplier=[1],
        num_res_blocks=1,
        projection_dim=32,
        image_token_embed_dim=32,
        num_patches=4,
    )
    cfg = JanusConfig(text_config=text, vision_config=vision, vq_config=vq, image_token_id=3)
    return JanusForConditionalGeneration(cfg).eval()

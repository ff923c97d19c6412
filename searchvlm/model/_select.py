"""Image-token selectors: which k of the P present image tokens a layer computes.

Every selector returns ranks (B, k) into the present image tokens (0 = earliest), sorted
ascending, so the selected tokens stay in position order. Ties and zero scores are broken
toward the most recent tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor


def stride_ranks(k: int, present: int, batch: int, device: torch.device) -> Tensor:
    """Uniform subsample by rank: round(linspace(0, P-1, k)); (B, k)."""
    ranks = torch.linspace(0, present - 1, k, device=device).round().long()  # (k,)
    return ranks.expand(batch, k)  # (B, k)


def recent_ranks(k: int, present: int, batch: int, device: torch.device) -> Tensor:
    """The k latest image tokens; (B, k)."""
    return torch.arange(present - k, present, device=device).expand(batch, k)  # (B, k)


def random_ranks(k: int, present: int, batch: int, generator: torch.Generator) -> Tensor:
    """k uniformly random tokens per sequence from `generator` (CPU); (B, k)."""
    noise = torch.rand(batch, present, generator=generator)  # (B, P)
    return noise.topk(k, dim=1).indices.sort(dim=1).values  # (B, k)


def top_ranks(scores: Tensor, k: int) -> Tensor:
    """The k highest `scores` (B, P), ties toward recent tokens; sorted ranks (B, k)."""
    present = scores.shape[1]
    order = torch.argsort(scores.flip(1), dim=1, descending=True, stable=True)  # (B, P), latest first
    return (present - 1 - order[:, :k]).sort(dim=1).values  # (B, k)

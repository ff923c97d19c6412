"""Image-token selectors: which k of the P present image tokens a layer computes.

Every selector returns ranks (B, k) into the present image tokens (0 = earliest), sorted
ascending, so the selected tokens stay in position order. Ties and zero scores are broken
toward the most recent tokens.

Causality (docs/definitions.md): `stride`, `recent` and `random` are content-free. `top_ranks` ranks
the whole image at once, so it is used only where every position whose loss depends on the
choice comes after the whole image (understanding). `causal_quota_ranks` decides each token
from its own score and the decisions before it, so generation (every image token a target)
can use a content-based choice.
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


def causal_quota_ranks(scores: Tensor, k: int) -> Tensor:
    """Exactly k of P tokens, each decided from its own score and the earlier decisions; (B, k).

    Token i is kept when its score is > 0 and fewer than k earlier tokens were kept, or when
    the tokens left (i..P-1) are just enough to fill the quota. This is Mixture-of-Depths'
    causal fix (a per-token router threshold instead of a top-k over the sequence) with a
    fixed capacity, so the FLOPs count holds: no decision depends on a later token.
    """
    present = scores.shape[1]
    want = (scores > 0).long()  # (B, P)
    before = torch.cumsum(want, dim=1) - want  # (B, P): wanting tokens before i
    taken = before.clamp(max=k)  # (B, P): kept before i while nothing is forced
    left = present - torch.arange(present, device=scores.device)  # (P,): tokens i..P-1
    forced = (k - taken >= left).long().cummax(dim=1).values.bool()  # (B, P): from the first fill point on
    keep = forced | ((want > 0) & (before < k))  # (B, P), exactly k per row
    return torch.argsort((~keep).to(torch.uint8), dim=1, stable=True)[:, :k]  # (B, k), ascending

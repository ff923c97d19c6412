"""Image-token selectors, the torch side: which k of the P present image tokens a layer computes.

What each selector is (its kind, the tasks it serves, the weights and FLOPs it adds) is
declared once in `searchvlm.schema.policy.selectors`; its implementation is one function here,
registered under the same name with `@ranks(name)`: it reads a `Pick` (what a selector may
see in one layer) and returns ranks (B, k) into the present image tokens (0 = earliest),
sorted ascending, so the selected tokens stay in position order, plus router gates (B, k)
or None. Ties and zero scores are broken toward the most recent tokens.

Causality (docs/definitions.md): `stride`, `recent` and `random` are content-free. `top_ranks` ranks
the whole image at once, so it is used only where every position whose loss depends on the
choice comes after the whole image (understanding). `causal_quota_ranks` decides each token
from its own score and the decisions before it, so generation (every image token a target)
can use a content-based choice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from searchvlm.model._tokens import gather_rows


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


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Pick:
    """What a selector may read when layer `layer` of `task` keeps k of the P present image
    tokens (0 < k <= P). The fields a selector's declaration does not ask for are None."""

    task: str
    layer: int
    k: int
    img: Tensor  # (B, P): rows of the present image tokens in `h`, in position order
    h: Tensor  # (B, N, d): the layer's input
    mass: Tensor | None  # (B, N): the last prompt token's attention in the previous layer (`previous_mass`)
    router: nn.Module | None  # this task's router of this layer, d -> 1 (`weights`)
    scores: Callable[[], Tensor] | None  # -> (B, N): this layer's last-prompt-token attention, no grad (`scores`)
    seed: int  # the policy's seed
    training: bool
    generator: torch.Generator  # the running seeded generator (CPU), advanced in training

    @property
    def present(self) -> int:
        return self.img.shape[1]


Ranker = Callable[[Pick], tuple[Tensor, Tensor | None]]  # -> ranks (B, k), gates (B, k) | None
#: the implementation of every selector, by its name in `searchvlm.schema.policy.selectors.SELECTORS`
RANKERS: dict[str, Ranker] = {}


def ranks(name: str) -> Callable[[Ranker], Ranker]:
    """Register the implementation of the declared selector `name` (a function decorator)."""

    def register(fn: Ranker) -> Ranker:
        if RANKERS.get(name, fn) is not fn:
            raise ValueError(f"selector {name!r} already has an implementation ({RANKERS[name].__name__})")
        RANKERS[name] = fn
        return fn

    return register


@ranks("stride")
def _stride(p: Pick) -> tuple[Tensor, None]:
    return stride_ranks(p.k, p.present, p.img.shape[0], p.img.device), None


@ranks("recent")
def _recent(p: Pick) -> tuple[Tensor, None]:
    return recent_ranks(p.k, p.present, p.img.shape[0], p.img.device), None


@ranks("random")
def _random(p: Pick) -> tuple[Tensor, None]:
    """A running seeded generator in training, a fresh one seeded by (policy seed, layer) in
    evaluation, so evaluating a model twice keeps the same tokens."""
    gen = p.generator if p.training else torch.Generator().manual_seed(p.seed * 1_000_003 + p.layer)
    return random_ranks(p.k, p.present, p.img.shape[0], gen).to(p.img.device), None


@ranks("attention")
def _attention(p: Pick) -> tuple[Tensor, None]:
    """FastV: the attention the last prompt token gave each image token in the previous layer
    (`mass`), heads averaged; top k (stride in a first layer, which has no previous mass)."""
    if p.mass is None:
        return _stride(p)
    return top_ranks(p.mass.gather(1, p.img), p.k), None  # (B, k)


@ranks("pdrop")
def _pdrop(p: Pick) -> tuple[Tensor, None]:
    """PyramidDrop: the last prompt token's attention computed with THIS layer's own norm, q/k
    projections and rotary on its input, heads averaged; top k. (PyramidDrop's code names the
    last instruction token; in its LLaVA layout that is the last prompt token, which is what
    sees the image here.)"""
    return top_ranks(p.scores().gather(1, p.img), p.k), None  # (B, k)


@ranks("router")
def _router(p: Pick) -> tuple[Tensor, Tensor]:
    """Mixture-of-Depths / p-MoD: a linear score per image token; understanding takes the top k
    (the whole image precedes every labelled position), generation the causal per-token rule
    of `causal_quota_ranks`. The kept tokens' update is scaled by sigmoid(score), which
    trains the router."""
    logits = p.router(gather_rows(p.h, p.img)).squeeze(-1)  # (B, P)
    pick = top_ranks if p.task == "understanding" else causal_quota_ranks
    r = pick(logits.detach(), p.k)  # (B, k)
    return r, torch.sigmoid(logits.gather(1, r))  # (B, k), (B, k)

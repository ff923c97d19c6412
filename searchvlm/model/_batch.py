"""The records one reduced forward call works with (L2, beside `searchvlm.model.reduced`):
the checked inputs (`Batch`), the per-layer plan of a (task, length, image count) (`Plan`),
the call (`Call`: task, plan, kernel, attention log, train mode) and one layer of it (`Step`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from searchvlm.objectives.flops import LayerCounts
from searchvlm.schema.policy import Segment

Kernel = Literal["sdpa", "eager"]
# Plain ints: dynamo evaluates `tensor == IntEnum member` to a Python bool (torch.compile then
# fails with "'bool' object has no attribute ..."), a tensor compared with an int stays a tensor.
_IMAGE, _OUTPUT = int(Segment.IMAGE), int(Segment.OUTPUT)


@dataclass(frozen=True)
class Plan:
    """What every layer of a (task, sequence length, image count) does, computed once."""

    counts: list[LayerCounts]
    need_mass: list[bool]  # the next layer selects by attention mass from this one
    windows: list[int | None]  # sliding windows shorter than the sequence (else None)
    content: bool  # some layer selects by content (`SelectorInfo.content`: attention, pdrop, router)
    n_text: int  # tokens per sequence that are not image tokens (padding included)


AttentionLog = list[
    tuple[Tensor, Tensor, Tensor]
]  # per layer: probs (B, H, n_q, n_kv), query (B, n_q) and key (B, n_kv) positions


@dataclass(frozen=True)
class Call:
    """One forward call: its task, plan and kernel, where `output_attentions` collects
    every layer's probabilities (None: not asked; then the eager kernel runs), and whether
    the wrapper is in train mode (dropout, the router's training-time ranking)."""

    task: str
    plan: Plan
    kernel: Kernel
    log: AttentionLog | None
    training: bool


@dataclass(frozen=True)
class Step:
    """One layer of one call: what every part of the layer's computation reads."""

    li: int
    layer: nn.Module
    call: Call

    @property
    def task(self) -> str:
        return self.call.task

    @property
    def counts(self) -> LayerCounts:
        return self.call.plan.counts[self.li]

    @property
    def need_mass(self) -> bool:
        return self.call.plan.need_mass[self.li]

    @property
    def window(self) -> int | None:
        return self.call.plan.windows[self.li]


@dataclass(frozen=True)
class Batch:
    """One forward's inputs, checked: ids (B, T) or embeds (B, T, d), segments (B, T), image
    flags (B, T) (never on padding), valid (B, T) (None: no padding), labels (B, T) or None."""

    ids: Tensor | None
    embeds: Tensor | None
    segments: Tensor
    is_img: Tensor
    valid: Tensor | None
    labels: Tensor | None

    @staticmethod
    def of(
        ids: Tensor | None, embeds: Tensor | None, segments: Tensor, mask: Tensor | None, labels: Tensor | None
    ) -> Batch:
        if (ids is None) == (embeds is None):
            raise ValueError("pass exactly one of input_ids (B, T) and inputs_embeds (B, T, d)")
        shape = tuple(ids.shape) if ids is not None else tuple(embeds.shape[:2])
        if (ids is not None and ids.dim() != 2) or (embeds is not None and embeds.dim() != 3):
            raise ValueError(f"input_ids must be (B, T) and inputs_embeds (B, T, d); got {shape}")
        for name, x in (("segments", segments), ("attention_mask", mask), ("labels", labels)):
            if x is not None and tuple(x.shape) != shape:
                raise ValueError(f"{name} {tuple(x.shape)} must be (B, T) = {shape} like the inputs")
        valid = _valid(mask)
        is_img = segments == _IMAGE  # (B, T)
        return Batch(ids, embeds, segments, is_img if valid is None else is_img & valid, valid, labels)


def _valid(mask: Tensor | None) -> Tensor | None:
    """Padding mask (B, T) -> bool (B, T), None when nothing is padded; refuses a mask whose
    tokens are not one contiguous block per row (only left or right padding)."""
    if mask is None:
        return None
    valid = mask.bool()  # (B, T)
    if bool(valid.all()):
        return None
    starts = (valid[:, 1:] & ~valid[:, :-1]).sum(1) + valid[:, 0].long()  # (B,) blocks of tokens per row
    if bool((starts != 1).any()):
        raise ValueError(
            "attention_mask must mark one contiguous block of tokens per row (left or right padding); "
            f"rows {(starts != 1).nonzero().flatten().tolist()} have {starts[starts != 1].tolist()} blocks"
        )
    return valid


def last_prompt(segments: Tensor, valid: Tensor | None) -> Tensor:
    """Position of the last prompt token per sequence (B,): the one just before the first
    OUTPUT token, or the last token (not padding) when there is no OUTPUT segment."""
    out = segments == _OUTPUT  # (B, T)
    if valid is not None:
        out = out & valid
    t = out.shape[1]
    end = segments.new_full(out.shape[:1], t) if valid is None else t - valid.flip(1).int().argmax(dim=1)  # (B,)
    first = torch.where(out.any(dim=1), out.int().argmax(dim=1), end)
    return first - 1  # (B,)

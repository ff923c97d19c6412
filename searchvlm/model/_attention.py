"""Attention kernels of the reduced forward: eager (plain matmuls) and SDPA, masks, attention mass.

Shapes: q (B, H, n_q, hd); k, v (B, H_kv, n_kv, hd); `mask` is None (plain causal over one
token set sorted by position) or a boolean (B, 1, n_q, n_kv) "may attend" mask built from
the tokens' original positions. The attention mass (used by the `attention` selector) is
what the rows `mass_rows` (B, r) gave each key, summed over heads and rows: (B, n_kv) (the
selector passes one row, the last prompt token: FastV's rule; a sum over heads ranks as the
head average does).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers.models.llama.modeling_llama import repeat_kv


def position_mask(pos_q: Tensor, pos_k: Tensor, window: int | None, valid_k: Tensor | None = None) -> Tensor:
    """Causal (and sliding-window) mask from original positions: (B, 1, n_q, n_kv) bool.

    `valid_k` (B, n_kv): padding keys (False) are masked for every query but themselves, so
    a padding query still has one key (finite softmax) and no real token ever sees padding.
    """
    q, k = pos_q[:, :, None], pos_k[:, None, :]  # (B, n_q, 1), (B, 1, n_kv)
    allowed = k <= q  # (B, n_q, n_kv)
    if window is not None:
        allowed = allowed & (k > q - window)
    if valid_k is not None:
        allowed = allowed & (valid_k[:, None, :] | (k == q))
    return allowed[:, None]  # (B, 1, n_q, n_kv)


@lru_cache(maxsize=64)
def _tril(n: int, device: torch.device) -> Tensor:
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()  # (n, n)


@dataclass(frozen=True)
class Scoring:
    """How one attention call scores and weighs its keys: the scale of q·k, the "may attend"
    mask (None: plain causal), the kernel, Gemma2's score softcap and the dropout on the
    probabilities (train mode)."""

    scaling: float
    mask: Tensor | None
    kernel: str
    softcap: float | None = None
    dropout: float = 0.0


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    how: Scoring,
    mass_rows: Tensor | None = None,
    probs_out: list[Tensor] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Multi-head attention; returns (output (B, n_q, H*hd), attention mass (B, n_kv) or None).

    `probs_out` (eager kernel only): the detached probabilities (B, H, n_q, n_kv) are appended.
    `how.softcap` (Gemma2): scores become cap * tanh(scores / cap) before the mask; SDPA cannot
    express it, so such a layer always runs the eager kernel.
    `how.dropout` (train mode): dropout on the probabilities, as HF's eager and SDPA attention
    apply `attention_dropout` (the eager kernel draws the same mask as HF's eager one under
    the same RNG state). The attention mass and `probs_out` are taken before dropout.
    """
    kernel = "eager" if how.softcap is not None else how.kernel
    groups = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, groups), repeat_kv(v, groups)  # (B, H, n_kv, hd)
    if probs_out is not None and kernel != "eager":
        raise ValueError(f"attention probabilities need kernel 'eager', not {kernel!r}")
    if kernel == "eager":
        out, probs = _eager(q, k, v, how)
        mass = _mass(probs.detach(), mass_rows) if mass_rows is not None else None
        if probs_out is not None:
            probs_out.append(probs.detach())
    else:
        mask, scaling = how.mask, how.scaling
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None, scale=scaling, dropout_p=how.dropout
        )  # (B, H, n_q, hd)
        mass = _sdpa_mass(q, k, scaling, mask, mass_rows) if mass_rows is not None else None
    b, h, n_q, hd = out.shape
    return out.transpose(1, 2).reshape(b, n_q, h * hd), mass  # (B, n_q, H*hd)


def _softcap(scores: Tensor, cap: float | None) -> Tensor:
    return scores if cap is None else torch.tanh(scores / cap) * cap


def _eager(q: Tensor, k: Tensor, v: Tensor, how: Scoring) -> tuple[Tensor, Tensor]:
    """Output (B, H, n_q, hd) and the probabilities before dropout (B, H, n_q, n_kv)."""
    scores = _softcap(torch.matmul(q, k.transpose(2, 3)) * how.scaling, how.softcap)  # (B, H, n_q, n_kv)
    allowed = _tril(q.shape[2], q.device) if how.mask is None else how.mask
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)  # (B, H, n_q, n_kv)
    kept = F.dropout(probs, p=how.dropout, training=True) if how.dropout > 0 else probs
    return torch.matmul(kept, v), probs  # (B, H, n_q, hd)


def _mass(probs: Tensor, rows: Tensor) -> Tensor:
    """Sum of `probs` (B, H, n_q, n_kv) over heads and the query rows `rows` (B, r)."""
    b, h, _, n_kv = probs.shape
    idx = rows[:, None, :, None].expand(b, h, rows.shape[1], n_kv)  # (B, H, r, n_kv)
    return probs.gather(2, idx).sum(dim=(1, 2))  # (B, n_kv)


@torch.no_grad()
def _sdpa_mass(q: Tensor, k: Tensor, scaling: float, mask: Tensor | None, rows: Tensor) -> Tensor:
    """SDPA returns no weights: recompute the probabilities of the rows `rows` only."""
    b, h, _, hd = q.shape
    n_kv, r = k.shape[2], rows.shape[1]
    q_r = q.gather(2, rows[:, None, :, None].expand(b, h, r, hd))  # (B, H, r, hd)
    scores = torch.matmul(q_r, k.transpose(2, 3)) * scaling  # (B, H, r, n_kv)
    if mask is None:
        allowed = (torch.arange(n_kv, device=q.device) <= rows[:, :, None])[:, None]  # (B, 1, r, n_kv)
    else:
        allowed = mask.gather(2, rows[:, None, :, None].expand(b, 1, r, n_kv))  # (B, 1, r, n_kv)
    probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1, dtype=torch.float32)
    return probs.sum(dim=(1, 2)).to(q.dtype)  # (B, n_kv)


@torch.no_grad()
def anchor_attention(q: Tensor, k: Tensor, scaling: float, allowed: Tensor, softcap: float | None = None) -> Tensor:
    """Head-averaged attention of one query row q (B, H, 1, hd) over keys k (B, H_kv, n, hd)
    where `allowed` (B, n) (PyramidDrop's lightweight attention): (B, n)."""
    k = repeat_kv(k, q.shape[1] // k.shape[1])  # (B, H, n, hd)
    scores = _softcap(torch.matmul(q, k.transpose(2, 3)) * scaling, softcap)  # (B, H, 1, n)
    scores = scores.masked_fill(~allowed[:, None, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1, dtype=torch.float32).mean(dim=(1, 2))  # (B, n)

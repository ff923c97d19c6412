"""The set of tokens a layer works on: original positions, image flags, rotary cos/sin.

A `Tokens` describes n tokens per sequence (B, n), sorted by original position. Derived
indices (text rows, image rows, the text-first order used by split weights) are computed
once, on first use.
"""

from __future__ import annotations

from functools import cached_property

import torch
from torch import Tensor


def gather_rows(x: Tensor, idx: Tensor) -> Tensor:
    """x (B, N, w) at rows idx (B, n) -> (B, n, w); out of place (autograd)."""
    batch = torch.arange(x.shape[0], device=x.device)[:, None]  # (B, 1)
    return x[batch, idx]  # (B, n, w)


def scatter_rows(x: Tensor, idx: Tensor, rows: Tensor) -> Tensor:
    """Copy of x (B, N, w) with rows idx (B, n) replaced by rows (B, n, w); out of place."""
    b, n, w = x.shape
    flat = (idx + n * torch.arange(b, device=x.device)[:, None]).reshape(-1)  # (B*n_rows,)
    return x.reshape(b * n, w).index_copy(0, flat, rows.reshape(-1, w)).view(b, n, w)  # (B, N, w)


class Tokens:
    """n tokens per sequence: positions (B, n), image flags (B, n), rotary cos/sin (B, n, hd).

    `tables` are the rotary cos/sin of every original position (T, hd); a full, undropped
    set passes `full=True` and reads them as (1, T, hd) without a copy.
    """

    def __init__(
        self, pos: Tensor, is_img: Tensor, tables: tuple[Tensor, Tensor], n_text: int, full: bool = False
    ) -> None:
        self.pos, self.is_img, self.tables, self.n_text = pos, is_img, tables, n_text
        if full:
            self.cos, self.sin = tables[0][None], tables[1][None]  # (1, T, hd)
        else:
            self.cos, self.sin = tables[0][pos], tables[1][pos]  # (B, n, hd)

    def subset(self, idx: Tensor) -> "Tokens":
        """The tokens at rows idx (B, n) (sorted), keeping every text token."""
        return Tokens(self.pos.gather(1, idx), self.is_img.gather(1, idx), self.tables, self.n_text)

    @cached_property
    def order(self) -> Tensor:
        """Row indices, text rows first then image rows, each in position order: (B, n)."""
        return torch.argsort(self.is_img.to(torch.uint8), dim=1, stable=True)  # (B, n)

    @cached_property
    def inverse(self) -> Tensor:
        return torch.argsort(self.order, dim=1)  # (B, n)

    @property
    def text_idx(self) -> Tensor:
        return self.order[:, : self.n_text]  # (B, n_t)

    @property
    def img_idx(self) -> Tensor:
        return self.order[:, self.n_text :]  # (B, P)

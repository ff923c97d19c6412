"""The set of tokens a layer works on: original positions, image flags, rotary cos/sin, padding.

A `Tokens` describes n tokens per sequence (B, n), sorted by original position. Derived
indices (text rows, image rows, the text-first order used by split weights) are computed
once, on first use. When every sequence holds its image tokens in one block at the same
rows (the usual layout), `span` = (first, end) image rows; a subset keeps every text
token, so its image rows stay one block at the same start (split weights then use slices,
not gathers).
"""

from __future__ import annotations

from dataclasses import dataclass
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


def _at(table: Tensor, pos: Tensor) -> Tensor:
    """Rows pos (B, n) of a per-column table (B or 1, T, w) -> (B, n, w)."""
    if table.shape[0] == 1:
        return table[0][pos]  # (B, n, w)
    return gather_rows(table, pos)  # (B, n, w)


def image_span(is_img: Tensor) -> tuple[int, int] | None:
    """(first, end) image rows if every row of is_img (B, n) has one identical image block."""
    rows = is_img[0].nonzero().flatten()  # (M,)
    if rows.numel() == 0 or int(rows[-1] - rows[0]) + 1 != rows.numel():
        return None
    if not bool((is_img == is_img[:1]).all()):
        return None
    return int(rows[0]), int(rows[-1]) + 1


@dataclass(frozen=True)
class Frame:
    """What every token set of one forward shares: the rotary cos/sin of every column per
    rotary key (None, or a layer type for Gemma3), each (B or 1, T, rd) at the rotary
    positions (which skip left padding); the non-image tokens per sequence; and the original
    position of the last prompt token (B,) (a text token; None when nothing ranks by it)."""

    tables: dict[str | None, tuple[Tensor, Tensor]]
    n_text: int
    anchor: Tensor | None = None


class Tokens:
    """n tokens per sequence: positions (B, n), image flags (B, n), rotary cos/sin per layer kind.

    `pos` are the tokens' original indices in the input (columns); `frame` what every set of
    the forward shares (rotary tables, text count, last prompt token). `valid` (B, n) is
    False on padding (None: no padding). A full, undropped set passes `full=True` and reads
    the tables without a copy.
    """

    def __init__(
        self,
        pos: Tensor,
        is_img: Tensor,
        frame: Frame,
        full: bool = False,
        span: tuple[int, int] | None = None,
        valid: Tensor | None = None,
    ) -> None:
        self.pos, self.is_img, self.frame, self.span = pos, is_img, frame, span
        self.tables, self.n_text = frame.tables, frame.n_text
        self.anchor = frame.anchor  # (B,) original position of the last prompt token (a text token)
        self.valid, self.full = valid, full
        self._rope: dict[str | None, tuple[Tensor, Tensor]] = {}

    def rope(self, key: str | None = None) -> tuple[Tensor, Tensor]:
        """Rotary cos/sin of these tokens for rotary `key`: each (B or 1, n, rd)."""
        if key not in self._rope:
            cos, sin = self.tables[key]  # (B or 1, T, rd)
            if not self.full:
                cos, sin = _at(cos, self.pos), _at(sin, self.pos)  # (B, n, rd)
            self._rope[key] = (cos, sin)
        return self._rope[key]

    def subset(self, idx: Tensor) -> "Tokens":
        """The tokens at rows idx (B, n) (sorted), keeping every text token."""
        span = None if self.span is None else (self.span[0], self.span[0] + idx.shape[1] - self.n_text)
        valid = None if self.valid is None else self.valid.gather(1, idx)  # (B, n)
        return Tokens(self.pos.gather(1, idx), self.is_img.gather(1, idx), self.frame, span=span, valid=valid)

    @cached_property
    def order(self) -> Tensor:
        """Row indices, text rows first then image rows, each in position order: (B, n)."""
        return torch.argsort(self.is_img.to(torch.uint8), dim=1, stable=True)  # (B, n)

    @cached_property
    def inverse(self) -> Tensor:
        return torch.argsort(self.order, dim=1)  # (B, n)

    @property
    def anchor_row(self) -> Tensor:
        """Row of the last prompt token in this set (text tokens are never removed): (B, 1)."""
        assert self.anchor is not None
        return (self.pos < self.anchor[:, None]).sum(dim=1, keepdim=True)  # (B, 1)

    @property
    def text_idx(self) -> Tensor:
        return self.order[:, : self.n_text]  # (B, n_t)

    @property
    def img_idx(self) -> Tensor:
        return self.order[:, self.n_text :]  # (B, P)

"""Split parameter pathways (policy.sharing): image-token copies of q/k/v and MLP weights.

A `LayerSplit` holds, for one decoder layer, the image-token copies the policy asks for:
`qkv = modality` one image q/k/v set, `task_image` one per task; `mlp = modality` one image
MLP, `task` one per task. Copies start equal to the shared HF weights. `split_apply` runs
text rows through the HF module and image rows through the copy, with no wasted FLOPs
(`split_span`: the same when the image rows are one block at the same rows of every sequence).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from searchvlm.model._tokens import gather_rows
from searchvlm.schema.policy import TASKS, Sharing

Fn = Callable[[Tensor], Tensor]


def _copies(module: nn.Module, keys: Sequence[str]) -> nn.ModuleDict:
    return nn.ModuleDict({key: copy.deepcopy(module) for key in keys})


def _keys(mode: str) -> tuple[str, ...]:
    if mode == "shared":
        return ()
    return ("image",) if mode == "modality" else TASKS


class LayerSplit(nn.Module):
    """Image-token weight copies of one layer (empty dicts where the weights stay shared)."""

    def __init__(self, attn: nn.Module, mlp: nn.Module, sharing: Sharing) -> None:
        super().__init__()
        qkv = nn.ModuleDict({"q": attn.q_proj, "k": attn.k_proj, "v": attn.v_proj})
        self.qkv = _copies(qkv, _keys(sharing.qkv))
        self.mlp = _copies(mlp, _keys(sharing.mlp))

    def image_proj(self, task: str, name: str) -> nn.Module | None:
        """The image-token copy of projection `name` ('q' | 'k' | 'v') for `task`, or None."""
        if not self.qkv:
            return None
        return self.qkv["image" if "image" in self.qkv else task][name]

    def image_mlp(self, task: str) -> nn.Module | None:
        if not self.mlp:
            return None
        return self.mlp["image" if "image" in self.mlp else task]


def fused_linear(linears: Sequence[nn.Linear]) -> Fn:
    """One matmul for several projections of the same input: x (B, n, d) -> (B, n, sum of
    out_features), the outputs side by side in `linears` order (weights concatenated per call,
    so gradients flow to each module's own parameters)."""
    if len(linears) == 1:
        return linears[0]
    weight = torch.cat([lin.weight for lin in linears])  # (sum w, d)
    biases = [lin.bias for lin in linears]
    bias = None if biases[0] is None else torch.cat(biases)  # (sum w,)
    return lambda x: F.linear(x, weight, bias)


def make_splits(layers: nn.ModuleList, sharing: Sharing) -> nn.ModuleDict:
    """One `LayerSplit` per layer the sharing applies to (keyed by layer index)."""
    if sharing.qkv == "shared" and sharing.mlp == "shared":
        return nn.ModuleDict()
    return nn.ModuleDict(
        {
            str(i): LayerSplit(layer.self_attn, layer.mlp, sharing)
            for i, layer in enumerate(layers)
            if sharing.applies(i)
        }
    )


def split_apply(x: Tensor, order: Tensor, inverse: Tensor, n_text: int, fns: Sequence[tuple[Fn, Fn]]) -> list[Tensor]:
    """Apply (text_fn, image_fn) pairs to the text / image rows of x (B, n, d).

    `order` (B, n) lists text rows first, then image rows; `inverse` undoes it. The outputs
    of all pairs are put back in position order with one gather.
    """
    xp = gather_rows(x, order)  # (B, n, d), text rows first
    x_text, x_image = xp[:, :n_text], xp[:, n_text:]  # (B, n_t, d), (B, n_i, d)
    text = [text_fn(x_text) for text_fn, _ in fns]  # [(B, n_t, w_j)]
    image = [image_fn(x_image) for _, image_fn in fns]  # [(B, n_i, w_j)]
    widths = [t.shape[-1] for t in text]
    y = torch.cat([torch.cat(text, dim=-1), torch.cat(image, dim=-1)], dim=1)  # (B, n, sum w), permuted
    return list(gather_rows(y, inverse).split(widths, dim=-1))  # [(B, n, w_j)], position order


def split_span(x: Tensor, span: tuple[int, int], fns: Sequence[tuple[Fn, Fn]]) -> list[Tensor]:
    """`split_apply` when the image rows of every sequence are the block s..e-1 of x (B, n, d):
    `split` and `cat` instead of two gathers (same values; the backward of a `split` is one
    `cat`, where separate slices would each fill a zero gradient of x's size)."""
    s, e = span
    before, x_image, after = x.split([s, e - s, x.shape[1] - e], dim=1)  # (B, s, d), (B, n_i, d), (B, n-e, d)
    x_text = torch.cat([before, after], dim=1)  # (B, n_t, d)
    out = []
    for text_fn, image_fn in fns:
        t_before, t_after = text_fn(x_text).split([s, x_text.shape[1] - s], dim=1)  # (B, s, w), (B, n-e, w)
        out.append(torch.cat([t_before, image_fn(x_image), t_after], dim=1))  # (B, n, w)
    return out

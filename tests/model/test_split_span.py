"""The block fast path of split weights (`split_span`) equals the gather path (`split_apply`)."""

from __future__ import annotations

import torch

from searchvlm.model._sharing import fused_linear, split_apply, split_span
from searchvlm.model._tokens import Frame, Tokens, image_span


def _tokens(is_img: torch.Tensor) -> Tokens:
    b, t = is_img.shape
    tables = {None: (torch.zeros(1, t, 4), torch.zeros(1, t, 4))}
    n_text = int((~is_img[0]).sum())
    return Tokens(torch.arange(t).expand(b, t), is_img, Frame(tables, n_text), full=True, span=image_span(is_img))


def test_image_span_needs_one_identical_block():
    block = torch.tensor([[0, 1, 1, 1, 0], [0, 1, 1, 1, 0]], dtype=torch.bool)
    assert image_span(block) == (1, 4)
    assert image_span(torch.tensor([[0, 1, 0, 1, 0]] * 2, dtype=torch.bool)) is None
    assert image_span(torch.tensor([[0, 1, 1, 0, 0], [0, 0, 1, 1, 0]], dtype=torch.bool)) is None


def test_split_span_matches_split_apply_on_a_subset():
    torch.manual_seed(0)
    is_img = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 0, 0]] * 3, dtype=torch.bool)
    tokens = _tokens(is_img)
    keep = torch.tensor([[0, 1, 2, 4, 6, 7, 8], [0, 1, 3, 4, 5, 7, 8], [0, 1, 2, 3, 6, 7, 8]])  # 3 images each
    sub = tokens.subset(keep)
    assert sub.span == (2, 5)
    x = torch.randn(3, 7, 6, requires_grad=True)
    fns = [(torch.nn.Linear(6, 5), torch.nn.Linear(6, 5)), (torch.nn.Linear(6, 2), torch.nn.Linear(6, 2))]
    fast = split_span(x, sub.span, fns)
    slow = split_apply(x, sub.order, sub.inverse, sub.n_text, fns)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    g_fast = torch.autograd.grad(sum(o.sum() for o in fast), x)[0]
    g_slow = torch.autograd.grad(sum(o.sum() for o in slow), x)[0]
    torch.testing.assert_close(g_fast, g_slow)


def test_fused_linear_equals_separate_projections_and_trains_each():
    torch.manual_seed(0)
    lins = [torch.nn.Linear(6, 5), torch.nn.Linear(6, 2), torch.nn.Linear(6, 2)]
    x = torch.randn(3, 4, 6)
    fused = fused_linear(lins)(x)  # (3, 4, 9)
    torch.testing.assert_close(fused, torch.cat([lin(x) for lin in lins], dim=-1))
    fused[..., 5:7].sum().backward()  # only the second projection's outputs
    assert lins[0].weight.grad.abs().sum() == 0 and lins[1].weight.grad.abs().sum() > 0

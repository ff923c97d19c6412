"""Every selector keeps exactly k image tokens, in position order; random is seeded; router learns."""

from __future__ import annotations

import pytest
import torch

from helpers.models import Batch, PolicyFactory
from searchvlm.model import apply_policy
from searchvlm.model._select import RANKERS
from searchvlm.schema.policy.selectors import SELECTORS as DECLARED

SELECTORS = list(DECLARED)  # attention, pdrop, stride, random, recent, router
IMAGE = range(3, 19)  # image rows of the understanding batch


def _positions(model, policy, batch: Batch) -> torch.Tensor:
    reduced = apply_policy(model, policy)
    return reduced(batch.ids, segments=batch.segments, task="understanding").positions


def _image_rows(positions: torch.Tensor) -> list[list[int]]:
    return [[p for p in row if p in IMAGE] for row in positions.tolist()]


@pytest.mark.parametrize("selector", SELECTORS)
@pytest.mark.parametrize("keep, k", [(0.5, 8), (0.3, 5), (0.03, 0), (0.97, 16)])
def test_selector_keeps_exactly_k(model, und_batch, make_policy: PolicyFactory, selector, keep, k) -> None:
    policy = make_policy(und=([1.0, keep, keep, keep], "drop", selector))
    for rows in _image_rows(_positions(model, policy, und_batch)):
        assert len(rows) == k
        assert rows == sorted(set(rows))


def test_every_declared_selector_has_one_implementation() -> None:
    assert sorted(RANKERS) == sorted(SELECTORS) == ["attention", "pdrop", "random", "recent", "router", "stride"]


def test_stride_and_recent_pick_known_tokens(model, und_batch, make_policy: PolicyFactory) -> None:
    stride = make_policy(und=([0.25] * 4, "drop", "stride"))
    recent = make_policy(und=([0.25] * 4, "drop", "recent"))
    assert _image_rows(_positions(model, stride, und_batch))[0] == [3, 8, 13, 18]  # linspace(0, 15, 4)
    assert _image_rows(_positions(model, recent, und_batch))[0] == [15, 16, 17, 18]


def test_random_is_reproducible_and_advances(model, und_batch, make_policy: PolicyFactory) -> None:
    def draws(seed: int) -> list[list[list[int]]]:
        reduced = apply_policy(model, make_policy(und=([0.5] * 4, "drop", "random"), seed=seed))
        calls = [reduced(und_batch.ids, segments=und_batch.segments, task="understanding") for _ in range(2)]
        return [_image_rows(c.positions) for c in calls]

    first = draws(7)
    assert first == draws(7)
    assert first[0] != first[1]  # the generator advances per call
    assert first != draws(8)
    assert first[0][0] != first[0][1]  # rows of a batch draw independently


def test_router_is_exact_when_dense(model, und_batch, make_policy: PolicyFactory) -> None:
    policy = make_policy(und=([1.0] * 4, "skip", "router"))
    reduced = apply_policy(model, policy)
    out = reduced(und_batch.ids, segments=und_batch.segments, task="understanding")
    torch.testing.assert_close(out.logits, model(und_batch.ids).logits, atol=1e-5, rtol=0)


def _quota(scores: list[float], k: int) -> list[int]:
    """MoD's causal rule, one token at a time: keep i if its score > 0 and the quota is not
    full, or if the tokens left are just enough to fill it."""
    kept: list[int] = []
    for i, s in enumerate(scores):
        if (s > 0 and len(kept) < k) or k - len(kept) >= len(scores) - i:
            kept.append(i)
    return kept


@pytest.mark.parametrize("task", ["understanding", "generation"])
def test_router_picks_its_rule_and_learns(
    model, und_batch: Batch, gen_batch: Batch, make_policy: PolicyFactory, task
) -> None:
    batch = und_batch if task == "understanding" else gen_batch
    keep = ([1.0, 0.5, 1.0, 1.0], "skip", "router")
    policy = make_policy(**({"und": keep} if task == "understanding" else {"gen": keep}))
    reduced = apply_policy(model, policy)
    out = reduced(
        batch.ids,
        segments=batch.segments,
        task=task,
        labels=batch.labels,
        output_hidden_states=True,
    )
    h_in, h_out = out.hidden_states[1], out.hidden_states[2]  # (B, T, d) around layer 1
    image = torch.tensor(batch.image_positions)
    logits = reduced.routers[task][1](h_in[:, image]).squeeze(-1)  # (B, 16)
    if task == "understanding":  # p-MoD: top-k over the image (it precedes every labelled position)
        expected = logits.topk(8, dim=1).indices.sort(dim=1).values
    else:  # generation: causal per-token decisions, exactly k
        expected = torch.tensor([_quota(row, 8) for row in logits.tolist()])
    changed = (h_out[:, image] != h_in[:, image]).any(dim=-1)  # (B, 16): computed tokens
    assert torch.equal(changed.nonzero()[:, 1].view(3, 8), expected)
    out.loss.backward()
    routers = reduced.routers[task]
    assert routers[1].weight.grad is not None and routers[1].weight.grad.abs().sum() > 0
    assert routers[0].weight.grad is None  # layer 0 computes everything: router inactive
    assert any(p is routers[1].weight for p in reduced.parameters())

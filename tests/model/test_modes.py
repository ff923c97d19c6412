"""query_drop, skip and drop do what docs/definitions.md says, checked against HF's own decoder layer."""

from __future__ import annotations

import pytest
import torch

from helpers.models import Batch, PolicyFactory
from searchvlm.model import apply_policy

TOL = 1e-5
TEXT = [0, 1, 2, 19, 20, 21, 22, 23]  # non-image rows of the understanding batch
OLD, RECENT = list(range(3, 11)), list(range(11, 19))  # image rows: first / last 8 of 16


def _hf_layer(model: torch.nn.Module, layer: int, h: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """HF decoder layer `layer` run on the rows `rows` of h (B, T, d), at their original positions."""
    pos = torch.tensor(rows)[None]  # (1, n)
    sub = h[:, rows]  # (B, n, d)
    emb = model.model.rotary_emb(sub, pos)
    return model.model.layers[layer](sub, attention_mask=None, position_embeddings=emb)


def _run(model: torch.nn.Module, policy, batch: Batch, attention: str = "sdpa", ids=None):
    reduced = apply_policy(model, policy, attention=attention)
    ids = batch.ids if ids is None else ids
    return reduced(ids, segments=batch.segments, task="understanding", output_hidden_states=True)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_query_drop_kept_rows_attend_every_token(model, und_batch, make_policy: PolicyFactory, attention) -> None:
    policy = make_policy(und=([1.0, 0.5, 1.0, 1.0], "query_drop", "recent"))
    hs = _run(model, policy, und_batch, attention).hidden_states
    kept = sorted(TEXT + RECENT)
    full = _hf_layer(model, 1, hs[1], list(range(24)))  # dense layer: queries see every key
    torch.testing.assert_close(hs[2][:, kept], full[:, kept], atol=TOL, rtol=0)
    assert torch.equal(hs[2][:, OLD], hs[1][:, OLD])  # not queries: pass through unchanged


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_skip_kept_rows_ignore_skipped_tokens(model, und_batch, make_policy: PolicyFactory, attention) -> None:
    policy = make_policy(und=([1.0, 0.5, 1.0, 1.0], "skip", "recent"))
    hs = _run(model, policy, und_batch, attention).hidden_states
    kept = sorted(TEXT + RECENT)
    alone = _hf_layer(model, 1, hs[1], kept)  # the layer over the kept tokens only
    torch.testing.assert_close(hs[2][:, kept], alone, atol=TOL, rtol=0)
    assert torch.equal(hs[2][:, OLD], hs[1][:, OLD])
    assert len(hs[2][0]) == 24  # skipped tokens stay in the stream


def _perturbed(batch: Batch, row: int) -> torch.Tensor:
    ids = batch.ids.clone()
    ids[:, row] = (ids[:, row] + 1) % 40
    return ids


@pytest.mark.parametrize("mode, isolated", [("skip", True), ("query_drop", False)])
def test_unkept_token_is_a_key_only_in_query_drop(model, und_batch, make_policy: PolicyFactory, mode, isolated) -> None:
    policy = make_policy(und=([0.5, 1.0, 1.0, 1.0], mode, "recent"))  # layer 0 keeps rows 11..18
    a = _run(model, policy, und_batch).hidden_states
    b = _run(model, policy, und_batch, ids=_perturbed(und_batch, 5)).hidden_states
    others = [r for r in range(24) if r != 5]
    assert torch.equal(a[1][:, others], b[1][:, others]) == isolated
    assert not torch.equal(a[2][:, others], b[2][:, others])  # layer 1 is dense: it sees row 5


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_drop_removes_tokens_for_good(model, und_batch, make_policy: PolicyFactory, attention) -> None:
    policy = make_policy(und=([1.0, 0.5, 0.5, 0.25], "drop", "stride"))
    out = _run(model, policy, und_batch, attention)
    assert [h.shape[1] for h in out.hidden_states] == [24, 24, 16, 16, 12]
    layer1 = sorted(TEXT + [3 + r for r in (0, 2, 4, 6, 9, 11, 13, 15)])  # round(linspace(0, 15, 8))
    layer3 = sorted(TEXT + [layer1[3 + r] for r in (0, 2, 5, 7)])  # round(linspace(0, 7, 4)) of those
    assert out.hidden_positions[2].tolist() == [layer1] * 3
    assert out.positions.tolist() == [layer3] * 3
    assert out.logits.shape == (3, 12, 40)
    alone = _hf_layer(model, 1, out.hidden_states[1], layer1)
    torch.testing.assert_close(out.hidden_states[2], alone, atol=TOL, rtol=0)


def test_drop_with_labels_keeps_label_predictors(model, und_batch, make_policy: PolicyFactory) -> None:
    policy = make_policy(und=([1.0, 0.5, 0.5, 0.0], "drop", "stride"))
    reduced = apply_policy(model, policy)
    out = reduced(und_batch.ids, segments=und_batch.segments, task="understanding", labels=und_batch.labels)
    assert out.positions.tolist() == [[20, 21, 22]] * 3
    assert out.loss.isfinite()


def test_drop_refuses_targets_predicted_by_dropped_tokens(model, gen_batch, make_policy: PolicyFactory) -> None:
    policy = make_policy(und=([1.0, 0.5, 0.5, 0.5], "drop", "stride"))
    reduced = apply_policy(model, policy)
    with pytest.raises(ValueError, match="predicted by dropped image tokens"):
        reduced(gen_batch.ids, segments=gen_batch.segments, task="understanding", labels=gen_batch.labels)


def test_fastv_attention_selector_keeps_most_attended(model, und_batch, make_policy: PolicyFactory) -> None:
    policy = make_policy(und=([1.0, 1.0, 0.5, 0.5], "drop", "attention"))
    model.set_attn_implementation("eager")
    probs = model(und_batch.ids, output_attentions=True).attentions[1]  # (B, H, T, T), layer 1
    mass = probs[:, :, 20].mean(dim=1)[:, 3:19]  # (B, 16): the last prompt token's attention, heads averaged
    top = [sorted(3 + i for i in row.topk(8).indices.tolist()) for row in mass]
    for attention in ("sdpa", "eager"):
        out = _run(model, policy, und_batch, attention)
        assert out.positions.tolist() == [sorted(TEXT + t) for t in top]


@pytest.mark.parametrize("mode", ["query_drop", "skip", "drop"])
def test_sdpa_and_eager_agree_under_reduction(model, und_batch, make_policy: PolicyFactory, mode) -> None:
    policy = make_policy(und=([1.0, 0.5, 0.25, 0.25], mode, "attention"))
    a = _run(model, policy, und_batch, "sdpa")
    b = _run(model, policy, und_batch, "eager")
    assert torch.equal(a.positions, b.positions)
    torch.testing.assert_close(a.logits, b.logits, atol=TOL, rtol=0)

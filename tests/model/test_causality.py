"""Causality under perturbation: changing token c never moves a logit that a loss reads at a
position < c, for every task x mode x selector the schema accepts and every preset, on three
layouts; FastV's and PyramidDrop's kept sets equal independent implementations of their rules."""

from __future__ import annotations

import itertools

import pytest
import torch
from pydantic import ValidationError
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from helpers.models import LAYERS, VOCAB, Batch, make_batch
from searchvlm.model import _select as select_module
from searchvlm.model import apply_policy
from searchvlm.model._select import top_ranks
from searchvlm.schema.policy import PRESETS, ReductionPolicy, Segment, TaskPolicy, preset
from searchvlm.schema.policy.selectors import SELECTORS as DECLARED

S, I, IMG, O = Segment.SYSTEM, Segment.INSTRUCTION, Segment.IMAGE, Segment.OUTPUT  # noqa: E741 - layouts read as S I IMG O
LAYOUTS = {  # name -> (task, segment runs)
    "und_question_first": ("understanding", [(S, 1), (I, 3), (S, 1), (IMG, 12), (S, 1), (O, 3)]),
    "und_question_after": ("understanding", [(S, 1), (S, 1), (IMG, 12), (S, 1), (I, 3), (O, 3)]),
    "gen_caption_first": ("generation", [(S, 1), (I, 3), (S, 1), (IMG, 12), (S, 1)]),
    "gen_text_after": ("generation", [(S, 1), (I, 3), (S, 1), (IMG, 12), (S, 1), (I, 3)]),
}
MODES = ["query_drop", "skip", "drop"]
SELECTORS = list(DECLARED)  # every declared selector (validation refuses the non-causal combinations)
KEEP = [1.0, 0.5, 0.5, 0.25]
TOL = 1e-5


def _batch(layout: str) -> tuple[str, Batch]:
    task, runs = LAYOUTS[layout]
    b = make_batch(runs, batch=2, seed=3)
    target = Segment.OUTPUT if task == "understanding" else Segment.IMAGE
    b.labels[b.segments != target] = -100
    return task, b


def _policy(task: str, mode: str, selector: str) -> ReductionPolicy:
    reduced = TaskPolicy(keep=KEEP, mode=mode, selector=selector)
    dense = TaskPolicy(keep=[1.0] * LAYERS)
    parts = {"understanding": dense, "generation": dense, task: reduced}
    return ReductionPolicy(num_layers=LAYERS, seed=5, **parts)


def _sharp_routers(reduced) -> None:
    """Routers with large weights, so their decisions depend strongly on the tokens."""
    g = torch.Generator().manual_seed(11)
    for per_task in reduced.routers.values():
        for r in per_task:
            r.weight.data = torch.randn(r.weight.shape, generator=g)


def _leaks(reduced, task: str, batch: Batch) -> list[tuple[int, float]]:
    """(c, largest change) for every c whose perturbation moves a logit read at a position < c."""
    reduced.eval()
    with torch.no_grad():
        base = reduced(batch.ids, segments=batch.segments, task=task, labels=batch.labels)
        out = []
        for c in range(1, batch.ids.shape[1]):
            ids = batch.ids.clone()
            ids[:, c] = (ids[:, c] + 7) % VOCAB.size
            new = reduced(ids, segments=batch.segments, task=task, labels=batch.labels)
            assert torch.equal(new.positions, base.positions)
            before = (base.positions < c) & (base.positions >= 0)  # (B, T_out)
            diff = float((new.logits - base.logits).abs()[before].max()) if before.any() else 0.0
            if diff > TOL:
                out.append((c, diff))
    return out


def _accepted() -> list[tuple[str, str, str]]:
    combos = []
    for layout, mode, selector in itertools.product(LAYOUTS, MODES, SELECTORS):
        try:
            _policy(LAYOUTS[layout][0], mode, selector)
        except ValidationError:
            continue
        combos.append((layout, mode, selector))
    return combos


def test_schema_refuses_exactly_the_non_causal_generation_choices() -> None:
    refused = {(m, s) for m, s in itertools.product(MODES, SELECTORS)} - {
        (m, s) for lay, m, s in _accepted() if lay.startswith("gen")
    }
    assert refused == {("drop", s) for s in SELECTORS} | {(m, s) for m in MODES for s in ("attention", "pdrop")}
    with pytest.raises(ValidationError, match="not causal"):
        _policy("generation", "skip", "attention")


@pytest.mark.parametrize("layout, mode, selector", _accepted())
def test_no_logit_depends_on_a_later_token(model, layout: str, mode: str, selector: str) -> None:
    task, batch = _batch(layout)
    reduced = apply_policy(model, _policy(task, mode, selector))
    _sharp_routers(reduced)
    assert _leaks(reduced, task, batch) == []


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_presets_are_causal(model, name: str, layout: str) -> None:
    task, batch = _batch(layout)
    reduced = apply_policy(model, preset(name, LAYERS))
    _sharp_routers(reduced)
    assert _leaks(reduced, task, batch) == []


def test_the_perturbation_test_catches_a_top_k_router_in_generation(model, monkeypatch) -> None:
    """The old rule (top-k over the whole image) leaks in generation: the check must see it."""
    monkeypatch.setattr(select_module, "causal_quota_ranks", top_ranks)
    task, batch = _batch("gen_caption_first")
    reduced = apply_policy(model, _policy(task, "skip", "router"))
    _sharp_routers(reduced)
    leaks = _leaks(reduced, task, batch)
    assert leaks and max(d for _, d in leaks) > 1e-3


def test_random_selector_is_deterministic_in_evaluation(model) -> None:
    task, batch = _batch("und_question_first")
    reduced = apply_policy(model, _policy(task, "drop", "random")).eval()
    first = reduced(batch.ids, segments=batch.segments, task=task)
    second = reduced(batch.ids, segments=batch.segments, task=task)
    assert torch.equal(first.positions, second.positions) and torch.equal(first.logits, second.logits)
    reduced.train()
    draws = {tuple(reduced(batch.ids, segments=batch.segments, task=task).positions[0].tolist()) for _ in range(6)}
    assert len(draws) > 1  # training still draws fresh subsets


# ---------------------------------------------------------------- the papers' rules, independently


def _hf_eager(model):
    model.config._attn_implementation = "eager"
    return model


def _kept_image_positions(model, policy: ReductionPolicy, batch: Batch) -> list[set[int]]:
    out = apply_policy(model, policy)(batch.ids, segments=batch.segments, task="understanding")
    image = set(batch.image_positions)
    return [{p for p in row if p in image} for row in out.positions.tolist()]


def _last_prompt(batch: Batch) -> int:
    return int((batch.segments[0] == Segment.OUTPUT).nonzero()[0]) - 1


def _top(scores: torch.Tensor, positions: list[int], k: int) -> list[set[int]]:
    """Top-k positions per row of scores (B, M) over `positions` (ties: later first)."""
    order = torch.argsort(scores.flip(1), dim=1, descending=True, stable=True)[:, :k]
    return [{positions[len(positions) - 1 - int(j)] for j in row} for row in order]


@pytest.mark.parametrize("layout", ["und_question_first", "und_question_after"])
def test_fastv_keeps_what_the_last_prompt_token_attended_to_in_layer_k_minus_1(model, layout) -> None:
    _, batch = _batch(layout)
    policy = preset("fastv", LAYERS)
    K = policy.understanding.keep.index(0.5)  # first reduced layer
    hf = _hf_eager(model)
    with torch.no_grad():
        att = hf(batch.ids, output_attentions=True).attentions[K - 1]  # (B, H, T, T)
    img = batch.image_positions
    scores = att[:, :, _last_prompt(batch), img].mean(dim=1)  # (B, M): heads averaged
    expected = _top(scores, img, round(len(img) * 0.5))
    assert _kept_image_positions(model, policy, batch) == expected


@pytest.mark.parametrize("layout", ["und_question_first", "und_question_after"])
def test_pyramiddrop_ranks_with_the_boundary_layers_own_attention(model, layout) -> None:
    _, batch = _batch(layout)
    keep = [1.0, 0.5, 0.5, 0.5]  # one boundary, at layer 1
    policy = ReductionPolicy(
        num_layers=LAYERS, understanding=TaskPolicy(keep=keep, mode="drop", selector="pdrop"),
        generation=TaskPolicy(keep=[1.0] * LAYERS),
    )  # fmt: skip
    with torch.no_grad():
        h = model(batch.ids, output_hidden_states=True).hidden_states[1]  # input of layer 1
        layer = model.model.layers[1]
        attn = layer.self_attn
        x = layer.input_layernorm(h)
        b, t, _ = x.shape
        q = attn.q_proj(x).view(b, t, -1, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(b, t, -1, attn.head_dim).transpose(1, 2)
        cos, sin = model.model.rotary_emb(x, torch.arange(t)[None])
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        a = _last_prompt(batch)
        scores = (q[:, :, a : a + 1] @ k.transpose(2, 3)) * attn.scaling  # (B, H, 1, T)
        scores[..., a + 1 :] = float("-inf")
        probs = scores.softmax(-1).mean(dim=(1, 2))  # (B, T)
    img = batch.image_positions
    expected = _top(probs[:, img], img, len(img) // 2)
    assert _kept_image_positions(model, policy, batch) == expected

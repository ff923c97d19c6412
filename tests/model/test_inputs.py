"""Inputs like HF's: `inputs_embeds` (Janus understanding with its SigLIP features), Janus
generation through its generation embedding and head, and left / right padding (each row's
logits are those of the row alone, under dense and reducing policies)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers.families import LAYERS, build_family
from helpers.models import janus_model
from searchvlm.model import apply_policy
from searchvlm.schema.policy import ReductionPolicy, Segment, TaskPolicy

TOL = 1e-5
S, I, IMG, O = Segment.SYSTEM, Segment.INSTRUCTION, Segment.IMAGE, Segment.OUTPUT  # noqa: E741 - layouts read as S I IMG O


def _janus_understanding() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Janus, ids with 16 image placeholders (id 3), their segments, and pixel values (B=2)."""
    torch.manual_seed(0)
    model = janus_model()
    runs = [(S, 2), (IMG, 16), (I, 3), (O, 2)]
    seg = torch.cat([torch.full((n,), s) for s, n in runs]).expand(2, -1).clone()
    ids = torch.randint(5, 64, seg.shape, generator=torch.Generator().manual_seed(1))
    ids[seg == IMG] = model.config.image_token_id
    return model, ids, seg, torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))


def test_janus_understanding_inputs_embeds_equals_hf_pixel_values() -> None:
    model, ids, seg, pixels = _janus_understanding()
    reduced = apply_policy(model, ReductionPolicy.dense(LAYERS))
    assert reduced.decoder.image_token_id == 3
    with torch.no_grad():
        ref = model(input_ids=ids, pixel_values=pixels).logits  # (B, T, V)
        embeds = model.get_input_embeddings()(ids)  # (B, T, d)
        feats = model.model.get_image_features(pixels).pooler_output  # (B, 16, d)
        embeds = embeds.masked_scatter((ids == reduced.decoder.image_token_id)[..., None], feats)
        out = reduced(inputs_embeds=embeds, segments=seg, task="understanding")
    torch.testing.assert_close(out.logits, ref, atol=TOL, rtol=0)


def test_janus_generation_uses_generation_embedding_and_head() -> None:
    """As HF's Janus `generate` in image mode: image codes embedded by generation_aligner ∘
    generation_embeddings, scores from generation_head."""
    torch.manual_seed(0)
    model = janus_model()
    seg = torch.cat([torch.full((n,), s) for s, n in [(S, 2), (I, 4), (IMG, 16), (S, 1)]]).expand(2, -1).clone()
    g = torch.Generator().manual_seed(3)
    codes, text = torch.randint(0, 16, seg.shape, generator=g), torch.randint(5, 64, seg.shape, generator=g)
    ids = torch.where(seg == IMG, codes, text)
    img = (seg == IMG)[..., None]  # (B, T, 1)
    with torch.no_grad():
        text = model.get_input_embeddings()(ids.masked_fill(img[..., 0], 0))  # (B, T, d)
        image = model.prepare_embeddings_for_image_generation(ids.masked_fill(~img[..., 0], 0))  # (B, T, d)
        hidden = model.model.language_model(inputs_embeds=torch.where(img, image, text)).last_hidden_state
        ref = model.model.generation_head(hidden)  # (B, T, codebook)
        out = apply_policy(model, ReductionPolicy.dense(LAYERS))(ids, segments=seg, task="generation")
    assert out.logits.shape[-1] == 16
    torch.testing.assert_close(out.logits, ref, atol=TOL, rtol=0)


def test_inputs_embeds_equals_input_ids() -> None:
    model = build_family("granite")  # its embedding multiplier applies to given embeddings too, as in HF
    seg = torch.tensor([[S, I, IMG, IMG, IMG, O]] * 2)
    ids = torch.randint(0, 40, seg.shape, generator=torch.Generator().manual_seed(0))
    reduced = apply_policy(model, ReductionPolicy.dense(LAYERS))
    with torch.no_grad():
        a = reduced(ids, segments=seg, task="understanding").logits
        b = reduced(inputs_embeds=model.get_input_embeddings()(ids), segments=seg, task="understanding").logits
        ref = model(inputs_embeds=model.get_input_embeddings()(ids)).logits
    torch.testing.assert_close(a, b, atol=TOL, rtol=0)
    torch.testing.assert_close(b, ref, atol=TOL, rtol=0)


def test_needs_exactly_one_input() -> None:
    model = build_family("llama")
    reduced = apply_policy(model, ReductionPolicy.dense(LAYERS))
    seg = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="exactly one of input_ids"):
        reduced(segments=seg, task="understanding")
    with pytest.raises(ValueError, match="exactly one of input_ids"):
        reduced(torch.zeros_like(seg), inputs_embeds=torch.zeros(1, 4, 32), segments=seg, task="understanding")


# ---------------------------------------------------------------- padding

ROWS = {  # three rows of different lengths, the same 8 image tokens
    "understanding": [
        [(S, 1), (I, 2), (IMG, 8), (I, 3), (O, 2)],
        [(S, 2), (IMG, 8), (I, 1), (O, 3)],
        [(S, 1), (I, 4), (IMG, 8), (I, 4), (O, 1)],
    ],
    "generation": [[(S, 1), (I, 2), (IMG, 8), (S, 1)], [(S, 2), (I, 5), (IMG, 8), (S, 2)], [(S, 1), (I, 1), (IMG, 8)]],
}
POLICIES = {
    "dense": None,
    "fastv_query_drop": ("understanding", TaskPolicy(keep=[0.5, 0.25], mode="query_drop", selector="attention")),
    "pdrop_drop": ("understanding", TaskPolicy(keep=[1.0, 0.5], mode="drop", selector="pdrop")),
    "router_skip": ("understanding", TaskPolicy(keep=[0.5, 0.5], mode="skip", selector="router")),
    "gen_router_skip": ("generation", TaskPolicy(keep=[0.5, 0.75], mode="skip", selector="router")),
    "gen_recent_query_drop": ("generation", TaskPolicy(keep=[0.25, 0.5], mode="query_drop", selector="recent")),
}


def _policy(name: str) -> ReductionPolicy:
    spec = POLICIES[name]
    if spec is None:
        return ReductionPolicy.dense(LAYERS)
    dense = TaskPolicy(keep=[1.0] * LAYERS)
    parts = {"understanding": dense, "generation": dense, spec[0]: spec[1]}
    return ReductionPolicy(num_layers=LAYERS, seed=3, **parts)


def _rows(task: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(4)
    out = []
    for runs in ROWS[task]:
        seg = torch.cat([torch.full((n,), s) for s, n in runs])  # (T_r,)
        out.append((torch.randint(0, 40, seg.shape, generator=g), seg))
    return out


def _padded(rows: list[tuple[torch.Tensor, torch.Tensor]], side: str) -> tuple[torch.Tensor, ...]:
    """ids, segments, mask (B, T_max) with padding on `side`; pads carry id 0 and the IMAGE
    segment (so a selector that saw them would count them) and offsets (B,) of each row's start."""
    t = max(len(ids) for ids, _ in rows)
    ids = torch.zeros(len(rows), t, dtype=torch.long)
    seg = torch.full((len(rows), t), int(IMG))
    mask = torch.zeros(len(rows), t, dtype=torch.long)
    offsets = torch.tensor([t - len(r) if side == "left" else 0 for r, _ in rows])
    for b, (r_ids, r_seg) in enumerate(rows):
        cols = slice(int(offsets[b]), int(offsets[b]) + len(r_ids))
        ids[b, cols], seg[b, cols], mask[b, cols] = r_ids, r_seg, 1
    return ids, seg, mask, offsets


def _route(reduced) -> None:
    """Router weights with large values, so their decisions depend strongly on the tokens."""
    g = torch.Generator().manual_seed(5)
    for per_task in reduced.routers.values():
        for r in per_task:
            r.weight.data = torch.randn(r.weight.shape, generator=g)


@pytest.mark.parametrize("family", ["llama", "gemma2", "qwen3", "chameleon", "phi3"])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("task", ["understanding", "generation"])
def test_padded_dense_rows_equal_hf_rows(family: str, side: str, task: str) -> None:
    model = build_family(family)
    rows = _rows(task)
    ids, seg, mask, offsets = _padded(rows, side)
    reduced = apply_policy(model, ReductionPolicy.dense(LAYERS))
    with torch.no_grad():
        out = reduced(ids, segments=seg, attention_mask=mask, task=task)
        for b, (r_ids, _) in enumerate(rows):
            hidden = model.model(input_ids=r_ids[None]).last_hidden_state
            ref = model.lm_head(hidden) if family == "chameleon" else model(input_ids=r_ids[None]).logits
            got = out.logits[b, int(offsets[b]) : int(offsets[b]) + len(r_ids)]
            torch.testing.assert_close(got, ref[0], atol=TOL, rtol=0)


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_padded_rows_equal_rows_alone(policy: str, side: str, family: str) -> None:
    """Under a reducing policy each padded row gives its logits alone: pads are never selected
    (their IMAGE segment is ignored) and never move another token's attention."""
    task = POLICIES[policy][0] if POLICIES[policy] else "understanding"
    model = build_family(family)
    reduced = apply_policy(model, _policy(policy)).eval()
    _route(reduced)
    rows = _rows(task)
    ids, seg, mask, offsets = _padded(rows, side)
    with torch.no_grad():
        out = reduced(ids, segments=seg, attention_mask=mask, task=task)
        for b, (r_ids, r_seg) in enumerate(rows):
            alone = reduced(r_ids[None], segments=r_seg[None], task=task)
            pos = out.positions[b] - offsets[b]  # (T_out,)
            keep = (pos >= 0) & (pos < len(r_ids))  # this row's tokens (right padding: trailing pads)
            assert pos[keep].tolist() == alone.positions[0].tolist()
            torch.testing.assert_close(out.logits[b][keep], alone.logits[0], atol=TOL, rtol=0)


def test_padded_labels_give_the_rows_loss() -> None:
    model = build_family("llama")
    rows = _rows("understanding")
    ids, seg, mask, _ = _padded(rows, "left")
    labels = torch.where((seg == O) & mask.bool(), ids, torch.full_like(ids, -100))
    reduced = apply_policy(model, ReductionPolicy.dense(LAYERS))
    with torch.no_grad():
        out = reduced(ids, segments=seg, attention_mask=mask, labels=labels, task="understanding")
        ref = model(input_ids=ids, attention_mask=mask, labels=labels, position_ids=(mask.cumsum(1) - 1).clamp(min=0))
    torch.testing.assert_close(out.loss, ref.loss, atol=TOL, rtol=0)


def test_refuses_padding_inside_a_row() -> None:
    model = build_family("llama")
    seg = torch.zeros(2, 5, dtype=torch.long)
    mask = torch.tensor([[1, 1, 0, 1, 1], [1, 1, 1, 1, 1]])
    with pytest.raises(ValueError, match=r"left or right padding.*rows \[0\]"):
        apply_policy(model, ReductionPolicy.dense(LAYERS))(
            torch.zeros_like(seg), segments=seg, attention_mask=mask, task="understanding"
        )

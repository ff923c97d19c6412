"""`searchvlm.train.gradients`: every number equals the one computed by hand from two separate
backward passes (one per task loss) on a fresh copy of the same tiny seeded model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers.models import VOCAB
from searchvlm.data import TaskSplit
from searchvlm.model import apply_policy, build_model
from searchvlm.schema.config import ModelConfig
from searchvlm.schema.policy import ReductionPolicy, Segment, Sharing
from searchvlm.schema.policy.presets import preset
from searchvlm.train.gradients import GROUPS, measure

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
LAYERS = 4
WEIGHTS = {"understanding": 0.5, "generation": 1.0}
S, INS, IMG, OUT = (int(s) for s in (Segment.SYSTEM, Segment.INSTRUCTION, Segment.IMAGE, Segment.OUTPUT))
LAYOUTS = {  # (segment, length) runs; understanding predicts its OUTPUT tokens, generation its image
    "understanding": [(S, 1), (INS, 3), (IMG, 8), (INS, 1), (OUT, 3)],
    "generation": [(S, 1), (INS, 4), (IMG, 8), (S, 1)],
}


def model(policy: ReductionPolicy):
    cfg = ModelConfig(num_layers=LAYERS, hidden_size=32, num_heads=4, num_kv_heads=2, intermediate_size=64, vocab=VOCAB)
    torch.manual_seed(0)
    return apply_policy(build_model(cfg), policy)


def task_batch(task: str, seed: int, n: int = 3) -> TaskSplit:
    seg = torch.cat([torch.full((k,), s, dtype=torch.long) for s, k in LAYOUTS[task]])  # (T,)
    ids = torch.randint(0, VOCAB.size, (n, seg.numel()), generator=torch.Generator().manual_seed(seed))
    target = OUT if task == "understanding" else IMG
    labels = torch.where(seg == target, ids, torch.full_like(ids, -100))
    return TaskSplit(ids, seg.expand(n, -1).clone(), labels, np.zeros((n, 1), dtype=np.int64),
                     np.zeros((n, 8), dtype=np.int64))  # fmt: skip


BATCHES = [{t: task_batch(t, 10 * k + j) for j, t in enumerate(WEIGHTS)} for k in range(3)]


def by_hand(policy: ReductionPolicy, parts) -> dict:
    """Two backward passes per batch on a fresh model; `parts(m, grads_of_task)` names each
    gradient piece's (layer, group); returns key -> [(g_U, g_G) per batch]."""
    m = model(policy)
    m.train()
    seen = _record_linear_rows(m)
    out: dict = {}
    for batch in BATCHES:
        pieces = []
        for task, w in WEIGHTS.items():
            m.zero_grad(set_to_none=True)
            seen.clear()
            b = batch[task]
            (w * m(b.input_ids, segments=b.segments, task=task, labels=b.labels).loss).backward()
            pieces.append(parts(m, seen, b.segments))
        for key in pieces[0]:
            out.setdefault(key, []).append(tuple(torch.cat(p[key]).detach().double() for p in pieces))
    return out


def _record_linear_rows(m) -> dict:
    """Every Linear's input rows and output (gradient kept), by module: a weight's gradient is
    the sum over rows of (output gradient) x (input), so the rows can be split by segment."""
    seen: dict = {}

    def hook(module, args, output):
        output.retain_grad()
        seen.setdefault(module, []).append((args[0], output))

    for layer in m.hf_model.model.layers:
        for lin in (*(getattr(layer.self_attn, f"{n}_proj") for n in "qkv"), *_mlp_linears(layer)):
            lin.register_forward_hook(hook)
    return seen


def _mlp_linears(layer) -> list[torch.nn.Linear]:
    return [layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj]


def _rows_grad(seen: dict, lin, segments: torch.Tensor, image: bool) -> torch.Tensor:
    """The image (or text) rows' part of `lin.weight`'s gradient (dense policy: row = position)."""
    mask = (segments == IMG) == image  # (B, T)
    total = 0
    for x, y in seen[lin]:
        total = total + torch.einsum("bto,bti->oi", y.grad * mask[..., None], x)  # (out, in)
    return total.flatten()


def _dense_parts(m, seen, segments) -> dict:
    parts: dict = {}
    for i, layer in enumerate(m.hf_model.model.layers):
        qkv = [getattr(layer.self_attn, f"{n}_proj") for n in "qkv"]
        mlp = _mlp_linears(layer)
        for group, lins, image in (("qkv_image", qkv, True), ("qkv_text", qkv, False),
                                   ("mlp_image", mlp, True), ("mlp_text", mlp, False)):  # fmt: skip
            parts[(i, group)] = [_rows_grad(seen, lin, segments, image) for lin in lins]
            for lin in lins:  # the two parts add up to the weight's gradient
                whole = _rows_grad(seen, lin, segments, True) + _rows_grad(seen, lin, segments, False)
                torch.testing.assert_close(whole, lin.weight.grad.flatten(), atol=1e-6, rtol=1e-5)
        parts[(i, "attn_out")] = [layer.self_attn.o_proj.weight.grad.flatten()]
        parts[(i, "norms")] = [layer.input_layernorm.weight.grad.flatten(),
                               layer.post_attention_layernorm.weight.grad.flatten()]  # fmt: skip
    hf = m.hf_model
    parts[(None, "outside")] = [p.grad.flatten() for p in (hf.model.embed_tokens.weight, hf.model.norm.weight,
                                                           hf.lm_head.weight)]  # fmt: skip
    parts[(None, "overall")] = [p.grad.flatten() for p in m.parameters()]
    return parts


def _split_parts(m, seen, segments) -> dict:
    """A policy whose q/k/v and MLP are split per task: every group is whole parameters."""
    grad = lambda module: [p.grad.flatten() if p.grad is not None else torch.zeros(p.numel())  # noqa: E731
                           for p in module.parameters()]  # fmt: skip
    parts: dict = {}
    for i, layer in enumerate(m.hf_model.model.layers):
        split = m.splits[str(i)]
        parts[(i, "qkv_image")] = grad(split.qkv)
        parts[(i, "qkv_text")] = [g for n in "qkv" for g in grad(getattr(layer.self_attn, f"{n}_proj"))]
        parts[(i, "attn_out")] = grad(layer.self_attn.o_proj)
        parts[(i, "mlp_image")] = grad(split.mlp)
        parts[(i, "mlp_text")] = grad(layer.mlp)
        parts[(i, "norms")] = grad(layer.input_layernorm) + grad(layer.post_attention_layernorm)
        if m.routers:
            parts[(i, "router")] = [g for r in m.routers.values() for g in grad(r[i])]
    hf = m.hf_model
    parts[(None, "outside")] = grad(hf.model.embed_tokens) + grad(hf.model.norm) + grad(hf.lm_head)
    parts[(None, "overall")] = grad(m)
    return parts


def expected(per_batch: list) -> tuple:
    """(cosine, und_share, und_norm, gen_norm) means over the batches, by hand."""
    cos = [float(u @ g / (u.norm() * g.norm())) for u, g in per_batch if u.norm() > 0 and g.norm() > 0]
    share = [float(u.norm() / (u.norm() + g.norm())) for u, g in per_batch if u.norm() + g.norm() > 0]
    mean = lambda v: sum(v) / len(v) if v else None  # noqa: E731
    return (mean(cos), mean(share), mean([float(u.norm()) for u, _ in per_batch]),
            mean([float(g.norm()) for _, g in per_batch]))  # fmt: skip


def check(policy: ReductionPolicy, hand: dict) -> None:
    got = measure(model(policy), BATCHES, WEIGHTS)
    assert got.batches == len(BATCHES) and len(got.layers) == LAYERS
    assert all(list(layer) == list(GROUPS) for layer in got.layers)
    for key, per_batch in hand.items():
        layer, group = key
        stats = getattr(got, group) if layer is None else got.layers[layer][group]
        want = expected(per_batch)
        found = (stats.cosine, stats.und_share, stats.und_norm, stats.gen_norm)
        for name, w, f in zip(("cosine", "und_share", "und_norm", "gen_norm"), want, found):
            assert (w is None) == (f is None), (key, name, w, f)
            if w is not None:
                assert f == pytest.approx(w, rel=1e-4, abs=1e-5), (key, name)
        assert stats.size == per_batch[0][0].numel(), key


def test_dense_groups_equal_two_backward_passes_split_by_rows_by_hand() -> None:
    """Shared weights: the image and text rows' parts of each q/k/v and MLP weight's gradient,
    from every Linear's recorded rows, equal diagnose's image-copy / original split."""
    policy = ReductionPolicy.dense(LAYERS)
    hand = by_hand(policy, _dense_parts)
    check(policy, hand)
    assert hand[(0, "qkv_image")][0][0].norm() > 0 and hand[(0, "qkv_text")][0][0].norm() > 0


@pytest.mark.parametrize("name", ["himix_hmgen_partial", "pmod"])
def test_split_policy_groups_equal_their_parameters_gradients(name: str) -> None:
    """q/k/v and MLP split per task (HiMix query_drop + HMGen skip; p-MoD routers): every
    group is whole parameters of the model, compared one by one."""
    base = preset(name, LAYERS)
    policy = base.model_copy(update={"sharing": Sharing(qkv="task_image", mlp="task")})
    check(policy, by_hand(policy, _split_parts))


def test_per_task_copies_never_share_a_gradient() -> None:
    """A weight each task has its own copy of: the two gradients are orthogonal (cosine 0)."""
    policy = preset("himix_hmgen_partial", LAYERS)  # image q/k/v per task
    got = measure(model(policy), BATCHES, WEIGHTS)
    reached = [layer["qkv_image"] for layer in got.layers if layer["qkv_image"].cosine is not None]
    assert reached and all(s.cosine == 0.0 for s in reached)


@pytest.mark.parametrize("name", ["fastv", "himix_hmgen"])
def test_whole_model_equals_the_plain_models_gradient(name: str) -> None:
    """Under FastV (drop, every weight shared) and HiMix + HMGen share all (query-drop, skip,
    HMGen's image/text q/k/v split in the full layers), `overall` (the measurement's image
    copies added back) is the plain model's whole gradient; each group's size counts its weights."""
    policy = preset(name, LAYERS)

    def whole(m, seen, segments):
        return {(None, "overall"): [p.grad.flatten() for p in m.parameters() if p.grad is not None]}

    m = model(policy)
    got = measure(m, BATCHES, WEIGHTS)
    want = expected(by_hand(policy, whole)[(None, "overall")])
    assert (got.overall.cosine, got.overall.und_share) == pytest.approx(want[:2], rel=1e-4)
    assert got.overall.size == sum(p.numel() for p in m.parameters())
    d, kv, mlp = 32, 16, 3 * 32 * 64
    assert got.layers[0]["qkv_image"].size == got.layers[0]["qkv_text"].size == d * d + 2 * d * kv
    assert got.layers[0]["mlp_image"].size == mlp and got.layers[0]["router"].size == 0
    assert not math.isnan(got.outside.und_norm)

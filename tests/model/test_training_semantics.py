"""Training semantics of the reduced forward: HF dropout in train mode, gradient
checkpointing (same gradients, fewer saved activations), extra parameters that follow the
model's dtype / device and survive a state_dict round trip, bf16 on the CPU."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from helpers.families import LAYERS as FAMILY_LAYERS
from helpers.families import build_family, family_batch
from helpers.models import LAYERS, Batch, PolicyFactory
from searchvlm.model import apply_policy, build_model
from searchvlm.schema.config import ModelConfig
from searchvlm.schema.policy import ReductionPolicy, Segment, Sharing

# ------------------------------------------------------------------ dropout


def _with_dropout(family: str, p: float) -> nn.Module:
    """A tiny family model with dropout p wherever HF applies it (attention probabilities and
    the layer's residual dropout modules), running HF's eager attention."""
    model = build_family(family)
    for layer in apply_policy(model, ReductionPolicy.dense(FAMILY_LAYERS)).decoder.layers:
        layer.self_attn.attention_dropout = p
        for child in layer.children():
            if isinstance(child, nn.Dropout):
                child.p = p
    model.set_attn_implementation("eager")
    return model


@pytest.mark.parametrize("family", ["emu3", "phi3", "llama"])
def test_dropout_equals_hf_under_the_same_rng_state(family: str) -> None:
    """Train mode, eager kernel: the reduced dense forward draws the same dropout masks at the
    same places as HF's forward (attention probabilities; Emu3 / Phi3 residual dropout)."""
    model = _with_dropout(family, 0.3).train()
    ids, seg = family_batch(model, "generation")
    reduced = apply_policy(model, ReductionPolicy.dense(FAMILY_LAYERS), attention="eager").train()
    torch.manual_seed(7)
    ref = model(input_ids=ids).logits
    torch.manual_seed(7)
    out = reduced(ids, segments=seg, task="generation").logits
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    torch.manual_seed(8)
    other = reduced(ids, segments=seg, task="generation").logits
    assert (other - ref).abs().max() > 1e-3  # the masks are live: another draw, other logits


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_dropout_is_off_in_eval_mode(attention: str) -> None:
    model = _with_dropout("emu3", 0.3).eval()
    ids, seg = family_batch(model, "understanding")
    reduced = apply_policy(model, ReductionPolicy.dense(FAMILY_LAYERS), attention=attention).eval()
    with torch.no_grad():
        ref = model(input_ids=ids).logits
        out = reduced(ids, segments=seg, task="understanding").logits
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    reduced.train()
    torch.manual_seed(0)
    with torch.no_grad():
        train = reduced(ids, segments=seg, task="understanding").logits
    assert (train - ref).abs().max() > 1e-3  # SDPA's dropout_p is live in train mode too


# ------------------------------------------------------------------ gradient checkpointing


def _policy(make_policy: PolicyFactory) -> ReductionPolicy:
    """Every mode and a random selector (whose generator the recomputation must rewind)."""
    return make_policy(
        und=([1.0, 0.5, 0.5, 0.25], "drop", "attention"),
        gen=([1.0, 0.5, 0.5, 0.5], "skip", "random"),
        sharing=Sharing(qkv="task_image", mlp="modality"),
    )


def _step(reduced: nn.Module, und: Batch, gen: Batch) -> torch.Tensor:
    torch.manual_seed(3)  # dropout masks
    u = reduced(und.ids, segments=und.segments, task="understanding", labels=und.labels).loss
    g = reduced(gen.ids, segments=gen.segments, task="generation", labels=gen.labels).loss
    return u + g


def _saved_bytes(fn: Callable[[], torch.Tensor], params: list[nn.Parameter]) -> tuple[torch.Tensor, int]:
    """Run fn; bytes of the distinct tensor storages autograd saved for the backward,
    parameters excluded (what activation checkpointing trades for recomputation)."""
    weights = {p.untyped_storage().data_ptr() for p in params}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def _grads(reduced: nn.Module, und: Batch, gen: Batch) -> tuple[dict[str, torch.Tensor], int]:
    reduced.zero_grad(set_to_none=True)
    reduced._generator.manual_seed(11)
    loss, saved = _saved_bytes(lambda: _step(reduced, und, gen), list(reduced.parameters()))
    loss.backward()
    return {n: p.grad.clone() for n, p in reduced.named_parameters() if p.grad is not None}, saved


@pytest.mark.parametrize("switch", ["wrapper", "hf"])
def test_gradient_checkpointing_same_grads_less_memory(
    model: nn.Module, und_batch: Batch, gen_batch: Batch, make_policy: PolicyFactory, switch: str
) -> None:
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = 0.2  # the recomputation must redraw the same masks
    reduced = apply_policy(model, _policy(make_policy), attention="eager").train()
    plain, plain_bytes = _grads(reduced, und_batch, gen_batch)
    if switch == "wrapper":
        reduced.gradient_checkpointing_enable()
    else:
        model.activation_checkpointing_enable()
    ckpt, ckpt_bytes = _grads(reduced, und_batch, gen_batch)
    assert plain.keys() == ckpt.keys() and len(plain) > 40
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)
    assert ckpt_bytes < 0.3 * plain_bytes, (ckpt_bytes, plain_bytes)


def test_checkpointing_saves_as_much_as_hf(model: nn.Module, gen_batch: Batch) -> None:
    """Dense: the activation memory the reduced forward keeps with checkpointing drops by at
    least the factor HF's own checkpointing achieves on the same model and batch."""
    model.set_attn_implementation("eager")
    model.train()
    reduced = apply_policy(model, ReductionPolicy.dense(LAYERS), attention="eager").train()
    params = list(model.parameters())

    def hf() -> torch.Tensor:
        return model(input_ids=gen_batch.ids, labels=gen_batch.labels).loss

    def ours() -> torch.Tensor:
        return reduced(gen_batch.ids, segments=gen_batch.segments, task="generation", labels=gen_batch.labels).loss

    hf_plain, ours_plain = _saved_bytes(hf, params)[1], _saved_bytes(ours, params)[1]
    model.activation_checkpointing_enable()
    hf_ckpt, ours_ckpt = _saved_bytes(hf, params)[1], _saved_bytes(ours, params)[1]
    assert ours_ckpt / ours_plain <= hf_ckpt / hf_plain + 0.05, (ours_ckpt, ours_plain, hf_ckpt, hf_plain)


# ------------------------------------------------------------------ extra parameters


def _extras_policy(make_policy: PolicyFactory) -> ReductionPolicy:
    return make_policy(
        und=([1.0, 0.5, 0.5, 0.5], "skip", "router"),
        gen=([1.0, 0.5, 0.5, 0.5], "skip", "router"),
        sharing=Sharing(qkv="task_image", mlp="task"),
    )


def test_extra_parameters_follow_dtype_and_device(cfg: ModelConfig, make_policy: PolicyFactory) -> None:
    torch.manual_seed(0)
    hf = build_model(cfg).to(torch.bfloat16)
    reduced = apply_policy(hf, _extras_policy(make_policy))
    extras = [p for n, p in reduced.named_parameters() if n.startswith(("routers.", "splits."))]
    assert extras and {p.dtype for p in extras} == {torch.bfloat16}
    assert {p.dtype for p in reduced.to(torch.float64).parameters()} == {torch.float64}
    with torch.device("meta"):
        on_meta = build_model(cfg)
    assert {p.device.type for p in apply_policy(on_meta, _extras_policy(make_policy)).parameters()} == {"meta"}


def test_state_dict_round_trip_reproduces_logits(
    cfg: ModelConfig, make_policy: PolicyFactory, und_batch: Batch, gen_batch: Batch
) -> None:
    torch.manual_seed(0)
    reduced = apply_policy(build_model(cfg), _extras_policy(make_policy))
    opt = torch.optim.SGD(reduced.parameters(), lr=0.5)
    for _ in range(2):  # move routers and split copies away from their init
        opt.zero_grad()
        _step(reduced, und_batch, gen_batch).backward()
        opt.step()
    torch.manual_seed(1)
    fresh = apply_policy(build_model(cfg), _extras_policy(make_policy))
    fresh.load_state_dict(reduced.state_dict())
    reduced.eval(), fresh.eval()
    with torch.no_grad():
        for task, b in (("understanding", und_batch), ("generation", gen_batch)):
            a = reduced(b.ids, segments=b.segments, task=task).logits
            assert torch.equal(fresh(b.ids, segments=b.segments, task=task).logits, a)
    assert any(k.startswith("routers.") for k in reduced.state_dict())
    assert any(k.startswith("splits.") for k in reduced.state_dict())


# ------------------------------------------------------------------ bf16


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_bf16_forward_and_backward_on_cpu(
    cfg: ModelConfig, make_policy: PolicyFactory, und_batch: Batch, gen_batch: Batch, attention: str
) -> None:
    torch.manual_seed(0)
    policy = make_policy(
        und=([1.0, 0.5, 0.5, 0.25], "drop", "attention"),
        gen=([0.5, 0.5, 0.5, 0.5], "skip", "router"),
        sharing=Sharing(qkv="task_image", mlp="task"),
    )
    reduced = apply_policy(build_model(cfg).to(torch.bfloat16), policy, attention=attention).train()
    loss = _step(reduced, und_batch, gen_batch)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in reduced.named_parameters() if p.grad is None]
    assert not missing, missing
    for name, p in reduced.named_parameters():
        assert p.grad.dtype == torch.bfloat16 and torch.isfinite(p.grad).all(), name
    assert int((und_batch.segments == Segment.IMAGE).sum()) > 0

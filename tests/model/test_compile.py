"""`torch.compile` on every preset: dynamo (backend "eager": graph capture without inductor's
slow code generation) traces the reduced forward, and the compiled logits equal the
uncompiled ones; training (loss, backward) compiles too.

Cheap by design: a 2-layer model (presets scale with depth; the HMGen presets, which need a
shallow layer between full first and last layers, on 3). fastv and himix (the presets
dynamo used to fail on) are traced with dynamic shapes (`dynamic=True`, symbolic sizes: 20-50 s
each on this CPU), every other preset with static shapes, as `torch.compile` first compiles
(2-4 s each)."""

from __future__ import annotations

import pytest
import torch

from helpers.models import Batch
from searchvlm.model import apply_policy, build_model
from searchvlm.schema.config import ModelConfig
from searchvlm.schema.policy import PRESETS, preset

pytestmark = pytest.mark.compile

QUICK = ("fastv", "himix")
DEPTH = 2


def _depth(name: str) -> int:
    """DEPTH, or 3 for the presets that refuse 2 layers (HMGen)."""
    try:
        preset(name, DEPTH)
    except ValueError:
        return DEPTH + 1
    return DEPTH


def _shallow(cfg: ModelConfig, layers: int = DEPTH) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(cfg.model_copy(update={"num_layers": layers}))


def _compiled(model: torch.nn.Module, name: str, dynamic: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch._dynamo.reset()  # a fresh cache: no silent fallback to eager after too many recompiles
    reduced = apply_policy(model, preset(name, model.config.num_hidden_layers))
    return reduced, torch.compile(reduced, backend="eager", dynamic=dynamic)


@pytest.mark.parametrize("name", PRESETS)
def test_compiled_logits_equal(name: str, cfg: ModelConfig, und_batch: Batch, gen_batch: Batch) -> None:
    reduced, compiled = _compiled(_shallow(cfg, _depth(name)), name, dynamic=name in QUICK)
    reduced.eval()
    with torch.no_grad():
        for task, b in (("understanding", und_batch), ("generation", gen_batch)):
            ref = reduced(b.ids, segments=b.segments, task=task).logits
            torch.testing.assert_close(compiled(b.ids, segments=b.segments, task=task).logits, ref, atol=1e-6, rtol=0)


def test_compiled_training_step(cfg: ModelConfig, und_batch: Batch) -> None:
    reduced, compiled = _compiled(_shallow(cfg), "fastv", dynamic=False)  # fastv's dynamic trace: above
    reduced.train()
    ref = reduced(und_batch.ids, segments=und_batch.segments, task="understanding", labels=und_batch.labels).loss
    ref_grads = torch.autograd.grad(ref, list(reduced.parameters()), allow_unused=True)
    loss = compiled(und_batch.ids, segments=und_batch.segments, task="understanding", labels=und_batch.labels).loss
    grads = torch.autograd.grad(loss, list(reduced.parameters()), allow_unused=True)
    torch.testing.assert_close(loss, ref, atol=1e-6, rtol=0)
    for a, b in zip(grads, ref_grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)

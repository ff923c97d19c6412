"""Parameter pathways: which weights each task's loss reaches under shared / modality / per-task splits."""

from __future__ import annotations

import pytest
import torch

from helpers.models import LAYERS, Batch, PolicyFactory
from searchvlm.model import apply_policy
from searchvlm.schema.policy import Sharing


def _loss(reduced, batch: Batch, task: str) -> torch.Tensor:
    return reduced(batch.ids, segments=batch.segments, task=task, labels=batch.labels).loss


def _grad_norm(params) -> float:
    return sum(0.0 if p.grad is None else p.grad.abs().sum().item() for p in params)


def _backward(reduced, batch: Batch, task: str) -> None:
    reduced.zero_grad(set_to_none=True)
    _loss(reduced, batch, task).backward()


@pytest.fixture
def batches(und_batch: Batch, gen_batch: Batch) -> dict[str, Batch]:
    return {"understanding": und_batch, "generation": gen_batch}


@pytest.mark.parametrize("kind", ["qkv", "mlp"])
def test_per_task_split_isolates_tasks(model, batches, make_policy: PolicyFactory, kind: str) -> None:
    sharing = Sharing(qkv="task_image") if kind == "qkv" else Sharing(mlp="task")
    reduced = apply_policy(model, make_policy(sharing=sharing))
    split = reduced.splits["2"].qkv if kind == "qkv" else reduced.splits["2"].mlp
    assert set(split) == {"understanding", "generation"}
    for task, other in (("understanding", "generation"), ("generation", "understanding")):
        _backward(reduced, batches[task], task)
        assert _grad_norm(split[task].parameters()) > 0
        assert _grad_norm(split[other].parameters()) == 0.0  # exactly zero
        assert _grad_norm(model.model.layers[2].self_attn.q_proj.parameters()) > 0  # text path


@pytest.mark.parametrize("kind", ["qkv", "mlp"])
def test_modality_split_is_shared_by_tasks(model, batches, make_policy: PolicyFactory, kind: str) -> None:
    reduced = apply_policy(model, make_policy(sharing=Sharing(**{kind: "modality"})))
    split = reduced.splits["1"].qkv if kind == "qkv" else reduced.splits["1"].mlp
    assert set(split) == {"image"}
    for task in ("understanding", "generation"):
        _backward(reduced, batches[task], task)
        assert _grad_norm(split["image"].parameters()) > 0


def test_shared_weights_move_under_both_tasks(model, batches, make_policy: PolicyFactory) -> None:
    reduced = apply_policy(model, make_policy(und=([1.0, 0.0, 0.0, 0.0], "query_drop", "stride")))
    assert len(reduced.splits) == 0
    assert sum(p.numel() for p in reduced.parameters()) == sum(p.numel() for p in model.parameters())
    q = model.model.layers[3].self_attn.q_proj.weight
    for task in ("understanding", "generation"):
        _backward(reduced, batches[task], task)
        assert q.grad is not None and q.grad.abs().sum() > 0
    before = q.detach().clone()
    torch.optim.AdamW(reduced.parameters(), lr=1e-2).step()
    assert not torch.equal(before, q)


def test_scope_limits_split_layers(model, make_policy: PolicyFactory) -> None:
    reduced = apply_policy(model, make_policy(sharing=Sharing(qkv="modality", scope=[1, 3])))
    assert sorted(reduced.splits) == ["1", "3"]
    copy = reduced.splits["1"].qkv["image"]["q"]
    assert torch.equal(copy.weight, model.model.layers[1].self_attn.q_proj.weight)
    assert copy.weight.data_ptr() != model.model.layers[1].self_attn.q_proj.weight.data_ptr()
    n_split = sum(p.numel() for p in reduced.splits.parameters())
    assert n_split == 2 * (32 * 32 + 2 * 32 * 16)  # two layers of q (d x d) and k, v (d x d_kv)
    assert sum(p.numel() for p in reduced.parameters()) == n_split + sum(p.numel() for p in model.parameters())
    assert reduced.hf_model is model
    assert len(model.model.layers) == LAYERS


def test_study_presets_share_all_and_share_partial(model, batches) -> None:
    """The study's "share all" keeps HMGen's image q/k/v (full layers 0, 2, 3 of 4) and both
    tasks' losses train it; "share partial" gives each task its own copy in the same layers.
    HMGen's shallow layer 1 has no split (understanding's image keys/values use the shared weights)."""
    from searchvlm.schema.policy.presets import preset

    share_all = apply_policy(model, preset("himix_hmgen", LAYERS))
    assert sorted(share_all.splits) == ["0", "2", "3"] and set(share_all.splits["2"].qkv) == {"image"}
    for task in ("understanding", "generation"):
        _backward(share_all, batches[task], task)
        assert _grad_norm(share_all.splits["2"].qkv["image"].parameters()) > 0
    partial = apply_policy(model, preset("himix_hmgen_partial", LAYERS))
    assert sorted(partial.splits) == ["0", "2", "3"]
    _backward(partial, batches["understanding"], "understanding")
    split = partial.splits["2"].qkv
    assert _grad_norm(split["understanding"].parameters()) > 0 and _grad_norm(split["generation"].parameters()) == 0.0

"""Data parallel over the reduced model on the CPU (gloo, world size 2, 127.0.0.1): FSDP2 per
decoder layer (`fully_shard` on each layer, before or after `apply_policy`, then on the
wrapper) and DDP give the one-process loss and gradients of a joint step under a policy
that reduces in both tasks; other sharded modules inside the HF model are refused.

Each rank takes half of the batch; every row has the same number of labelled targets, so
the mean of the ranks' losses is the whole batch's loss and the ranks' averaged gradient
(FSDP's reduce-scatter, DDP's all-reduce) is its gradient. Tolerance: 1e-6 on the loss and
1e-5 absolute + 1e-4 relative on gradients (float32 sums in another order)."""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from helpers.models import VOCAB
from helpers.services import free_port
from searchvlm.model import apply_policy, build_model
from searchvlm.schema.config import ModelConfig
from searchvlm.schema.policy import TASKS, Sharing, preset

pytestmark = [
    pytest.mark.skipif(not dist.is_available(), reason="torch built without distributed"),
    pytest.mark.multiprocess,  # gloo ranks
]

WORLD, ROWS = 2, 4
CFG = ModelConfig(num_layers=4, hidden_size=32, num_heads=4, num_kv_heads=2, intermediate_size=64, vocab=VOCAB)
# understanding: query_drop of every image token after layer 0; generation: layer 1 skips them;
# image q/k/v projections split per task in the full layers 0, 2, 3 (root-owned copies used inside
# the sharded layers)
POLICY = preset("himix_hmgen_partial", 4)
LAYOUTS = {  # segment codes: system 0, instruction 1, image 2, output 3
    "understanding": [0, 1, 2, 2, 2, 2, 2, 2, 1, 3, 3],
    "generation": [0, 1, 1, 3, 2, 2, 2, 2, 2, 2, 2],
}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(CFG)


def _batch(task: str, rows: slice = slice(None)) -> dict[str, torch.Tensor]:
    seg = torch.tensor([LAYOUTS[task]] * ROWS)  # (B, T)
    ids = torch.randint(0, VOCAB.size, seg.shape, generator=torch.Generator().manual_seed(len(task)))
    target = 3 if task == "understanding" else 2  # OUTPUT tokens, or the image being generated
    return {"input_ids": ids[rows], "segments": seg[rows], "labels": ids.masked_fill(seg != target, -100)[rows]}


def _joint_loss(model: torch.nn.Module, rows: slice = slice(None)) -> torch.Tensor:
    return sum(model(**_batch(t, rows), task=t).loss for t in TASKS)


def _check(name: str, model: torch.nn.Module, ref: dict[str, torch.Tensor], ref_loss: torch.Tensor,
           rank: int) -> None:  # fmt: skip
    """Two steps' loss (mean over ranks) and gradients (full tensors) against one process's."""
    rows = slice(rank * ROWS // WORLD, (rank + 1) * ROWS // WORLD)
    for _ in range(2):  # the second step: parameters resharded and gathered again
        model.zero_grad(set_to_none=True)
        loss = _joint_loss(model, rows)
        loss.backward()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        torch.testing.assert_close(mean / WORLD, ref_loss, atol=1e-6, rtol=0, msg=f"{name} loss")
        for key, p in model.named_parameters():
            g = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
            torch.testing.assert_close(g, ref[key.removeprefix("module.")], atol=1e-5, rtol=1e-4,
                                       msg=f"{name} {key}")  # fmt: skip


def _worker(rank: int, port: int) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60)
    )
    try:
        mesh = init_device_mesh("cpu", (WORLD,))
        plain = apply_policy(_model(), POLICY)
        ref_loss = _joint_loss(plain)
        ref_loss.backward()
        ref_loss = ref_loss.detach()
        ref = {k: p.grad for k, p in plain.named_parameters()}

        after = apply_policy(_model(), POLICY)  # the training stacks' recipe: layers, then the root
        for layer in after.decoder.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(after, mesh=mesh)
        _check("fsdp", after, ref, ref_loss, rank)
        local = sum(p.to_local().numel() for p in after.parameters())
        assert local <= sum(p.numel() for p in plain.parameters()) // WORLD + 64, local  # one shard per rank

        hf = _model()
        for layer in hf.model.layers:
            fully_shard(layer, mesh=mesh)
        with pytest.raises(TypeError, match="copies layer weights.*apply the policy first"):
            apply_policy(hf, POLICY)  # split copies of sharded weights
        shared = POLICY.model_copy(update={"sharing": Sharing()})  # no split copies: layers may be sharded first
        before = fully_shard(apply_policy(hf, shared), mesh=mesh)
        plain = apply_policy(_model(), shared)
        shared_loss = _joint_loss(plain)
        shared_loss.backward()
        _check("fsdp layers before apply_policy", before, {k: p.grad for k, p in plain.named_parameters()},
               shared_loss.detach(), rank)  # fmt: skip

        _check("ddp", DistributedDataParallel(apply_policy(_model(), POLICY)), ref, ref_loss, rank)

        attn = _model()
        fully_shard(attn.model.layers[0].self_attn, mesh=mesh)
        with pytest.raises(TypeError, match=r"module 'model.layers.0.self_attn': FSDP2 sharding"):
            apply_policy(attn, POLICY)
        late = apply_policy(_model(), POLICY)
        fully_shard(late.hf_model, mesh=mesh)  # the HF model's own forward is never called
        with pytest.raises(TypeError, match=r"module '<root>'.*for layer in reduced.decoder.layers"):
            late(**_batch("understanding"), task="understanding")
    except BaseException:
        dist.destroy_process_group()
        raise  # spawn's wrapper writes the traceback to its error file; the parent raises it
    dist.destroy_process_group()
    # Skip interpreter finalisation: gloo's worker threads can still hold AsyncWork tensors, and
    # freeing them while the interpreter is torn down aborts the process (SIGABRT, "terminate
    # called without an active exception"; pytorch/pytorch#179291) after every check has passed.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def test_fsdp2_per_layer_and_ddp_match_one_process() -> None:
    ctx = mp.start_processes(_worker, args=(free_port(),), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + 180
    try:
        while not ctx.join(timeout=5):
            assert time.monotonic() < deadline, "FSDP workers did not finish in 180 s"
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()

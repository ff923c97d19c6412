"""FSDP2 on the CPU (gloo, world size 2, 127.0.0.1): `fully_shard` on each decoder layer is
refused with a clear error (the reduced loop never calls a layer's forward, where FSDP
gathers its parameters), whether it comes before or after `apply_policy`; sharding the
wrapper as one unit works and gives the unsharded loss and gradients."""

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
from searchvlm.config import ModelConfig
from searchvlm.model import apply_policy, build_model
from searchvlm.policy import preset

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch built without distributed")

WORLD = 2
CFG = ModelConfig(num_layers=2, hidden_size=32, num_heads=4, num_kv_heads=2, intermediate_size=64, vocab=VOCAB)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(CFG)


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    seg = torch.tensor([[0, 1, 2, 2, 2, 2, 2, 2, 1, 3, 3]] * 2)  # (B, T)
    ids = torch.randint(0, 40, seg.shape, generator=torch.Generator().manual_seed(1))
    return ids, seg, ids.masked_fill(seg != 3, -100)


def _worker(rank: int, port: int) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60)
    )
    try:
        mesh = init_device_mesh("cpu", (WORLD,))
        policy = preset("fastv", 2)
        ids, seg, labels = _batch()

        layered = _model()
        for layer in layered.model.layers:
            fully_shard(layer, mesh=mesh)
        with pytest.raises(TypeError, match=r"module 'model.layers.0': FSDP2 sharding \(fully_shard\)"):
            apply_policy(layered, policy)

        late = apply_policy(_model(), policy)
        for layer in late.hf_model.model.layers:
            fully_shard(layer, mesh=mesh)
        with pytest.raises(TypeError, match=r"fully_shard\(reduced\)"):
            late(ids, segments=seg, task="understanding", labels=labels)

        plain = apply_policy(_model(), policy)
        ref = plain(ids, segments=seg, task="understanding", labels=labels).loss
        ref.backward()
        whole = fully_shard(apply_policy(_model(), policy), mesh=mesh)
        loss = whole(ids, segments=seg, task="understanding", labels=labels).loss
        loss.backward()
        torch.testing.assert_close(loss, ref, atol=1e-6, rtol=0)
        grads = dict(whole.named_parameters())
        for name, p in plain.named_parameters():
            # each rank got the same batch: the reduce-scattered gradient is the plain one
            torch.testing.assert_close(grads[name].grad.full_tensor(), p.grad, atol=1e-5, rtol=1e-4, msg=name)
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


def test_fsdp2_per_layer_refused_whole_wrapper_works() -> None:
    ctx = mp.start_processes(_worker, args=(free_port(),), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + 180
    try:
        while not ctx.join(timeout=5):
            assert time.monotonic() < deadline, "FSDP workers did not finish in 180 s"
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()

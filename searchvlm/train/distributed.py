"""Trials larger than one process: data parallel over `training.processes` ranks under torch.distributed.

L3 module (torch only). `run_ranks` starts one process per rank (spawn; on CUDA rank r
trains on cuda:r under NCCL, on the CPU under gloo), calls the same function in each and
returns rank 0's answer. A rank that fails ends the call at once: its failure is the
answer (or a `RankFailed`), the other ranks are stopped, nothing waits on a collective
that will never complete; a rank whose parent is gone exits within a second.

Inside the ranks, a training `Run` asks `data_parallel` for its `Ranks` and trains through
them. Every rank draws the same global batch and takes its share of its rows (`share`); its
mean loss is weighted by its share of the batch's labelled targets (`loss_scale`), so the
ranks' averaged gradient is the whole batch's: the one-process step within float
tolerance. `ddp`: each rank holds the whole model, gradients are averaged in one all-reduce
after the backward (DDP's arithmetic, written out: `DistributedDataParallel`'s reducer
refuses a step whose model leaves parameters without a gradient, which a single-task run of
a policy with per-task weights does). `fsdp`: FSDP2 `fully_shard` per decoder layer and on
the wrapper (reduce-scatter in the backward). Evaluation runs on every rank over the whole
split (same model, same data: one process's numbers). Rank 0 alone reports, and alone reads
and writes caches and files (`on_rank0`, `is_writer`). Not exact across ranks: the `random`
selector and dropout draw their own numbers per rank. The ranks are spawned: a script that
calls `run_trial` with processes > 1 keeps its own work under `if __name__ == "__main__":`
(the `searchvlm` command and `python -m searchvlm` do).
"""

from __future__ import annotations

import multiprocessing.connection as mpc
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

T = TypeVar("T")
# a collective may wait this long for the other ranks (rank 0 can hold them while it waits
# for another trial's baseline under the cache's lock); a rank that fails is seen at once
# by `run_ranks`, never through this timeout
_TIMEOUT = timedelta(hours=4)
_STOP_GRACE_S = 5.0


class RankFailed(RuntimeError):
    """A rank raised outside the function's own error handling, or exited before answering."""


# --------------------------------------------------------------------------- inside the ranks


def inside() -> bool:
    """True in a rank of a data-parallel run (a process group of more than one process)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def spawns(processes: int) -> bool:
    """True where a trial must start its ranks: more than one process, and not inside them yet."""
    return processes > 1 and not inside()


def is_writer() -> bool:
    """True in the process that writes files: rank 0, or a process outside any ranks."""
    return not inside() or dist.get_rank() == 0


def rank_label() -> str:
    """`rank 1: ` inside the ranks (to start an error message with), else ``."""
    return f"rank {dist.get_rank()}: " if inside() else ""


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel run: its rank, the world size, how the model
    is held (`training.shard`) and the device the ranks' mesh is on."""

    rank: int
    size: int
    shard: str
    device: torch.device

    def wrap(self, model: nn.Module) -> nn.Module:
        """fsdp: FSDP2 on each decoder layer, then on the wrapper (the reduced loop runs each
        layer inside its FSDP hooks); ddp: the model as is (`average_grads` syncs it)."""
        if self.shard != "fsdp":
            return model
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(self.device.type, (self.size,))
        for layer in model.decoder.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model

    def share(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch `idx` (B,): contiguous, sizes differing by at most one."""
        return idx.tensor_split(self.size)[self.rank]

    def loss_scale(self, labels: torch.Tensor) -> torch.Tensor:
        """The weight of this rank's mean loss, W * n_r / N, where `labels` (B, T) are the
        global batch's and n_r of its N labelled targets (those the loss averages: labels[:,
        1:]) are this rank's: the ranks' averaged gradient is then the global batch's."""
        per_row = (labels[:, 1:] != -100).sum(dim=1)  # (B,)
        mine = self.share(torch.arange(labels.shape[0], device=labels.device))
        return self.size * per_row[mine].sum() / per_row.sum()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """A scalar averaged over the ranks (of the weighted shares: the global batch's loss)."""
        out = value.clone()
        dist.all_reduce(out)
        return out / self.size

    def average_grads(self, model: nn.Module) -> None:
        """ddp: every gradient averaged over the ranks, in one all-reduce (fsdp's are
        reduce-scattered in the backward). Parameters without a gradient have none on every
        rank (which parameters a step uses depends on the policy and tasks, not the data)."""
        if self.shard != "ddp":
            return
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])  # (sum of numels,)
        dist.all_reduce(flat)
        flat /= self.size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


def data_parallel(processes: int, shard: str, device: torch.device) -> Ranks | None:
    """The `Ranks` a run with `training.processes` trains through, or None in one process
    (also when it runs outside the ranks, as `searchvlm analyze` trains its model)."""
    if processes <= 1 or not inside():
        return None
    if dist.get_world_size() != processes:
        raise RuntimeError(f"training.processes = {processes} inside {dist.get_world_size()} ranks")
    return Ranks(dist.get_rank(), processes, shard, device)


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as whole tensors on every rank (FSDP2's shards all-gathered:
    every rank must call it)."""
    return {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in model.state_dict().items()}


def on_rank0(get: Callable[[Callable[[], T]], T], work: Callable[[], T]) -> T:
    """`get(work)`, where `get` reads a cache or else calls `work` and writes the answer, as
    rank 0 alone does it (the cache's lock and files are rank 0's): whenever rank 0 calls
    `work` (training, collective), every other rank calls it too; all return rank 0's answer."""
    if not inside():
        return get(work)
    if dist.get_rank() == 0:

        def together() -> T:
            _broadcast("work")
            return work()

        answer = get(together)
        _broadcast(("answer", answer))
        return answer
    while (msg := _broadcast(None)) == "work":
        work()
    return msg[1]


def _broadcast(obj: Any) -> Any:
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# --------------------------------------------------------------------------- starting the ranks


def run_ranks(
    processes: int,
    device: torch.device,
    fn: Callable[..., T],
    args: tuple,
    callbacks: dict[str, Callable[..., None] | None] | None = None,
    failed: Callable[[T], bool] = lambda value: False,
) -> T:
    """`fn(*args, **callbacks)` in each of `processes` ranks; rank 0's answer.

    `callbacks` (report, progress; None ones are left out) are called here with what rank 0
    passes them (the other ranks get None). An answer that `failed` is returned at once, the other ranks stopped; a
    rank that raises or exits before it answers is a `RankFailed` (so is fewer GPUs than
    ranks on CUDA). `fn` and `args` are pickled by reference: module-level functions."""
    if device.type == "cuda" and torch.cuda.device_count() < processes:
        raise RankFailed(f"training.processes = {processes} on CUDA needs one GPU per process; "
                         f"this process sees {torch.cuda.device_count()}")  # fmt: skip
    callbacks = {name: call for name, call in (callbacks or {}).items() if call is not None}
    threads = max(1, torch.get_num_threads() // processes)
    ctx = mp.get_context("spawn")
    rendezvous = tempfile.mkdtemp(prefix="searchvlm-ranks-")
    init = f"file://{rendezvous}/store"  # a file store: no port to pick, nothing but this node joins
    pipes = [ctx.Pipe() for _ in range(processes)]  # (parent's end, rank's end)
    procs = []
    job = _Job(processes, str(device), init, threads, fn, args, tuple(callbacks))
    for r, (_, child) in enumerate(pipes):
        procs.append(ctx.Process(target=_rank_main, args=(r, child, job), daemon=True, name=f"searchvlm-rank{r}"))
    conns = [parent for parent, _ in pipes]
    finished = False
    try:
        for p in procs:
            p.start()
        for _, child in pipes:
            child.close()
        answer, finished = _collect(conns, procs, callbacks, failed)
        return answer
    finally:
        _stop(procs, conns, release=finished)
        shutil.rmtree(rendezvous, ignore_errors=True)


def _collect(conns: list, procs: list, callbacks: dict, failed: Callable[[Any], bool]) -> tuple[Any, bool]:
    """Serve rank 0's callbacks and gather every rank's answer: (rank 0's, True), or at the
    first failure (the failed answer, False) or a `RankFailed`."""
    answers: dict[int, Any] = {}
    by_conn = {id(c): r for r, c in enumerate(conns)}
    by_sentinel = {p.sentinel: r for r, p in enumerate(procs)}
    while len(answers) < len(procs):
        waiting = [c for r, c in enumerate(conns) if r not in answers]
        waiting += [p.sentinel for r, p in enumerate(procs) if r not in answers]
        ready = mpc.wait(waiting)
        exits = [by_sentinel[o] for o in ready if isinstance(o, int)]
        # exits first: a rank that died without a word is the cause of the others' errors
        for rank in exits + [by_conn[id(o)] for o in ready if not isinstance(o, int)]:
            if rank in answers:
                continue
            if not conns[rank].poll():  # exited without a word
                raise _exited(rank, procs[rank])
            kind, payload = _receive(conns[rank], rank, procs[rank])
            if kind == "call":
                name, call_args = payload
                callbacks[name](*call_args)
            elif kind == "error":
                raise RankFailed(f"rank {rank}: {payload}")
            elif failed(payload):
                return payload, False
            else:
                answers[rank] = payload
    return answers[0], True


def _receive(conn: Any, rank: int, proc: Any) -> tuple[str, Any]:
    try:
        return conn.recv()
    except EOFError:
        raise _exited(rank, proc) from None


def _exited(rank: int, proc: Any) -> RankFailed:
    proc.join(timeout=_STOP_GRACE_S)  # reaped: its exit code is known
    return RankFailed(f"rank {rank} exited (code {proc.exitcode}) before it finished")


def _stop(procs: list, conns: list, release: bool) -> None:
    """`release`: every rank has answered and waits for this word (so none leaves a
    collective early): let them exit. Then (or at once, after a failure) kill any left."""
    for conn in conns:
        if release:
            try:
                conn.send("exit")
            except (OSError, ValueError):  # that rank is gone
                pass
        conn.close()
    deadline = time.monotonic() + (_STOP_GRACE_S if release else 0.0)
    for p in procs:
        if p.pid is not None:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(timeout=_STOP_GRACE_S)


@dataclass(frozen=True)
class _Job:
    """What every rank of one `run_ranks` call is given: the group's size, device and
    rendezvous (`init`), torch threads per rank, and `fn(*args, **callbacks)` to run."""

    size: int
    device: str
    init: str
    threads: int
    fn: Callable[..., Any]
    args: tuple
    callbacks: tuple[str, ...]


def _rank_main(rank: int, conn: Any, job: _Job) -> None:
    """One rank: join the process group, run the job's function, send its answer, wait to be released."""
    _exit_with_parent(os.getppid())
    torch.set_num_threads(job.threads)
    code = 0
    try:
        dev = torch.device(job.device)
        if dev.type == "cuda":
            torch.cuda.set_device(rank)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", init_method=job.init, rank=rank,
                                world_size=job.size, timeout=_TIMEOUT)  # fmt: skip
        hooks = {name: (_Forward(conn, name) if rank == 0 else None) for name in job.callbacks}
        conn.send(("answer", job.fn(*job.args, **hooks)))
    except BaseException as err:  # noqa: BLE001 - the parent records it; this rank is done
        conn.send(("error", f"{type(err).__name__}: {err}"))
        code = 1
    else:
        try:
            conn.recv()  # released once every rank has answered (or the parent is gone: EOF)
        except EOFError:
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    # no interpreter teardown: gloo's threads can still hold tensors, and freeing them while
    # the interpreter shuts down aborts the process (see tests/model/test_fsdp.py)
    os._exit(code)


@dataclass(frozen=True)
class _Forward:
    """A callback of rank 0, called in the parent: its arguments are sent there."""

    conn: Any
    name: str

    def __call__(self, *args: Any) -> None:
        self.conn.send(("call", (self.name, args)))


def _exit_with_parent(parent: int) -> None:
    """Exit when the parent process is gone (a Ray worker killed with its trial)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="searchvlm-parent-watch").start()


__all__ = ["RankFailed", "Ranks", "data_parallel", "full_state", "inside", "is_writer", "on_rank0", "run_ranks",
           "rank_label", "spawns"]  # fmt: skip

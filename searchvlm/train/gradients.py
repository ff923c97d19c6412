"""Each task's gradient per layer and parameter group, and how the two agree: the study's
"divergent parameter pathways" measured (`searchvlm diagnose`).

L3 module (torch, the model). On fixed batches, one backward pass per task loss (weighted as
training weights it) gives g_U and g_G; per layer and group, their cosine and each task's
share of the group's gradient norm, averaged over the batches (`measure`).

The groups follow what `policy.sharing` can split (`searchvlm.model._sharing`): the q/k/v
and MLP weights by the rows that reach them (image tokens vs text tokens), the attention
output, the norms and the routers. A weight the policy shares serves both kinds of rows; to
tell their parts apart the measured copy of the model gets image copies of its shared q/k/v
and MLP weights (`_instrumented`). The copies equal the originals, so the forward is the
same, and a linear weight's gradient is a sum over its input rows, so the copy's gradient is
exactly the image rows' part and the original's the text rows' part; `overall` adds them back
(the whole model's gradient, as training sees it).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from searchvlm.data import TaskSplit, UnifiedData
from searchvlm.model import ReducedLM
from searchvlm.model._sharing import LayerSplit
from searchvlm.schema.policy import TASKS, Sharing

#: the parameter groups of a layer, in the order of the JSON and the heatmap's columns
GROUPS: tuple[str, ...] = ("qkv_image", "qkv_text", "attn_out", "mlp_image", "mlp_text", "norms", "router")
Key = tuple[int | None, str]  # (layer, group); layer None: outside the layers ("outside" or "overall")
Batches = Sequence[Mapping[str, TaskSplit]]  # per batch, one TaskSplit per task


@dataclass(frozen=True)
class GroupStats:
    """One group's two task gradients, means over the batches: `cosine` (and its standard
    error over them) over the batches where both tasks reach the group, `und_share` =
    |g_U| / (|g_U| + |g_G|) over those where either does (None where none does)."""

    cosine: float | None
    cosine_se: float | None
    und_share: float | None
    und_norm: float
    gen_norm: float
    size: int  # parameters in the group


_EMPTY = GroupStats(None, None, None, 0.0, 0.0, 0)  # a group with no parameter in a layer (router)


@dataclass(frozen=True)
class Measurement:
    """`layers[l][group]` for every layer and group of GROUPS, the parameters outside the
    layers (embeddings, final norm, head) and the whole model, over `batches` batches."""

    layers: list[dict[str, GroupStats]]
    outside: GroupStats
    overall: GroupStats
    batches: int


def fixed_batches(data: UnifiedData, batch_size: int, count: int, seed: int) -> list[dict[str, TaskSplit]]:
    """`count` training batches per task, drawn once without replacement (as far as the split
    allows) by a generator seeded with `seed`: the same batches at every checkpoint."""
    gen = torch.Generator().manual_seed(seed)
    out: list[dict[str, TaskSplit]] = [{} for _ in range(count)]
    for task in TASKS:
        split = data.split("train", task)
        order = torch.randperm(len(split), generator=gen)  # (N,)
        for k, batch in enumerate(out):
            batch[task] = split.batch(order[torch.arange(k * batch_size, (k + 1) * batch_size) % len(split)])
    return out


def measure(model: ReducedLM, batches: Batches, weights: Mapping[str, float]) -> Measurement:
    """Both tasks' gradients on every batch (a copy of `model` in train mode, `weights[task]`
    times each task's loss, as training weights it), per layer and group (module docstring)."""
    m, pairs = _instrumented(model)
    m.train()
    keys = _keys(m)
    params = list(m.parameters())
    per_batch: dict[Key, list[Tensor]] = {}
    for batch in batches:
        grads = [_task_grads(m, batch[t], t, weights.get(t, 1.0), params) for t in TASKS]  # [[(n_p,)]]
        for key, sums in _batch_sums(params, keys, pairs, grads).items():
            per_batch.setdefault(key, []).append(sums)
    sizes: dict[Key, int] = {}
    for p in params:
        sizes[keys[id(p)]] = sizes.get(keys[id(p)], 0) + p.numel()
    sizes[(None, "overall")] = sum(p.numel() for p in params) - sum(c.numel() for c, _ in pairs)
    stats = {key: _stats(sums, sizes[key]) for key, sums in per_batch.items()}
    layers = [{g: stats.get((i, g), _EMPTY) for g in GROUPS} for i in range(len(m.decoder.layers))]
    return Measurement(layers, stats[(None, "outside")], stats[(None, "overall")], len(batches))


def _instrumented(model: ReducedLM) -> tuple[ReducedLM, list[tuple[nn.Parameter, nn.Parameter]]]:
    """A copy of `model` whose every layer has image copies of the q/k/v and MLP weights
    it shares (equal to them, so the forward is the same), and the (copy, original) pairs."""
    m = copy.deepcopy(model)
    dec = m.decoder
    if dec.fused_qkv:
        raise ValueError(f"diagnose: {dec.name} has a fused qkv_proj; its image and text rows cannot be told apart")
    pairs: list[tuple[nn.Parameter, nn.Parameter]] = []
    for i, layer in enumerate(dec.layers):
        split = m.splits[str(i)] if str(i) in m.splits else LayerSplit(layer.self_attn, layer.mlp, Sharing())
        fresh = LayerSplit(layer.self_attn, layer.mlp, Sharing(qkv="modality", mlp="modality"))
        if not split.qkv:
            split.qkv = fresh.qkv
            for name in "qkv":
                pairs += zip(fresh.qkv["image"][name].parameters(), dec.projection(layer.self_attn, name).parameters())
        if not split.mlp:
            split.mlp = fresh.mlp
            pairs += zip(fresh.mlp["image"].parameters(), layer.mlp.parameters())
        m.splits[str(i)] = split
    return m, pairs


def _keys(m: ReducedLM) -> dict[int, Key]:
    """id(parameter) -> (layer, group) for every parameter of an instrumented model."""
    keys: dict[int, Key] = {}

    def put(module: nn.Module, key: Key) -> None:
        keys.update({id(p): key for p in module.parameters() if id(p) not in keys})

    dec = m.decoder
    for i, layer in enumerate(dec.layers):
        split = m.splits[str(i)]
        put(split.qkv, (i, "qkv_image"))
        put(split.mlp, (i, "mlp_image"))
        for name in "qkv":
            put(dec.projection(layer.self_attn, name), (i, "qkv_text"))
        put(layer.self_attn.o_proj, (i, "attn_out"))
        put(layer.mlp, (i, "mlp_text"))
        put(layer, (i, "norms"))  # what is left of the layer: its norms (and q/k norms)
        for routers in m.routers.values():
            put(routers[i], (i, "router"))
    put(m, (None, "outside"))
    return keys


def _task_grads(m: ReducedLM, batch: TaskSplit, task: str, weight: float, params: list[nn.Parameter]) -> list[Tensor]:
    """Each parameter's gradient (flat, zeros where none) of `weight` times the task's loss."""
    m.zero_grad(set_to_none=True)
    out = m(batch.input_ids, segments=batch.segments, task=task, labels=batch.labels)
    (weight * out.loss).backward()
    return [p.grad.detach().flatten().double() if p.grad is not None else p.new_zeros(p.numel()).double()
            for p in params]  # fmt: skip


def _batch_sums(
    params: list[nn.Parameter], keys: dict[int, Key], pairs: list[tuple[nn.Parameter, nn.Parameter]],
    grads: list[list[Tensor]],
) -> dict[Key, Tensor]:  # fmt: skip
    """Per key, (|g_U|², |g_G|², <g_U, g_G>) over its parameters (3,); plus `overall`: every
    original parameter's gradient with its image copy's part added back."""
    out: dict[Key, Tensor] = {}

    def add(key: Key, u: Tensor, g: Tensor) -> None:
        sums = torch.stack([u @ u, g @ g, u @ g])  # (3,)
        out[key] = out[key] + sums if key in out else sums

    index = {id(p): j for j, p in enumerate(params)}
    copy_of = {id(o): index[id(c)] for c, o in pairs}  # original -> its image copy's index
    copies = set(copy_of.values())
    gu, gg = grads
    for j, p in enumerate(params):
        add(keys[id(p)], gu[j], gg[j])
        if j in copies:
            continue
        c = copy_of.get(id(p))
        add((None, "overall"), gu[j] if c is None else gu[j] + gu[c], gg[j] if c is None else gg[j] + gg[c])
    return out


def _stats(per_batch: list[Tensor], size: int) -> GroupStats:
    """Means over the batches of one group's cosine, share and norms from its per-batch
    (|g_U|², |g_G|², <g_U, g_G>) (`GroupStats`)."""
    cosines, shares, norms = [], [], []
    for uu, gg, ug in (t.tolist() for t in per_batch):
        nu, ng = math.sqrt(uu), math.sqrt(gg)
        norms.append((nu, ng))
        if nu + ng > 0:
            shares.append(nu / (nu + ng))
        if nu > 0 and ng > 0:
            cosines.append(ug / (nu * ng))
    return GroupStats(
        cosine=_mean(cosines),
        cosine_se=_se(cosines),
        und_share=_mean(shares),
        und_norm=sum(n for n, _ in norms) / len(norms),
        gen_norm=sum(n for _, n in norms) / len(norms),
        size=size,
    )


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _se(values: list[float]) -> float | None:
    """Standard error of the mean (sample SD / sqrt(n)); None under two values."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


__all__ = ["GROUPS", "GroupStats", "Measurement", "fixed_batches", "measure"]

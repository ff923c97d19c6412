"""The analytic FLOPs count agrees with torch's FlopCounterMode on the real reduced forward + backward."""

from __future__ import annotations

import random

import pytest
from torch.utils.flop_counter import FlopCounterMode

from helpers.models import LAYERS, Batch
from searchvlm.model import apply_policy
from searchvlm.objectives.flops import TaskLayout, count_flops
from searchvlm.schema.policy import TASKS, ReductionPolicy, Sharing, TaskPolicy
from searchvlm.schema.policy.selectors import SELECTORS as DECLARED

SELECTORS = {task: tuple(n for n, s in DECLARED.items() if s.serves(task)) for task in TASKS}  # the causal ones
KEEPS = (0.0, 0.1, 0.25, 0.4, 0.5, 0.75, 0.9, 1.0)


def _task(rng: random.Random, modes: tuple[str, ...], task: str) -> TaskPolicy:
    mode = rng.choice(modes)
    keep = [rng.choice(KEEPS) for _ in range(LAYERS)]
    if mode == "drop":
        keep.sort(reverse=True)
    return TaskPolicy(keep=keep, mode=mode, selector=rng.choice(SELECTORS[task]))


def random_policy(seed: int) -> ReductionPolicy:
    rng = random.Random(seed)
    return ReductionPolicy(
        num_layers=LAYERS,
        understanding=_task(rng, ("query_drop", "skip", "drop"), "understanding"),
        generation=_task(rng, ("query_drop", "skip"), "generation"),
        sharing=Sharing(
            qkv=rng.choice(("shared", "modality", "task_image")), mlp=rng.choice(("shared", "modality", "task"))
        ),
        seed=seed,
    )


def _layout(batch: Batch) -> TaskLayout:
    targets = int((batch.labels[0, 1:] != -100).sum())
    return TaskLayout(batch.ids.shape[1], len(batch.image_positions), targets)


def _measured(model, policy: ReductionPolicy, batches: dict[str, Batch]) -> int:
    reduced = apply_policy(model, policy, attention="eager")
    with FlopCounterMode(display=False) as counter:
        loss = sum(reduced(b.ids, segments=b.segments, task=t, labels=b.labels).loss for t, b in batches.items())
        loss.backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("seed", range(24))
def test_analytic_flops_match_flop_counter(model, cfg, und_batch, gen_batch, seed: int) -> None:
    batches = {"understanding": und_batch, "generation": gen_batch}
    policy = random_policy(seed)
    layouts = {t: _layout(b) for t, b in batches.items()}
    report = count_flops(cfg, policy, layouts, batch_size=3)
    measured = _measured(model, policy, batches)
    assert abs(measured / report.train - 1) < 0.03, (policy.flat_params(), measured, report.train)


def test_the_random_policies_draw_from_the_declared_selectors() -> None:
    assert SELECTORS["understanding"] == ("attention", "pdrop", "stride", "random", "recent", "router")
    assert SELECTORS["generation"] == ("stride", "random", "recent", "router")  # the same random policies


def test_dense_analytic_equals_counter_exactly(model, cfg, und_batch, gen_batch) -> None:
    batches = {"understanding": und_batch, "generation": gen_batch}
    report = count_flops(cfg, ReductionPolicy.dense(LAYERS), {t: _layout(b) for t, b in batches.items()}, 3)
    assert _measured(model, ReductionPolicy.dense(LAYERS), batches) == report.train == report.dense_train


def test_some_random_policies_reduce_a_lot(cfg, und_batch, gen_batch) -> None:
    layouts = {"understanding": _layout(und_batch), "generation": _layout(gen_batch)}
    ratios = [count_flops(cfg, random_policy(s), layouts).ratio for s in range(24)]
    assert min(ratios) < 0.7 and max(ratios) <= 1.0  # the random sample covers real reductions

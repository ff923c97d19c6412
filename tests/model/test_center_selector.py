"""A selector added in one module: `center` (the image tokens nearest the image centre) is
declared (`searchvlm.schema.policy.selectors.register_selector`) and implemented (`model._select.ranks`)
here and nowhere else, and every consumer takes it: policy and search-space validation,
the reduced forward, the FLOPs count (checked against FlopCounterMode), the trial key and
the causality check. The fixture removes it again: no other test sees it."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import pytest
import torch
from pydantic import ValidationError
from torch.utils.flop_counter import FlopCounterMode

from helpers.models import LAYERS, VOCAB, Batch, PolicyFactory, make_batch
from searchvlm.model import apply_policy
from searchvlm.model._select import RANKERS, Pick, ranks, top_ranks
from searchvlm.objectives.flops import TaskLayout, count_flops
from searchvlm.schema.identity import canonical_policy
from searchvlm.schema.policy import ReductionPolicy, Segment, TaskPolicy
from searchvlm.schema.policy.selectors import SELECTORS, SelectorInfo, register_selector
from searchvlm.schema.space import SearchSpace

CENTER = SelectorInfo("center", "content_free", "the image tokens nearest the image centre (a square grid)")


def _center(p: Pick) -> tuple[torch.Tensor, None]:
    """The k present tokens nearest the centre of a square grid (a line when P is not square)."""
    present, side = p.present, math.isqrt(p.present)
    i = torch.arange(present, device=p.img.device, dtype=torch.float32)  # (P,)
    if side * side == present:
        mid = (side - 1) / 2
        dist = (torch.div(i, side, rounding_mode="floor") - mid) ** 2 + (i % side - mid) ** 2  # (P,)
    else:
        dist = (i - (present - 1) / 2) ** 2  # (P,)
    return top_ranks(-dist.expand(p.img.shape[0], -1), p.k), None  # (B, k)


@pytest.fixture
def center() -> Iterator[None]:
    register_selector(CENTER)
    ranks("center")(_center)
    try:
        yield
    finally:
        del SELECTORS["center"], RANKERS["center"]


def _image_rows(positions: torch.Tensor, image: list[int]) -> list[list[int]]:
    return [[q for q in row if q in image] for row in positions.tolist()]


def test_policy_and_space_validate_center(center: None) -> None:
    keep = [1.0, 0.5, 0.5, 0.25]
    policy = ReductionPolicy(
        num_layers=LAYERS,
        understanding=TaskPolicy(keep=keep, mode="drop", selector="center"),
        generation=TaskPolicy(keep=keep, mode="skip", selector="center"),  # content-free: generation may use it
    )
    assert policy.generation.selector == "center"
    assert "center" in TaskPolicy.model_json_schema()["properties"]["selector"]["enum"]
    space = SearchSpace.model_validate({"policy": {"generation": {"selector": ["stride", "center"]}}})
    assert space.policy.generation.selector == ["stride", "center"]
    with pytest.raises(ValidationError, match="Input should be"):
        TaskPolicy(keep=keep, selector="centre")


def test_reduced_forward_keeps_the_centre(center: None, model, und_batch, make_policy: PolicyFactory) -> None:
    policy = make_policy(und=([0.25] * LAYERS, "drop", "center"))  # 4 of the 16 image tokens (a 4x4 grid)
    out = apply_policy(model, policy)(und_batch.ids, segments=und_batch.segments, task="understanding")
    first = und_batch.image_positions[0]
    assert _image_rows(out.positions, und_batch.image_positions) == [[first + r for r in (5, 6, 9, 10)]] * 3


def _layout(batch: Batch) -> TaskLayout:
    return TaskLayout(batch.ids.shape[1], len(batch.image_positions), int((batch.labels[0, 1:] != -100).sum()))


@pytest.mark.parametrize("mode", ["query_drop", "skip"])
def test_flops_count_center_as_measured(center: None, model, cfg, und_batch, gen_batch, mode: str) -> None:
    keep = [1.0, 0.5, 0.25, 0.25]
    task = TaskPolicy(keep=keep, mode=mode, selector="center")
    policy = ReductionPolicy(num_layers=LAYERS, understanding=task, generation=task)
    batches = {"understanding": und_batch, "generation": gen_batch}
    layouts = {t: _layout(b) for t, b in batches.items()}
    report = count_flops(cfg, policy, layouts, batch_size=3)
    reduced = apply_policy(model, policy, attention="eager")
    with FlopCounterMode(display=False) as counter:
        sum(reduced(b.ids, segments=b.segments, task=t, labels=b.labels).loss for t, b in batches.items()).backward()
    assert abs(counter.get_total_flops() / report.train - 1) < 0.03
    stride = task.model_copy(update={"selector": "stride"})  # content-free: it adds no FLOPs
    assert report.train == count_flops(cfg, policy.model_copy(update={"understanding": stride, "generation": stride}),
                                       layouts, batch_size=3).train  # fmt: skip
    assert not reduced.routers  # and no weights


def test_trial_key_merges_a_center_that_never_selects(center: None) -> None:
    binary = TaskPolicy(keep=[1.0, 1.0, 0.0, 0.0], mode="skip", selector="center")
    policy = ReductionPolicy(num_layers=LAYERS, understanding=binary, generation=binary, seed=3)
    canon = canonical_policy(policy)
    assert (canon.understanding.selector, canon.generation.selector, canon.seed) == ("stride", "stride", 0)


S, I, IMG, O = Segment.SYSTEM, Segment.INSTRUCTION, Segment.IMAGE, Segment.OUTPUT  # noqa: E741 - layouts read as S I IMG O
LAYOUTS = {
    "understanding": [(S, 1), (I, 3), (S, 1), (IMG, 16), (S, 1), (O, 3)],
    "generation": [(S, 1), (I, 3), (S, 1), (IMG, 16), (S, 1), (I, 3)],
}


CASES = [c for c in itertools.product(LAYOUTS, ["query_drop", "skip", "drop"]) if c != ("generation", "drop")]


@pytest.mark.parametrize("task, mode", CASES)  # generation + drop is refused at validation
def test_center_is_causal(center: None, model, task: str, mode: str) -> None:
    """Changing token c never moves a logit that a loss reads at a position < c."""
    batch = make_batch(LAYOUTS[task], batch=2, seed=3)
    batch.labels[batch.segments != (Segment.OUTPUT if task == "understanding" else Segment.IMAGE)] = -100
    dense = TaskPolicy(keep=[1.0] * LAYERS)
    parts = {"understanding": dense, "generation": dense}
    parts[task] = TaskPolicy(keep=[1.0, 0.5, 0.5, 0.25], mode=mode, selector="center")
    reduced = apply_policy(model, ReductionPolicy(num_layers=LAYERS, **parts)).eval()
    with torch.no_grad():
        base = reduced(batch.ids, segments=batch.segments, task=task, labels=batch.labels)
        for c in range(1, batch.ids.shape[1]):
            ids = batch.ids.clone()
            ids[:, c] = (ids[:, c] + 7) % VOCAB.size
            new = reduced(ids, segments=batch.segments, task=task, labels=batch.labels)
            before = (base.positions < c) & (base.positions >= 0)  # (B, T_out)
            assert torch.equal(new.positions, base.positions)
            moved = (new.logits - base.logits).abs()[before]
            assert moved.numel() == 0 or float(moved.max()) <= 1e-5, c


def test_unregistered_center_is_refused() -> None:
    """Without the fixture (and after the tests above) the selector does not exist: nothing leaks."""
    assert "center" not in SELECTORS and "center" not in RANKERS
    with pytest.raises(ValidationError, match="Input should be 'attention', 'pdrop', 'stride', 'random', 'recent' or"):
        TaskPolicy(keep=[0.5] * LAYERS, selector="center")

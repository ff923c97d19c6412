"""Fixtures for the reduced-forward tests: the tiny model, its batches, a policy builder
(the plain helpers they build on: `helpers.models`)."""

from __future__ import annotations

import pytest
import torch

from helpers.models import LAYERS, VOCAB, Batch, PolicyFactory, make_batch
from searchvlm.model import build_model
from searchvlm.schema.config import ModelConfig
from searchvlm.schema.policy import ReductionPolicy, Segment, Sharing, TaskPolicy


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every model test runs on one torch thread (`one_thread` in tests/conftest.py)."""


@pytest.fixture
def cfg() -> ModelConfig:
    return ModelConfig(
        num_layers=LAYERS, hidden_size=32, num_heads=4, num_kv_heads=2, intermediate_size=64, vocab=VOCAB
    )


@pytest.fixture
def model(cfg: ModelConfig) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(cfg)


@pytest.fixture
def und_batch() -> Batch:
    """Understanding: [system 3][image 16][instruction 2][output 3]; labels on the output."""
    b = make_batch([(0, 3), (2, 16), (1, 2), (3, 3)])
    b.labels[b.segments != Segment.OUTPUT] = -100
    return b


@pytest.fixture
def gen_batch() -> Batch:
    """Generation: [system 2][instruction 4][image 16][system 2]; labels on the image tokens."""
    b = make_batch([(0, 2), (1, 4), (2, 16), (0, 2)], seed=1)
    b.labels[b.segments != Segment.IMAGE] = -100
    return b


@pytest.fixture
def make_policy() -> PolicyFactory:
    """policy(und=(keep, mode, selector), gen=(...), sharing=Sharing(...)); default dense."""

    def build(
        und: tuple[list[float], str, str] | None = None,
        gen: tuple[list[float], str, str] | None = None,
        sharing: Sharing | None = None,
        seed: int = 0,
    ) -> ReductionPolicy:
        dense = ([1.0] * LAYERS, "skip", "stride")
        u, g = und or dense, gen or dense
        return ReductionPolicy(
            num_layers=LAYERS,
            understanding=TaskPolicy(keep=u[0], mode=u[1], selector=u[2]),
            generation=TaskPolicy(keep=g[0], mode=g[1], selector=g[2]),
            sharing=sharing or Sharing(),
            seed=seed,
        )

    return build

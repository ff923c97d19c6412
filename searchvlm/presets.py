"""Presets: the named literature policies, one registry (name -> row label, builder, rule).

L0 module: pydantic + stdlib only. The registry feeds `preset()`, `PRESETS`, the rows of
`reproduce`'s table (in this order) and the check of a space's `presets:`. Each builder
returns the per-task specs and the sharing for a model depth (depths scale with the layer
count, see docs/definitions.md); its docstring is the rule it takes from the paper.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from searchvlm.errors import COMMAND_LINE, ConfigError
from searchvlm.policy import ReductionPolicy, Sharing
from searchvlm.schedules import (
    CosineSchedule,
    FastVSchedule,
    PyramidSchedule,
    ShallowSchedule,
    TaskSpec,
    Tied,
    compile_policy,
    shallow_layers,
)

#: what a builder returns: understanding, generation, sharing
Specs = tuple[TaskSpec, TaskSpec | Tied, Sharing]


@dataclass(frozen=True)
class Preset:
    """A named policy: its row label in `reproduce`'s table and its builder."""

    name: str
    label: str
    build: Callable[[int], Specs]

    @property
    def rule(self) -> str:
        """The paper's rule the builder implements (its docstring)."""
        return inspect.cleandoc(self.build.__doc__ or "")

    def policy(self, num_layers: int) -> ReductionPolicy:
        return compile_policy(num_layers, *self.build(num_layers), name=self.name)


REGISTRY: dict[str, Preset] = {}


def _preset(name: str, label: str) -> Callable[[Callable[[int], Specs]], Callable[[int], Specs]]:
    def register(build: Callable[[int], Specs]) -> Callable[[int], Specs]:
        REGISTRY[name] = Preset(name, label, build)
        return build

    return register


def preset(name: str, num_layers: int) -> ReductionPolicy:
    """Named literature policies; depths scale with `num_layers` (see docs/definitions.md)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(REGISTRY)}")
    return REGISTRY[name].policy(num_layers)


# --------------------------------------------------------------------------- the presets

_FULL = TaskSpec()
_HIMIX = TaskSpec(schedule=FastVSchedule(start=1, ratio=1.0), mode="query_drop")


def _fastv_start(num_layers: int) -> int:
    """FastV's K = 2 (after layer 2 the image gets little attention), clipped to the depth."""
    return max(1, min(num_layers - 1, 2))


def _hmgen(num_layers: int, k: int) -> tuple[TaskSpec, Sharing]:
    shallow = set(shallow_layers(num_layers, k))
    full_layers = [i for i in range(num_layers) if i not in shallow]
    spec = TaskSpec(schedule=ShallowSchedule(k=k), mode="skip", selector="stride")
    return spec, Sharing(qkv="modality", scope=full_layers)


@_preset("dense", "Unified (dense)")
def _dense(num_layers: int) -> Specs:
    """Every image token in every layer, for both tasks: the unified model."""
    return _FULL, _FULL, Sharing()


@_preset("fastv", "FastV (understanding)")
def _fastv(num_layers: int) -> Specs:
    """FastV (Chen et al., 2024): full layers before K=2, then drop R=50% of the image tokens
    for the rest of the stack, ranked by the attention the last prompt token gave them in
    layer K-1 (heads averaged); original positions kept."""
    und = TaskSpec(schedule=FastVSchedule(start=_fastv_start(num_layers), ratio=0.5), mode="drop",
                   selector="attention")  # fmt: skip
    return und, _FULL, Sharing()


@_preset("pyramiddrop", "PyramidDrop (understanding)")
def _pyramiddrop(num_layers: int) -> Specs:
    """PyramidDrop (Xing et al., 2024): stages end at L/4, L/2, 3L/4; at each boundary keep
    λ=0.5 of the remaining image tokens, ranked by the last prompt token's attention
    computed with the boundary layer's own norm/q/k/rotary ("pdrop" selector). The
    reference renumbers positions after a drop; we keep the original ones, as FastV does."""
    und = TaskSpec(schedule=PyramidSchedule(ratio=0.5), mode="drop", selector="pdrop")
    return und, _FULL, Sharing()


@_preset("himix", "HiMix (understanding)")
def _himix(num_layers: int) -> Specs:
    """HiMix: from layer 1 on, image tokens are keys/values only (no query, no MLP)."""
    return _HIMIX, _FULL, Sharing()


@_preset("hmgen", "HMGen K=3 (generation)")
def _hmgen3(num_layers: int) -> Specs:
    """HMGen: in generation K=3 shallow layers, placed in the middle and alternating with
    full layers, let the image tokens skip the block; image and text tokens get their own
    q/k/v projections in the full layers."""
    gen, sharing = _hmgen(num_layers, 3)
    return _FULL, gen, sharing


@_preset("hmgen5", "HMGen K=5 (generation)")
def _hmgen5(num_layers: int) -> Specs:
    """HMGen with K=5 shallow layers."""
    gen, sharing = _hmgen(num_layers, 5)
    return _FULL, gen, sharing


@_preset("himix_hmgen", "HiMix + HMGen, share all")
def _himix_hmgen(num_layers: int) -> Specs:
    """HiMix for understanding and HMGen (K=3) for generation, every weight shared (the
    study's "share all")."""
    gen, _ = _hmgen(num_layers, 3)
    return _HIMIX, gen, Sharing()


@_preset("himix_hmgen_partial", "HiMix + HMGen, share partial")
def _himix_hmgen_partial(num_layers: int) -> Specs:
    """HiMix + HMGen (K=3) with the image tokens' q/k/v projections split per task (the
    study's "share partial")."""
    gen, _ = _hmgen(num_layers, 3)
    return _HIMIX, gen, Sharing(qkv="task_image")


@_preset("pmod", "p-MoD cosine (both)")
def _pmod(num_layers: int) -> Specs:
    """p-MoD (Zhang et al., 2024): Mixture-of-Depths routers on the image tokens with a
    shifted-cosine capacity per layer decaying to a floor of 0.15; unrouted tokens skip
    the block. Generation routes with the causal per-token rule (see model._select)."""
    spec = TaskSpec(schedule=CosineSchedule(floor=0.15), mode="skip", selector="router")
    return spec, spec, Sharing()


@_preset("tied", "Tied schedule (synergy-aware)")
def _tied(num_layers: int) -> Specs:
    """One moderate cosine schedule (floor 0.5, dense first layer) shared by both tasks with
    `skip`: one pathway, the synergy-aware baseline (not from a paper)."""
    spec = TaskSpec(schedule=CosineSchedule(floor=0.5, shift=1), mode="skip")
    return spec, Tied(selector=spec.selector), Sharing()


PRESETS: tuple[str, ...] = tuple(REGISTRY)


def compile_presets(num_layers: int) -> dict[str, ReductionPolicy]:
    """Every preset compiled for a `num_layers`-layer model, in `PRESETS` order (`searchvlm
    presets`). A depth below 1, or one a preset does not fit, is a ConfigError naming `--layers`."""
    if num_layers < 1:
        raise ConfigError(COMMAND_LINE, "--layers", num_layers, "must be a layer count of at least 1")
    compiled = {}
    for name in PRESETS:
        try:
            compiled[name] = preset(name, num_layers)
        except ValueError as err:
            raise ConfigError(COMMAND_LINE, "--layers", num_layers,
                              f"preset {name!r} does not fit this depth: {err}") from None  # fmt: skip
    return compiled

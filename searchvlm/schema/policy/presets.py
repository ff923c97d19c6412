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

from searchvlm.schema.errors import COMMAND_LINE, ConfigError
from searchvlm.schema.policy import ReductionPolicy, Sharing
from searchvlm.schema.policy.schedules import (
    CosineSchedule,
    FastVSchedule,
    PyramidSchedule,
    ShallowSchedule,
    TaskSpec,
    Tied,
    compile_policy,
    shallow_layers,
)

__all__ = ["PRESETS", "Preset", "REGISTRY", "Specs", "clipping", "compile_presets", "preset"]

#: what a builder returns: understanding, generation, sharing
Specs = tuple[TaskSpec, TaskSpec | Tied, Sharing]


@dataclass(frozen=True)
class Preset:
    """A named policy: its row label in `reproduce`'s table, its builder, and `clip`, which says
    how the paper's depth parameters are clipped at a depth (None where they fit as published)."""

    name: str
    label: str
    build: Callable[[int], Specs]
    clip: Callable[[int], str | None]

    @property
    def rule(self) -> str:
        """The paper's rule the builder implements (its docstring)."""
        return inspect.cleandoc(self.build.__doc__ or "")

    def policy(self, num_layers: int) -> ReductionPolicy:
        return compile_policy(num_layers, *self.build(num_layers), name=self.name)


REGISTRY: dict[str, Preset] = {}


def _as_published(num_layers: int) -> str | None:
    return None


def _preset(
    name: str, label: str, clip: Callable[[int], str | None] = _as_published
) -> Callable[[Callable[[int], Specs]], Callable[[int], Specs]]:
    def register(build: Callable[[int], Specs]) -> Callable[[int], Specs]:
        REGISTRY[name] = Preset(name, label, build, clip)
        return build

    return register


def preset(name: str, num_layers: int) -> ReductionPolicy:
    """Named literature policies; depths scale with `num_layers` (see docs/definitions.md)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(REGISTRY)}")
    return REGISTRY[name].policy(num_layers)


def clipping(name: str, num_layers: int) -> str | None:
    """How preset `name` departs from the paper's depth parameters on `num_layers` layers
    (e.g. HMGen's K clipped), or None where it is built as published."""
    return REGISTRY[name].clip(num_layers)


# --------------------------------------------------------------------------- the presets

_FULL = TaskSpec()
_HIMIX = TaskSpec(schedule=FastVSchedule(start=1, ratio=1.0), mode="query_drop")


def _fastv_start(num_layers: int) -> int:
    """FastV's K = 2 (after layer 2 the image gets little attention), clipped to the depth."""
    return max(1, min(num_layers - 1, 2))


def _fastv_clip(num_layers: int) -> str | None:
    k = _fastv_start(num_layers)
    return None if k == 2 else f"K=2 clipped to K={k} (K must be below the depth)"


def _pyramid_boundaries(num_layers: int) -> int:
    return len(set(PyramidSchedule(ratio=0.5).ratios(num_layers))) - 1  # one new ratio per boundary


def _pyramid_clip(num_layers: int) -> str | None:
    n = _pyramid_boundaries(num_layers)
    return None if n == 3 else f"{n} of 3 stage boundaries (L/4, L/2 and 3L/4 coincide or reach L)"


def _hmgen(num_layers: int, k: int) -> tuple[TaskSpec, list[int]]:
    """HMGen's generation spec and its full layers (where image and text tokens get their own
    q/k/v projections). K shallow layers alternating with full layers, the first and last layer
    full, need 2K+1 layers: K is clipped to (L-1)//2 (`_hmgen_clip` says so); a depth with no
    room for one shallow layer (L < 3) is refused, as nothing of HMGen would be left."""
    shallow = shallow_layers(num_layers, k)
    if not shallow:
        raise ValueError(
            f"HMGen needs at least 3 layers (a shallow layer between full first and last layers); "
            f"the model has {num_layers}"
        )
    spec = TaskSpec(schedule=ShallowSchedule(k=k), mode="skip", selector="stride")
    return spec, [i for i in range(num_layers) if i not in shallow]


def _hmgen_clip(k: int) -> Callable[[int], str | None]:
    def clip(num_layers: int) -> str | None:
        got = len(shallow_layers(num_layers, k))
        why = f"{k} shallow layers alternating with full ones need {2 * k + 1} layers"
        return None if got == k else f"K={k} clipped to K={got} ({why})"

    return clip


@_preset("dense", "Unified (dense)")
def _dense(num_layers: int) -> Specs:
    """Every image token in every layer, for both tasks: the unified model."""
    return _FULL, _FULL, Sharing()


@_preset("fastv", "FastV (understanding)", _fastv_clip)
def _fastv(num_layers: int) -> Specs:
    """FastV (Chen et al., 2024): full layers before K=2, then drop R=50% of the image tokens
    for the rest of the stack, ranked by the attention the last prompt token gave them in
    layer K-1 (heads averaged); original positions kept."""
    und = TaskSpec(schedule=FastVSchedule(start=_fastv_start(num_layers), ratio=0.5), mode="drop",
                   selector="attention")  # fmt: skip
    return und, _FULL, Sharing()


@_preset("pyramiddrop", "PyramidDrop (understanding)", _pyramid_clip)
def _pyramiddrop(num_layers: int) -> Specs:
    """PyramidDrop (Xing et al., 2024): stages end at L/4, L/2, 3L/4; at each boundary keep
    λ=0.5 of the remaining image tokens, ranked by the last prompt token's attention
    computed with the boundary layer's own norm/q/k/rotary ("pdrop" selector). The
    reference renumbers positions after a drop; we keep the original ones, as FastV does."""
    if not _pyramid_boundaries(num_layers):
        raise ValueError("PyramidDrop needs at least 2 layers (a stage boundary below the last layer)")
    und = TaskSpec(schedule=PyramidSchedule(ratio=0.5), mode="drop", selector="pdrop")
    return und, _FULL, Sharing()


@_preset("himix", "HiMix (understanding)")
def _himix(num_layers: int) -> Specs:
    """HiMix, the study's understanding accelerator (arXiv 2606.01503; docs/background.md,
    "The study"): "image tokens leave the query stream but stay keys/values". From layer 1 on
    (0-based) image tokens are keys/values only: no query, no MLP."""
    return _HIMIX, _FULL, Sharing()


@_preset("hmgen", "HMGen K=3 (generation)", _hmgen_clip(3))
def _hmgen3(num_layers: int) -> Specs:
    """HMGen, the study's generation accelerator (arXiv 2606.01503; docs/background.md, "The
    study"; K=3: 0.85x FLOPs): "K shallow layers in the middle, alternating with full layers;
    in a shallow layer image hidden states pass through (no attention, no MLP), only text is
    computed; full layers get separate image/text projections." Generation only; the
    image/text split is of q/k/v (`qkv: modality`), in the full layers."""
    gen, full = _hmgen(num_layers, 3)
    return _FULL, gen, Sharing(qkv="modality", scope=full)


@_preset("hmgen5", "HMGen K=5 (generation)", _hmgen_clip(5))
def _hmgen5(num_layers: int) -> Specs:
    """HMGen with K=5 (arXiv 2606.01503; docs/background.md; 0.75x FLOPs): "K shallow layers
    in the middle, alternating with full layers; [...] full layers get separate image/text
    projections." As `hmgen` with five shallow layers: as published from 11 layers on; below,
    K is clipped (from 9 layers on it still differs from K=3)."""
    gen, full = _hmgen(num_layers, 5)
    return _FULL, gen, Sharing(qkv="modality", scope=full)


@_preset("himix_hmgen", "HiMix + HMGen, share all", _hmgen_clip(3))
def _himix_hmgen(num_layers: int) -> Specs:
    """The study's "share all" (arXiv 2606.01503, Table 3, "HiMix + HMGen, share all"):
    HiMix for understanding, HMGen (K=3) for generation, and HMGen's architecture (image/text
    q/k/v split in the full layers) shared by both tasks: one image q/k/v set that
    understanding's image keys/values use too. Everything else shared."""
    gen, full = _hmgen(num_layers, 3)
    return _HIMIX, gen, Sharing(qkv="modality", scope=full)


@_preset("himix_hmgen_partial", "HiMix + HMGen, share partial", _hmgen_clip(3))
def _himix_hmgen_partial(num_layers: int) -> Specs:
    """The study's "share partial" (arXiv 2606.01503, Table 3, "share partial (image QKV per
    task)"): "share all" plus the image q/k/v projections split per task, in the same full
    layers (`qkv: task_image`): each task's image tokens get their own copy, text stays
    shared. In HMGen's shallow layers generation has no image projection to split, so both
    presets leave those layers shared and differ in this one thing."""
    gen, full = _hmgen(num_layers, 3)
    return _HIMIX, gen, Sharing(qkv="task_image", scope=full)


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

"""Image-token selectors: what each one is, declared once and read by every consumer.

L0 module: stdlib + pydantic only (no torch). A selector is one `SelectorInfo` row in
`SELECTORS` (`register_selector`), saying what its choice reads, which tasks it may serve
and what it adds to a layer; the policy's `Selector` type and validation
(`searchvlm.schema.policy`), the search space, the FLOPs count (`searchvlm.objectives.flops`), the trial
key (`searchvlm.schema.identity`), the layout checks (`searchvlm.train.training`) and the reduced
forward (`searchvlm.model.reduced`) all read these traits, never the selector's name. Its
torch implementation is registered under the same name in `searchvlm.model._select`
(`@ranks`); a test checks the two registries name the same selectors.

Kinds (docs/definitions.md, causality):
- `content_free`: the kept tokens depend only on the counts (`stride`, `recent`);
- `seeded`: content-free, drawn from the policy's seed (`random`);
- `prompt`: ranks the whole image by what the last prompt token sees (`attention`,
  `pdrop`): causal only when every position whose loss depends on the choice comes after
  the image, so understanding only;
- `learned`: a trained per-token score (`router`): understanding ranks the image by it,
  generation decides each token from its own score (causal); it adds router weights and
  their FLOPs (2·P·d per selecting layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from searchvlm.schema._strict import OneOf

Kind = Literal["content_free", "seeded", "prompt", "learned"]

__all__ = ["SELECTORS", "Kind", "Selector", "SelectorInfo", "register_selector", "selector_info"]


@dataclass(frozen=True)
class SelectorInfo:
    """What one selector is: everything outside its torch implementation reads this."""

    name: str
    kind: Kind
    doc: str  # one line: the rule it keeps tokens by
    tasks: tuple[str, ...] | None = None  # the tasks it may serve (None: every task)
    previous_mass: bool = False  # ranks by the previous layer's attention of the last prompt token
    scores: bool = False  # scores the present tokens in its own layer without gradient (FLOPs term `score`)

    @property
    def content(self) -> bool:
        """The choice reads the tokens' states: in understanding every image token must come
        before the last prompt token (the whole image is ranked)."""
        return self.kind in ("prompt", "learned")

    @property
    def weights(self) -> bool:
        """A learned router per task and layer (d -> 1): parameters, and 2·P·d forward FLOPs."""
        return self.kind == "learned"

    @property
    def seeded(self) -> bool:
        """Reads the policy's `seed`."""
        return self.kind == "seeded"

    def serves(self, task: str) -> bool:
        return self.tasks is None or task in self.tasks


#: every selector, by name (registration order: the order errors, schemas and docs list them)
SELECTORS: dict[str, SelectorInfo] = {}


def register_selector(info: SelectorInfo) -> SelectorInfo:
    """Make a selector known to policies and search spaces (its torch side: `model._select.ranks`)."""
    if SELECTORS.get(info.name, info) != info:
        raise ValueError(f"selector {info.name!r} is already registered")
    SELECTORS[info.name] = info
    return info


def selector_info(name: str) -> SelectorInfo:
    """The declaration of a registered selector (names are validated by `Selector`)."""
    return SELECTORS[name]


#: a selector name in a policy or search space (validated against `SELECTORS`)
Selector = Annotated[str, OneOf(lambda: SELECTORS)]


# --------------------------------------------------------------------------- the selectors

register_selector(
    SelectorInfo(
        "attention",
        "prompt",
        "FastV: the attention the last prompt token gave each image token in the previous layer",
        tasks=("understanding",),
        previous_mass=True,
    )
)
register_selector(
    SelectorInfo(
        "pdrop",
        "prompt",
        "PyramidDrop: the last prompt token's attention with this layer's own norm, q/k and rotary",
        tasks=("understanding",),
        scores=True,
    )
)
register_selector(SelectorInfo("stride", "content_free", "uniform spatial subsample"))
register_selector(SelectorInfo("random", "seeded", "uniformly random tokens from the policy's seed"))
register_selector(SelectorInfo("recent", "content_free", "the latest image tokens"))
register_selector(
    SelectorInfo(
        "router", "learned", "Mixture-of-Depths: a learned per-token score; generation decides each token causally"
    )
)

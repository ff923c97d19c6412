"""Analytic training FLOPs of a reduction policy (and the per-layer token counts the model runs).

L1 module: stdlib + `searchvlm.schema.policy` / `searchvlm.schema.config` only (no torch), so sweeps and
notebooks can price a policy without loading a model.

Per decoder layer, with n_q query tokens, n_kv key/value tokens, width d, key/value width
d_kv = num_kv_heads * head_dim and SwiGLU width m (three matrices), one forward costs

    2·n_q·d·d        (Q projection)
  + 4·n_kv·d·d_kv    (K and V projections)
  + 4·n_q·n_kv·d     (scores and weighted sum; the causal mask is counted in full)
  + 2·n_q·d·d        (O projection)
  + 6·n_q·d·m        (MLP)
  + 2·P·d            (router, only when a selector with `weights` (`router`) picks 0 < k < P
                     tokens)
  + 2·d·d + 2·N·d·d_kv + 2·N·d   (scoring of a selector with `scores` (`pdrop`) when it
                     picks 0 < k < P tokens: the last
                     prompt token's query, keys of the N = n_t + P present tokens, its scores;
                     no gradient, so counted once, not 3 times)

plus the LM head `2·n_logit·d·V` on the positions that produce logits (with labels: only
those predicting a labelled token). Training = 3 × forward (backward = 2 × forward).

Token counts per layer ℓ (T tokens, M0 image tokens, P image tokens present before ℓ,
k = `kept_count(keep[ℓ], M0, P)`, n_t = T − M0 non-image tokens):

- k == P (every present token computed): n_q = n_kv = n_t + P;
- `query_drop`: n_q = n_t + k, n_kv = n_t + P (every present token stays a key/value);
- `skip`: n_q = n_kv = n_t + k;
- `drop`: P becomes k for this and every later layer; n_q = n_kv = n_t + k.

`layer_counts` is the single source of these numbers: the reduced forward
(`searchvlm.model`) executes exactly the plan it returns, and `torch.utils.flop_counter`
agrees with `count_flops` on that forward (eager attention) within a few percent.
Not counted: elementwise work (norms, rotary, softmax, gates) and, with SDPA attention, the
no-grad attention mass the `attention` selector recomputes for its scores.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from searchvlm.schema.config import ModelConfig
from searchvlm.schema.policy import TASKS, ReductionPolicy, TaskPolicy, kept_count
from searchvlm.schema.policy.selectors import selector_info

__all__ = [
    "FlopsReport",
    "LayerCounts",
    "LayerFlops",
    "TaskFlops",
    "TaskLayout",
    "count_flops",
    "flops_ratio",
    "layer_counts",
]


@dataclass(frozen=True)
class TaskLayout:
    """Shape of one task's sequences: tokens, image tokens, positions that produce logits."""

    num_tokens: int
    num_image: int
    num_logit_positions: int

    def __post_init__(self) -> None:
        if not 0 <= self.num_image <= self.num_tokens:
            raise ValueError(f"TaskLayout.num_image = {self.num_image} must be in [0, num_tokens = {self.num_tokens}]")
        if not 0 <= self.num_logit_positions <= self.num_tokens:
            raise ValueError(
                f"TaskLayout.num_logit_positions = {self.num_logit_positions} must be in "
                f"[0, num_tokens = {self.num_tokens}]"
            )


@dataclass(frozen=True)
class LayerCounts:
    """What one layer computes: image tokens present and kept, query and key/value counts."""

    present: int  # image tokens present when the layer starts (after earlier drops)
    kept: int  # image tokens computed (k); equals `present` after this layer's own drop
    n_q: int
    n_kv: int
    reduces: bool  # 0 <= k < present: a selection happens in this layer
    router: bool  # a selector with router weights (`router`) is active (0 < k < present)
    scored: bool = False  # a scoring selector (`pdrop`) scores the present tokens (0 < k < present)


def layer_counts(task: TaskPolicy, num_tokens: int, num_image: int) -> list[LayerCounts]:
    """Per-layer token counts of one task under its policy (see the module docs)."""
    n_text = num_tokens - num_image
    present, out, sel = num_image, [], selector_info(task.selector)
    for keep in task.keep:
        k = kept_count(keep, num_image, present)
        reduces = k < present
        n_q = n_text + k
        n_kv = n_text + (present if task.mode == "query_drop" else k)
        router = reduces and k > 0 and sel.weights
        scored = reduces and k > 0 and sel.scores
        out.append(LayerCounts(present, k, n_q, n_kv, reduces, router, scored))
        if task.mode == "drop":
            present = k
    return out


@dataclass(frozen=True)
class LayerFlops:
    """Forward FLOPs of one layer, by term (for one batch)."""

    q: int
    kv: int
    attention: int
    o: int
    mlp: int
    router: int
    score: int = 0

    @property
    def total(self) -> int:
        """FLOPs that also run backward (the no-grad `score` is apart)."""
        return self.q + self.kv + self.attention + self.o + self.mlp + self.router


def _layer_flops(c: LayerCounts, model: ModelConfig, batch: int, n_text: int) -> LayerFlops:
    d, dkv, m = model.hidden_size, model.kv_width, model.intermediate_size
    n_all = n_text + c.present
    return LayerFlops(
        q=batch * 2 * c.n_q * d * d,
        kv=batch * 4 * c.n_kv * d * dkv,
        attention=batch * 4 * c.n_q * c.n_kv * d,
        o=batch * 2 * c.n_q * d * d,
        mlp=batch * 6 * c.n_q * d * m,
        router=batch * 2 * c.present * d if c.router else 0,
        score=batch * (2 * d * d + 2 * n_all * d * dkv + 2 * n_all * d) if c.scored else 0,
    )


@dataclass(frozen=True)
class TaskFlops:
    """Forward FLOPs of one task's batch: per layer, LM head, total."""

    task: str
    layers: tuple[LayerFlops, ...]
    head: int

    @property
    def forward(self) -> int:
        return sum(layer.total + layer.score for layer in self.layers) + self.head

    @property
    def train(self) -> int:
        """3 × the forward that runs backward, plus the no-grad selector scoring once."""
        no_grad = sum(layer.score for layer in self.layers)
        return 3 * (self.forward - no_grad) + no_grad


@dataclass(frozen=True)
class FlopsReport:
    """Training FLOPs of one joint step (3 × forward, all tasks in the layouts) vs dense."""

    train: int
    dense_train: int
    ratio: float
    per_task: dict[str, TaskFlops]
    dense_per_task: dict[str, TaskFlops]


def _vocab_size(model: ModelConfig) -> int:
    """The LM head's width: the HF model's vocabulary (`model.vocab_size`, a user's `hf`
    model) or the built-in model's data vocabulary."""
    if model.vocab_size is not None:
        return model.vocab_size
    if model.vocab is None:
        raise ValueError(
            "model.vocab is None: count_flops needs the vocabulary layout for the LM head "
            "(set model.vocab, e.g. VocabLayout(num_special=8, num_text=24, num_image=17))"
        )
    return model.vocab.size


def _task_flops(model: ModelConfig, policy: ReductionPolicy, task: str, layout: TaskLayout, batch: int) -> TaskFlops:
    counts = layer_counts(policy.task(task), layout.num_tokens, layout.num_image)
    n_text = layout.num_tokens - layout.num_image
    layers = tuple(_layer_flops(c, model, batch, n_text) for c in counts)
    head = batch * 2 * layout.num_logit_positions * model.hidden_size * _vocab_size(model)
    return TaskFlops(task=task, layers=layers, head=head)


def _check(model: ModelConfig, policy: ReductionPolicy, layouts: Mapping[str, TaskLayout]) -> None:
    if policy.num_layers != model.num_layers:
        raise ValueError(f"policy.num_layers = {policy.num_layers} must equal model.num_layers = {model.num_layers}")
    bad = [t for t in layouts if t not in TASKS]
    if bad or not layouts:
        raise ValueError(f"layouts keys {list(layouts)} must be a non-empty subset of {TASKS}")


def count_flops(
    model: ModelConfig,
    policy: ReductionPolicy,
    layouts: Mapping[str, TaskLayout],
    batch_size: int = 1,
) -> FlopsReport:
    """Analytic training FLOPs of one joint step under `policy` and under the dense policy."""
    _check(model, policy, layouts)
    dense = ReductionPolicy.dense(model.num_layers)
    per = {t: _task_flops(model, policy, t, lay, batch_size) for t, lay in layouts.items()}
    base = {t: _task_flops(model, dense, t, lay, batch_size) for t, lay in layouts.items()}
    train = sum(f.train for f in per.values())
    dense_train = sum(f.train for f in base.values())
    ratio = train / dense_train if dense_train else 1.0
    return FlopsReport(train, dense_train, ratio, per, base)


def flops_ratio(
    model: ModelConfig,
    policy: ReductionPolicy,
    layouts: Mapping[str, TaskLayout],
    batch_size: int = 1,
) -> float:
    """Training FLOPs under `policy` divided by those of the dense model (one joint step)."""
    return count_flops(model, policy, layouts, batch_size).ratio

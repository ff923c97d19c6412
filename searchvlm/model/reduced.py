"""The policy-aware reduced forward: `apply_policy(hf_model, policy) -> ReducedLM`.

`ReducedLM` runs a decoder loop over the HF model's decoder layers (found by `_family`) with
the layers' own modules (norms, q/k norms, q/k/v/o projections, MLP, rotary embeddings at
the tokens' ORIGINAL positions, final norm, head); a family feature it cannot run exactly
is refused when the policy is applied. Per layer and task it executes the plan of `searchvlm.flops.layer_counts`:
image tokens not kept are query-dropped (still keys/values), skipped (neither), or dropped
for good (see docs/definitions.md). A layer that computes every present token takes a fast path with
no gather/scatter; with a dense policy the logits equal `hf_model(input_ids).logits`
(Chameleon: its raw lm_head output, see `_logits`).

Causal by construction: no logit that a loss or metric reads depends on a later token.
Content-based choices look only at what precedes every position whose loss depends on them:
understanding ranks the image by the LAST PROMPT TOKEN (the one before the first OUTPUT
token), generation decides each image token from its own state (`_select`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from transformers.models.llama.modeling_llama import rotate_half

from searchvlm.flops import LayerCounts, layer_counts
from searchvlm.model._attention import anchor_attention, attend, position_mask
from searchvlm.model._family import Decoder, check_sharding, describe
from searchvlm.model._select import RANKERS, Pick
from searchvlm.model._sharing import fused_linear, make_splits, split_apply, split_span
from searchvlm.model._tokens import Tokens, gather_rows, image_span, scatter_rows
from searchvlm.policy import TASKS, ReductionPolicy, Segment
from searchvlm.selectors import selector_info

Kernel = Literal["sdpa", "eager"]
# Plain ints: dynamo evaluates `tensor == IntEnum member` to a Python bool (torch.compile then
# fails with "'bool' object has no attribute ..."), a tensor compared with an int stays a tensor.
_IMAGE, _OUTPUT = int(Segment.IMAGE), int(Segment.OUTPUT)


@dataclass
class ReducedOutput:
    """What `ReducedLM.forward` returns.

    logits: (B, T_out, V). Without labels: every surviving position. With labels: only the
        positions that predict a labelled token (HF shift: logits at t predict labels[t+1]),
        in position order; rows with fewer such positions are padded with zeros.
    positions: (B, T_out) original index of each logits row (-1 on padding).
    loss: mean cross-entropy over the labelled targets (labels given), else None.
    hidden_states / hidden_positions (output_hidden_states=True): the input of every layer
        and the output of the last one (before the final norm), each (B, n_l, d) with its
        original positions (B, n_l).
    attentions / attention_positions (output_attentions=True): per layer the attention
        probabilities (B, H, n_q, n_kv) (detached, fp32 softmax of the eager kernel) and the
        original positions of its query rows (B, n_q) and key columns (B, n_kv). Tokens that
        are not queries / keys in a layer (skipped, query-dropped, dropped) have no row / column.
    """

    logits: Tensor
    positions: Tensor
    loss: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    hidden_positions: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None
    attention_positions: tuple[tuple[Tensor, Tensor], ...] | None = None


@dataclass(frozen=True)
class _Plan:
    counts: list[LayerCounts]
    need_mass: list[bool]  # the next layer selects by attention mass from this one
    windows: list[int | None]  # sliding windows shorter than the sequence (else None)
    content: bool  # some layer selects by content (`SelectorInfo.content`: attention, pdrop, router)
    n_text: int  # tokens per sequence that are not image tokens (padding included)


_Log = list[
    tuple[Tensor, Tensor, Tensor]
]  # per layer: probs (B, H, n_q, n_kv), query (B, n_q) and key (B, n_kv) positions


@dataclass(frozen=True)
class _Call:
    """One forward call: its task, plan and kernel, and where `output_attentions` collects
    every layer's probabilities (None: not asked; then the eager kernel runs)."""

    task: str
    plan: _Plan
    kernel: Kernel
    log: _Log | None


@dataclass(frozen=True)
class _Step:
    """One layer of one call: what every part of the layer's computation reads."""

    li: int
    layer: nn.Module
    call: _Call

    @property
    def task(self) -> str:
        return self.call.task

    @property
    def counts(self) -> LayerCounts:
        return self.call.plan.counts[self.li]

    @property
    def need_mass(self) -> bool:
        return self.call.plan.need_mass[self.li]

    @property
    def window(self) -> int | None:
        return self.call.plan.windows[self.li]


@dataclass(frozen=True)
class _Batch:
    """One forward's inputs, checked: ids (B, T) or embeds (B, T, d), segments (B, T), image
    flags (B, T) (never on padding), valid (B, T) (None: no padding), labels (B, T) or None."""

    ids: Tensor | None
    embeds: Tensor | None
    segments: Tensor
    is_img: Tensor
    valid: Tensor | None
    labels: Tensor | None

    @staticmethod
    def of(
        ids: Tensor | None, embeds: Tensor | None, segments: Tensor, mask: Tensor | None, labels: Tensor | None
    ) -> _Batch:
        if (ids is None) == (embeds is None):
            raise ValueError("pass exactly one of input_ids (B, T) and inputs_embeds (B, T, d)")
        shape = tuple(ids.shape) if ids is not None else tuple(embeds.shape[:2])
        if (ids is not None and ids.dim() != 2) or (embeds is not None and embeds.dim() != 3):
            raise ValueError(f"input_ids must be (B, T) and inputs_embeds (B, T, d); got {shape}")
        for name, x in (("segments", segments), ("attention_mask", mask), ("labels", labels)):
            if x is not None and tuple(x.shape) != shape:
                raise ValueError(f"{name} {tuple(x.shape)} must be (B, T) = {shape} like the inputs")
        valid = _valid(mask)
        is_img = segments == _IMAGE  # (B, T)
        return _Batch(ids, embeds, segments, is_img if valid is None else is_img & valid, valid, labels)


def _valid(mask: Tensor | None) -> Tensor | None:
    """Padding mask (B, T) -> bool (B, T), None when nothing is padded; refuses a mask whose
    tokens are not one contiguous block per row (only left or right padding)."""
    if mask is None:
        return None
    valid = mask.bool()  # (B, T)
    if bool(valid.all()):
        return None
    starts = (valid[:, 1:] & ~valid[:, :-1]).sum(1) + valid[:, 0].long()  # (B,) blocks of tokens per row
    if bool((starts != 1).any()):
        raise ValueError(
            "attention_mask must mark one contiguous block of tokens per row (left or right padding); "
            f"rows {(starts != 1).nonzero().flatten().tolist()} have {starts[starts != 1].tolist()} blocks"
        )
    return valid


class ReducedLM(nn.Module):
    """A policy-aware forward over a wrapped HF decoder (shares its weights; families: `_family`).

    Parameters: the HF model's, plus split weight copies (`splits`, per layer) and routers
    (`routers[task][layer]`, `router` selector only), so an optimizer over `.parameters()`
    trains everything; they are created in the HF model's dtype and device, follow `.to()`,
    and are in `state_dict()` (a fresh wrapper of the same policy loads it).

    Training semantics as HF's: dropout in train mode where the family applies it (attention
    probabilities, Emu3's / Phi3's residual dropout), gradient checkpointing per layer
    (`gradient_checkpointing_enable()` here or on the HF model), bf16, `torch.compile`.
    FSDP2 per layer: `fully_shard` each decoder layer and then the wrapper (the training
    stacks' recipe, see `_sharded`); any other sharded module inside the HF model is refused
    (`_family.check_sharding`).
    """

    def __init__(
        self, hf_model: nn.Module, policy: ReductionPolicy, attention: Kernel = "sdpa", token_map: Tensor | None = None
    ) -> None:
        super().__init__()
        dec = describe(hf_model)
        if attention not in ("sdpa", "eager"):
            raise ValueError(f"attention = {attention!r} must be 'sdpa' or 'eager'")
        if policy.num_layers != len(dec.layers):
            raise ValueError(f"policy.num_layers = {policy.num_layers} but {dec.name} has {len(dec.layers)} layers")
        first = next((i for i in range(len(dec.layers)) if policy.sharing.applies(i)), None)
        if dec.fused_qkv and policy.sharing.qkv != "shared" and first is not None:
            raise ValueError(
                f"apply_policy: {dec.name} layer {first}: sharing.qkv = {policy.sharing.qkv!r} needs "
                "separate q/k/v projections, but this model has a fused qkv_proj; use qkv 'shared'"
            )
        self.hf_model = hf_model
        self.policy = policy
        self.attention = attention
        self._dec = dec  # a plain frozen description: its modules are registered under hf_model
        self.splits = make_splits(dec.layers, policy.sharing)
        if len(self.splits) and any(check_sharding(dec.name, hf_model, dec.layers)):
            raise TypeError(
                f"apply_policy: {dec.name}: sharing (qkv {policy.sharing.qkv!r}, mlp {policy.sharing.mlp!r}) "
                "copies layer weights, and these layers are already FSDP2-sharded; apply the policy first, "
                "then fully_shard the layers and the wrapper"
            )
        self.routers = self._make_routers(dec.config.hidden_size, len(dec.layers))
        # the caller's token ids -> the model's (V_in,); not in state_dict: it is the data's, not a weight
        self.register_buffer("token_map", _check_map(token_map, dec), persistent=False)
        self._generator = torch.Generator().manual_seed(policy.seed)
        self._plans: dict[tuple[str, int, int], _Plan] = {}
        self.gradient_checkpointing = False  # checkpoint every layer (see `_checkpoints`)

    def gradient_checkpointing_enable(self) -> None:
        """Checkpoint every decoder layer in training (as HF's `gradient_checkpointing_enable()`
        on the wrapped model does, which this forward also honours per layer)."""
        self.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        """Stop checkpointing (layers flagged by HF's own switch stay checkpointed)."""
        self.gradient_checkpointing = False

    @property
    def decoder(self) -> Decoder:
        """Where the wrapped model keeps its layers, embedding, norm, rotary and head."""
        return self._dec

    def _make_routers(self, hidden: int, num_layers: int) -> nn.ModuleDict:
        """Routers in the HF model's dtype and on its device (then `.to` moves them with it)."""
        ref = self._dec.embed.weight
        routers = nn.ModuleDict()
        for task in TASKS:
            if selector_info(self.policy.task(task).selector).weights:
                routers[task] = nn.ModuleList(
                    nn.Linear(hidden, 1, dtype=ref.dtype, device=ref.device) for _ in range(num_layers)
                )
                for r in routers[task]:
                    nn.init.normal_(r.weight, std=0.02)
                    nn.init.zeros_(r.bias)
        return routers

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        input_ids: Tensor | None = None,
        *,
        segments: Tensor,
        task: str,
        inputs_embeds: Tensor | None = None,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> ReducedOutput:
        """Reduced forward of one task's batch; input_ids, segments (and labels) are (B, T).

        `inputs_embeds` (B, T, d) replaces `input_ids` (continuous image features scattered
        into the embeddings, as Janus or LLaVA-style models do; the family's embedding
        multiplier still applies, as in HF). `attention_mask` (B, T), 1 on tokens and 0 on
        left or right padding: padding is never an image token, never selected, never a key
        of a real token, and rotary positions count real tokens only (each row's logits are
        those of the row alone); logits at padding positions are meaningless.
        For Janus, task 'generation' embeds the IMAGE segment's ids (codebook indices) with
        its generation embedding and returns its generation head's logits at every position.
        `output_attentions=True` runs this call with the eager kernel (same logits) and
        returns every layer's attention probabilities (see `ReducedOutput`).
        """
        log: _Log | None = [] if output_attentions else None
        if self.token_map is not None:
            input_ids, labels = self._mapped(input_ids), self._mapped(labels)
        batch = _Batch.of(input_ids, inputs_embeds, segments, attention_mask, labels)
        out = self._forward(batch, task, log, output_hidden_states)
        if self.token_map is not None:
            out.logits = out.logits.index_select(-1, self.token_map)  # (B, T_out, V_in): the caller's ids
        if log is not None:
            out.attentions = tuple(p for p, _, _ in log)
            out.attention_positions = tuple((q, k) for _, q, k in log)
        return out

    def _forward(self, batch: _Batch, task: str, log: _Log | None, output_hidden_states: bool) -> ReducedOutput:
        plan, anchor, sharded = self._prepare(batch, task)
        call = _Call(task, plan, "eager" if log is not None else self.attention, log)
        h = self._embed(batch, task)  # (B, T, d)
        tokens = self._initial_tokens(h, batch, plan, anchor)
        states = [(h, tokens.pos)] if output_hidden_states else None
        mass: Tensor | None = None
        for li, layer in enumerate(self._dec.layers):
            run = self._checkpointed if self._checkpoints(layer, call) else self._layer
            if sharded[li]:
                run = _sharded(layer, run)
            h, tokens, mass = run(_Step(li, layer, call), h, tokens, mass)
            if states is not None:
                states.append((h, tokens.pos))
        out = self._head(h, tokens, batch.labels, task)
        if states is not None:
            out.hidden_states = tuple(s for s, _ in states)
            out.hidden_positions = tuple(p for _, p in states)
        return out

    def _mapped(self, ids: Tensor | None) -> Tensor | None:
        """Caller token ids (B, T) -> the model's through `token_map`; -100 (no label) stays."""
        if ids is None:
            return None
        return torch.where(ids == -100, ids, self.token_map[ids.clamp(min=0)])  # (B, T)

    def _embed(self, batch: _Batch, task: str) -> Tensor:
        """Token embeddings (B, T, d): inputs_embeds, or the family's embedding of the ids (and,
        for Janus generation, its generation embedding of the image codes)."""
        dec = self._dec
        if batch.embeds is not None:
            h = batch.embeds
        elif task == "generation" and dec.gen_embed is not None:
            img = batch.is_img[:, :, None]  # (B, T, 1)
            codes, ids = batch.ids.masked_fill(~batch.is_img, 0), batch.ids.masked_fill(batch.is_img, 0)  # (B, T)
            h = torch.where(img, dec.gen_embed(codes), dec.embed(ids))  # (B, T, d)
        else:
            h = dec.embed(batch.ids)  # (B, T, d)
        return h * dec.embed_scale if dec.embed_scale != 1.0 else h

    def _prepare(self, batch: _Batch, task: str) -> tuple[_Plan, Tensor, tuple[bool, ...]]:
        if task not in TASKS:
            raise ValueError(f"task = {task!r} must be one of {TASKS}")
        sharded = check_sharding(self._dec.name, self.hf_model, self._dec.layers)  # fully_shard may come later
        counts = batch.is_img.sum(dim=1)  # (B,)
        num_image = int(counts[0])
        if bool((counts != num_image).any()):
            raise ValueError(f"every sequence of a batch needs the same number of image tokens; got {counts.tolist()}")
        seq = batch.segments.shape[1]
        anchor = _last_prompt(batch.segments, batch.valid)  # (B,)
        plan = self._plan(task, seq, num_image)
        if task == "understanding" and num_image and plan.content:
            last_img = seq - 1 - batch.is_img.flip(1).int().argmax(dim=1)  # (B,)
            if bool((last_img > anchor).any()):
                raise ValueError(
                    f"understanding selector {self.policy.understanding.selector!r} ranks the image by "
                    "the prompt, so every image token must come before the last prompt token (the one "
                    "before the first OUTPUT token); this batch has image tokens after it"
                )
        return plan, anchor, sharded

    def _plan(self, task: str, seq: int, num_image: int) -> _Plan:
        key = (task, seq, num_image)
        if key not in self._plans:
            tp = self.policy.task(task)
            counts = layer_counts(tp, seq, num_image)
            nxt = counts[1:] + [None]
            sel = selector_info(tp.selector)
            need = [sel.previous_mass and c is not None and c.reduces and c.kept > 0 for c in nxt]
            windows = [w if w is not None and w < seq else None for w in self._dec.windows]
            content = sel.content and any(c.reduces and c.kept > 0 for c in counts)
            self._plans[key] = _Plan(counts, need, windows, content, seq - num_image)
        return self._plans[key]

    def _initial_tokens(self, h: Tensor, batch: _Batch, plan: _Plan, anchor: Tensor) -> Tokens:
        """Every token; rotary tables per rotary key at the rotary positions (padding skipped)."""
        b, t = batch.segments.shape
        pos = torch.arange(t, device=h.device)[None]  # (1, T)
        rot = pos if batch.valid is None else (batch.valid.long().cumsum(1) - 1).clamp(min=0)  # (1 or B, T)
        tables = {key: self._dec.rope(h, rot, key) for key in set(self._dec.rope_keys)}  # each (1 or B, T, rd)
        span = image_span(batch.is_img) if len(self.splits) else None  # only split weights use it
        return Tokens(
            pos.expand(b, t),
            batch.is_img,
            tables,
            plan.n_text,
            full=True,
            span=span,
            anchor=anchor,
            valid=batch.valid,
        )

    # ------------------------------------------------------------------ one layer

    def _checkpoints(self, layer: nn.Module, call: _Call) -> bool:
        """Checkpoint this layer: training with gradients and either this wrapper's flag or the
        layer's own (HF's `gradient_checkpointing_enable()` sets `layer.gradient_checkpointing`);
        never while logging attentions (the log and its eager kernel run once)."""
        wanted = self.gradient_checkpointing or bool(getattr(layer, "gradient_checkpointing", False))
        return wanted and self.training and torch.is_grad_enabled() and call.log is None

    def _checkpointed(
        self, step: _Step, h: Tensor, tokens: Tokens, mass: Tensor | None
    ) -> tuple[Tensor, Tokens, Tensor | None]:
        """`_layer` under `torch.utils.checkpoint` (non-reentrant): the layer's activations are
        recomputed in the backward instead of kept. Checkpoint restores the global RNG (dropout
        masks repeat); the `random` selector's own generator is rewound for the recomputation
        and left where the forward left it, so the recomputed layer keeps the same tokens."""
        start, calls = self._generator.get_state(), []

        def run(h: Tensor, mass: Tensor | None) -> tuple[Tensor, Tokens, Tensor | None]:
            now = self._generator.get_state()
            if calls:  # recomputation in the backward
                self._generator.set_state(start)
            try:
                return self._layer(step, h, tokens, mass)
            finally:
                if calls:
                    self._generator.set_state(now)
                calls.append(step.li)

        return checkpoint(run, h, mass, use_reentrant=False)

    def _layer(
        self, step: _Step, h: Tensor, tokens: Tokens, mass: Tensor | None
    ) -> tuple[Tensor, Tokens, Tensor | None]:
        if not step.counts.reduces:  # fast path: every present token is computed
            h, mass = self._block(step, h, tokens, None)
            return h, tokens, mass
        sel, gate = self._select(step, h, tokens, mass)  # (B, k), (B, k) | None
        q_idx = torch.cat([tokens.text_idx, sel], dim=1).sort(dim=1).values  # (B, n_q)
        sub = tokens.subset(q_idx)
        gate = None if gate is None else _gate_rows(gate, sub)  # (B, n_q, 1)
        mode = self.policy.task(step.task).mode
        if mode == "drop":
            h, mass = self._block(step, gather_rows(h, q_idx), sub, gate)
            return h, sub, mass
        if mode == "skip":
            hs, m = self._block(step, gather_rows(h, q_idx), sub, gate)
            mass = None if m is None else m.new_zeros(h.shape[:2]).scatter(1, q_idx, m)  # (B, N)
            return scatter_rows(h, q_idx, hs), tokens, mass
        h, mass = self._query_block(step, h, tokens, q_idx, sub, gate)
        return h, tokens, mass

    def _select(self, step: _Step, h: Tensor, tokens: Tokens, mass: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Kept image tokens: row indices (B, k) sorted, and router gates (B, k) or None, by
        the policy's selector (`model._select.RANKERS`), given what its declaration
        (`searchvlm.selectors`) says it reads."""
        img, k = tokens.img_idx, step.counts.kept  # img: (B, P)
        if k == 0:
            return img[:, :0], None  # (B, 0)
        name = self.policy.task(step.task).selector
        sel = selector_info(name)
        pick = Pick(
            task=step.task,
            layer=step.li,
            k=k,
            img=img,
            h=h,
            mass=mass if sel.previous_mass else None,
            router=self.routers[step.task][step.li] if sel.weights else None,
            scores=functools.partial(self._anchor_scores, step, h, tokens) if sel.scores else None,
            seed=self.policy.seed,
            training=self.training,
            generator=self._generator,
        )
        ranks, gate = RANKERS[name](pick)  # (B, k), (B, k) | None
        return img.gather(1, ranks), gate  # (B, k)

    @torch.no_grad()
    def _anchor_scores(self, step: _Step, h: Tensor, tokens: Tokens) -> Tensor:
        """The last prompt token's head-averaged attention over the present tokens, with this
        layer's norm, projections and rotary on its input h (B, N, d): (B, N) (PyramidDrop's score)."""
        layer = step.layer
        attn, row = layer.self_attn, tokens.anchor_row  # row: (B, 1)
        x = self._dec.norm_at(layer, "pre_attn", h)  # (B, N, d)
        q = self._dec.projection(attn, "q")(gather_rows(x, row))  # (B, 1, H*hd): a text row, shared projection
        (k,) = self._project(step, x, tokens, "k")  # (B, N, H_kv*hd)
        cos, sin = (t.expand(h.shape[0], -1, -1) for t in tokens.rope(self._dec.rope_keys[step.li]))  # (B, N, rd)
        q = self._rotated(attn, "q", q, gather_rows(cos, row), gather_rows(sin, row))  # (B, H, 1, hd)
        k = self._rotated(attn, "k", k, cos, sin)  # (B, H_kv, N, hd)
        allowed = tokens.pos <= tokens.anchor[:, None]  # (B, N)
        if tokens.valid is not None:
            allowed = allowed & tokens.valid
        return anchor_attention(q, k, attn.scaling, allowed, self._dec.attn_softcap)  # (B, N)

    # ------------------------------------------------------------------ blocks

    def _block(self, step: _Step, h: Tensor, tokens: Tokens, gate: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Decoder layer over one token set (queries = keys), causal by position: (B, n, d)."""
        layer = step.layer
        attn = layer.self_attn
        x = self._dec.norm_at(layer, "pre_attn", h)  # (B, n, d)
        q, k, v = self._project(step, x, tokens, "qkv")
        cos, sin = tokens.rope(self._dec.rope_keys[step.li])  # (B or 1, n, rd)
        q, k = self._rotated(attn, "q", q, cos, sin), self._rotated(attn, "k", k, cos, sin)  # (B, H(_kv), n, hd)
        a, mass = self._attend(step, q, k, v, tokens, tokens)  # (B, n, H*hd)
        return self._finish(step, h, attn.o_proj(a), tokens, gate), mass

    def _query_block(
        self, step: _Step, h: Tensor, tokens: Tokens, q_idx: Tensor, sub: Tokens, gate: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """query_drop layer: rows q_idx (B, n_q) are queries, every present token a key/value."""
        layer = step.layer
        attn, key = layer.self_attn, self._dec.rope_keys[step.li]
        hq = gather_rows(h, q_idx)  # (B, n_q, d)
        # the norm is per row: norming the query rows again beats a second gather (and its backward)
        xq = self._dec.norm_at(layer, "pre_attn", hq)  # (B, n_q, d)
        (q,) = self._project(step, xq, sub, "q")  # (B, n_q, H*hd)
        x = self._dec.norm_at(layer, "pre_attn", h)  # (B, N, d)
        k, v = self._project(step, x, tokens, "kv")  # (B, N, H_kv*hd)
        q = self._rotated(attn, "q", q, *sub.rope(key))  # (B, H, n_q, hd)
        k = self._rotated(attn, "k", k, *tokens.rope(key))  # (B, H_kv, N, hd)
        a, mass = self._attend(step, q, k, v, sub, tokens)  # (B, n_q, H*hd)
        out = self._finish(step, hq, attn.o_proj(a), sub, gate)  # (B, n_q, d)
        return scatter_rows(h, q_idx, out), mass  # (B, N, d)

    def _rotated(self, attn: nn.Module, which: str, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """Projected queries or keys x (B, n, heads*hd) -> (B, heads, n, hd): the attention's own
        q_norm / k_norm where the family applies it (on the flat projection or per head), then
        rotary at cos/sin (B or 1, n, rd)."""
        norm = getattr(attn, f"{which}_norm") if self._dec.qk_norm else None
        if self._dec.qk_norm == "flat":
            x = norm(x)  # (B, n, heads*hd)
        b, n, _ = x.shape
        x = x.view(b, n, -1, attn.head_dim)  # (B, n, heads, hd)
        if self._dec.qk_norm == "heads":
            x = norm(x)  # (B, n, heads, hd)
        return _rope(x.transpose(1, 2), cos, sin)  # (B, heads, n, hd)

    def _attend(
        self, step: _Step, q: Tensor, k: Tensor, v: Tensor, queries: Tokens, keys: Tokens
    ) -> tuple[Tensor, Tensor | None]:
        """Attention of `queries` over `keys` (q, k already rotated; v flat), causal by position
        (no mask when queries are keys over a plain sequence): (B, n_q, H*hd), plus the last
        prompt token's attention per key when the next layer selects by it; logs the
        probabilities when `output_attentions` asked for them."""
        attn, window, log = step.layer.self_attn, step.window, step.call.log
        plain = queries is keys and window is None and keys.valid is None
        mask = None if plain else position_mask(queries.pos, keys.pos, window, keys.valid)  # (B, 1, n_q, N)
        probs: list[Tensor] | None = [] if log is not None else None
        a, mass = attend(
            q,
            k,
            _heads(v, attn.head_dim),
            scaling=attn.scaling,
            mask=mask,
            kernel=step.call.kernel,
            mass_rows=queries.anchor_row if step.need_mass else None,
            probs_out=probs,
            softcap=self._dec.attn_softcap,
            dropout=getattr(attn, "attention_dropout", 0.0) if self.training else 0.0,
        )  # (B, n_q, H*hd), (B, N) | None
        if log is not None and probs:  # output_attentions: probs (B, H, n_q, n_kv), positions (B, n_q), (B, n_kv)
            b = probs[0].shape[0]
            log.append((probs[0], queries.pos.expand(b, -1), keys.pos.expand(b, -1)))
        return a, mass

    def _finish(self, step: _Step, h: Tensor, a: Tensor, tokens: Tokens, gate: Tensor | None) -> Tensor:
        """Residual attention update, then the MLP, with the family's norms, residual dropout
        (as HF: on each update before its residual add) and residual multiplier; the router
        gate scales the block update."""
        dec, layer = self._dec, step.layer
        mid = h + self._residual(dec.resid_drop(layer, 0, dec.norm_at(layer, "post_attn", a)))  # (B, n, d)
        m = self._mlp(step, dec.norm_at(layer, "pre_mlp", mid), tokens)  # (B, n, d)
        out = mid + self._residual(dec.resid_drop(layer, 1, dec.norm_at(layer, "post_mlp", m)))
        return out if gate is None else h + gate * (out - h)

    def _residual(self, update: Tensor) -> Tensor:
        """A block update times the family's residual multiplier (Granite; else no op)."""
        r = self._dec.residual_scale
        return update if r == 1.0 else update * r

    def _split(self, li: int) -> nn.Module | None:
        key = str(li)
        return self.splits[key] if key in self.splits else None

    def _project(self, step: _Step, x: Tensor, tokens: Tokens, names: str) -> list[Tensor]:
        """q/k/v projections named in `names` of x (B, n, d), image rows through split copies
        (then text and image rows each take one matmul for all the projections)."""
        text = [self._dec.projection(step.layer.self_attn, n) for n in names]
        split = self._split(step.li)
        image = None if split is None else [split.image_proj(step.task, n) for n in names]
        if image is None or image[0] is None:
            out = [lin(x) for lin in text]  # [(B, n, w_j)]
        else:
            (y,) = _split(x, tokens, [(fused_linear(text), fused_linear(image))])  # (B, n, sum w)
            out = list(y.split([lin.out_features for lin in text], dim=-1))  # [(B, n, w_j)]
        clip = self._dec.clip_qkv  # OLMo: q, k and v clamped to [-clip, clip]
        return out if clip is None else [y.clamp(-clip, clip) for y in out]

    def _mlp(self, step: _Step, x: Tensor, tokens: Tokens) -> Tensor:
        split = self._split(step.li)
        image = None if split is None else split.image_mlp(step.task)
        if image is None:
            return step.layer.mlp(x)  # (B, n, d)
        return _split(x, tokens, [(step.layer.mlp, image)])[0]

    # ------------------------------------------------------------------ head

    def _logits(self, h: Tensor, task: str) -> Tensor:
        """The family's final norm and head on h (..., d) -> (..., V), with Granite's logit
        divisor and Gemma2's final softcapping. Chameleon: the raw lm_head output (its HF
        forward then sets image-token logits to the dtype minimum; we do not)."""
        dec = self._dec
        head = dec.gen_head if task == "generation" and dec.gen_head is not None else dec.head
        logits = head(dec.norm(h))  # (..., V)
        if dec.logit_div != 1.0:
            logits = logits / dec.logit_div
        if dec.logit_softcap is not None:
            logits = torch.tanh(logits / dec.logit_softcap) * dec.logit_softcap
        return logits

    def _head(self, h: Tensor, tokens: Tokens, labels: Tensor | None, task: str) -> ReducedOutput:
        if labels is None:
            return ReducedOutput(self._logits(h, task), tokens.pos)  # (B, N, V)
        targets = F.pad(labels[:, 1:], (0, 1), value=-100).gather(1, tokens.pos)  # (B, N)
        use = targets != -100  # (B, N): positions that predict a labelled token
        n_use, n_all = int(use.sum()), int((labels[:, 1:] != -100).sum())
        if n_use != n_all:
            raise ValueError(
                f"{n_all - n_use} labelled targets are predicted by dropped image tokens; with "
                "mode 'drop' the token before each labelled token must not be an image token"
            )
        logits = self._logits(h[use], task)  # (n_use, V)
        loss = F.cross_entropy(logits.float(), targets[use])
        logits, positions = _per_row(logits, tokens.pos[use], use.sum(dim=1))
        return ReducedOutput(logits, positions, loss)


_FSDP_CALL = "searchvlm_reduced_layer"  # the method of a sharded layer that runs the reduced layer


def _call(run: Callable[..., Any], *args: Any) -> Any:
    return run(*args)


def _sharded(layer: nn.Module, run: Callable[..., Any]) -> Callable[..., Any]:
    """`run` (one reduced layer: `_layer` or `_checkpointed`) inside the FSDP2 hooks of the
    sharded decoder `layer`: FSDP all-gathers a module's parameters before its forward,
    reshards them after it and hooks the backward on its inputs and outputs, but the loop
    runs a layer through its parts, never its `forward`. `register_fsdp_forward_method`
    (FSDP2's API for a module's other forward methods) wraps a method of the layer itself
    that runs `run`, so the hooks see that module, as they see `layer(...)`."""
    from torch.distributed.fsdp import register_fsdp_forward_method

    if _FSDP_CALL not in vars(layer):  # once per layer
        setattr(layer, _FSDP_CALL, _call)
        register_fsdp_forward_method(layer, _FSDP_CALL)
    return functools.partial(getattr(layer, _FSDP_CALL), run)


def _last_prompt(segments: Tensor, valid: Tensor | None) -> Tensor:
    """Position of the last prompt token per sequence (B,): the one just before the first
    OUTPUT token, or the last token (not padding) when there is no OUTPUT segment."""
    out = segments == _OUTPUT  # (B, T)
    if valid is not None:
        out = out & valid
    t = out.shape[1]
    end = segments.new_full(out.shape[:1], t) if valid is None else t - valid.flip(1).int().argmax(dim=1)  # (B,)
    first = torch.where(out.any(dim=1), out.int().argmax(dim=1), end)
    return first - 1  # (B,)


def _split(x: Tensor, tokens: Tokens, fns: list) -> list[Tensor]:
    """Text rows of x (B, n, d) through the shared modules, image rows through the copies."""
    if tokens.span is not None:  # image rows are one block: slices, no gathers
        return split_span(x, tokens.span, fns)
    return split_apply(x, tokens.order, tokens.inverse, tokens.n_text, fns)


def _heads(x: Tensor, head_dim: int) -> Tensor:
    b, n, _ = x.shape
    return x.view(b, n, -1, head_dim).transpose(1, 2)  # (B, heads, n, hd)


def _rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding of x (B, heads, n, hd) at cos/sin (B or 1, n, rd) (HF convention); with
    rd < hd (partial rotary, Phi3) only the first rd features rotate, the rest pass."""
    cos, sin = cos[:, None], sin[:, None]  # (B or 1, 1, n, rd)
    rd = cos.shape[-1]
    if rd == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    rot, rest = x[..., :rd], x[..., rd:]  # (B, heads, n, rd), (B, heads, n, hd - rd)
    return torch.cat([rot * cos + rotate_half(rot) * sin, rest], dim=-1)  # (B, heads, n, hd)


def _gate_rows(gate: Tensor, sub: Tokens) -> Tensor:
    """Router gates (B, k) of the kept image tokens -> per-row gates of `sub` (B, n_q, 1), 1 on text."""
    ones = gate.new_ones(sub.pos.shape)  # (B, n_q)
    return ones.scatter(1, sub.img_idx, gate)[:, :, None]  # (B, n_q, 1)


def _per_row(flat: Tensor, pos: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """Flat rows (n, V) with positions (n,) -> (B, n_max, V), (B, n_max); zero/-1 padding."""
    b = counts.shape[0]
    n_max = int(counts.max()) if b else 0
    if bool((counts == n_max).all()):
        return flat.view(b, n_max, -1), pos.view(b, n_max)  # (B, n, V), (B, n)
    row = torch.repeat_interleave(torch.arange(b, device=flat.device), counts)  # (n,)
    col = torch.arange(flat.shape[0], device=flat.device) - (counts.cumsum(0) - counts)[row]  # (n,)
    out = flat.new_zeros(b, n_max, flat.shape[1]).index_put((row, col), flat)  # (B, n_max, V)
    out_pos = pos.new_full((b, n_max), -1).index_put((row, col), pos)  # (B, n_max)
    return out, out_pos


def _check_map(token_map: Tensor | None, dec: Decoder) -> Tensor | None:
    """A caller-to-model token map (V_in,), checked against the model's vocabulary, on its device."""
    if token_map is None:
        return None
    vocab = dec.head.out_features if isinstance(dec.head, nn.Linear) else dec.config.vocab_size
    if token_map.dim() != 1 or token_map.dtype != torch.long:
        raise ValueError(
            f"token_map must be a 1-D LongTensor (caller ids -> model ids); got {tuple(token_map.shape)} {token_map.dtype}"
        )
    if token_map.numel() and not (0 <= int(token_map.min()) and int(token_map.max()) < vocab):
        raise ValueError(f"token_map maps onto ids outside {dec.name}'s vocabulary [0, {vocab})")
    return token_map.to(dec.embed.weight.device)


def apply_policy(
    hf_model: nn.Module, policy: ReductionPolicy, *, attention: Kernel = "sdpa", token_map: Tensor | None = None
) -> ReducedLM:
    """Wrap an HF decoder so its forward follows `policy` (weights shared).

    Takes the *ForCausalLM of Llama, Qwen2, Qwen3, Mistral, Gemma, Gemma2, Gemma3 (text),
    Phi3, OLMo, OLMo2, Granite and the unified image-token VLMs ChameleonForConditionalGeneration,
    Emu3ForConditionalGeneration, JanusForConditionalGeneration (`_family.SUPPORTED`); anything
    else, and any layer or config feature the loop does not run exactly, raises TypeError
    naming the model, the layer and the feature. `reduced.decoder` tells where the parts are
    and, for the unified VLMs, their image-token ids. With a dense policy the logits equal the
    HF forward's; for Chameleon they equal its raw lm_head output (HF's Chameleon forward sets
    image-token logits to the dtype minimum, for text-only output; generation needs them).

    `attention`: 'sdpa' (fast) or 'eager' (plain matmuls, fp32 softmax; what
    `torch.utils.flop_counter` can count on the CPU). Both give the same logits.

    `token_map` (V_in,) LongTensor: the caller's token ids -> the model's (a data set's words
    and VQ codes laid onto a real model's vocabulary, e.g. `build.token_map`). input_ids and
    labels are mapped; logits come back over the caller's V_in ids, in its order; the loss
    is the model's own, over its whole vocabulary.
    """
    return ReducedLM(hf_model, policy, attention, token_map)

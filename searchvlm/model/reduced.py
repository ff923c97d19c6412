"""The policy-aware reduced forward: `apply_policy(hf_model, policy) -> ReducedLM`.

`ReducedLM` runs a decoder loop over the HF model's decoder layers (found by `_family`) with
the layers' own modules (norms, q/k norms, q/k/v/o projections, MLP, rotary embeddings at
the tokens' ORIGINAL positions, final norm, head); a family feature it cannot run exactly
is refused when the policy is applied. Per layer and task its `_layers.LayerRunner` (given
the layers' parts, the policy, the split copies and routers) executes the plan of
`searchvlm.objectives.flops.layer_counts`: image tokens not kept are query-dropped (still
keys/values), skipped (neither), or dropped for good (see docs/definitions.md). A layer
that computes every present token takes a fast path with no gather/scatter; with a dense
policy the logits equal `hf_model(input_ids).logits` (Chameleon: its raw lm_head output, see `_logits`).

Causal by construction: no logit that a loss or metric reads depends on a later token.
Content-based choices look only at what precedes every position whose loss depends on them:
understanding ranks the image by the LAST PROMPT TOKEN (the one before the first OUTPUT
token), generation decides each image token from its own state (`_layers.LayerRunner._select`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from searchvlm.model._batch import AttentionLog, Batch, Call, Kernel, Plan, Step, last_prompt
from searchvlm.model._family import Decoder, check_sharding, describe
from searchvlm.model._layers import LayerRunner
from searchvlm.model._sharing import make_splits
from searchvlm.model._tokens import Frame, Tokens, image_span
from searchvlm.objectives.flops import layer_counts
from searchvlm.schema.policy import TASKS, ReductionPolicy
from searchvlm.schema.policy.selectors import selector_info

__all__ = ["ReducedLM", "ReducedOutput", "apply_policy"]


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
        # one decoder layer's computation; holds references to the modules registered above
        self._runner = LayerRunner(dec, policy, self.splits, self.routers, self._generator)
        self._plans: dict[tuple[str, int, int], Plan] = {}
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
        log: AttentionLog | None = [] if output_attentions else None
        if self.token_map is not None:
            input_ids, labels = self._mapped(input_ids), self._mapped(labels)
        batch = Batch.of(input_ids, inputs_embeds, segments, attention_mask, labels)
        out = self._forward(batch, task, log, output_hidden_states)
        if self.token_map is not None:
            out.logits = out.logits.index_select(-1, self.token_map)  # (B, T_out, V_in): the caller's ids
        if log is not None:
            out.attentions = tuple(p for p, _, _ in log)
            out.attention_positions = tuple((q, k) for _, q, k in log)
        return out

    def _forward(self, batch: Batch, task: str, log: AttentionLog | None, output_hidden_states: bool) -> ReducedOutput:
        plan, anchor, sharded = self._prepare(batch, task)
        call = Call(task, plan, "eager" if log is not None else self.attention, log, self.training)
        h = self._embed(batch, task)  # (B, T, d)
        tokens = self._initial_tokens(h, batch, plan, anchor)
        states = [(h, tokens.pos)] if output_hidden_states else None
        mass: Tensor | None = None
        for li, layer in enumerate(self._dec.layers):
            run = self._runner.run_checkpointed if self._checkpoints(layer, call) else self._runner.run
            if sharded[li]:
                run = _sharded(layer, run)
            h, tokens, mass = run(Step(li, layer, call), h, tokens, mass)  # (B, n_l, d): the tokens still present
            if states is not None:
                states.append((h, tokens.pos))
        out = self._head(h, tokens, batch.labels, task)
        if states is not None:
            out.hidden_states = tuple(s for s, _ in states)
            out.hidden_positions = tuple(p for _, p in states)
        return out

    def _checkpoints(self, layer: nn.Module, call: Call) -> bool:
        """Checkpoint this layer: training with gradients and either this wrapper's flag or the
        layer's own (HF's `gradient_checkpointing_enable()` sets `layer.gradient_checkpointing`);
        never while logging attentions (the log and its eager kernel run once)."""
        wanted = self.gradient_checkpointing or bool(getattr(layer, "gradient_checkpointing", False))
        return wanted and call.training and torch.is_grad_enabled() and call.log is None

    def _mapped(self, ids: Tensor | None) -> Tensor | None:
        """Caller token ids (B, T) -> the model's through `token_map`; -100 (no label) stays."""
        if ids is None:
            return None
        return torch.where(ids == -100, ids, self.token_map[ids.clamp(min=0)])  # (B, T)

    def _embed(self, batch: Batch, task: str) -> Tensor:
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

    def _prepare(self, batch: Batch, task: str) -> tuple[Plan, Tensor, tuple[bool, ...]]:
        if task not in TASKS:
            raise ValueError(f"task = {task!r} must be one of {TASKS}")
        sharded = check_sharding(self._dec.name, self.hf_model, self._dec.layers)  # fully_shard may come later
        counts = batch.is_img.sum(dim=1)  # (B,)
        num_image = int(counts[0])
        if bool((counts != num_image).any()):
            raise ValueError(f"every sequence of a batch needs the same number of image tokens; got {counts.tolist()}")
        seq = batch.segments.shape[1]
        anchor = last_prompt(batch.segments, batch.valid)  # (B,)
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

    def _plan(self, task: str, seq: int, num_image: int) -> Plan:
        key = (task, seq, num_image)
        if key not in self._plans:
            tp = self.policy.task(task)
            counts = layer_counts(tp, seq, num_image)
            nxt = counts[1:] + [None]
            sel = selector_info(tp.selector)
            need = [sel.previous_mass and c is not None and c.reduces and c.kept > 0 for c in nxt]
            windows = [w if w is not None and w < seq else None for w in self._dec.windows]
            content = sel.content and any(c.reduces and c.kept > 0 for c in counts)
            self._plans[key] = Plan(counts, need, windows, content, seq - num_image)
        return self._plans[key]

    def _initial_tokens(self, h: Tensor, batch: Batch, plan: Plan, anchor: Tensor) -> Tokens:
        """Every token; rotary tables per rotary key at the rotary positions (padding skipped)."""
        b, t = batch.segments.shape
        pos = torch.arange(t, device=h.device)[None]  # (1, T)
        rot = pos if batch.valid is None else (batch.valid.long().cumsum(1) - 1).clamp(min=0)  # (1 or B, T)
        tables = {key: self._dec.rope(h, rot, key) for key in set(self._dec.rope_keys)}  # each (1 or B, T, rd)
        span = image_span(batch.is_img) if len(self.splits) else None  # only split weights use it
        frame = Frame(tables, plan.n_text, anchor)
        return Tokens(pos.expand(b, t), batch.is_img, frame, full=True, span=span, valid=batch.valid)

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
    """`run` (one reduced layer: `LayerRunner.run` or `.run_checkpointed`) inside the FSDP2 hooks of the
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
            "token_map must be a 1-D LongTensor (caller ids -> model ids); "
            f"got {tuple(token_map.shape)} {token_map.dtype}"
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

"""The reduced computation of one decoder layer (L2): `LayerRunner`, which
`searchvlm.model.reduced.ReducedLM.forward` calls once per layer. It is given what a layer
reads and owns none of it: the decoder description (the HF layers' parts), the policy, the
split weight copies and routers (registered on the wrapper, so their state_dict names are
the wrapper's) and the `random` selector's generator; each call's task, plan, kernel and
train mode come with its `Step` (`model._batch`).

Per layer and task it executes the plan's `LayerCounts`: a layer that computes every present
token takes the fast path (`_block`, no gather/scatter); otherwise the selector picks the kept
image tokens and the rest are query-dropped (`_query_block`: still keys/values), skipped or
dropped for good. Projections and MLPs send image rows through split weight copies where the
policy's sharing has them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from transformers.models.llama.modeling_llama import rotate_half

from searchvlm.model._attention import Scoring, anchor_attention, attend, position_mask
from searchvlm.model._batch import Step
from searchvlm.model._family import Decoder
from searchvlm.model._select import RANKERS, Pick
from searchvlm.model._sharing import fused_linear, split_apply, split_span
from searchvlm.model._tokens import Tokens, gather_rows, scatter_rows
from searchvlm.schema.policy import ReductionPolicy
from searchvlm.schema.policy.selectors import selector_info

LayerOut = tuple[Tensor, Tokens, Tensor | None]  # h (B, N', d), the tokens present, mass (B, N') | None


@dataclass(frozen=True, eq=False)
class LayerRunner:
    """One decoder layer of the reduced forward, over explicitly given parts (references only:
    `ReducedLM` registers the modules, and the generator's state moves as the selector draws)."""

    dec: Decoder  # the HF model's layers, norms, projections and rotary (`_family.describe`)
    policy: ReductionPolicy
    splits: nn.ModuleDict  # str(layer) -> `_sharing.LayerSplit`: image-token weight copies
    routers: nn.ModuleDict  # task -> per-layer routers (d -> 1), `router` selector only
    generator: torch.Generator  # the `random` selector's

    def run(self, step: Step, h: Tensor, tokens: Tokens, mass: Tensor | None) -> LayerOut:
        """Layer `step.li` on h (B, N, d) of the present `tokens`; `mass` (B, N): the previous
        layer's last-prompt-token attention when this layer's selector reads it."""
        if not step.counts.reduces:  # fast path: every present token is computed
            h, mass = self._block(step, h, tokens, None)
            return h, tokens, mass
        return self._reduced(step, h, tokens, mass)

    def run_checkpointed(self, step: Step, h: Tensor, tokens: Tokens, mass: Tensor | None) -> LayerOut:
        """`run` under `torch.utils.checkpoint` (non-reentrant): the layer's activations are
        recomputed in the backward instead of kept. Checkpoint restores the global RNG (dropout
        masks repeat); the `random` selector's own generator is rewound for the recomputation
        and left where the forward left it, so the recomputed layer keeps the same tokens."""
        start, calls = self.generator.get_state(), []

        def run(h: Tensor, mass: Tensor | None) -> LayerOut:
            now = self.generator.get_state()
            if calls:  # recomputation in the backward
                self.generator.set_state(start)
            try:
                return self.run(step, h, tokens, mass)
            finally:
                if calls:
                    self.generator.set_state(now)
                calls.append(step.li)

        return checkpoint(run, h, mass, use_reentrant=False)

    def _reduced(self, step: Step, h: Tensor, tokens: Tokens, mass: Tensor | None) -> LayerOut:
        """A layer that keeps `step.counts.kept` image tokens; the rest by the task's mode."""
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

    def _select(self, step: Step, h: Tensor, tokens: Tokens, mass: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Kept image tokens: row indices (B, k) sorted, and router gates (B, k) or None, by
        the policy's selector (`model._select.RANKERS`), given what its declaration
        (`searchvlm.schema.policy.selectors`) says it reads."""
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
            training=step.call.training,
            generator=self.generator,
        )
        ranks, gate = RANKERS[name](pick)  # (B, k), (B, k) | None
        return img.gather(1, ranks), gate  # (B, k)

    @torch.no_grad()
    def _anchor_scores(self, step: Step, h: Tensor, tokens: Tokens) -> Tensor:
        """The last prompt token's head-averaged attention over the present tokens, with this
        layer's norm, projections and rotary on its input h (B, N, d): (B, N) (PyramidDrop's score)."""
        layer = step.layer
        attn, row = layer.self_attn, tokens.anchor_row  # row: (B, 1)
        x = self.dec.norm_at(layer, "pre_attn", h)  # (B, N, d)
        q = self.dec.projection(attn, "q")(gather_rows(x, row))  # (B, 1, H*hd): a text row, shared projection
        (k,) = self._project(step, x, tokens, "k")  # (B, N, H_kv*hd)
        cos, sin = (t.expand(h.shape[0], -1, -1) for t in tokens.rope(self.dec.rope_keys[step.li]))  # (B, N, rd)
        q = self._rotated(attn, "q", q, gather_rows(cos, row), gather_rows(sin, row))  # (B, H, 1, hd)
        k = self._rotated(attn, "k", k, cos, sin)  # (B, H_kv, N, hd)
        allowed = tokens.pos <= tokens.anchor[:, None]  # (B, N)
        if tokens.valid is not None:
            allowed = allowed & tokens.valid
        return anchor_attention(q, k, attn.scaling, allowed, self.dec.attn_softcap)  # (B, N)

    # ------------------------------------------------------------------ blocks

    def _block(self, step: Step, h: Tensor, tokens: Tokens, gate: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Decoder layer over one token set (queries = keys), causal by position: (B, n, d)."""
        layer = step.layer
        attn = layer.self_attn
        x = self.dec.norm_at(layer, "pre_attn", h)  # (B, n, d)
        q, k, v = self._project(step, x, tokens, "qkv")
        cos, sin = tokens.rope(self.dec.rope_keys[step.li])  # (B or 1, n, rd)
        q, k = self._rotated(attn, "q", q, cos, sin), self._rotated(attn, "k", k, cos, sin)  # (B, H(_kv), n, hd)
        a, mass = self._attend(step, q, k, v, tokens, tokens)  # (B, n, H*hd)
        return self._finish(step, h, attn.o_proj(a), tokens, gate), mass

    def _query_block(
        self, step: Step, h: Tensor, tokens: Tokens, q_idx: Tensor, sub: Tokens, gate: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """query_drop layer: rows q_idx (B, n_q) are queries, every present token a key/value."""
        layer = step.layer
        attn, key = layer.self_attn, self.dec.rope_keys[step.li]
        hq = gather_rows(h, q_idx)  # (B, n_q, d)
        # the norm is per row: norming the query rows again beats a second gather (and its backward)
        xq = self.dec.norm_at(layer, "pre_attn", hq)  # (B, n_q, d)
        (q,) = self._project(step, xq, sub, "q")  # (B, n_q, H*hd)
        x = self.dec.norm_at(layer, "pre_attn", h)  # (B, N, d)
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
        norm = getattr(attn, f"{which}_norm") if self.dec.qk_norm else None
        if self.dec.qk_norm == "flat":
            x = norm(x)  # (B, n, heads*hd)
        b, n, _ = x.shape
        x = x.view(b, n, -1, attn.head_dim)  # (B, n, heads, hd)
        if self.dec.qk_norm == "heads":
            x = norm(x)  # (B, n, heads, hd)
        return _rope(x.transpose(1, 2), cos, sin)  # (B, heads, n, hd)

    def _attend(
        self, step: Step, q: Tensor, k: Tensor, v: Tensor, queries: Tokens, keys: Tokens
    ) -> tuple[Tensor, Tensor | None]:
        """Attention of `queries` over `keys` (q, k already rotated; v flat), causal by position
        (no mask when queries are keys over a plain sequence): (B, n_q, H*hd), plus the last
        prompt token's attention per key when the next layer selects by it; logs the
        probabilities when `output_attentions` asked for them."""
        attn, window, log = step.layer.self_attn, step.window, step.call.log
        plain = queries is keys and window is None and keys.valid is None
        mask = None if plain else position_mask(queries.pos, keys.pos, window, keys.valid)  # (B, 1, n_q, N)
        probs: list[Tensor] | None = [] if log is not None else None
        how = Scoring(
            scaling=attn.scaling,
            mask=mask,
            kernel=step.call.kernel,
            softcap=self.dec.attn_softcap,
            dropout=getattr(attn, "attention_dropout", 0.0) if step.call.training else 0.0,
        )
        mass_rows = queries.anchor_row if step.need_mass else None
        a, mass = attend(q, k, _heads(v, attn.head_dim), how, mass_rows, probs)  # (B, n_q, H*hd), (B, N) | None
        if log is not None and probs:  # output_attentions: probs (B, H, n_q, n_kv), positions (B, n_q), (B, n_kv)
            b = probs[0].shape[0]
            log.append((probs[0], queries.pos.expand(b, -1), keys.pos.expand(b, -1)))
        return a, mass

    def _finish(self, step: Step, h: Tensor, a: Tensor, tokens: Tokens, gate: Tensor | None) -> Tensor:
        """Residual attention update, then the MLP, with the family's norms, residual dropout
        (as HF: on each update before its residual add) and residual multiplier; the router
        gate scales the block update."""
        dec, layer = self.dec, step.layer
        mid = h + self._residual(dec.resid_drop(layer, 0, dec.norm_at(layer, "post_attn", a)))  # (B, n, d)
        m = self._mlp(step, dec.norm_at(layer, "pre_mlp", mid), tokens)  # (B, n, d)
        out = mid + self._residual(dec.resid_drop(layer, 1, dec.norm_at(layer, "post_mlp", m)))
        return out if gate is None else h + gate * (out - h)

    def _residual(self, update: Tensor) -> Tensor:
        """A block update times the family's residual multiplier (Granite; else no op)."""
        r = self.dec.residual_scale
        return update if r == 1.0 else update * r

    def _split(self, li: int) -> nn.Module | None:
        key = str(li)
        return self.splits[key] if key in self.splits else None

    def _project(self, step: Step, x: Tensor, tokens: Tokens, names: str) -> list[Tensor]:
        """q/k/v projections named in `names` of x (B, n, d), image rows through split copies
        (then text and image rows each take one matmul for all the projections)."""
        text = [self.dec.projection(step.layer.self_attn, n) for n in names]
        split = self._split(step.li)
        image = None if split is None else [split.image_proj(step.task, n) for n in names]
        if image is None or image[0] is None:
            out = [lin(x) for lin in text]  # [(B, n, w_j)]
        else:
            (y,) = _split(x, tokens, [(fused_linear(text), fused_linear(image))])  # (B, n, sum w)
            out = list(y.split([lin.out_features for lin in text], dim=-1))  # [(B, n, w_j)]
        clip = self.dec.clip_qkv  # OLMo: q, k and v clamped to [-clip, clip]
        return out if clip is None else [y.clamp(-clip, clip) for y in out]

    def _mlp(self, step: Step, x: Tensor, tokens: Tokens) -> Tensor:
        split = self._split(step.li)
        image = None if split is None else split.image_mlp(step.task)
        if image is None:
            return step.layer.mlp(x)  # (B, n, d)
        return _split(x, tokens, [(step.layer.mlp, image)])[0]


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

"""Model families: finds an HF model's decoder parts and refuses what the reduced loop cannot run exactly.

`describe(hf_model)` returns a frozen `Decoder`: the decoder layers, token embedding, final
norm, rotary embedding and head, where each layer keeps its norms (`Layout`), how q/k norms
and the q/k/v projections sit, the scalar features (Granite multipliers, Gemma2 softcapping,
OLMo qkv clipping), and for the unified image-token models their image-token ids and
generation embedding / head (Janus). The reduced loop calls the family's own modules (norms,
projections, MLP, rotary, head); this module only says where they are.

Adding a family is one `_FAMILIES` entry. Anything a family entry does not name (a layer
submodule, a config field, a layer type, a rotary variant) is refused at `apply_policy`
time with the model class, the layer and the feature in the message: exact or refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import reduce

from torch import Tensor, nn
from transformers import PretrainedConfig

# Config fields every supported family may carry: sizes, ids, initialisation, and features
# the family's own modules implement when the loop calls them (bias, activation, rotary
# scaling types, head_dim, sliding windows read per layer). Dropout: attention_dropout is
# read from each attention module (`attention_dropout`, on the probabilities, as HF's
# attention functions do); resid_pdrop / Emu3's residual dropout are the layer's own
# nn.Dropout modules named by `_Family.resid_dropout`; embd_pdrop is unused by HF's Phi3.
_GENERIC_CONFIG = frozenset(PretrainedConfig().to_dict()) | {
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "hidden_activation",
    "max_position_embeddings",
    "original_max_position_embeddings",
    "initializer_range",
    "rms_norm_eps",
    "use_cache",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "tie_word_embeddings",
    "rope_parameters",
    "attention_bias",
    "mlp_bias",
    "attention_dropout",
    "resid_pdrop",
    "embd_pdrop",
    "pretraining_tp",
    "sliding_window",
    "layer_types",
    "use_sliding_window",
    "max_window_layers",
    "_sliding_window_pattern",
}
_LAYER_TYPES = ("full_attention", "sliding_attention")


@dataclass(frozen=True)
class Layout:
    """Attribute names of a layer's norms (None: no norm there). The block is
    `mid = h + r * post_attn(attn(pre_attn(h)))`, `out = mid + r * post_mlp(mlp(pre_mlp(mid)))`."""

    pre_attn: str | None = "input_layernorm"
    post_attn: str | None = None
    pre_mlp: str | None = "post_attention_layernorm"
    post_mlp: str | None = None

    def names(self) -> set[str]:
        return {n for n in (self.pre_attn, self.post_attn, self.pre_mlp, self.post_mlp) if n}


LLAMA = Layout()
SANDWICH = Layout(
    "input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"
)
POST_NORM = Layout(None, "post_attention_layernorm", None, "post_feedforward_layernorm")  # OLMo2
SWIN = Layout(None, "input_layernorm", None, "post_attention_layernorm")  # Chameleon swin_norm


@dataclass(frozen=True)
class Decoder:
    """What the reduced loop needs of one HF model (modules are the model's own, shared).

    qk_norm: None, 'heads' (the attention's q_norm / k_norm on (B, n, H, hd): Qwen3, Gemma3,
        Chameleon) or 'flat' (on the whole projection (B, n, H*hd): OLMo2), before rotary.
    rope_keys: per layer, the layer type passed to `rotary` (Gemma3), or None.
    embed_scale: multiplies the embeddings (Granite; Gemma's scale is inside its embedding).
    residual_scale: multiplies both block updates (Granite).
    logit_div / logit_softcap: logits / div (Granite), then cap * tanh(logits / cap) (Gemma2/3).
    attn_softcap: cap * tanh(scores / cap) on the attention scores (Gemma2).
    image_token_ids: the vocabulary ids of image tokens (Chameleon, Emu3), else ().
    image_token_id: the placeholder id continuous image features replace (Janus), else None.
    gen_embed / gen_head: image-code embedding and head for generation (Janus), else None.
    """

    name: str
    config: PretrainedConfig
    layers: nn.ModuleList
    embed: nn.Module
    norm: nn.Module
    rotary: nn.Module
    head: nn.Module
    layout: Layout = LLAMA
    qk_norm: str | None = None
    fused_qkv: bool = False
    rope_keys: tuple[str | None, ...] = ()
    windows: tuple[int | None, ...] = ()
    embed_scale: float = 1.0
    residual_scale: float = 1.0
    logit_div: float = 1.0
    logit_softcap: float | None = None
    attn_softcap: float | None = None
    clip_qkv: float | None = None
    resid_dropout: tuple[str | None, str | None] = (None, None)
    image_token_ids: tuple[int, ...] = ()
    image_token_id: int | None = None
    gen_embed: nn.Module | None = None
    gen_head: nn.Module | None = None

    def norm_at(self, layer: nn.Module, slot: str, x: Tensor) -> Tensor:
        """The layer's norm in `slot` ('pre_attn', ...) applied to x, or x where there is none."""
        name = getattr(self.layout, slot)
        return x if name is None else getattr(layer, name)(x)

    def resid_drop(self, layer: nn.Module, which: int, x: Tensor) -> Tensor:
        """The layer's residual dropout on the attention (which=0) or MLP (1) update, where the
        family has one (Emu3, Phi3; an nn.Dropout: active in train mode only), else x."""
        name = self.resid_dropout[which]
        return x if name is None else getattr(layer, name)(x)

    def rope(self, h: Tensor, pos: Tensor, key: str | None) -> tuple[Tensor, Tensor]:
        """The family's rotary cos/sin at positions pos (B or 1, T): each (B or 1, T, rd)."""
        return self.rotary(h, pos) if key is None else self.rotary(h, pos, key)

    def projection(self, attn: nn.Module, name: str) -> nn.Module | _Slice:
        """Projection `name` ('q' | 'k' | 'v') of `attn`: its own Linear, or a row slice of a
        fused qkv_proj (Phi3: q, k, v side by side)."""
        if not self.fused_qkv:
            return getattr(attn, f"{name}_proj")
        q = attn.config.num_attention_heads * attn.head_dim
        kv = attn.config.num_key_value_heads * attn.head_dim
        start, width = {"q": (0, q), "k": (q, kv), "v": (q + kv, kv)}[name]
        return _Slice(attn.qkv_proj, start, width)


class _Slice:
    """Rows start..start+width of a Linear, called like a Linear (gradients reach its weight)."""

    def __init__(self, linear: nn.Linear, start: int, width: int) -> None:
        self.linear, self.start, self.out_features = linear, start, width

    @property
    def weight(self) -> Tensor:
        return self.linear.weight[self.start : self.start + self.out_features]  # (w, d)

    @property
    def bias(self) -> Tensor | None:
        b = self.linear.bias
        return None if b is None else b[self.start : self.start + self.out_features]  # (w,)

    def __call__(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.weight, self.bias)  # (B, n, w)


@dataclass(frozen=True)
class _Family:
    """How one HF class holds its decoder: attribute paths and features (see `Decoder`)."""

    decoder: str = "model"  # path from the model to the module with layers/embed_tokens/norm/rotary_emb
    text_config: str = ""  # path from model.config to the decoder's config
    layout: Layout = LLAMA
    qk_norm: str | None = None
    fused_qkv: bool = False
    config: frozenset[str] = frozenset()  # config fields beyond _GENERIC_CONFIG this entry implements
    outside: frozenset[str] = frozenset()  # decoder children outside the token path (VQ models)
    attn_softcap: bool = False  # the attention applies attn_logit_softcapping (Gemma2, not Gemma3)
    rope_by_type: bool = False  # rotary takes the layer type (Gemma3)
    # the layer's nn.Dropout on the attention / MLP update before each residual add (Emu3, Phi3)
    resid_dropout: tuple[str | None, str | None] = (None, None)
    extras: Callable[[nn.Module], dict] = field(default=lambda m: {})


_GEMMA2 = frozenset(
    {"query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping", "use_bidirectional_attention"}
)
_GRANITE = frozenset({"attention_multiplier", "embedding_multiplier", "residual_multiplier", "logits_scaling"})
_CHAMELEON = frozenset({"swin_norm", "model_parallel_size", "vocabulary_map", "image_token_id", "vq_config"})


def _chameleon(m: nn.Module) -> dict:
    layout = SWIN if m.config.swin_norm else LLAMA
    return {"image_token_ids": tuple(m.model.vocabulary_mapping.image_tokens), "layout": layout}


def _emu3(m: nn.Module) -> dict:
    return {"image_token_ids": tuple(m.model.vocabulary_mapping.image_tokens)}


def _janus(m: nn.Module) -> dict:
    inner = m.model
    return {
        "image_token_id": m.config.image_token_id,
        # a container of the model's own modules (no closure: deepcopy keeps them consistent)
        "gen_embed": nn.Sequential(inner.generation_embeddings, inner.generation_aligner),  # codes (B, n) -> (B, n, d)
        "gen_head": inner.generation_head,
    }


# Class name -> family entry: the one place a new family is added.
_FAMILIES: dict[str, _Family] = {
    "LlamaForCausalLM": _Family(),
    "MistralForCausalLM": _Family(),
    "Qwen2ForCausalLM": _Family(),
    "Qwen3ForCausalLM": _Family(qk_norm="heads"),
    "GemmaForCausalLM": _Family(config=frozenset({"use_bidirectional_attention"})),
    "Gemma2ForCausalLM": _Family(layout=SANDWICH, config=_GEMMA2, attn_softcap=True),
    # Gemma3's attention stores attn_logit_softcapping but HF never applies it: neither do we.
    "Gemma3ForCausalLM": _Family(layout=SANDWICH, qk_norm="heads", config=_GEMMA2, rope_by_type=True),
    "Phi3ForCausalLM": _Family(fused_qkv=True, resid_dropout=("resid_attn_dropout", "resid_mlp_dropout")),
    "OlmoForCausalLM": _Family(config=frozenset({"clip_qkv"})),
    "Olmo2ForCausalLM": _Family(layout=POST_NORM, qk_norm="flat"),
    "GraniteForCausalLM": _Family(config=_GRANITE),
    # Chameleon's HF head sets image-token logits to the dtype's minimum (text-only output);
    # the reduced forward returns the raw lm_head logits, which generation needs.
    "ChameleonForConditionalGeneration": _Family(
        qk_norm="heads", config=_CHAMELEON, outside=frozenset({"vqmodel"}), extras=_chameleon
    ),
    # Emu3's layer applies one nn.Dropout(attention_dropout) to both block updates
    "Emu3ForConditionalGeneration": _Family(
        decoder="model.text_model", text_config="text_config", resid_dropout=("dropout", "dropout"), extras=_emu3
    ),
    "JanusForConditionalGeneration": _Family(decoder="model.language_model", text_config="text_config", extras=_janus),
}
SUPPORTED = tuple(_FAMILIES)


def _refuse(model: str, where: str, feature: str) -> TypeError:
    return TypeError(f"apply_policy: {model} {where}: {feature} is not implemented exactly by the reduced loop")


def _config_features(name: str, fam: _Family, cfg: PretrainedConfig) -> dict:
    """The scalar features of `cfg`; refuses fields and values this entry does not implement."""
    unknown = sorted(set(cfg.to_dict()) - _GENERIC_CONFIG - fam.config)
    if unknown:
        raise _refuse(name, "config", f"config field(s) {unknown}")
    if getattr(cfg, "use_bidirectional_attention", None):
        raise _refuse(name, "config", "use_bidirectional_attention = True (bidirectional attention)")
    rope = cfg.rope_parameters or {}
    params = rope.values() if fam.rope_by_type else [rope]
    if any("mrope_section" in p or "mrope_interleaved" in p for p in params):
        raise _refuse(name, "config", "multimodal rotary (rope_parameters.mrope_section)")
    bad = [t for t in getattr(cfg, "layer_types", None) or () if t not in _LAYER_TYPES]
    if bad:
        raise _refuse(name, "config", f"layer types {sorted(set(bad))} (only {_LAYER_TYPES})")
    return {
        "embed_scale": float(getattr(cfg, "embedding_multiplier", 1.0)),
        "residual_scale": float(getattr(cfg, "residual_multiplier", 1.0)),
        "logit_div": float(getattr(cfg, "logits_scaling", 1.0)),
        "logit_softcap": getattr(cfg, "final_logit_softcapping", None),
        "attn_softcap": getattr(cfg, "attn_logit_softcapping", None) if fam.attn_softcap else None,
        "clip_qkv": getattr(cfg, "clip_qkv", None),
    }


def _check_children(name: str, where: str, module: nn.Module, known: set[str]) -> None:
    """Refuses a module whose children differ from `known`."""
    have = {n for n, _ in module.named_children()}
    if have - known:
        raise _refuse(name, where, f"unknown submodule(s) {sorted(have - known)}")
    if known - have:
        raise _refuse(name, where, f"missing submodule(s) {sorted(known - have)} (expected {sorted(known)})")


def _check_layer(name: str, i: int, layer: nn.Module, fam: _Family, layout: Layout) -> None:
    drops = {n for n in fam.resid_dropout if n}
    _check_children(name, f"layer {i}", layer, {"self_attn", "mlp"} | layout.names() | drops)
    attn = layer.self_attn
    proj = {"qkv_proj"} if fam.fused_qkv else {"q_proj", "k_proj", "v_proj"}
    norms = {"q_norm", "k_norm"} if fam.qk_norm else set()
    _check_children(name, f"layer {i} attention", attn, proj | {"o_proj"} | norms)
    if not getattr(attn, "is_causal", True):
        raise _refuse(name, f"layer {i} attention", "non-causal attention (is_causal = False)")


def _window(attn: nn.Module, cfg: PretrainedConfig) -> int | None:
    if hasattr(attn, "sliding_window"):
        return attn.sliding_window
    return getattr(cfg, "sliding_window", None)


def check_sharding(name: str, model: nn.Module, layers: Sequence[nn.Module]) -> tuple[bool, ...]:
    """Which decoder `layers` are FSDP2-sharded (`fully_shard(layer)`: the reduced loop runs
    each through the layer's own FSDP hooks); refuses any other sharded module inside the
    model: FSDP gathers a module's parameters in hooks around that module's forward, and the
    loop calls the parts of a layer (and never the model's own forward), so their parameters
    would stay sharded."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch build without distributed
        return (False,) * len(layers)
    ok = {id(layer) for layer in layers}
    for where, module in model.named_modules():
        if isinstance(module, FSDPModule) and id(module) not in ok:
            raise TypeError(
                f"apply_policy: {name} module {where or '<root>'!r}: FSDP2 sharding (fully_shard) of this "
                "module is not implemented by the reduced loop, which never calls its forward (where FSDP "
                "gathers its parameters); shard the decoder layers and the wrapper instead: "
                "reduced = apply_policy(model, policy); for layer in reduced.decoder.layers: "
                "fully_shard(layer); fully_shard(reduced)"
            )
    return tuple(isinstance(layer, FSDPModule) for layer in layers)


def _family_name(model: nn.Module) -> str:
    """The supported class `model` is, through its MRO: `fully_shard(model)` swaps the class
    for a subclass (FSDPLlamaForCausalLM), which check_sharding then names and refuses."""
    return next((c.__name__ for c in type(model).__mro__ if c.__name__ in _FAMILIES), type(model).__name__)


def describe(hf_model: nn.Module) -> Decoder:
    """The `Decoder` of a supported HF model; TypeError naming model, layer and feature otherwise."""
    name = _family_name(hf_model)
    fam = _FAMILIES.get(name)
    if fam is None:
        raise TypeError(
            f"apply_policy takes a Llama-family decoder or unified image-token VLM ({', '.join(SUPPORTED)}); "
            f"{name} is not one of them"
        )
    inner = reduce(getattr, fam.decoder.split("."), hf_model)
    check_sharding(name, hf_model, inner.layers)
    cfg = reduce(getattr, fam.text_config.split("."), hf_model.config) if fam.text_config else hf_model.config
    feats = _config_features(name, fam, cfg) | fam.extras(hf_model)
    layout = feats.pop("layout", fam.layout)
    _check_children(name, "decoder", inner, {"embed_tokens", "layers", "norm", "rotary_emb"} | fam.outside)
    for i, layer in enumerate(inner.layers):
        _check_layer(name, i, layer, fam, layout)
    layer_types = getattr(cfg, "layer_types", None) or [None] * len(inner.layers)
    return Decoder(
        name=name,
        config=cfg,
        layers=inner.layers,
        embed=inner.embed_tokens,
        norm=inner.norm,
        rotary=inner.rotary_emb,
        head=hf_model.lm_head,
        layout=layout,
        qk_norm=fam.qk_norm,
        fused_qkv=fam.fused_qkv,
        resid_dropout=fam.resid_dropout,
        rope_keys=tuple(layer_types) if fam.rope_by_type else (None,) * len(inner.layers),
        windows=tuple(_window(layer.self_attn, cfg) for layer in inner.layers),
        **feats,
    )

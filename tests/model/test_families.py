"""Every supported HF family: the dense reduced forward equals HF within 1e-5 for both tasks,
or apply_policy refuses it naming the model, the layer and the feature.

Models are tiny (hidden 32, 2 layers, vocab 64), built locally; norm weights are perturbed
away from their init (a skipped norm cannot hide), q/k weights are scaled up (attention
scores reach the softcap) and config multipliers, softcaps, clipping
and partial rotary are set away from their neutral values."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import transformers as T
from torch import nn

from searchvlm.model import apply_policy
from searchvlm.model._family import SUPPORTED
from searchvlm.policy import ReductionPolicy, Segment, TaskPolicy

from conftest import janus_model

TOL = 1e-5
LAYERS = 2
VOCAB = 64
IMAGE_IDS = list(range(40, 56))  # the image-token ids of the tiny Chameleon / Emu3 vocabularies
COMMON = dict(
    vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=128, pad_token_id=None, bos_token_id=None, eos_token_id=None,
    tie_word_embeddings=False,
)
SLIDING = dict(sliding_window=6, layer_types=["sliding_attention", "full_attention"])


def _chameleon_vocab() -> dict[str, int]:
    names = {f"IMGIMG{chr(ord('A') + i // 10)}{chr(ord('A') + i % 10)}Z": tid for i, tid in enumerate(IMAGE_IDS)}
    return {"<image>": 3, **names}


def _emu3_vocab() -> dict[str, int]:
    names = {f"<|visual token{i:06d}|>": tid for i, tid in enumerate(IMAGE_IDS)}
    return {"<image>": 3, "<|extra_200|>": 4, **names}


def _chameleon(swin: bool = False) -> nn.Module:
    vq = dict(embed_dim=4, num_embeddings=len(IMAGE_IDS), base_channels=32, channel_multiplier=[1], num_res_blocks=1,
              latent_channels=4, resolution=8)
    cfg = T.ChameleonConfig(**COMMON, vocabulary_map=_chameleon_vocab(), vq_config=vq, swin_norm=swin)
    return T.ChameleonForConditionalGeneration(cfg)


def _emu3() -> nn.Module:
    vq = dict(codebook_size=len(IMAGE_IDS), embed_dim=4, latent_channels=4, base_channels=32, channel_multiplier=[1],
              num_res_blocks=1, attn_resolutions=[], hidden_size=32, temporal_downsample_factor=1)
    text = dict(COMMON, attention_dropout=0.0, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    cfg = T.Emu3Config(text_config=text, vq_config=vq, vocabulary_map=_emu3_vocab())
    return T.Emu3ForConditionalGeneration(cfg)


BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "llama": lambda: T.LlamaForCausalLM(T.LlamaConfig(**COMMON, attention_bias=True)),
    "qwen2": lambda: T.Qwen2ForCausalLM(T.Qwen2Config(**COMMON)),
    "qwen3": lambda: T.Qwen3ForCausalLM(T.Qwen3Config(**COMMON, head_dim=8)),
    "mistral": lambda: T.MistralForCausalLM(T.MistralConfig(**COMMON, sliding_window=6)),
    "gemma": lambda: T.GemmaForCausalLM(T.GemmaConfig(**COMMON, head_dim=8)),
    "gemma2": lambda: T.Gemma2ForCausalLM(T.Gemma2Config(
        **COMMON, **SLIDING, head_dim=8, query_pre_attn_scalar=12, attn_logit_softcapping=3.0,
        final_logit_softcapping=2.0)),
    "gemma3": lambda: T.Gemma3ForCausalLM(T.Gemma3TextConfig(
        **COMMON, **SLIDING, head_dim=8, query_pre_attn_scalar=12, final_logit_softcapping=2.0,
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
                         "full_attention": {"rope_type": "default", "rope_theta": 10000.0}})),
    "phi3": lambda: T.Phi3ForCausalLM(T.Phi3Config(
        **COMMON, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5})),
    "olmo": lambda: T.OlmoForCausalLM(T.OlmoConfig(**COMMON, clip_qkv=0.3)),
    "olmo2": lambda: T.Olmo2ForCausalLM(T.Olmo2Config(**COMMON)),
    "granite": lambda: T.GraniteForCausalLM(T.GraniteConfig(
        **COMMON, embedding_multiplier=3.0, residual_multiplier=0.4, attention_multiplier=0.2, logits_scaling=2.5)),
    "chameleon": _chameleon,
    "chameleon_swin": lambda: _chameleon(swin=True),
    "emu3": _emu3,
    "janus": janus_model,
}


def _build(family: str) -> nn.Module:
    torch.manual_seed(0)
    model = BUILDERS[family]().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.split(".")[-2]:  # every norm's weight and bias, q/k norms included
                p.add_(0.5 * torch.randn(p.shape, generator=g))
            if name.endswith(("q_proj.weight", "k_proj.weight", "qkv_proj.weight")):
                p.mul_(10.0)  # sharp attention: softcapping and masks matter
    return model


def _batch(model: nn.Module, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """ids, segments (B=2, T=16): [system 2][instruction 3][image 8][system 1][output 2] for
    understanding, [system 2][instruction 3][image 8][system 3] for generation; image ids
    are the model's image-token ids where it has them."""
    runs = [(0, 2), (1, 3), (2, 8), (0, 1), (3, 2)] if task == "understanding" else [(0, 2), (1, 3), (2, 8), (0, 3)]
    seg = torch.cat([torch.full((n,), s) for s, n in runs]).expand(2, -1).clone()
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 40, seg.shape, generator=g)
    image = apply_policy(model, ReductionPolicy.dense(LAYERS)).decoder.image_token_ids
    if image:
        pick = torch.randint(0, len(image), seg.shape, generator=g)
        ids = torch.where(seg == Segment.IMAGE, torch.tensor(image)[pick], ids)
    return ids, seg


def _reference(model: nn.Module, family: str, ids: torch.Tensor) -> torch.Tensor:
    if family.startswith("chameleon"):  # raw lm_head: HF's forward masks image-token logits
        return model.lm_head(model.model(input_ids=ids).last_hidden_state)
    return model(input_ids=ids).logits


EXACT = [f for f in BUILDERS if f != "janus"]


@pytest.mark.parametrize("family", EXACT)
@pytest.mark.parametrize("task", ["understanding", "generation"])
def test_dense_equals_hf(family: str, task: str) -> None:
    model = _build(family)
    ids, seg = _batch(model, task)
    with torch.no_grad():
        ref = _reference(model, family, ids)
        for attention in ("sdpa", "eager"):
            out = apply_policy(model, ReductionPolicy.dense(LAYERS), attention=attention)(ids, segments=seg, task=task)
            torch.testing.assert_close(out.logits, ref, atol=TOL, rtol=0)


def test_every_supported_class_is_tested() -> None:
    built = {type(BUILDERS[f]()).__name__ for f in ("llama", "chameleon", "emu3")}
    names = {type(b()).__name__ for b in BUILDERS.values()} | built
    assert set(SUPPORTED) <= names


@pytest.mark.parametrize("family", ["gemma2", "olmo", "granite", "chameleon_swin"])
def test_reduced_policy_runs_with_family_features(family: str) -> None:
    """A reducing policy (query_drop, skip, drop with attention / pdrop selectors) runs and is
    deterministic on families with extra features (softcaps, clipping, multipliers, swin norms)."""
    model = _build(family)
    ids, seg = _batch(model, "understanding")
    policy = ReductionPolicy(
        num_layers=LAYERS,
        understanding=TaskPolicy(keep=[1.0, 0.5], mode="query_drop", selector="pdrop"),
        generation=TaskPolicy(keep=[0.5, 0.5], mode="skip", selector="stride"),
    )
    reduced = apply_policy(model, policy)
    with torch.no_grad():
        a = reduced(ids, segments=seg, task="understanding").logits
        b = reduced(ids, segments=seg, task="understanding").logits
    assert torch.isfinite(a).all() and torch.equal(a, b)


# ---------------------------------------------------------------- refusals


def test_refuses_unknown_architecture() -> None:
    gpt2 = T.GPT2LMHeadModel(T.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4))
    with pytest.raises(TypeError, match="GPT2LMHeadModel is not one of them"):
        apply_policy(gpt2, ReductionPolicy.dense(2))


def test_refuses_unknown_layer_submodule() -> None:
    model = _build("llama")
    model.model.layers[1].extra_norm = nn.LayerNorm(32)
    with pytest.raises(TypeError, match=r"LlamaForCausalLM layer 1: unknown submodule\(s\) \['extra_norm'\]"):
        apply_policy(model, ReductionPolicy.dense(LAYERS))


def test_refuses_unknown_attention_submodule() -> None:
    model = _build("qwen2")
    model.model.layers[0].self_attn.q_norm = nn.LayerNorm(8)  # q/k norms Qwen2 does not apply
    with pytest.raises(TypeError, match=r"Qwen2ForCausalLM layer 0 attention: unknown submodule\(s\) \['q_norm'\]"):
        apply_policy(model, ReductionPolicy.dense(LAYERS))


def test_refuses_unknown_config_field() -> None:
    model = _build("mistral")
    model.config.logit_multiplier = 2.0
    with pytest.raises(TypeError, match=r"MistralForCausalLM config: config field\(s\) \['logit_multiplier'\]"):
        apply_policy(model, ReductionPolicy.dense(LAYERS))


def test_refuses_bidirectional_gemma3() -> None:
    model = _build("gemma3")
    model.config.use_bidirectional_attention = True
    with pytest.raises(TypeError, match="Gemma3ForCausalLM config: use_bidirectional_attention"):
        apply_policy(model, ReductionPolicy.dense(LAYERS))


def test_refuses_multimodal_rotary() -> None:
    model = _build("qwen2")
    model.config.rope_parameters = {"rope_type": "default", "rope_theta": 1e4, "mrope_section": [1, 1, 2]}
    with pytest.raises(TypeError, match="Qwen2ForCausalLM config: multimodal rotary"):
        apply_policy(model, ReductionPolicy.dense(LAYERS))


def test_refuses_unknown_layer_type() -> None:
    model = _build("qwen3")
    model.config.layer_types = ["full_attention", "chunked_attention"]
    with pytest.raises(TypeError, match=r"Qwen3ForCausalLM config: layer types \['chunked_attention'\]"):
        apply_policy(model, ReductionPolicy.dense(LAYERS))


def test_refuses_split_qkv_on_fused_projection() -> None:
    from searchvlm.policy import Sharing

    policy = ReductionPolicy.dense(LAYERS).model_copy(update={"sharing": Sharing(qkv="modality")})
    with pytest.raises(ValueError, match="Phi3ForCausalLM layer 0: sharing.qkv = 'modality' .* fused qkv_proj"):
        apply_policy(_build("phi3"), policy)


def test_refuses_dropout_hf_does_not_name() -> None:
    """Dropout is applied where each family's HF layer applies it (`_Family.resid_dropout`);
    a dropout module the family entry does not name is refused, not skipped."""
    model = _build("llama")
    model.model.layers[1].extra_dropout = nn.Dropout(0.1)
    with pytest.raises(TypeError, match=r"LlamaForCausalLM layer 1: unknown submodule\(s\) \['extra_dropout'\]"):
        apply_policy(model, ReductionPolicy.dense(LAYERS))


def test_deepcopy_describes_the_copy() -> None:
    """The description holds the model's own modules: a deep copy of the wrapper points at the copy's."""
    import copy

    reduced = apply_policy(_build("janus"), ReductionPolicy.dense(LAYERS))
    twin = copy.deepcopy(reduced)
    inner = twin.hf_model.model
    assert twin.decoder.layers is inner.language_model.layers
    assert twin.decoder.gen_embed[0] is inner.generation_embeddings
    assert twin.decoder.gen_head is inner.generation_head

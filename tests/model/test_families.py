"""Every supported HF family: the dense reduced forward equals HF within 1e-5 for both tasks,
or apply_policy refuses it naming the model, the layer and the feature.

Models are tiny (hidden 32, 2 layers, vocab 64), built locally; norm weights are perturbed
away from their init (a skipped norm cannot hide), q/k weights are scaled up (attention
scores reach the softcap) and config multipliers, softcaps, clipping
and partial rotary are set away from their neutral values."""

from __future__ import annotations

import pytest
import torch
import transformers as T
from torch import nn

from helpers.families import BUILDERS, LAYERS, VOCAB, build_family, family_batch
from searchvlm.model import apply_policy
from searchvlm.model._family import SUPPORTED
from searchvlm.schema.policy import ReductionPolicy, TaskPolicy

TOL = 1e-5


def _reference(model: nn.Module, family: str, ids: torch.Tensor) -> torch.Tensor:
    if family.startswith("chameleon"):  # raw lm_head: HF's forward masks image-token logits
        return model.lm_head(model.model(input_ids=ids).last_hidden_state)
    return model(input_ids=ids).logits


EXACT = [f for f in BUILDERS if f != "janus"]


@pytest.mark.parametrize("family", EXACT)
@pytest.mark.parametrize("task", ["understanding", "generation"])
def test_dense_equals_hf(family: str, task: str) -> None:
    model = build_family(family)
    ids, seg = family_batch(model, task)
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
    model = build_family(family)
    ids, seg = family_batch(model, "understanding")
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
    model = build_family("llama")
    model.model.layers[1].extra_norm = nn.LayerNorm(32)
    with pytest.raises(TypeError, match=r"LlamaForCausalLM layer 1: unknown submodule\(s\) \['extra_norm'\]"):
        apply_policy(model, ReductionPolicy.dense(LAYERS))


def test_refuses_unknown_attention_submodule() -> None:
    model = build_family("qwen2")
    model.model.layers[0].self_attn.q_norm = nn.LayerNorm(8)  # q/k norms Qwen2 does not apply
    with pytest.raises(TypeError, match=r"Qwen2ForCausalLM layer 0 attention: unknown submodule\(s\) \['q_norm'\]"):
        apply_policy(model, ReductionPolicy.dense(LAYERS))


def test_refuses_unknown_config_field() -> None:
    model = build_family("mistral")
    model.config.logit_multiplier = 2.0
    with pytest.raises(TypeError, match=r"MistralForCausalLM config: config field\(s\) \['logit_multiplier'\]"):
        apply_policy(model, ReductionPolicy.dense(LAYERS))


def test_refuses_bidirectional_gemma3() -> None:
    model = build_family("gemma3")
    model.config.use_bidirectional_attention = True
    with pytest.raises(TypeError, match="Gemma3ForCausalLM config: use_bidirectional_attention"):
        apply_policy(model, ReductionPolicy.dense(LAYERS))


def test_refuses_multimodal_rotary() -> None:
    model = build_family("qwen2")
    model.config.rope_parameters = {"rope_type": "default", "rope_theta": 1e4, "mrope_section": [1, 1, 2]}
    with pytest.raises(TypeError, match="Qwen2ForCausalLM config: multimodal rotary"):
        apply_policy(model, ReductionPolicy.dense(LAYERS))


def test_refuses_unknown_layer_type() -> None:
    model = build_family("qwen3")
    model.config.layer_types = ["full_attention", "chunked_attention"]
    with pytest.raises(TypeError, match=r"Qwen3ForCausalLM config: layer types \['chunked_attention'\]"):
        apply_policy(model, ReductionPolicy.dense(LAYERS))


def test_refuses_split_qkv_on_fused_projection() -> None:
    from searchvlm.schema.policy import Sharing

    policy = ReductionPolicy.dense(LAYERS).model_copy(update={"sharing": Sharing(qkv="modality")})
    with pytest.raises(ValueError, match="Phi3ForCausalLM layer 0: sharing.qkv = 'modality' .* fused qkv_proj"):
        apply_policy(build_family("phi3"), policy)


def test_refuses_dropout_hf_does_not_name() -> None:
    """Dropout is applied where each family's HF layer applies it (`_Family.resid_dropout`);
    a dropout module the family entry does not name is refused, not skipped."""
    model = build_family("llama")
    model.model.layers[1].extra_dropout = nn.Dropout(0.1)
    with pytest.raises(TypeError, match=r"LlamaForCausalLM layer 1: unknown submodule\(s\) \['extra_dropout'\]"):
        apply_policy(model, ReductionPolicy.dense(LAYERS))


def test_deepcopy_describes_the_copy() -> None:
    """The description holds the model's own modules: a deep copy of the wrapper points at the copy's."""
    import copy

    reduced = apply_policy(build_family("janus"), ReductionPolicy.dense(LAYERS))
    twin = copy.deepcopy(reduced)
    inner = twin.hf_model.model
    assert twin.decoder.layers is inner.language_model.layers
    assert twin.decoder.gen_embed[0] is inner.generation_embeddings
    assert twin.decoder.gen_head is inner.generation_head

"""build_model and the dense reduced forward reproduce the plain HF forward (fp32, 1e-5)."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from helpers.models import LAYERS, VOCAB, Batch
from searchvlm.model import apply_policy, build_model
from searchvlm.schema.config import ModelConfig
from searchvlm.schema.policy import ReductionPolicy, Sharing

TOL = 1e-5


def _hf(family: str, kv_heads: int) -> torch.nn.Module:
    torch.manual_seed(0)
    common = dict(
        vocab_size=VOCAB.size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        max_position_embeddings=128,
    )
    if family == "llama":
        cfg = ModelConfig(
            num_layers=LAYERS, hidden_size=32, num_heads=4, num_kv_heads=kv_heads, intermediate_size=64, vocab=VOCAB
        )
        return build_model(cfg)
    if family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common))
    return MistralForCausalLM(MistralConfig(**common, sliding_window=10))  # window < T: masked


def test_build_model_matches_config(cfg: ModelConfig) -> None:
    model = build_model(cfg)
    assert isinstance(model, LlamaForCausalLM)
    c = model.config
    assert (c.vocab_size, c.hidden_size, c.intermediate_size) == (VOCAB.size, 32, 64)
    assert (c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads) == (LAYERS, 4, 2)
    assert c.rope_parameters["rope_theta"] == cfg.rope_theta
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()


def test_build_model_needs_vocab() -> None:
    with pytest.raises(ValueError, match="model.vocab is None"):
        build_model(ModelConfig())


def test_build_model_is_seeded_by_caller(cfg: ModelConfig) -> None:
    torch.manual_seed(3)
    a = build_model(cfg)
    torch.manual_seed(3)
    b = build_model(cfg)
    assert torch.equal(a.model.layers[1].mlp.up_proj.weight, b.model.layers[1].mlp.up_proj.weight)


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_dense_policy_equals_hf(family: str, kv_heads: int, attention: str, und_batch: Batch) -> None:
    model = _hf(family, kv_heads)
    reduced = apply_policy(model, ReductionPolicy.dense(LAYERS), attention=attention)
    ref = model(und_batch.ids).logits
    for task in ("understanding", "generation"):
        out = reduced(und_batch.ids, segments=und_batch.segments, task=task)
        torch.testing.assert_close(out.logits, ref, atol=TOL, rtol=0)
        assert torch.equal(out.positions, torch.arange(ref.shape[1]).expand(ref.shape[0], -1))


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_dense_with_labels_matches_hf_loss_and_logits(family: str, und_batch: Batch) -> None:
    model = _hf(family, 2)
    reduced = apply_policy(model, ReductionPolicy.dense(LAYERS))
    ref = model(und_batch.ids, labels=und_batch.labels)
    out = reduced(und_batch.ids, segments=und_batch.segments, task="understanding", labels=und_batch.labels)
    predictors = [20, 21, 22]  # the positions just before the output tokens 21, 22, 23
    assert out.positions.tolist() == [predictors] * 3
    torch.testing.assert_close(out.logits, ref.logits[:, predictors], atol=TOL, rtol=0)
    torch.testing.assert_close(out.loss, ref.loss, atol=TOL, rtol=0)


def test_uneven_label_counts_are_padded(model: torch.nn.Module, und_batch: Batch) -> None:
    labels = und_batch.labels.clone()
    labels[0, 22] = -100  # row 0 has one labelled target fewer
    reduced = apply_policy(model, ReductionPolicy.dense(LAYERS))
    out = reduced(und_batch.ids, segments=und_batch.segments, task="understanding", labels=labels)
    ref = model(und_batch.ids, labels=labels)
    assert out.positions.tolist() == [[20, 22, -1], [20, 21, 22], [20, 21, 22]]
    torch.testing.assert_close(out.logits[0, :2], ref.logits[0, [20, 22]], atol=TOL, rtol=0)
    assert torch.count_nonzero(out.logits[0, 2]) == 0
    torch.testing.assert_close(out.loss, ref.loss, atol=TOL, rtol=0)


def test_split_copies_start_equal_to_shared(model: torch.nn.Module, gen_batch: Batch) -> None:
    policy = ReductionPolicy.dense(LAYERS).model_copy(update={"sharing": Sharing(qkv="task_image", mlp="modality")})
    reduced = apply_policy(model, policy)
    out = reduced(gen_batch.ids, segments=gen_batch.segments, task="generation")
    torch.testing.assert_close(out.logits, model(gen_batch.ids).logits, atol=TOL, rtol=0)


def test_rejects_other_architectures() -> None:
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=40, n_embd=32, n_layer=2, n_head=4))
    with pytest.raises(TypeError, match="Llama-family"):
        apply_policy(gpt2, ReductionPolicy.dense(2))


def test_rejects_bad_inputs(model: torch.nn.Module, und_batch: Batch) -> None:
    with pytest.raises(ValueError, match="num_layers = 2"):
        apply_policy(model, ReductionPolicy.dense(2))
    reduced = apply_policy(model, ReductionPolicy.dense(LAYERS))
    seg = und_batch.segments.clone()
    seg[1, 0] = 2  # one more image token in row 1
    with pytest.raises(ValueError, match="same number of image tokens"):
        reduced(und_batch.ids, segments=seg, task="understanding")
    with pytest.raises(ValueError, match="task = 'both'"):
        reduced(und_batch.ids, segments=und_batch.segments, task="both")

"""Analytic FLOPs (searchvlm.objectives.flops): formula, token counts per mode, monotonicity, no torch import."""

from __future__ import annotations

import random

import pytest

from searchvlm.objectives.flops import TaskLayout, count_flops, flops_ratio, layer_counts
from searchvlm.schema.config import ModelConfig, VocabLayout
from searchvlm.schema.policy import PRESETS, ReductionPolicy, TaskPolicy, preset

VOCAB = VocabLayout(num_special=8, num_text=24, num_image=17)
MODEL = ModelConfig(num_layers=4, vocab=VOCAB)
LAYOUTS = {"understanding": TaskLayout(72, 64, 3), "generation": TaskLayout(72, 64, 64)}


def _policy(und: TaskPolicy, gen: TaskPolicy | None = None) -> ReductionPolicy:
    gen = gen or TaskPolicy(keep=[1.0] * len(und.keep))
    return ReductionPolicy(num_layers=len(und.keep), understanding=und, generation=gen)


def test_single_layer_by_hand() -> None:
    model = ModelConfig(num_layers=1, hidden_size=8, num_heads=2, num_kv_heads=1, intermediate_size=16, vocab=VOCAB)
    policy = _policy(TaskPolicy(keep=[0.5], mode="query_drop"))
    report = count_flops(model, policy, {"understanding": TaskLayout(10, 4, 2)}, batch_size=3)
    n_q, n_kv, d, dkv, m, v = 8, 10, 8, 4, 16, VOCAB.size  # k = 2 of 4 image tokens are queries
    forward = 2 * n_q * d * d + 4 * n_kv * d * dkv + 4 * n_q * n_kv * d + 2 * n_q * d * d + 6 * n_q * d * m
    forward += 2 * 2 * d * v
    assert report.train == 3 * 3 * forward
    assert report.per_task["understanding"].layers[0].kv == 3 * 4 * n_kv * d * dkv


def test_token_counts_per_mode() -> None:
    keep = [1.0, 0.5, 0.25, 0.25]
    counts = {m: layer_counts(TaskPolicy(keep=keep, mode=m), 72, 64) for m in ("query_drop", "skip", "drop")}
    assert [(c.n_q, c.n_kv) for c in counts["query_drop"]] == [(72, 72), (40, 72), (24, 72), (24, 72)]
    assert [(c.n_q, c.n_kv) for c in counts["skip"]] == [(72, 72), (40, 40), (24, 40 - 16), (24, 24)]
    assert [c.present for c in counts["drop"]] == [64, 64, 32, 16]
    assert [c.reduces for c in counts["drop"]] == [False, True, True, False]
    assert [(c.n_q, c.n_kv) for c in counts["drop"]] == [(72, 72), (40, 40), (24, 24), (24, 24)]


def test_router_flops_counted_only_when_active() -> None:
    tp = TaskPolicy(keep=[1.0, 0.5, 0.0, 1.0], mode="skip", selector="router")
    assert [c.router for c in layer_counts(tp, 72, 64)] == [False, True, False, False]
    layers = count_flops(MODEL, _policy(tp), LAYOUTS).per_task["understanding"].layers
    assert [layer.router for layer in layers] == [0, 2 * 64 * 96, 0, 0]


def test_dense_ratio_is_one_and_presets_reduce() -> None:
    report = count_flops(MODEL, ReductionPolicy.dense(4), LAYOUTS, batch_size=32)
    assert report.ratio == 1.0 and report.train == report.dense_train
    for name in PRESETS:
        ratio = flops_ratio(MODEL, preset(name, 4), LAYOUTS)
        assert (ratio == 1.0) == (name == "dense"), name
        assert 0 < ratio <= 1.0
    assert flops_ratio(MODEL, preset("himix_hmgen", 4), LAYOUTS) < flops_ratio(MODEL, preset("himix", 4), LAYOUTS)


def _random_task(
    rng: random.Random, mode: str, selectors: tuple[str, ...] = ("stride", "router", "attention")
) -> TaskPolicy:
    keep = [rng.random() for _ in range(4)]
    if mode == "drop":
        keep.sort(reverse=True)
    return TaskPolicy(keep=keep, mode=mode, selector=rng.choice(selectors))


def _lowered(tp: TaskPolicy, layer: int, factor: float) -> TaskPolicy:
    keep = list(tp.keep)
    keep[layer] *= factor
    if tp.mode == "drop":  # keep the schedule non-increasing
        keep = keep[: layer + 1] + [min(k, keep[layer]) for k in keep[layer + 1 :]]
    return tp.model_copy(update={"keep": keep})


@pytest.mark.parametrize("seed", range(30))
def test_ratio_falls_as_any_keep_falls(seed: int) -> None:
    rng = random.Random(seed)
    und = _random_task(rng, rng.choice(["query_drop", "skip", "drop"]))
    gen = _random_task(rng, rng.choice(["query_drop", "skip"]), ("stride", "router", "recent"))
    base = flops_ratio(MODEL, _policy(und, gen), LAYOUTS)
    for layer in range(4):
        for task in ("understanding", "generation"):
            und2 = _lowered(und, layer, 0.5) if task == "understanding" else und
            gen2 = _lowered(gen, layer, 0.5) if task == "generation" else gen
            lower = flops_ratio(MODEL, _policy(und2, gen2), LAYOUTS)
            tp, tp2 = (und, und2) if task == "understanding" else (gen, gen2)
            fewer = [c.kept for c in layer_counts(tp2, 72, 64)] != [c.kept for c in layer_counts(tp, 72, 64)]
            assert lower < base if fewer else lower == base


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="model.vocab is None"):
        count_flops(ModelConfig(), ReductionPolicy.dense(4), LAYOUTS)
    with pytest.raises(ValueError, match="num_layers"):
        count_flops(MODEL, ReductionPolicy.dense(2), LAYOUTS)
    with pytest.raises(ValueError, match="layouts keys"):
        count_flops(MODEL, ReductionPolicy.dense(4), {"captioning": TaskLayout(4, 1, 1)})
    with pytest.raises(ValueError, match="num_image = 9"):
        TaskLayout(8, 9, 1)

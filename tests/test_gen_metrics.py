"""Generation metrics that see meaning (caption accuracy, caption margin), `synergy.gen_metric`,
tied embeddings, and per-task sizes as the joint and isolated runs see them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from searchvlm.data import BOI, BOS, EOI
from searchvlm.model import apply_policy, build_model
from searchvlm.objectives.synergy import relative_gain
from searchvlm.schema.config import DataConfig, ModelConfig, SynergyConfig, TrainingConfig, TrialConfig
from searchvlm.schema.policy import TASKS, ReductionPolicy, preset
from searchvlm.train.training import Run, RunSpec, caption_scores
from searchvlm.train.trial import prepare, run_trial

TINY_MODEL = ModelConfig(num_layers=2, hidden_size=32, num_heads=2, num_kv_heads=1, intermediate_size=64)
SHAPES = DataConfig(name="shapes", image_size=12, train_size=48, val_size=12, test_size=10)
TRAIN = TrainingConfig(steps=6, eval_every=3, batch_size=8, threads=1)


def _config(tmp_path: Path, **update) -> TrialConfig:
    cfg = TrialConfig(model=TINY_MODEL, data=SHAPES, training=TRAIN, seeds=[0], cache_dir=str(tmp_path / "cache"))
    return cfg.model_copy(update=update)


def _hand_nll(hf, caption: str, image_ids: np.ndarray, data) -> float:
    """Mean NLL of the image tokens after `caption`, by the plain HF forward, one sequence."""
    ids = [BOS, *data.encode_text(caption), BOI, *image_ids.tolist(), EOI]
    logits = hf(torch.tensor([ids])).logits[0]  # (T, V)
    start = len(ids) - len(image_ids) - 1
    logp = torch.log_softmax(logits.double(), -1)
    return float(-np.mean([logp[p - 1, ids[p]].item() for p in range(start, start + len(image_ids))]))


def test_caption_metrics_equal_hand_computed_values(tmp_path: Path) -> None:
    from searchvlm.data._shapes import captions, class_names, swaps

    data, model_cfg = prepare(_config(tmp_path))
    torch.manual_seed(3)
    hf = build_model(model_cfg).eval()
    reduced = apply_policy(hf, ReductionPolicy.dense(2))
    split = data.split("test", "generation")
    hit, nats = caption_scores(reduced, split)
    names = class_names(SHAPES)
    for row in range(len(split)):
        attrs = split.targets[row : row + 1]
        image = split.input_ids[row][split.segments[row] == 2].numpy()
        true = _hand_nll(hf, captions(attrs, names)[0], image, data)
        alts = [_hand_nll(hf, c, image, data) for c in swaps(attrs, names)[0]]
        assert len(alts) == 3 + 3 + 1 + 3  # other shapes, colours, sizes, positions
        assert bool(hit[row]) == (true < min(alts))
        assert float(nats[row]) == pytest.approx(np.mean(alts) - true, abs=1e-5)


def test_trained_model_scores_caption_accuracy_every_round(tmp_path: Path) -> None:
    result = run_trial(_config(tmp_path, synergy=SynergyConfig(gen_metric="caption_acc")))
    assert result.status == "ok", result.error
    seed = result.per_seed[0]
    for key in ("gen_caption_acc", "gen_caption_acc_iso", "gen_caption_nats", "gen_caption_nats_iso"):
        assert getattr(seed, key) is not None and getattr(result, key) == pytest.approx(getattr(seed, key))
    expected = relative_gain(seed.gen_caption_acc, seed.gen_caption_acc_iso, higher_is_better=True)
    assert seed.gen_gain == pytest.approx(expected)
    assert result.synergy_gain == pytest.approx(min(result.und_gain, result.gen_gain))
    # 10 swapped captions per image: chance is 1/11; a ratio over a below-chance baseline is flagged
    assert seed.gen_gain_below_chance == float(seed.gen_caption_acc_iso < 1 / 11)
    assert result.gen_gain_below_chance == seed.gen_gain_below_chance
    # the NLL is still reported beside it, and the default reads the NLL
    nll = run_trial(_config(tmp_path)).per_seed[0]
    assert nll.gen_nll == pytest.approx(seed.gen_nll)
    assert nll.gen_gain == pytest.approx(relative_gain(nll.gen_nll, nll.gen_nll_iso, higher_is_better=False))
    assert nll.gen_gain_below_chance is None  # an NLL ratio has no chance level
    assert "gen_gain_below_chance" not in nll.model_dump()  # nor a key in the record


@pytest.mark.parametrize("share, text", [(0.0, "+1.9000"), (0.2, "below chance"), (None, "+1.9000")])
def test_a_gain_over_a_below_chance_baseline_prints_as_below_chance(share: float | None, text: str) -> None:
    from searchvlm.schema.trial_result import TrialResult, gen_gain_text
    from searchvlm.sweep._progress import _objectives

    row = {"status": "ok", "flops_ratio": 0.5, "synergy_gain": 0.1, "und_gain": 0.1, "gen_gain": 1.9,
           "gen_gain_below_chance": share}  # fmt: skip
    assert gen_gain_text(row) == text
    assert _objectives(row).endswith(f"gen_gain {text}")
    assert gen_gain_text(TrialResult(gen_gain=1.9, gen_gain_below_chance=share)) == text
    assert gen_gain_text({"gen_gain": None}) == "-"


def test_fidelity_as_gen_metric_needs_fidelity_scoring() -> None:
    with pytest.raises(ValueError, match="synergy.fidelity"):
        SynergyConfig(gen_metric="fidelity")
    with pytest.raises(ValueError, match="data.name = 'tokens' has none"):
        TrialConfig(data=DataConfig(name="tokens", path="x.npz"), synergy=SynergyConfig(gen_metric="caption_acc"))
    assert "gen_metric" not in SynergyConfig().model_dump()  # old configs hash as before


def test_tied_embeddings_share_the_matrix_and_match_hf(tmp_path: Path) -> None:
    _, model_cfg = prepare(_config(tmp_path, model=TINY_MODEL.model_copy(update={"tie_embeddings": True})))
    torch.manual_seed(0)
    hf = build_model(model_cfg).eval()
    assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()
    ids = torch.randint(0, model_cfg.vocab.size, (2, 12))
    segments = torch.full_like(ids, 2)
    out = apply_policy(hf, ReductionPolicy.dense(2))(ids, segments=segments, task="generation")
    torch.testing.assert_close(out.logits, hf(ids).logits, atol=1e-5, rtol=1e-5)
    assert "tie_embeddings" not in TINY_MODEL.model_dump()  # the untied default serialises as before


@pytest.mark.parametrize("task_images", ["shared", "disjoint"])
def test_joint_and_isolated_runs_see_the_per_task_images(tmp_path: Path, task_images: str) -> None:
    sizes = {"understanding": 40, "generation": 8}
    data_cfg = DataConfig.model_validate({**SHAPES.model_dump(), "train_size": sizes, "task_images": task_images})
    data, model_cfg = prepare(_config(tmp_path, data=data_cfg))
    policy = preset("dense", 2)
    train = TRAIN.model_copy(update={"steps": 10})
    seen: dict[tuple[tuple[str, ...], str], set[int]] = {}
    for tasks in (TASKS, ("understanding",), ("generation",)):
        run = Run(RunSpec(model_cfg, policy, train, tasks, seed=0), data, torch.device("cpu"))
        for task, sampler in run.samplers.items():
            rows = [int(i) for _ in range(10) for i in sampler.next()]  # ten steps' batches
            seen[(tasks, task)] = set(run.train[task].source_index[rows].tolist())
    for task in TASKS:
        assert seen[(TASKS, task)] == seen[((task,), task)]  # the isolated run sees the joint run's rows
        assert len(seen[(TASKS, task)]) == sizes[task]  # ten batches of 8 cover every row
    und, gen = seen[(TASKS, "understanding")], seen[(TASKS, "generation")]
    assert gen <= und if task_images == "shared" else not und & gen


@pytest.mark.parametrize(("control", "touches"), [("permute_answers", "understanding"),
                                                   ("blank_understanding_images", "understanding"),
                                                   ("permute_captions", "generation")])  # fmt: skip
def test_a_one_task_control_does_not_retrain_the_other_tasks_baseline(control: str, touches: str) -> None:
    from searchvlm.train.baselines import baseline_key

    data, policy = DataConfig(name="shapes"), ReductionPolicy.dense(2)
    controlled = data.model_copy(update={control: True})
    spec = {t: RunSpec(TINY_MODEL, policy, TRAIN, (t,), 0) for t in TASKS}
    keys = {t: [baseline_key(spec[t], d, False) for d in (data, controlled)] for t in TASKS}
    other = next(t for t in TASKS if t != touches)
    assert keys[other][0] == keys[other][1]  # the other task's data are untouched by it
    assert keys[touches][0] != keys[touches][1]
    joint = RunSpec(TINY_MODEL, policy, TRAIN, TASKS, 0)
    assert baseline_key(joint, data, False) != baseline_key(joint, controlled, False)  # the dense joint run


def test_caption_accuracy_without_swaps_fails_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import copy

    import searchvlm.train.trial as trial_mod

    data = copy.deepcopy(prepare(_config(tmp_path))[0])  # prepare's data are cached: never mutate them
    for split in ("val", "test"):
        data.split(split, "generation").swaps = None  # like a user's `tokens` data
    monkeypatch.setattr(trial_mod, "_load_data_cached", lambda *_args: data)
    result = run_trial(_config(tmp_path, synergy=SynergyConfig(gen_metric="caption_acc")))
    assert result.status == "failed" and result.steps_done == 0 and "one attribute" in result.error
    assert not (tmp_path / "cache" / "baselines").exists()

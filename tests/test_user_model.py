"""A user's own model in a trial: `model: {hf: DIR, pretrained: ...}` with `data: tokens`
(VQ codes mapped onto the model's image-token ids), on tiny random Chameleon and Emu3
models saved to a temporary folder; and the data-layout check a trial runs before training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as T
import yaml

import searchvlm.train.trial as trial_mod
from helpers.families import IMAGE_IDS, chameleon_config, emu3_config
from searchvlm.objectives.flops import count_flops
from searchvlm.schema.config import DataConfig, ModelConfig, TrainingConfig, TrialConfig
from searchvlm.schema.policy import TASKS, preset
from searchvlm.train.training import Run, RunSpec, check_layout
from searchvlm.train.trial import prepare, run_trial, task_layouts

ROOT = Path(__file__).resolve().parents[1]
TRAIN = TrainingConfig(steps=4, eval_every=2, batch_size=8, threads=1)


CONFIGS = {
    "chameleon": (chameleon_config, T.ChameleonForConditionalGeneration),
    "emu3": (emu3_config, T.Emu3ForConditionalGeneration),  # attention_dropout: Emu3's 0.1
}


def save_model(tmp: Path, family: str, pretrained: bool) -> Path:
    """config.save_pretrained(dir), or with pretrained also model.save_pretrained(dir)."""
    make, cls = CONFIGS[family]
    out = tmp / f"{family}_{'weights' if pretrained else 'config'}"
    if pretrained:
        torch.manual_seed(123)
        cls(make()).save_pretrained(out)
    else:
        make().save_pretrained(out)
    return out


def save_tokens(path: Path, n: int = 48) -> Path:
    """A `tokens` file: 4x4 images of 16 codes, a colour word per row (caption and answer)."""
    rng = np.random.default_rng(0)
    colours = np.array(["red", "blue", "green"])[rng.integers(0, 3, n)]
    codes = rng.integers(0, 16, (n, 16))
    codes[:, :4] = np.searchsorted(["blue", "green", "red"], colours)[:, None]  # the colour shows in the image
    np.savez(
        path,
        image_tokens=codes,
        captions=np.array([f"a {c} thing" for c in colours]),
        questions=np.array(["what colour"] * n),
        answers=colours,
        num_image=np.array(16),
    )
    return path


def _config(tmp: Path, hf: Path, pretrained: bool, policy: str) -> TrialConfig:
    tokens = str(save_tokens(tmp / "tokens.npz"))
    data = DataConfig(name="tokens", path=tokens, train_size=24, val_size=12, test_size=12)
    model = ModelConfig(hf=str(hf), pretrained=pretrained)
    return TrialConfig(
        model=model, data=data, training=TRAIN, cache_dir=str(tmp / "cache"), policy=preset(policy, model.num_layers)
    )


# ------------------------------------------------------------------ ModelConfig


def test_model_config_reads_the_hf_config(tmp_path: Path) -> None:
    hf = save_model(tmp_path, "emu3", pretrained=False)
    m = ModelConfig(hf=str(hf))
    assert (m.num_layers, m.hidden_size, m.num_heads, m.num_kv_heads, m.intermediate_size, m.vocab_size) == (
        2,
        32,
        4,
        2,
        64,
        64,
    )
    assert ModelConfig.model_validate(m.model_dump()) == m  # a dumped config loads again
    with pytest.raises(ValueError, match=r"model.num_layers = 3 but model.hf = .* says 2"):
        ModelConfig(hf=str(hf), num_layers=3)
    with pytest.raises(ValueError, match=r"config.json not found"):
        ModelConfig(hf=str(tmp_path / "nowhere"))


def test_built_in_model_config_is_unchanged() -> None:
    """Existing YAML loads unchanged, and the built-in model serialises exactly as before
    (so cached baselines and space hashes stay valid)."""
    keys = [
        "num_layers",
        "hidden_size",
        "num_heads",
        "num_kv_heads",
        "intermediate_size",
        "rope_theta",
        "max_positions",
        "vocab",
    ]
    assert list(ModelConfig().model_dump()) == keys
    quick = yaml.safe_load((ROOT / "search_spaces" / "quick.yaml").read_text())["model"]
    assert ModelConfig.model_validate(quick).model_dump(exclude={"vocab"}) == {
        **ModelConfig().model_dump(exclude={"vocab"}),
        **quick,
    }


# ------------------------------------------------------------------ one trial


@pytest.mark.parametrize(("family", "pretrained"), [("chameleon", False), ("emu3", True)])
def test_trial_trains_the_users_model(tmp_path: Path, family: str, pretrained: bool) -> None:
    hf = save_model(tmp_path, family, pretrained)
    config = _config(tmp_path, hf, pretrained, "himix")
    data, model_cfg = prepare(config)
    run = Run(RunSpec(model_cfg, config.resolved_policy(), TRAIN, TASKS, seed=0), data, torch.device("cpu"))
    assert type(run.model.hf_model) is CONFIGS[family][1]
    image_ids = run.model.token_map[data.vocab.image_offset :]
    assert image_ids.tolist() == IMAGE_IDS[: data.vocab.num_image]  # VQ codes -> the model's image tokens
    if pretrained:
        saved = CONFIGS[family][1].from_pretrained(hf)
        torch.testing.assert_close(run.model.hf_model.lm_head.weight, saved.lm_head.weight, atol=0, rtol=0)

    result = run_trial(config.model_copy(update={"save_model": str(tmp_path / "ckpt_{seed}.pt")}))
    assert result.status == "ok", result.error
    from searchvlm.train.analysis import load_checkpoint

    saved_model, saved_cfg, _ = load_checkpoint(tmp_path / "ckpt_0.pt")  # `searchvlm analyze --checkpoint`
    assert saved_cfg.hf == str(hf) and torch.equal(saved_model.token_map, run.model.token_map)
    assert result.und_acc is not None and np.isfinite(result.gen_nll)
    expected = count_flops(model_cfg, config.resolved_policy(), task_layouts(data), batch_size=TRAIN.batch_size)
    assert result.flops_ratio == pytest.approx(expected.ratio) and 0 < result.flops_ratio < 1
    head = expected.dense_per_task["generation"].head  # the head counts the model's own 64-token vocabulary
    assert head == TRAIN.batch_size * 2 * task_layouts(data)["generation"].num_logit_positions * 32 * 64


# ------------------------------------------------------------------ layout check


def _eoi_labelled(data):
    """The digits data with the understanding rows' end-of-image token labelled, so a
    labelled token directly follows the image."""
    for split in ("train", "val", "test"):
        s = data.split(split, "understanding")
        end = s.image_start + int((s.segments[0] == 2).sum())  # (the EOI position)
        s.labels[:, end] = s.input_ids[:, end]
    return data


def test_drop_layout_is_refused_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from searchvlm.data import load_data

    data = _eoi_labelled(load_data(DataConfig(train_size=32, val_size=16, test_size=16)))
    monkeypatch.setattr(trial_mod, "_load_data_cached", lambda *_args: data)
    model = ModelConfig(num_layers=2, hidden_size=32, num_heads=2, num_kv_heads=1, intermediate_size=64)
    config = TrialConfig(
        model=model,
        data=DataConfig(train_size=32, val_size=16, test_size=16),
        training=TRAIN,
        cache_dir=str(tmp_path / "cache"),
        policy=preset("fastv", 2),
    )
    result = run_trial(config)
    assert result.status == "failed" and result.steps_done == 0
    assert "understanding mode 'drop'" in result.error
    assert "[system 1, instruction" in result.error and "image 64, system 1, output" in result.error
    assert not (tmp_path / "cache").exists()  # refused before any baseline was trained
    check_layout(preset("himix", 2), data)  # query_drop keeps every token's logits: this layout is fine
    with pytest.raises(ValueError, match="understanding mode 'drop'"):
        check_layout(preset("pyramiddrop", 2), data)


def test_prompt_after_image_is_refused_for_content_selectors() -> None:
    from searchvlm.data import load_data

    data = load_data(DataConfig(train_size=32, val_size=16, test_size=16))
    check_layout(preset("fastv", 2), data)  # the shipped layout serves every preset
    s = data.split("val", "understanding")
    s.segments[:, -1] = 2  # an image token after the answer
    with pytest.raises(ValueError, match="selector 'attention' ranks the image by the last prompt token"):
        check_layout(preset("fastv", 2), data)


# ------------------------------------------------------------------ a two-trial sweep


@pytest.mark.slow
@pytest.mark.sweep
def test_two_trial_sweep_on_a_users_model(tmp_path: Path) -> None:
    from searchvlm.schema.results import read_trials
    from searchvlm.sweep import run_sweep, shutdown_ray

    hf = save_model(tmp_path, "chameleon", pretrained=False)
    space = yaml.safe_load((ROOT / "search_spaces" / "quick.yaml").read_text())
    space.pop("calibration", None)
    space["model"] = {"hf": str(hf), "pretrained": False}
    space["data"] = {
        "name": "tokens",
        "path": str(save_tokens(tmp_path / "tokens.npz")),
        "train_size": 24,
        "val_size": 12,
        "test_size": 12,
    }
    space["training"].update(steps=4, eval_every=2, batch_size=8)
    space["synergy"] = {"gen_metric": "nll"}  # a user's tokens have no swapped captions
    space["policy"]["understanding"]["schedules"] = [{"kind": "fastv", "start": 1, "ratio": 0.5}]
    space["policy"]["generation"]["schedules"] = [{"kind": "shallow", "k": 1, "ratio": 0.0}]
    space["search"].update(samples=2, concurrency=1, scheduler={"kind": "none"})
    space["presets"] = ["himix"]
    path = tmp_path / "user.yaml"
    path.write_text(yaml.safe_dump(space))
    try:
        summary = run_sweep(path, name="user", runs_dir=tmp_path / "runs", progress=False)
    finally:
        shutdown_ray()
    rows = read_trials(summary.run_dir / "trials.csv")
    assert len(rows) == 2 and {r["status"] for r in rows} == {"ok"}, [r.get("error") for r in rows]
    assert all(0 < r["flops_ratio"] <= 1 for r in rows)

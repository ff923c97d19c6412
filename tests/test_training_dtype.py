"""`training.dtype`: bf16 mixed precision (autocast forwards, fp32 weights, gradients and
optimizer state) next to fp32, on a tiny seeded run; fp32 configs keep their cache keys."""

from __future__ import annotations

import torch

from searchvlm.schema.config import DataConfig, ModelConfig, TrainingConfig, TrialConfig
from searchvlm.schema.policy import TASKS, preset
from searchvlm.train.baselines import baseline_key
from searchvlm.train.training import Run, RunSpec
from searchvlm.train.trial import prepare

TINY_MODEL = ModelConfig(num_layers=2, hidden_size=32, num_heads=2, num_kv_heads=1, intermediate_size=64)
TINY_DATA = DataConfig(train_size=64, val_size=32, test_size=32)
TINY_TRAIN = TrainingConfig(steps=6, eval_every=3, batch_size=8, threads=1)


def _run(dtype: str) -> Run:
    training = TINY_TRAIN.model_copy(update={"dtype": dtype})
    data, model_cfg = prepare(TrialConfig(model=TINY_MODEL, data=TINY_DATA, training=training))
    return Run(RunSpec(model_cfg, preset("himix", 2), training, TASKS, seed=0), data, torch.device("cpu"))


def test_bf16_trains_close_to_fp32_with_fp32_master_weights() -> None:
    fp32, bf16 = _run("fp32"), _run("bf16")
    a = [fp32.train_until(s) for s in (1, 2, 3)]
    b = [bf16.train_until(s) for s in (1, 2, 3)]
    # same seed, batches and initialisation: bf16 matmuls (8-bit mantissa) move the loss by
    # well under 1% on this model
    torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=1e-2, atol=0)
    assert a != b  # autocast did run in bf16
    assert {p.dtype for p in bf16.model.parameters()} == {torch.float32}
    assert {s["exp_avg"].dtype for s in bf16.opt.state.values()} == {torch.float32}
    data, _ = prepare(TrialConfig(model=TINY_MODEL, data=TINY_DATA))
    scores = bf16.scores(data, "val")
    assert set(scores) == {"und_acc", "gen_nll", "gen_caption_acc", "gen_caption_nats"} and all(
        torch.isfinite(torch.tensor(s.value)) for s in scores.values()
    )


def test_fp32_keeps_serialisation_and_cache_keys() -> None:
    assert "dtype" not in TrainingConfig().model_dump()
    assert TrainingConfig(dtype="bf16").model_dump()["dtype"] == "bf16"
    key = lambda t: baseline_key(RunSpec(TINY_MODEL, preset("dense", 2), t, ("understanding",), 0), TINY_DATA, False)  # noqa: E731
    assert key(TrainingConfig(dtype="fp32")) == key(TrainingConfig())
    assert key(TrainingConfig(dtype="bf16")) != key(TrainingConfig())
    assert TrainingConfig.model_validate(TrainingConfig(dtype="bf16").model_dump()).dtype == "bf16"

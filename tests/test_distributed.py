"""Data-parallel trials (`training.processes`, `searchvlm.train.distributed`) on the CPU: two gloo
processes give one process's training losses, per-round metrics, scores and trained weights
under `shard: ddp` and `shard: fsdp` (FSDP2 per decoder layer), for a preset that reduces
in both tasks, baselines included; a rank that fails fails the trial at once (recorded
`failed` with its error, never a hang); and the config rules for `processes` and `shard`.

Tolerances (float32 sums in another order: each rank's share, then the all-reduce or the
reduce-scatter): training losses 1e-5 absolute; evaluation metrics and gains 1e-5 absolute
(accuracies over 32 examples come out equal: a flipped answer would be 1/32); trained
weights after 6 AdamW steps 1e-5 absolute + 1e-4 relative. Measured (torch 2.13, CPU):
losses differ by at most 4.8e-7, metrics by 4.5e-8, weights by 2.2e-6.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from pydantic import ValidationError

from searchvlm.schema.config import DataConfig, ModelConfig, TrainingConfig, TrialConfig
from searchvlm.schema.policy import TASKS, preset
from searchvlm.schema.space import SearchSpace
from searchvlm.train import trial
from searchvlm.train.baselines import baseline_key
from searchvlm.train.distributed import run_ranks, spawns
from searchvlm.train.training import Run, RunSpec

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch built without distributed")

MODEL = ModelConfig(num_layers=4, hidden_size=32, num_heads=2, num_kv_heads=1, intermediate_size=64)
DATA = DataConfig(train_size=64, val_size=32, test_size=32)
# batch 7 over 2 ranks: shares of 4 and 3 rows, so the loss weights (W * n_r / N) are not 1
TRAIN = dict(steps=6, eval_every=3, batch_size=7, threads=1)
POLICY = preset("himix_hmgen", 4)  # understanding query_drop after layer 1, generation skips K shallow layers
TOL = 1e-5
ROUND_KEYS = ("und_acc", "gen_nll", "und_gain", "gen_gain", "synergy_gain")
RESULT_KEYS = ("und_acc", "und_acc_iso", "gen_nll", "gen_nll_iso", "gen_caption_acc", "und_gain", "gen_gain",
               "synergy_gain", "flops_ratio")  # fmt: skip
STEP_KEYS = ("und_step_joint", "und_step_iso", "gen_step_joint", "gen_step_iso")


def _config(root: Path, processes: int = 1, shard: str = "none", name: str = "trial") -> TrialConfig:
    training = TrainingConfig(**TRAIN, processes=processes, shard=shard)
    return TrialConfig(model=MODEL, data=DATA, training=training, seeds=[0], policy=POLICY, name=name,
                       cache_dir=str(root / "cache"), save_model=str(root / "model-{seed}.pt"))  # fmt: skip


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, trial.TrialResult, list]:
    root = tmp_path_factory.mktemp("one")
    reports: list = []
    result = trial.run_trial(_config(root), report=lambda s, m: reports.append((s, m)))
    assert result.status == "ok", result.error
    return root, result, reports


@pytest.mark.multiprocess
@pytest.mark.parametrize("shard", ["ddp", "fsdp"])
def test_two_processes_train_and_score_as_one(shard: str, one_process: tuple, tmp_path: Path) -> None:
    ref_root, ref, ref_reports = one_process
    reports: list = []
    result = trial.run_trial(_config(tmp_path, 2, shard), report=lambda s, m: reports.append((s, m)))
    assert result.status == "ok", result.error
    assert [s for s, _ in reports] == [s for s, _ in ref_reports] == [3, 6]  # rank 0 reported each round
    for (_, got), (_, want) in zip(reports, ref_reports):
        assert {k: got[k] for k in ROUND_KEYS} == pytest.approx({k: want[k] for k in ROUND_KEYS}, abs=TOL)
    assert result.model_dump(include=set(RESULT_KEYS)) == pytest.approx(ref.model_dump(include=set(RESULT_KEYS)),
                                                                         abs=TOL)  # fmt: skip
    assert [getattr(result.per_seed[0], k) for k in STEP_KEYS] == [getattr(ref.per_seed[0], k) for k in STEP_KEYS]
    # the baselines were trained over the ranks too, and written once, by rank 0
    assert result.per_seed[0].baseline_cached == {t: False for t in TASKS}
    assert len(list((tmp_path / "cache" / "baselines").glob("*.json"))) == 2
    got = torch.load(tmp_path / "model-0.pt", weights_only=True)["state_dict"]
    want = torch.load(ref_root / "model-0.pt", weights_only=True)["state_dict"]
    assert got.keys() == want.keys()
    for key, value in want.items():  # whole tensors (FSDP's shards gathered), one process's weights
        torch.testing.assert_close(got[key], value, atol=1e-5, rtol=1e-4, msg=key)


def _losses(config: TrialConfig, shards: tuple[str, ...]) -> dict[str, list[float] | bool]:
    """In each rank (or one process): the joint run's training losses, per `shard`; and
    whether the sweep's up-front generation baseline (`warm_reference`) was cached."""
    data, model_cfg = trial.prepare(config)
    out: dict[str, list[float] | bool] = {}
    for shard in shards:
        training = config.training.model_copy(update={"shard": shard})
        run = Run(RunSpec(model_cfg, POLICY, training, TASKS, seed=0), data, torch.device("cpu"))
        out[shard] = [run.train_until(step) for step in range(1, 5)]
    out["warm_cached"] = trial.warm_reference(config, 0, "generation")
    return out


@pytest.mark.multiprocess
def test_training_losses_are_the_global_batch_loss(tmp_path: Path, one_thread: None) -> None:
    want = _losses(_config(tmp_path / "one"), ("none",))
    got = run_ranks(2, torch.device("cpu"), _losses, (_config(tmp_path, 2, "ddp"), ("ddp", "fsdp")))
    for shard in ("ddp", "fsdp"):
        assert got[shard] == pytest.approx(want["none"], abs=TOL), shard
    # the up-front baseline was trained over the ranks and written by rank 0, under the key
    # one process uses: found there
    assert (got["warm_cached"], want["warm_cached"]) == (False, False)
    assert trial.warm_reference(_config(tmp_path), 0, "generation") is True


def _breaks_on_rank1(config: TrialConfig, report=None, progress=None) -> trial.TrialResult:
    """`run_trial` in a rank; rank 1 fails at its third training step: raises (`config.name`
    "raises") or exits without a word ("exits")."""
    if dist.get_rank() == 1:
        original = Run._one_step

        def broken(self: Run) -> float:
            if self.step == 2:
                (Path(config.cache_dir) / "broke").write_text(str(time.time()))  # when
                if config.name == "exits":
                    os._exit(3)
                raise RuntimeError("rank 1 breaks at step 2")
            return original(self)

        Run._one_step = broken
    return trial.run_trial(config, report, progress)


@pytest.mark.multiprocess
@pytest.mark.timeout(300)  # a hang fails here, not at the 4 h collective timeout
@pytest.mark.parametrize(
    ("how", "error"),
    [("raises", "rank 1: RuntimeError: rank 1 breaks at step 2"),
     ("exits", "RankFailed: rank 1 exited (code 3) before it finished")],
)  # fmt: skip
def test_a_failing_rank_fails_the_trial_at_once(how: str, error: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    # the parent starts the ranks with `trial.run_trial`: each rank runs `_breaks_on_rank1` instead
    run = trial.run_trial
    monkeypatch.setattr(trial, "run_trial", _breaks_on_rank1)
    result = run(_config(tmp_path, 2, "ddp", name=how))
    assert result.status == "failed" and result.error == error, result.error
    # soon after the failure (the collective's own timeout is 4 h; the margin absorbs a loaded machine):
    # rank 0, waiting in a collective, was stopped, not waited for
    assert time.time() - float((tmp_path / "cache" / "broke").read_text()) < 60
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("searchvlm-rank")]


def test_processes_and_shard_rules() -> None:
    with pytest.raises(ValidationError, match="training.processes = 2 trains data parallel.*ddp or fsdp"):
        TrainingConfig(processes=2)
    with pytest.raises(ValidationError, match="batch_size = 1 is split over 2 processes"):
        TrainingConfig(processes=2, shard="fsdp", batch_size=1)
    one = TrainingConfig(shard="fsdp")  # one process: nothing to share, it trains as `none`
    assert not spawns(one.processes)
    # defaults are left out of the serialisation; how a run is computed is not in its baseline key
    assert {"processes", "shard"}.isdisjoint(TrainingConfig().model_dump())
    for tasks in (TASKS, ("generation",)):
        one, two = (baseline_key(RunSpec(MODEL, POLICY, TrainingConfig(**TRAIN, **extra), tasks, 0), DATA, False)
                    for extra in ({}, {"processes": 2, "shard": "ddp"}))  # fmt: skip
        assert one == two, tasks


def test_gpus_per_trial_above_one_is_one_process_per_gpu() -> None:
    with pytest.raises(ValidationError, match=r"search.gpus_per_trial = 2 \(one process per GPU\).*training.shard"):
        SearchSpace.model_validate({"search": {"gpus_per_trial": 2}})
    with pytest.raises(ValidationError, match="training.processes = 3 but search.gpus_per_trial = 2"):
        SearchSpace.model_validate({"search": {"gpus_per_trial": 2}, "training": {"processes": 3, "shard": "ddp"}})
    space = SearchSpace.model_validate({"search": {"gpus_per_trial": 2}, "training": {"shard": "fsdp"}})
    assert space.trial_config(None).training.processes == 2
    assert SearchSpace().trial_config(None).training == SearchSpace().training  # 1 GPU or none: unchanged

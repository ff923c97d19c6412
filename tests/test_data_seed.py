"""`data.seed: run`: each run seed draws its own data, the same for every policy on that
seed; a numeric `data.seed` (every shipped space) behaves and is keyed as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from helpers.data import valid_arrays
from searchvlm.data import SPLITS, check_data, load_data
from searchvlm.schema.config import DataConfig, ModelConfig, TrainingConfig, TrialConfig
from searchvlm.schema.policy import TASKS, ReductionPolicy, preset
from searchvlm.schema.space import load_space
from searchvlm.train.baselines import baseline_key
from searchvlm.train.training import Run, RunSpec
from searchvlm.train.trial import prepare_seeds, priced_data, run_trial, task_layouts

TINY_MODEL = ModelConfig(num_layers=2, hidden_size=32, num_heads=2, num_kv_heads=1, intermediate_size=64)
TINY_TRAIN = TrainingConfig(steps=6, eval_every=3, batch_size=8, threads=1)

SHAPES = DataConfig(name="shapes", train_size=64, val_size=32, test_size=32, seed="run")
DIGITS = DataConfig(train_size=64, val_size=32, test_size=32, seed="run")
CPU = torch.device("cpu")


def _config(tmp_path: Path, data: DataConfig, seeds: list[int], **update) -> TrialConfig:
    fields = {"model": TINY_MODEL, "training": TINY_TRAIN, "cache_dir": str(tmp_path / "cache"), **update}
    return TrialConfig(data=data, seeds=seeds, **fields)


def _tensors(data, split: str, task: str) -> tuple[torch.Tensor, ...]:
    s = data.split(split, task)
    return s.input_ids, s.segments, s.labels


@pytest.mark.parametrize("data_cfg", [SHAPES, DIGITS], ids=["shapes", "digits"])
def test_each_run_seed_draws_the_data_its_number_names(tmp_path: Path, data_cfg: DataConfig) -> None:
    by_seed, _ = prepare_seeds(_config(tmp_path, data_cfg, [0, 1]))
    for split in SPLITS:
        for task in TASKS:
            ids0, ids1 = by_seed[0].split(split, task).input_ids, by_seed[1].split(split, task).input_ids
            assert not torch.equal(ids0, ids1), (split, task)  # other images (and held-out sets)
    for seed in (0, 1):  # seed s's data are exactly `data.seed: s`'s, loaded independently
        fixed = load_data(data_cfg.model_copy(update={"seed": seed}))
        for split in SPLITS:
            for task in TASKS:
                assert all(map(torch.equal, _tensors(by_seed[seed], split, task), _tensors(fixed, split, task)))


def test_every_policy_trains_on_its_seeds_data(tmp_path: Path) -> None:
    """The tensors two policies' runs of one seed train and are scored on are equal, and
    another seed's differ."""
    cfg = _config(tmp_path, SHAPES, [0, 1], model=TINY_MODEL.model_copy(update={"num_layers": 3}))
    trained = {}
    for name in ("dense", "himix", "hmgen"):  # HMGen needs 3 layers (a shallow one between full ones)
        config = cfg.model_copy(update={"policy": preset(name, 3)})
        by_seed, model_cfg = prepare_seeds(config)
        for seed in (0, 1):
            run = Run(RunSpec(model_cfg, config.resolved_policy(), TINY_TRAIN, TASKS, seed), by_seed[seed], CPU)
            held_out = [t for s in ("val", "test") for task in TASKS for t in _tensors(by_seed[seed], s, task)]
            trained[name, seed] = [run.train[t].input_ids for t in TASKS] + [run.train[t].labels for t in TASKS]
            trained[name, seed] += held_out
    for seed in (0, 1):
        for name in ("himix", "hmgen"):
            assert all(map(torch.equal, trained["dense", seed], trained[name, seed])), (name, seed)
    assert not torch.equal(trained["dense", 0][0], trained["dense", 1][0])


@pytest.mark.slow  # 10-70 s on a loaded 2-core machine: out of the fast tier
def test_every_policy_on_a_seed_gets_the_same_data(tmp_path: Path) -> None:
    """Two policies' trials on seeds [0, 1] share each seed's reference runs (the cache is
    hit, the isolated numbers equal), and a trial on seed 1 alone under `data.seed: run`
    gives exactly the numbers of the same trial under `data.seed: 1`."""
    cfg = _config(tmp_path, SHAPES, [0, 1])
    dense = run_trial(cfg)
    himix = run_trial(cfg.model_copy(update={"policy": preset("himix", 2)}))
    assert dense.status == himix.status == "ok", (dense.error, himix.error)
    assert len(list((tmp_path / "cache" / "baselines").glob("*.json"))) == 4  # 2 seeds x 2 tasks
    assert [p.baseline_cached for p in himix.per_seed] == [{t: True for t in TASKS}] * 2
    for d, h in zip(dense.per_seed, himix.per_seed):
        assert (d.und_acc_iso, d.gen_nll_iso) == (h.und_acc_iso, h.gen_nll_iso)
    assert dense.per_seed[0].gen_nll_iso != dense.per_seed[1].gen_nll_iso
    fixed = run_trial(_config(tmp_path / "fixed", SHAPES.model_copy(update={"seed": 1}), [1]))
    alone = run_trial(_config(tmp_path / "alone", SHAPES, [1]))
    drop = {"baseline_cached"}
    assert [p.model_dump(exclude=drop) for p in alone.per_seed] == [p.model_dump(exclude=drop) for p in fixed.per_seed]
    cached = alone.per_seed[0].baseline_cached
    assert alone.per_seed[0].model_dump() == {**dense.per_seed[1].model_dump(), "baseline_cached": cached}


def test_the_cache_key_holds_the_effective_data_seed() -> None:
    def key(data: DataConfig, seed: int) -> str:
        return baseline_key(RunSpec(TINY_MODEL, ReductionPolicy.dense(2), TINY_TRAIN, TASKS, seed), data, False)

    fixed0 = SHAPES.model_copy(update={"seed": 0})
    assert key(SHAPES, 1) != key(fixed0, 1)  # seed 1 on its own data is not seed 1 on data seed 0
    assert key(SHAPES, 1) == key(SHAPES.model_copy(update={"seed": 1}), 1)  # the same data: one entry
    assert key(SHAPES, 0) == key(fixed0, 0)


def test_a_numeric_data_seed_keeps_its_cache_keys() -> None:
    """Keys recorded before `data.seed: run` existed (the caches of the results on file)."""
    iso = RunSpec(TINY_MODEL, ReductionPolicy.dense(2), TrainingConfig(steps=6), ("understanding",), 3)
    joint = RunSpec(TINY_MODEL, ReductionPolicy.dense(2), TrainingConfig(steps=6), TASKS, 1)
    assert baseline_key(iso, DataConfig(train_size=64, val_size=32, test_size=32), False) == "df6460bf9abf0ee768b0"
    assert baseline_key(joint, DataConfig(name="shapes", seed=2), True) == "11fc151fc5a88aa992a1"


def test_a_numeric_data_seed_gives_every_seed_one_data_set(tmp_path: Path) -> None:
    by_seed, _ = prepare_seeds(_config(tmp_path, DIGITS.model_copy(update={"seed": 0}), [0, 1, 2]))
    assert by_seed[0] is by_seed[1] is by_seed[2]


ROOT = Path(__file__).resolve().parents[1]
LAYOUT_CASES = {
    "default.yaml": (load_space(ROOT / "search_spaces" / "default.yaml").data, [0, 1, 10]),
    "shapes": (DataConfig(name="shapes"), [0, 1, 2, 3, 4, 10, 30]),
    "shapes-3x3": (DataConfig(name="shapes", grid=3, num_colors=8, image_size=18), [0, 1, 2, 3, 4, 10, 30]),
    "digits": (DataConfig(), [0, 1, 2, 3, 4, 10, 30]),
    "shapes-tiny": (SHAPES, [0, 1, 2, 3, 4, 10, 30]),
}


@pytest.mark.parametrize("case", LAYOUT_CASES)
@pytest.mark.slow  # 10-70 s on a loaded 2-core machine: out of the fast tier
def test_every_draw_has_the_priced_layout(tmp_path: Path, case: str) -> None:
    """What the known-cost sampler relies on when it prices every policy on one draw: each
    seed's vocabulary and sequence lengths are the priced draw's (data seed 0), and a trial
    counts its FLOPs on that draw whatever seeds it trains."""
    data_cfg, seeds = LAYOUT_CASES[case]
    cfg = _config(tmp_path, data_cfg.model_copy(update={"seed": "run"}), seeds)
    by_seed, model_cfg = prepare_seeds(cfg)
    priced, priced_cfg = priced_data(cfg.model_copy(update={"seeds": [seeds[-1]]}))
    assert priced is by_seed[0] and priced_cfg == model_cfg
    for data in by_seed.values():
        assert data.vocab == priced.vocab
        assert {t: (x.num_tokens, x.num_image) for t, x in task_layouts(data).items()} == {
            t: (x.num_tokens, x.num_image) for t, x in task_layouts(priced).items()
        }


@pytest.mark.slow  # 10-70 s on a loaded 2-core machine: out of the fast tier
def test_a_policy_has_one_flops_ratio_whatever_seeds_train_it(tmp_path: Path) -> None:
    """Shapes draws differ in their first row's answer length (the logit positions
    `task_layouts` reads); the FLOPs are counted on the priced draw all the same."""
    rows = {s: task_layouts(load_data(SHAPES.for_seed(s)))["understanding"].num_logit_positions for s in range(4)}
    assert len(set(rows.values())) > 1, rows  # the draws do differ there
    policy = preset("himix", 2)
    short = TrainingConfig(steps=1, eval_every=1, batch_size=8, threads=1)
    ratios = {s: run_trial(_config(tmp_path, SHAPES, [s], policy=policy, training=short)).flops_ratio for s in rows}
    priced = run_trial(_config(tmp_path, SHAPES.model_copy(update={"seed": 0}), [3], policy=policy, training=short))
    assert set(ratios.values()) == {priced.flops_ratio}


def test_seeds_whose_layouts_differ_are_refused(tmp_path: Path) -> None:
    """Four shapes images: some draws have no `what shape is at <position>` question (the
    longest), so their questions are padded shorter; one model and one FLOPs count cannot
    serve them all."""
    tiny = DataConfig(name="shapes", train_size=2, val_size=1, test_size=1, seed="run")
    widths = {s: task_layouts(load_data(tiny.for_seed(s)))["understanding"].num_tokens for s in range(8)}
    assert len(set(widths.values())) > 1, widths  # the case exists
    other = next(s for s, width in widths.items() if width != widths[0])
    with pytest.raises(ValueError, match=f"data.seed = 'run': seed {other}'s data have another"):
        prepare_seeds(_config(tmp_path, tiny, [other]))  # seed 0's draw prices the FLOPs


def test_run_is_the_only_word_a_data_seed_takes() -> None:
    assert DataConfig.model_validate({"seed": "run"}).seed == "run"
    for bad in ("fresh", 1.5):  # one error each, naming the key (not one per member of the union)
        with pytest.raises(ValidationError, match="neither a whole number nor 'run'") as err:
            DataConfig.model_validate({"seed": bad})
        assert [e["loc"] for e in err.value.errors()] == [("seed",)]
    assert DataConfig.model_validate({"seed": "3"}).seed == DataConfig.model_validate({"seed": 3.0}).seed == 3
    with pytest.raises(ValueError, match="for_seed"):
        load_data(SHAPES)
    assert DataConfig(seed=3).for_seed(7).seed == 3 and SHAPES.for_seed(7).seed == 7


def test_tokens_data_vary_their_split_unless_the_file_fixes_it(tmp_path: Path) -> None:
    """A user's file is read whole; `data.seed: run` changes which rows each split takes,
    and nothing when the file's own `split` array fixes the split. A sweep's data check
    (`check_data`, before any seed is known) reads the file under `run` too."""
    arrays = valid_arrays()
    np.savez(tmp_path / "split.npz", **arrays)
    np.savez(tmp_path / "seeded.npz", **{k: v for k, v in arrays.items() if k != "split"})
    sizes = {"train_size": 5, "val_size": 3, "test_size": 2, "seed": "run"}
    seeded = DataConfig(name="tokens", path=str(tmp_path / "seeded.npz"), **sizes)
    fixed = DataConfig(name="tokens", path=str(tmp_path / "split.npz"), seed="run")
    for cfg in (seeded, fixed):
        check_data(cfg)
    rows = {s: load_data(seeded.for_seed(s)).split("test", "understanding").source_index.tolist() for s in (0, 1)}
    assert rows[0] != rows[1]
    same = [load_data(fixed.for_seed(s)).split("test", "understanding").source_index.tolist() for s in (0, 1)]
    assert same[0] == same[1]

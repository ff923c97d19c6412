"""Sequence layout, splits and determinism, shared by every built-in data set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from searchvlm.data import BOI, BOS, EOI, EOS, IGNORE_INDEX, PAD, SPLITS, UnifiedData, load_data
from searchvlm.schema.config import DataConfig
from searchvlm.schema.errors import ConfigError
from searchvlm.schema.policy import TASKS, Segment

CONFIGS = {
    "digits": DataConfig(name="digits", train_size=120, val_size=40, test_size=50, seed=3),
    "shapes": DataConfig(name="shapes", train_size=120, val_size=40, test_size=50, seed=3),
    "shapes3": DataConfig(name="shapes", train_size=60, val_size=20, test_size=20, grid=3, image_size=18, num_colors=6),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def data(request: pytest.FixtureRequest) -> UnifiedData:
    loaded = load_data(CONFIGS[request.param])
    loaded.info["config"] = CONFIGS[request.param]
    return loaded


def _expected_segments(data: UnifiedData, task: str) -> np.ndarray:
    s = data.split("train", task).segments[0].numpy()
    start, m = int(np.flatnonzero(s == Segment.IMAGE)[0]), data.num_image_tokens
    tail = [Segment.SYSTEM] + ([Segment.OUTPUT] * (len(s) - start - m - 1) if task == "understanding" else [])
    return np.array(
        [Segment.SYSTEM] + [Segment.INSTRUCTION] * (start - 2) + [Segment.SYSTEM] + [Segment.IMAGE] * m + tail
    )


def test_sizes_and_disjoint_splits(data: UnifiedData) -> None:
    rows = {s: data.split(s, "understanding").source_index for s in SPLITS}
    cfg = data.info["config"]
    assert [len(rows[s]) for s in SPLITS] == [cfg.train_size, cfg.val_size, cfg.test_size]
    everything = np.concatenate(list(rows.values()))
    assert len(np.unique(everything)) == len(everything)


@pytest.mark.parametrize("split", SPLITS)
def test_both_tasks_use_the_same_images(data: UnifiedData, split: str) -> None:
    und, gen = data.split(split, "understanding"), data.split(split, "generation")
    np.testing.assert_array_equal(und.source_index, gen.source_index)
    np.testing.assert_array_equal(und.image_codes, gen.image_codes)
    np.testing.assert_array_equal(und.targets, gen.targets)


@pytest.mark.parametrize("task", TASKS)
def test_identical_layout_in_every_row_and_split(data: UnifiedData, task: str) -> None:
    expected = _expected_segments(data, task)
    for split in SPLITS:
        part = data.split(split, task)
        assert part.seq_len == data.info["seq_len"][task]
        assert (part.segments.numpy() == expected[None]).all()
        assert part.input_ids.dtype == part.segments.dtype == part.labels.dtype == torch.int64


@pytest.mark.parametrize("task", TASKS)
def test_system_tokens_and_image_range(data: UnifiedData, task: str) -> None:
    part = data.split("val", task)
    ids, seg, start = part.input_ids.numpy(), part.segments.numpy()[0], part.image_start
    m, off = data.num_image_tokens, data.vocab.image_offset
    assert (ids[:, 0] == BOS).all() and (ids[:, start - 1] == BOI).all() and (ids[:, start + m] == EOI).all()
    image = ids[:, seg == Segment.IMAGE]
    assert image.min() >= off and image.max() < data.vocab.size
    assert (ids[:, seg != Segment.IMAGE] < off).all()
    assert (ids[:, seg == Segment.INSTRUCTION] != EOS).all()


def test_understanding_labels_only_on_answer_and_eos(data: UnifiedData) -> None:
    part = data.split("train", "understanding")
    ids, seg, lab = part.input_ids.numpy(), part.segments.numpy(), part.labels.numpy()
    labelled = lab != IGNORE_INDEX
    assert (seg[labelled] == Segment.OUTPUT).all()
    assert (lab[labelled] == ids[labelled]).all()
    assert (labelled == ((seg == Segment.OUTPUT) & (ids != PAD))).all()
    assert ((ids == EOS) & labelled).sum(axis=1).tolist() == [1] * len(part)
    last = labelled.shape[1] - 1 - np.argmax(labelled[:, ::-1], axis=1)
    assert (ids[np.arange(len(part)), last] == EOS).all()  # EOS ends every answer
    assert (labelled.sum(axis=1) >= 2).all()  # at least one answer word


def test_generation_labels_only_on_image_tokens(data: UnifiedData) -> None:
    part = data.split("train", "generation")
    ids, seg, lab = part.input_ids.numpy(), part.segments.numpy(), part.labels.numpy()
    labelled = lab != IGNORE_INDEX
    assert (labelled == (seg == Segment.IMAGE)).all()
    assert (lab[labelled] == ids[labelled]).all()


@pytest.mark.parametrize("task", TASKS)
def test_decode_image_round_trip(data: UnifiedData, task: str) -> None:
    part = data.split("test", task)
    start, m = part.image_start, data.num_image_tokens
    images = data.decode_image(part.input_ids[:, start : start + m])
    assert images.shape == (len(part), *data.image_shape)
    np.testing.assert_array_equal(images.reshape(len(part), -1), part.image_codes)
    np.testing.assert_array_equal(data.encode_image(images), part.input_ids[:, start : start + m].numpy())
    assert part.image_codes.min() >= 0 and part.image_codes.max() < data.vocab.num_image


def test_decode_image_rejects_text_ids(data: UnifiedData) -> None:
    with pytest.raises(ValueError, match="not an image token"):
        data.decode_image(np.full((1, data.num_image_tokens), BOS))


def test_batch_selects_rows_consistently(data: UnifiedData) -> None:
    part = data.split("train", "generation")
    for idx in (torch.tensor([5, 0, 7]), np.array([5, 0, 7]), [5, 0, 7]):
        sub = part.batch(idx)
        assert len(sub) == 3
        assert torch.equal(sub.input_ids, part.input_ids[[5, 0, 7]])
        np.testing.assert_array_equal(sub.targets, part.targets[[5, 0, 7]])
        np.testing.assert_array_equal(sub.source_index, part.source_index[[5, 0, 7]])
    assert len(part.batch(slice(0, 4))) == 4


@pytest.mark.parametrize("name", ["digits", "shapes"])
def test_deterministic_for_a_seed(name: str) -> None:
    a, b = load_data(CONFIGS[name]), load_data(CONFIGS[name])
    c = load_data(CONFIGS[name].model_copy(update={"seed": 4}))
    for key, part in a.splits.items():
        assert torch.equal(part.input_ids, b.splits[key].input_ids)
    assert not torch.equal(a.split("train", "generation").input_ids, c.split("train", "generation").input_ids)


@pytest.mark.parametrize("name", ["digits", "shapes"])
def test_held_out_sets_do_not_depend_on_train_size(name: str) -> None:
    small = load_data(CONFIGS[name])
    big = load_data(CONFIGS[name].model_copy(update={"train_size": 300}))
    for split in ("val", "test"):
        np.testing.assert_array_equal(
            small.split(split, "generation").image_codes, big.split(split, "generation").image_codes
        )
    small_train, big_train = small.split("train", "generation"), big.split("train", "generation")
    if name == "shapes":  # generated row by row: the smaller train set is a prefix
        np.testing.assert_array_equal(small_train.image_codes, big_train.image_codes[: len(small_train)])
    else:  # cut from one permutation: the smaller train set is a subset
        assert set(small_train.source_index) <= set(big_train.source_index)


def test_digits_answers_name_the_digit() -> None:
    data = load_data(CONFIGS["digits"])
    part = data.split("train", "understanding")
    answers = [data.decode_text(row).split("<eoi>")[1].split()[0] for row in part.input_ids[:20]]
    assert answers == [data.class_names["digit"][t] for t in part.targets[:20, 0]]
    assert data.vocab.num_image == 17 and data.image_shape == (8, 8)


def test_digits_too_many_images_names_the_key() -> None:
    with pytest.raises(ConfigError, match="data.train_size"):
        load_data(DataConfig(name="digits", train_size=1500, val_size=200, test_size=397))


def test_unknown_split_or_task() -> None:
    data = load_data(CONFIGS["digits"])
    with pytest.raises(ValueError, match="split"):
        data.split("dev", "understanding")
    with pytest.raises(ValueError, match="task"):
        data.split("train", "captioning")

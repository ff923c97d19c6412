"""The patch tokenizer (a k-means codebook over pixel blocks), per-task training sizes and the
answer-permutation control."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from searchvlm.data import load_corpus, load_data
from searchvlm.data._tokenizer import fit_codebook, tokenize
from searchvlm.schema.config import DataConfig, TokenizerConfig
from searchvlm.schema.errors import ConfigError
from searchvlm.schema.policy import Segment

PATCH = TokenizerConfig(kind="patch", patch=4, codes=16)
SHAPES = DataConfig(name="shapes", image_size=16, train_size=120, val_size=20, test_size=30, tokenizer=PATCH)


def _centroid_image(book, codes: np.ndarray) -> np.ndarray:
    """Independent decoder: place each code's centroid block, pick each pixel's nearest palette entry."""
    (h, w), p = book.pixel_shape, book.patch
    f = book.palette.shape[1]
    out = np.zeros((len(codes), h, w), dtype=np.int64)
    for n, row in enumerate(codes):
        for b, code in enumerate(row):
            r, c = divmod(b, w // p)
            block = book.centroids[code].reshape(p, p, f)
            for i in range(p):
                for j in range(p):
                    dist = ((book.palette - block[i, j]) ** 2).sum(1)
                    out[n, r * p + i, c * p + j] = int(dist.argmin())
    return out.reshape(len(codes), -1)


def test_decode_of_encode_is_the_centroid_image() -> None:
    corpus = load_corpus(SHAPES.model_copy(update={"tokenizer": TokenizerConfig()}))
    book = fit_codebook(corpus.image_codes[corpus.splits["train"]], corpus.palette, corpus.image_shape, PATCH)
    images = corpus.image_codes[corpus.splits["test"]][:6]
    codes = book.encode(images)
    assert codes.shape == (6, 16) and codes.max() < len(book.centroids)
    assert np.array_equal(book.decode(codes), _centroid_image(book, codes))
    # each block's code is its nearest centroid (squared distance over palette features)
    feats = book.blocks(images)  # (6, 16, P*P*F)
    dist = ((feats[:, :, None, :] - book.centroids[None, None]) ** 2).sum(-1)
    assert np.array_equal(codes, dist.argmin(-1))
    # mostly faithful: the centroid image keeps most pixels of the real one
    assert (book.decode(codes) == images).mean() > 0.8


def test_codebook_is_fitted_on_training_images_only() -> None:
    corpus = load_corpus(SHAPES.model_copy(update={"tokenizer": TokenizerConfig()}))
    scrambled = corpus.image_codes.copy()
    held_out = np.concatenate([corpus.splits["val"], corpus.splits["test"]])
    scrambled[held_out] = np.random.default_rng(0).integers(0, corpus.num_image, (len(held_out), scrambled.shape[1]))
    a = tokenize(corpus, PATCH).codebook
    b = tokenize(replace(corpus, image_codes=scrambled), PATCH).codebook
    assert np.array_equal(a.centroids, b.centroids)
    # and the training images do shape it
    train = corpus.splits["train"]
    scrambled[train[:50]] = scrambled[held_out[:50]]
    assert not np.array_equal(a.centroids, tokenize(replace(corpus, image_codes=scrambled), PATCH).codebook.centroids)
    # through load_data: other val/test sizes (other held-out images), same codebook
    other = load_data(SHAPES.model_copy(update={"val_size": 7, "test_size": 11}))
    assert np.array_equal(load_data(SHAPES).codebook.centroids, other.codebook.centroids)


def test_patch_tokens_shape_the_sequences_and_are_cached(tmp_path: Path) -> None:
    data = load_data(SHAPES, cache_dir=tmp_path)
    assert data.image_shape == (4, 4) and data.pixel_shape == (16, 16) and data.vocab.num_image == 16
    split = data.split("test", "generation")
    assert int((split.segments[0] == int(Segment.IMAGE)).sum()) == 16
    assert np.array_equal(data.real_pixels(split), load_corpus(SHAPES).image_codes[split.source_index])
    assert data.to_pixels(split.image_codes).shape == (30, 256)
    files = list((tmp_path / "codebooks").glob("*.npz"))
    assert len(files) == 1
    again = load_data(SHAPES, cache_dir=tmp_path)  # read back from the cache
    assert np.array_equal(again.codebook.centroids, data.codebook.centroids)
    files[0].write_bytes(b"garbage")  # a damaged entry is refitted
    assert np.array_equal(load_data(SHAPES, cache_dir=tmp_path).codebook.centroids, data.codebook.centroids)


def test_patch_must_divide_the_image() -> None:
    with pytest.raises(ConfigError, match="data.tokenizer.patch"):
        load_data(SHAPES.model_copy(update={"tokenizer": TokenizerConfig(kind="patch", patch=5)}))
    with pytest.raises(ValueError, match="tokens"):
        DataConfig(name="tokens", path="x.npz", tokenizer=PATCH)


@pytest.mark.parametrize("task_images", ["shared", "disjoint"])
def test_per_task_train_sizes(task_images: str) -> None:
    cfg = DataConfig(name="digits", train_size={"understanding": 90, "generation": 12}, val_size=20,
                     test_size=20, task_images=task_images)  # fmt: skip
    data = load_data(cfg)
    und = set(data.split("train", "understanding").source_index.tolist())
    gen = set(data.split("train", "generation").source_index.tolist())
    assert (len(und), len(gen)) == (90, 12)
    assert gen <= und if task_images == "shared" else not gen & und
    held_out = set(data.split("val", "generation").source_index) | set(data.split("test", "generation").source_index)
    assert not (und | gen) & held_out
    assert data.info["train_images"] == {"understanding": 90, "generation": 12}


def test_per_task_sizes_that_do_not_fit_are_refused() -> None:
    cfg = DataConfig(name="digits", train_size={"understanding": 1700, "generation": 200}, val_size=20,
                     test_size=20, task_images="disjoint")  # fmt: skip
    with pytest.raises(ConfigError, match="data.train_size"):
        load_data(cfg)


def test_one_size_serialises_as_before() -> None:
    assert DataConfig().model_dump() == {
        "name": "digits", "train_size": 700, "val_size": 200, "test_size": 397, "image_size": 16,
        "num_colors": 4, "grid": 2, "path": None, "seed": 0, "task_images": "shared",
    }  # fmt: skip
    dumped = SHAPES.model_dump(mode="json")
    assert dumped["tokenizer"] == {"kind": "patch", "patch": 4, "codes": 16, "seed": 0}
    assert DataConfig.model_validate(dumped) == SHAPES


def test_blanked_understanding_images_leave_only_the_text() -> None:
    cfg = DataConfig(name="shapes", train_size={"understanding": 200, "generation": 40}, val_size=20, test_size=20,
                     tokenizer=PATCH)  # fmt: skip
    base, control = load_data(cfg), load_data(cfg.model_copy(update={"blank_understanding_images": True}))
    tr_b, tr_c = base.split("train", "understanding"), control.split("train", "understanding")
    image = tr_b.segments[0] == int(Segment.IMAGE)
    codes = tr_b.input_ids[:, image]
    background = int(np.bincount(codes.flatten().numpy()).argmax())
    assert len(set(codes.flatten().tolist())) > 1 and (tr_c.input_ids[:, image] == background).all()
    assert np.array_equal(tr_c.input_ids[:, ~image], tr_b.input_ids[:, ~image])  # questions, answers kept
    assert np.array_equal(tr_c.labels, tr_b.labels) and np.array_equal(tr_c.image_codes, tr_b.image_codes)
    for split, task in [("val", "understanding"), ("test", "understanding"), ("train", "generation"),
                        ("val", "generation"), ("test", "generation")]:  # fmt: skip
        assert np.array_equal(control.split(split, task).input_ids, base.split(split, task).input_ids)
    assert "blank_understanding_images" not in cfg.model_dump()  # unset: cache keys as before it existed


def test_permuted_captions_keep_the_captions_and_held_out_rows() -> None:
    """g_U's control: the generation captions are reassigned among the training images; held-out
    rows (and their swapped captions), understanding's rows and every image stay as they were."""
    cfg = DataConfig(name="shapes", train_size=200, val_size=20, test_size=20)
    base, control = load_data(cfg), load_data(cfg.model_copy(update={"permute_captions": True}))
    tr_c, tr_b = control.split("train", "generation"), base.split("train", "generation")
    text = lambda s: s.input_ids[:, s.segments[0] != int(Segment.IMAGE)]  # noqa: E731
    image = lambda s: s.input_ids[:, s.segments[0] == int(Segment.IMAGE)]  # noqa: E731
    assert sorted(map(tuple, text(tr_c).tolist())) == sorted(map(tuple, text(tr_b).tolist()))  # the same captions
    moved = (text(tr_c) != text(tr_b)).any(1).float().mean()
    assert moved > 0.5  # most rows describe another image now (some captions repeat)
    assert np.array_equal(image(tr_c), image(tr_b)) and np.array_equal(tr_c.image_codes, tr_b.image_codes)
    for split, task in [("val", "generation"), ("test", "generation"), ("train", "understanding"),
                        ("val", "understanding"), ("test", "understanding")]:  # fmt: skip
        assert np.array_equal(control.split(split, task).input_ids, base.split(split, task).input_ids)
    assert np.array_equal(control.split("val", "generation").swaps, base.split("val", "generation").swaps)
    assert "permute_captions" not in cfg.model_dump()  # unset: cache keys as before it existed


def test_permuted_answers_keep_pairs_and_held_out_rows() -> None:
    cfg = DataConfig(name="shapes", train_size=200, val_size=20, test_size=20)
    plain, control = load_corpus(cfg), load_data(cfg.model_copy(update={"permute_answers": True}))
    base = load_data(cfg)
    tr_c, tr_b = control.split("train", "understanding"), base.split("train", "understanding")
    # the same (question, answer) rows, reassigned to other images
    pairs = lambda s: sorted(map(tuple, s.input_ids[:, s.segments[0] != int(Segment.IMAGE)].tolist()))  # noqa: E731
    assert pairs(tr_c) == pairs(tr_b)
    assert not np.array_equal(tr_c.input_ids.numpy(), tr_b.input_ids.numpy())
    assert np.array_equal(tr_c.image_codes, tr_b.image_codes)
    for split in ("val", "test"):
        assert np.array_equal(
            control.split(split, "understanding").input_ids, base.split(split, "understanding").input_ids
        )
    assert np.array_equal(control.split("train", "generation").input_ids, base.split("train", "generation").input_ids)
    assert len(plain.answers) == 240

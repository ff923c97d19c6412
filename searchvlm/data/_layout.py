"""Sequence layout: a `Corpus` (text + image codes per row) -> token ids, segments, labels.

understanding: [BOS] [PAD.. question] [BOI] [image] [EOI] [answer EOS PAD..]
generation:    [BOS] [PAD.. caption]  [BOI] [image] [EOI]
The instruction is left-padded (its words sit next to BOI) and the answer right-padded
after EOS, both to the longest row of the whole corpus, so every split and row of a task
shares one length T and one segment layout. PAD is never labelled.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from searchvlm.data._types import (
    BOI,
    BOS,
    EOI,
    EOS,
    IGNORE_INDEX,
    PAD,
    SPECIAL_TOKENS,
    SPLITS,
    TaskSplit,
    UnifiedData,
)
from searchvlm.schema.config import DataConfig, VocabLayout
from searchvlm.schema.errors import ConfigError
from searchvlm.schema.policy import TASKS, Segment


@dataclass
class Corpus:
    """What a data set provides before tokenisation: one row per image."""

    name: str
    image_codes: np.ndarray  # (N, H*W) int64 in [0, num_image)
    image_shape: tuple[int, int]
    num_image: int
    questions: list[str]  # understanding instruction per row
    answers: list[str]  # understanding answer per row (>= 1 word)
    captions: list[str]  # generation prompt per row
    targets: np.ndarray  # (N, A) int64
    attributes: list[str]
    class_names: dict[str, list[str]]
    splits: dict[str, np.ndarray]  # split -> row numbers (disjoint)
    words: list[str] | None = None  # fixed text vocabulary; None: sorted words of the text
    palette: np.ndarray | None = None  # (num_image, F) feature vector of each pixel code (patch tokenizer)
    swaps: list[list[str] | None] | None = None  # per row: captions differing in one attribute (held-out rows)
    pixels: np.ndarray | None = None  # (N, H'*W') pixel codes when image_codes are patch codes
    codebook: Any = None  # the patch tokenizer's `Codebook` (decodes codes to pixels); None: pixel codes


def vocabulary(corpus: Corpus) -> list[str]:
    if corpus.words is not None:
        return list(corpus.words)
    texts = corpus.questions + corpus.answers + corpus.captions
    return sorted({w for t in texts for w in t.split()})


def encode_rows(texts: list[str], index: dict[str, int], left: bool, eos: bool) -> np.ndarray:
    """Texts -> (N, L) ids padded with PAD to the longest row (left or right), EOS optional."""
    rows = [[index[w] for w in t.split()] + ([EOS] if eos else []) for t in texts]
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), PAD, dtype=np.int64)  # (N, L)
    for i, r in enumerate(rows):
        if r and left:
            out[i, width - len(r) :] = r
        elif r:
            out[i, : len(r)] = r
    return out


def _column(n: int, token: int) -> np.ndarray:
    return np.full((n, 1), token, dtype=np.int64)  # (N, 1)


def _segment_row(parts: list[tuple[Segment, int]]) -> np.ndarray:
    return np.concatenate([np.full(k, int(s), dtype=np.int64) for s, k in parts])  # (T,)


def assemble(instr: np.ndarray, image_ids: np.ndarray, answer: np.ndarray | None) -> TaskSplit:
    """Concatenate the parts; `answer` None builds a generation row (image tokens labelled).

    Returns input_ids, segments and labels; targets / image_codes are left empty."""
    n, m = image_ids.shape
    parts = [_column(n, BOS), instr, _column(n, BOI), image_ids, _column(n, EOI)]
    layout = [
        (Segment.SYSTEM, 1),
        (Segment.INSTRUCTION, instr.shape[1]),
        (Segment.SYSTEM, 1),
        (Segment.IMAGE, m),
        (Segment.SYSTEM, 1),
    ]
    if answer is not None:
        parts.append(answer)
        layout.append((Segment.OUTPUT, answer.shape[1]))
    ids = np.concatenate(parts, axis=1)  # (N, T)
    row = _segment_row(layout)  # (T,)
    target = (row == int(Segment.IMAGE if answer is None else Segment.OUTPUT))[None]  # (1, T)
    labels = np.where(target & (ids != PAD), ids, IGNORE_INDEX)  # (N, T)
    seg = torch.from_numpy(row).expand(n, -1).contiguous()  # (N, T)
    return TaskSplit(
        torch.from_numpy(ids), seg, torch.from_numpy(labels), np.empty((n, 0), np.int64), np.empty((n, 0), np.int64)
    )


def _task_split(parts: dict[str, np.ndarray], rows: np.ndarray, corpus: Corpus, task: str, split: str) -> TaskSplit:
    """The rows of one split assembled for `task`, with their targets, image codes and (for
    generation rows with swapped captions) the swapped instructions."""
    answer = parts["answers"][rows] if task == "understanding" else None
    instr = parts["questions" if task == "understanding" else "captions"][rows]
    out = assemble(instr, parts["image"][rows], answer)
    out.targets = corpus.targets[rows]
    out.image_codes = corpus.image_codes[rows]
    out.source_index = rows.copy()
    if task == "generation" and split != "train" and "swaps" in parts:
        out.swaps = torch.from_numpy(parts["swaps"][rows])  # (N, K, L)
    return out


def task_rows(corpus: Corpus, split: str, task: str, task_images: str, sizes: Any = None) -> np.ndarray:
    """Rows of `split` that `task` trains on. Held-out splits: all of them. Training split:
    all (`shared`, one size), a seeded half per task (`disjoint`, one size: understanding
    and generation images then differ, as when the two tasks come from different data
    sets), or with per-task `sizes` a seeded N and M of them: `shared` the first N and the
    first M of one permutation (the smaller set a subset of the larger), `disjoint` N then
    the next M."""
    rows = corpus.splits[split]
    if split != "train" or (sizes is None and task_images == "shared"):
        return rows
    order = np.random.default_rng(len(rows)).permutation(len(rows))
    if sizes is None:
        cut = len(rows) // 2
        pick = order[:cut] if task == "understanding" else order[cut:]
    else:
        n_und, n_gen = sizes.understanding, sizes.generation
        start = n_und if task_images == "disjoint" and task == "generation" else 0
        pick = order[start : start + (n_und if task == "understanding" else n_gen)]
        if len(pick) < (n_und if task == "understanding" else n_gen):
            raise ConfigError(
                "data config",
                "data.train_size",
                f"{{understanding: {n_und}, generation: {n_gen}}}",
                f"needs {n_und + n_gen if task_images == 'disjoint' else max(n_und, n_gen)} training images "
                f"({task_images}); the data set provides {len(rows)}",
            )
    return np.sort(rows[pick])


def _permute_train(corpus: Corpus, seed: int, salt: int, *fields: str) -> Corpus:
    """`fields` (per-row text lists) reassigned among the training rows by one seeded
    permutation (`salt` keeps each control's draw its own); held-out rows untouched."""
    rows = corpus.splits["train"]
    perm = rows[np.random.default_rng([seed, salt]).permutation(len(rows))]
    out = {f: list(getattr(corpus, f)) for f in fields}
    for dst, src in zip(rows.tolist(), perm.tolist()):
        for f in fields:
            out[f][dst] = getattr(corpus, f)[src]
    return Corpus(**{**corpus.__dict__, **out})


def permute_answers(corpus: Corpus, seed: int) -> Corpus:
    """The control: (question, answer) pairs shuffled across the training images (seeded),
    so an image no longer tells its answer; held-out rows and every caption are untouched."""
    return _permute_train(corpus, seed, 7, "questions", "answers")


def permute_captions(corpus: Corpus, seed: int) -> Corpus:
    """g_U's control: the captions shuffled across the training images (seeded), so a
    generation row's text no longer describes its image; held-out rows (and their swapped
    captions, which caption accuracy scores) and every question and answer are untouched."""
    return _permute_train(corpus, seed, 11, "captions")


def blank_understanding_images(data: UnifiedData) -> UnifiedData:
    """The text-only control: every understanding training row's image tokens become one
    constant code, the most frequent code of those rows (the background; with `shared`
    training images, of every training image), so understanding trains on its questions and
    answers alone. Only the model's input changes (`image_codes`, the rows' record of their
    images, stay); held-out rows and generation's rows are untouched."""
    split = data.splits[("train", "understanding")]
    image = split.segments == int(Segment.IMAGE)  # (N, T)
    ids = split.input_ids.clone()
    ids[image] = int(torch.bincount(ids[image]).argmax())  # the smallest code on a tie
    data.splits[("train", "understanding")] = dataclasses.replace(split, input_ids=ids)
    return data


def _swap_ids(corpus: Corpus, index: dict[str, int], width: int) -> np.ndarray | None:
    """(N, K, L) left-padded ids of each row's swapped captions (L: the captions' width;
    PAD rows where a row has none: training rows are never scored by caption)."""
    given = [i for i, row in enumerate(corpus.swaps or []) if row]
    if not given:
        return None
    k = len(corpus.swaps[given[0]])
    if any(len(corpus.swaps[i]) != k for i in given):
        raise ValueError(f"{corpus.name}: every row needs the same number of swapped captions ({k})")
    ids = encode_rows([c for i in given for c in corpus.swaps[i]], index, left=True, eos=False)  # (n*K, L')
    if ids.shape[1] > width:
        raise ValueError(f"{corpus.name}: a swapped caption is longer than the longest caption ({width} words)")
    out = np.full((len(corpus.swaps), k, width), PAD, dtype=np.int64)  # (N, K, L)
    out[given, :, width - ids.shape[1] :] = ids.reshape(len(given), k, -1)
    return out


def build(corpus: Corpus, task_images: str = "shared", sizes: Any = None) -> UnifiedData:
    """Tokenise a corpus and cut it into the six (split, task) TaskSplits (`sizes`: the
    per-task training sizes, `data.train_size` as `TaskSizes`, or None)."""
    words = vocabulary(corpus)
    vocab = VocabLayout(num_special=len(SPECIAL_TOKENS), num_text=max(1, len(words)), num_image=corpus.num_image)
    index = {w: i + vocab.num_special for i, w in enumerate(words)}
    parts = {
        "questions": encode_rows(corpus.questions, index, left=True, eos=False),
        "answers": encode_rows(corpus.answers, index, left=False, eos=True),
        "captions": encode_rows(corpus.captions, index, left=True, eos=False),
        "image": corpus.image_codes.astype(np.int64) + vocab.image_offset,
    }  # (N, H*W)
    swaps = _swap_ids(corpus, index, parts["captions"].shape[1])
    if swaps is not None:
        parts["swaps"] = swaps
    splits = {
        (s, t): _task_split(parts, task_rows(corpus, s, t, task_images, sizes), corpus, t, s)
        for s in SPLITS
        for t in TASKS
    }
    seq_len = {t: splits[("train", t)].seq_len for t in TASKS}
    info = {"seq_len": seq_len, "sizes": {s: int(len(corpus.splits[s])) for s in SPLITS}}
    info["train_images"] = {t: len(splits[("train", t)]) for t in TASKS}
    pixels = corpus.image_codes if corpus.pixels is None else corpus.pixels
    pixel_shape = corpus.image_shape if corpus.codebook is None else corpus.codebook.pixel_shape
    return UnifiedData(
        corpus.name,
        vocab,
        corpus.image_shape,
        words,
        list(corpus.attributes),
        dict(corpus.class_names),
        splits,
        info,
        pixels=pixels,
        pixel_shape=pixel_shape,
        codebook=corpus.codebook,
    )


def seeded_splits(n: int, sizes: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """Disjoint seeded row numbers per split, cut from one permutation test-first, so the
    held-out sets do not depend on train_size and a smaller train set is a subset."""
    perm = np.random.default_rng(seed).permutation(n)
    out, start = {}, 0
    for s in reversed(SPLITS):  # test, val, train
        out[s] = np.sort(perm[start : start + sizes[s]])
        start += sizes[s]
    return out


def check_sizes(cfg: DataConfig, available: int, source: str | Path) -> dict[str, int]:
    """Split sizes from the config; ConfigError naming data.train_size if they do not fit."""
    sizes = {"train": cfg.train_pool, "val": cfg.val_size, "test": cfg.test_size}
    total = sum(sizes.values())
    if total > available:
        raise ConfigError(
            source,
            "data.train_size",
            cfg.train_size if isinstance(cfg.train_size, int) else cfg.train_size.model_dump(),
            f"train_size + val_size + test_size = {total} exceeds the {available} "
            f"images available; lower data.train_size, data.val_size or data.test_size",
        )
    return sizes

"""The `tokens` data set: checks a user's pre-tokenised images and text against its schema.

Schema (N examples, M image tokens per image, K image codes); optional keys marked *:

- `image_tokens` (N, M) integer: image codes in [0, K), row-major H x W.
- `captions` (N,) str: generation prompt (may be empty).
- `questions` (N,) str: understanding question (may be empty).
- `answers` (N,) str: understanding answer, at least one word.
- `split`* (N,) str in train / val / test: a fixed split (data.*_size are then ignored);
  without it, a seeded split of data.train_size / val_size / test_size rows.
- `targets`* (N,) or (N, A) integer >= 0: attribute ids a fidelity classifier predicts;
  default: the answer's index among the sorted distinct answers (attribute `answer`).
- `image_shape`* (2,) integer with H*W = M; default square if M is a square, else (1, M).
- `num_image`* scalar integer K > every code; default: largest code + 1 (at least 2).

Text is split on whitespace; the distinct words (sorted) form the text vocabulary.
`.npz`: strings as unicode arrays (`np.array(values, dtype=str)`); nothing is unpickled.
`.parquet`: one row per example, a column per per-row key (`image_tokens`, and a
multi-column `targets`, as list columns); `image_shape` ("H,W") and `num_image` go in the
file's key/value metadata. Every problem raises ConfigError naming file, key and value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from searchvlm.data._files import Arrays, read_arrays
from searchvlm.data._layout import Corpus, check_sizes, seeded_splits
from searchvlm.data._types import SPLITS
from searchvlm.schema.config import DataConfig
from searchvlm.schema.errors import ConfigError

REQUIRED = ("image_tokens", "captions", "questions", "answers")
OPTIONAL = ("split", "targets", "image_shape", "num_image")
TEXT = ("captions", "questions", "answers")


def check_keys(arrays: Arrays, path: Path) -> None:
    for key in REQUIRED:
        if key not in arrays:
            raise ConfigError(path, key, None, f"required key is missing (found {sorted(arrays)})")
    for key in arrays:
        if key not in REQUIRED + OPTIONAL:
            valid = ", ".join(REQUIRED + OPTIONAL)
            raise ConfigError(path, key, key, f"unknown key; valid keys: {valid}")


def _shape(arr: np.ndarray, key: str, path: Path, ndims: tuple[int, ...], rows: int | None) -> None:
    if arr.ndim not in ndims:
        raise ConfigError(path, key, f"shape {arr.shape}", f"must have {' or '.join(map(str, ndims))} dimension(s)")
    if rows is not None and arr.shape[0] != rows:
        raise ConfigError(path, key, f"{arr.shape[0]} rows", f"needs one row per image; image_tokens has {rows}")


def _integers(arr: np.ndarray, key: str, path: Path) -> np.ndarray:
    if arr.dtype.kind not in "iu":
        raise ConfigError(path, key, f"dtype {arr.dtype}", "must be an integer array")
    if arr.size and arr.min() < 0:
        raise ConfigError(path, key, int(arr.min()), "must be >= 0 (negative value found)")
    return arr.astype(np.int64)


def _strings(arr: np.ndarray, key: str, path: Path, rows: int) -> list[str]:
    _shape(arr, key, path, (1,), rows)
    if arr.dtype.kind != "U":
        raise ConfigError(path, key, f"dtype {arr.dtype}", "must be strings (np.array(values, dtype=str))")
    return [str(s) for s in arr]


def image_codes(arrays: Arrays, path: Path) -> tuple[np.ndarray, int]:
    """The (N, M) codes and the codebook size K."""
    arr = arrays["image_tokens"]
    _shape(arr, "image_tokens", path, (2,), None)
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ConfigError(path, "image_tokens", f"shape {arr.shape}", "needs rows and columns")
    codes = _integers(arr, "image_tokens", path)
    largest = int(codes.max())
    if "num_image" not in arrays:
        return codes, max(2, largest + 1)
    return codes, num_image(arrays["num_image"], largest, path)


def num_image(arr: np.ndarray, largest: int, path: Path) -> int:
    _shape(arr, "num_image", path, (0,), None)
    k = int(_integers(arr, "num_image", path))
    if k <= largest or k < 2:
        raise ConfigError(path, "num_image", k, f"must be >= 2 and > the largest code {largest}")
    return k


def image_shape(arrays: Arrays, m: int, path: Path) -> tuple[int, int]:
    if "image_shape" not in arrays:
        side = int(round(m**0.5))
        return (side, side) if side * side == m else (1, m)
    arr = arrays["image_shape"]
    _shape(arr, "image_shape", path, (1,), None)
    hw = _integers(arr, "image_shape", path).tolist()
    if len(hw) != 2 or hw[0] * hw[1] != m:
        raise ConfigError(path, "image_shape", hw, f"must be [H, W] with H * W = {m} (row width)")
    return hw[0], hw[1]


def targets(arrays: Arrays, answers: list[str], path: Path) -> tuple[np.ndarray, list[str], dict]:
    """(N, A) target ids, attribute names and class names (given, or the answer's class)."""
    if "targets" not in arrays:
        classes = sorted(set(answers))
        index = {a: i for i, a in enumerate(classes)}
        ids = np.array([[index[a]] for a in answers], dtype=np.int64)  # (N, 1)
        return ids, ["answer"], {"answer": classes}
    _shape(arrays["targets"], "targets", path, (1, 2), len(answers))
    t = _integers(arrays["targets"], "targets", path).reshape(len(answers), -1)  # (N, A)
    names = [f"target{j}" for j in range(t.shape[1])]
    classes = {n: [str(i) for i in range(int(t[:, j].max()) + 1)] for j, n in enumerate(names)}
    return t, names, classes


def splits(arrays: Arrays, cfg: DataConfig, n: int, path: Path) -> dict[str, np.ndarray]:
    if "split" not in arrays:
        return seeded_splits(n, check_sizes(cfg, n, path), cfg.seed)
    names = np.array(_strings(arrays["split"], "split", path, n))
    bad = sorted(set(names.tolist()) - set(SPLITS))
    if bad:
        raise ConfigError(path, "split", bad[0], f"values must be one of {', '.join(SPLITS)}")
    out = {s: np.flatnonzero(names == s) for s in SPLITS}
    for s, rows in out.items():
        if len(rows) == 0:
            raise ConfigError(path, "split", s, "no row has this value; every split needs rows")
    return out


def texts(arrays: Arrays, n: int, path: Path) -> dict[str, list[str]]:
    out = {key: _strings(arrays[key], key, path, n) for key in TEXT}
    empty = [i for i, a in enumerate(out["answers"]) if not a.split()]
    if empty:
        i = empty[0]
        raise ConfigError(path, f"answers[{i}]", out["answers"][i], "needs at least one word")
    return out


def load_tokens_corpus(cfg: DataConfig) -> Corpus:
    path, arrays = read_arrays(cfg)
    check_keys(arrays, path)
    codes, k = image_codes(arrays, path)
    text = texts(arrays, len(codes), path)
    tgt, attrs, names = targets(arrays, text["answers"], path)
    return Corpus(
        name="tokens",
        image_codes=codes,
        image_shape=image_shape(arrays, codes.shape[1], path),
        num_image=k,
        questions=text["questions"],
        answers=text["answers"],
        captions=text["captions"],
        targets=tgt,
        attributes=attrs,
        class_names=names,
        splits=splits(arrays, cfg, len(codes), path),
    )

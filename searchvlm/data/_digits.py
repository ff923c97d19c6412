"""The `digits` data set: scikit-learn's bundled 8x8 digits, 17 grey levels = 17 image codes.

understanding: "what digit is this" -> the digit's word ("zero".."nine");
generation: "draw the digit <word>" -> the image. targets: (N, 1) the digit.
"""

from __future__ import annotations

import numpy as np

from searchvlm.data._layout import Corpus, check_sizes, seeded_splits
from searchvlm.schema.config import DataConfig

DIGIT_WORDS: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)
QUESTION = "what digit is this"
NUM_LEVELS = 17


def load_digits_corpus(cfg: DataConfig) -> Corpus:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    codes = np.rint(bunch.images).astype(np.int64).reshape(len(bunch.images), -1)  # (N, 64)
    labels = bunch.target.astype(np.int64)  # (N,)
    sizes = check_sizes(cfg, len(labels), "scikit-learn digits")
    answers = [DIGIT_WORDS[d] for d in labels]
    return Corpus(
        name="digits",
        image_codes=np.clip(codes, 0, NUM_LEVELS - 1),
        image_shape=(8, 8),
        num_image=NUM_LEVELS,
        questions=[QUESTION] * len(labels),
        answers=answers,
        captions=[f"draw the digit {w}" for w in answers],
        targets=labels[:, None],
        attributes=["digit"],
        class_names={"digit": list(DIGIT_WORDS)},
        splits=seeded_splits(len(labels), sizes, cfg.seed),
        palette=np.arange(NUM_LEVELS, dtype=np.float64)[:, None] / (NUM_LEVELS - 1),  # (17, 1) grey level
        swaps=[[f"draw the digit {w}" for w in DIGIT_WORDS if w != a] for a in answers],  # (N, 9)
    )

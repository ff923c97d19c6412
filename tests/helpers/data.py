"""A small valid `tokens` data set (the arrays of a .npz a user would write)."""

from __future__ import annotations

from typing import Any

import numpy as np

N_ROWS = 12


def valid_arrays(n: int = N_ROWS) -> dict[str, Any]:
    """A small valid `tokens` data set: 2x2 images with codes 0..2, a fixed split."""
    rng = np.random.default_rng(0)
    colours = ["red", "green", "blue"]
    answers = [colours[i % 3] for i in range(n)]
    return {
        "image_tokens": rng.integers(0, 3, (n, 4)),
        "captions": np.array([f"paint it {a}" for a in answers]),
        "questions": np.array(["which colour is it" if i % 2 else "colour" for i in range(n)]),
        "answers": np.array(answers),
        "split": np.array((["train"] * 6 + ["val"] * 3 + ["test"] * 3)[:n]),
    }

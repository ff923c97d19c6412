"""Fixtures for the data tests: tiny configs and a writer of small valid .npz files."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

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


@pytest.fixture(name="valid_arrays")
def valid_arrays_fixture() -> dict[str, Any]:
    return valid_arrays()


@pytest.fixture
def write_npz(tmp_path: Path) -> Callable[..., Path]:
    """write_npz(drop=(), **overrides) -> path of a .npz built from `valid_arrays()`."""

    def write(drop: tuple[str, ...] = (), name: str = "data.npz", **overrides: Any) -> Path:
        arrays = {**valid_arrays(), **overrides}
        for key in drop:
            arrays.pop(key)
        path = tmp_path / name
        np.savez(path, **arrays)
        return path

    return write

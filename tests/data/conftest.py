"""Fixtures for the data tests: a small valid data set and a writer of .npz files built from
it (`helpers.data.valid_arrays`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from helpers.data import valid_arrays


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

"""The `tokens` data set: a user's .npz / .parquet loads, and every bad file names its key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from helpers.data import N_ROWS
from searchvlm.data import load_data
from searchvlm.data._tokens import OPTIONAL, REQUIRED
from searchvlm.schema.config import DataConfig
from searchvlm.schema.errors import ConfigError


def _load(path: Path, **cfg: Any) -> Any:
    return load_data(DataConfig(name="tokens", path=str(path), **cfg))


def test_good_npz_loads(write_npz: Callable[..., Path], valid_arrays: dict[str, Any]) -> None:
    data = _load(write_npz())
    assert data.image_shape == (2, 2) and data.vocab.num_image == 3
    assert [len(data.split(s, "generation")) for s in ("train", "val", "test")] == [6, 3, 3]
    assert data.words == sorted({"paint", "it", "red", "green", "blue", "which", "colour", "is"})
    und = data.split("train", "understanding")
    assert data.decode_text(und.input_ids[1]) == "<bos> which colour is it <boi> <image x4> <eoi> green <eos>"
    assert data.decode_text(und.input_ids[0]) == "<bos> colour <boi> <image x4> <eoi> red <eos>"
    assert data.class_names == {"answer": ["blue", "green", "red"]}
    np.testing.assert_array_equal(und.image_codes, valid_arrays["image_tokens"][:6])


def test_optional_keys_are_used(write_npz: Callable[..., Path]) -> None:
    targets = np.arange(N_ROWS * 2).reshape(N_ROWS, 2) % 5
    data = _load(write_npz(image_shape=np.array([1, 4]), num_image=np.array(7), targets=targets))
    assert data.image_shape == (1, 4) and data.vocab.num_image == 7
    assert data.attributes == ["target0", "target1"]
    np.testing.assert_array_equal(data.split("train", "generation").targets, targets[:6])


def test_without_split_uses_config_sizes(write_npz: Callable[..., Path]) -> None:
    path = write_npz(drop=("split",))
    data = _load(path, train_size=5, val_size=3, test_size=2, seed=2)
    rows = [data.split(s, "understanding").source_index for s in ("train", "val", "test")]
    assert [len(r) for r in rows] == [5, 3, 2]
    assert len(np.unique(np.concatenate(rows))) == 10
    with pytest.raises(ConfigError, match="data.train_size"):
        _load(path)  # default sizes need 1297 rows


def test_good_parquet_loads(tmp_path: Path, valid_arrays: dict[str, Any]) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    arrays = valid_arrays
    table = pa.table({k: (v.tolist()) for k, v in arrays.items()})
    table = table.replace_schema_metadata({"image_shape": "4,1", "num_image": "5"})
    pq.write_table(table, tmp_path / "data.parquet")
    data = _load(tmp_path / "data.parquet")
    assert data.image_shape == (4, 1) and data.vocab.num_image == 5
    np.testing.assert_array_equal(data.split("test", "generation").image_codes, arrays["image_tokens"][9:])


def test_ragged_parquet_names_the_key(tmp_path: Path, valid_arrays: dict[str, Any]) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    arrays = {k: v.tolist() for k, v in valid_arrays.items()}
    arrays["image_tokens"][3] = [0, 1]
    pq.write_table(pa.table(arrays), tmp_path / "bad.parquet")
    with pytest.raises(ConfigError, match="image_tokens") as err:
        _load(tmp_path / "bad.parquet")
    assert "bad.parquet" in str(err.value)


ROWS = N_ROWS
BAD_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "missing image_tokens": ("image_tokens", {"drop": ("image_tokens",)}),
    "missing answers": ("answers", {"drop": ("answers",)}),
    "float image_tokens": ("image_tokens", {"image_tokens": np.zeros((ROWS, 4))}),
    "1-d image_tokens": ("image_tokens", {"image_tokens": np.zeros(ROWS, dtype=int)}),
    "negative code": ("image_tokens", {"image_tokens": np.full((ROWS, 4), -2)}),
    "captions too short": ("captions", {"captions": np.array(["a"] * (ROWS - 1))}),
    "questions not strings": ("questions", {"questions": np.arange(ROWS)}),
    "answers 2-d": ("answers", {"answers": np.array([["a"]] * ROWS)}),
    "object answers": ("answers", {"answers": np.array(["a"] * ROWS, dtype=object)}),
    "empty answer": ("answers[0]", {"answers": np.array([""] + ["a"] * (ROWS - 1))}),
    "bad split name": ("split", {"split": np.array(["train"] * (ROWS - 1) + ["dev"])}),
    "empty test split": ("split", {"split": np.array(["train"] * (ROWS - 1) + ["val"])}),
    "split length": ("split", {"split": np.array(["train", "val", "test"])}),
    "negative target": ("targets", {"targets": np.full(ROWS, -1)}),
    "float targets": ("targets", {"targets": np.zeros(ROWS)}),
    "image_shape mismatch": ("image_shape", {"image_shape": np.array([3, 3])}),
    "num_image too small": ("num_image", {"num_image": np.array(2)}),
    "unknown key": ("caption", {"caption": np.array(["a"] * ROWS)}),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_npz_names_file_and_key(write_npz: Callable[..., Path], case: str) -> None:
    key, change = BAD_CASES[case]
    path = write_npz(**change)
    with pytest.raises(ConfigError) as err:
        _load(path)
    assert err.value.problems[0][0] == key
    assert str(path) in str(err.value) and key in str(err.value)


@pytest.mark.parametrize("content", [b"not a zip file", b""])
def test_unreadable_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.npz"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="cannot read") as err:
        _load(path)
    assert err.value.problems[0][0] == "data.path" and "broken.npz" in str(err.value)


@pytest.mark.parametrize("name, reason", [("missing.npz", "not found"), ("data.csv", ".npz or .parquet")])
def test_bad_paths(tmp_path: Path, name: str, reason: str) -> None:
    if name.endswith(".csv"):
        (tmp_path / name).write_text("a,b\n")
    with pytest.raises(ConfigError, match=reason):
        _load(tmp_path / name)


def test_tokens_need_a_path() -> None:
    with pytest.raises(ConfigError, match="data.path"):
        load_data(DataConfig(name="tokens"))


def test_required_keys_are_documented_and_enforced(write_npz: Callable[..., Path]) -> None:
    """The module's schema lists exactly the required keys (unmarked) and the optional ones
    (marked *), in the code's order; a file without any one required key is refused naming it."""
    from searchvlm.data import _tokens

    documented = re.findall(r"^- `(\w+)`(\*?) ", _tokens.__doc__ or "", re.MULTILINE)
    assert [key for key, star in documented if not star] == list(REQUIRED)
    assert [key for key, star in documented if star] == list(OPTIONAL)
    for key in REQUIRED:
        path = write_npz(drop=(key,), name=f"no_{key}.npz")
        with pytest.raises(ConfigError) as err:
            _load(path)
        assert err.value.problems[0][0] == key and str(path) in str(err.value)

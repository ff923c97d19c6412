"""Reading a `tokens` file (.npz or .parquet) into named numpy arrays, without unpickling."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from searchvlm.schema.config import DataConfig
from searchvlm.schema.errors import ConfigError

Arrays = dict[str, np.ndarray]
METADATA_KEYS = ("image_shape", "num_image")  # parquet: scalar keys live in file metadata


def read_arrays(cfg: DataConfig) -> tuple[Path, Arrays]:
    """The file `cfg.path` names, as {key: array}; ConfigError (key data.path) if unreadable."""
    if cfg.path is None:
        raise ConfigError(None, "data.path", None, "is required when data.name = 'tokens'")
    path = Path(cfg.path)
    if not path.is_file():
        raise ConfigError(path, "data.path", str(path), "file not found")
    if path.suffix == ".npz":
        return path, read_npz(path)
    if path.suffix == ".parquet":
        return path, read_parquet(path)
    raise ConfigError(path, "data.path", str(path), "must end in .npz or .parquet")


def read_npz(path: Path) -> Arrays:
    try:
        head = path.open("rb").read(6)
    except OSError as err:
        raise ConfigError(path, "data.path", str(path), f"cannot read file ({err.strerror or err})") from None
    if head != b"\x93NUMPY" and not zipfile.is_zipfile(path):  # np.load would try it as a pickle
        raise ConfigError(
            path, "data.path", str(path), "cannot read .npz file: not an .npz archive (write one with np.savez)"
        )
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ConfigError(path, "data.path", str(path), f"cannot read .npz file ({err})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ConfigError(path, "data.path", str(path), "holds one .npy array, not an .npz archive")
    with z:
        return {key: _npz_key(z, key, path) for key in z.files}


def _npz_key(z: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        return z[key]
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise ConfigError(path, key, str(path), f"cannot read this array ({err})") from None
    except ValueError as err:  # object arrays need pickle, which is never allowed
        raise ConfigError(
            path,
            key,
            "<object array>",
            f"cannot load without pickle ({err}); save strings as np.array(values, dtype=str)",
        ) from None


def read_parquet(path: Path) -> Arrays:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(
            path, "data.path", str(path), "reading .parquet needs pyarrow; install it or use .npz"
        ) from None
    try:
        table = pq.read_table(path)
    except (OSError, ValueError, pa.ArrowException) as err:
        raise ConfigError(path, "data.path", str(path), f"cannot read .parquet ({err})") from None
    arrays = {name: _column(table.column(name).to_pylist(), name, path) for name in table.column_names}
    for key, value in (table.schema.metadata or {}).items():
        if key.decode() in METADATA_KEYS:
            arrays[key.decode()] = _metadata_ints(value.decode(), key.decode(), path)
    return arrays


def _column(values: list, key: str, path: Path) -> np.ndarray:
    """A parquet column -> array: str columns as unicode, list columns must be rectangular."""
    if values and isinstance(values[0], list):
        widths = {len(v) if isinstance(v, list) else -1 for v in values}
        if len(widths) > 1:
            raise ConfigError(path, key, sorted(widths), "rows have different lengths")
    if values and all(isinstance(v, str) for v in values):
        return np.array(values, dtype=str)
    return np.array(values, dtype=object if any(v is None for v in values) else None)


def _metadata_ints(text: str, key: str, path: Path) -> np.ndarray:
    try:
        values = [int(p) for p in text.replace("x", ",").split(",")]
    except ValueError:
        raise ConfigError(path, key, text, "must be integers, e.g. '8,8' or '17'") from None
    return np.array(values if key == "image_shape" else values[0])

"""Content hashes of the user's files (L0 module, stdlib only): the baseline cache keys a data
file by its content, and a sweep's pre-flight check compares each node's copy with the driver's.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's content (hex), read once per process while its size and mtime stay."""
    st = os.stat(path)
    return _sha256(os.path.abspath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

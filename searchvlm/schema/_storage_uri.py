"""`--storage`, where Tune keeps a sweep's state (L0: stdlib only, so the command line checks
it before the sweep package loads): a shared folder (a plain path or `file://PATH`) or an
S3-compatible bucket (`s3://bucket/prefix`); `searchvlm.records._storage` hands it to Tune.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from searchvlm.schema.errors import COMMAND_LINE, ConfigError

__all__ = ["check_storage"]

_SCHEMES = ("file", "s3")


def check_storage(uri: str | Path) -> str:
    """`--storage` in its recorded form: an absolute path (from a plain path or `file://`), or
    `s3://bucket[/prefix]` (no trailing '/'). Anything else is a ConfigError naming --storage."""
    text = str(uri).strip()
    if not text:
        _bad(uri, "is empty: give a shared folder (a path or file://PATH) or s3://BUCKET/PREFIX")
    if "://" not in text:
        return _local(uri, text)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        _bad(uri, f"scheme {parts.scheme or '(none)'!r} is not supported: give a shared folder "
             "(a path or file://PATH) or s3://BUCKET/PREFIX")  # fmt: skip
    if parts.query or parts.fragment:
        _bad(uri, "a storage URI takes no '?' or '#' part (an S3 endpoint comes from AWS_ENDPOINT_URL)")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            _bad(uri, f"file:// names a host ({parts.netloc!r}): write file:///ABSOLUTE/PATH")
        return _local(uri, parts.path)
    prefix = parts.path.strip("/")
    if not parts.netloc or "@" in parts.netloc or ":" in parts.netloc:
        _bad(uri, "needs a bucket name: s3://BUCKET/PREFIX (credentials and endpoint come from the AWS variables)")
    if "//" in prefix:
        _bad(uri, "has an empty folder name ('//') in its prefix")
    return f"s3://{parts.netloc}" + (f"/{prefix}" if prefix else "")


def _local(uri: str | Path, text: str) -> str:
    path = Path(text).expanduser().resolve()
    if path.exists() and not path.is_dir():
        _bad(uri, f"{path} is a file, not a folder")
    return str(path)


def _bad(uri: str | Path, why: str) -> None:
    raise ConfigError(COMMAND_LINE, "--storage", str(uri), why)

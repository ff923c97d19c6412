"""The `validate` command's checks (L0 module): a search-space YAML or a policy JSON, each
file checked whole (`validate_file`), every file checked however many are bad (`validate_files`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from searchvlm.schema.errors import ConfigError
from searchvlm.schema.policy import load_policy
from searchvlm.schema.space import load_space

__all__ = ["FileCheck", "validate_file", "validate_files"]


def validate_file(path: str | Path) -> str:
    """Check a search-space YAML or a policy JSON; returns a one-line summary or raises
    ConfigError listing every problem with its key path."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        pol = load_policy(path)
        return f"{path}: valid policy ({pol.num_layers} layers, name {pol.name!r})"
    space = load_space(path)
    return (
        f"{path}: valid search space ({space.model.num_layers} layers, sampler "
        f"{space.search.sampler}, {space.search.samples} samples, hash {space.space_hash()})"
    )


@dataclass(frozen=True)
class FileCheck:
    """What `validate` found in one file: a summary when valid, else every problem."""

    path: str
    summary: str | None
    error: ConfigError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        problems = self.error.records() if self.error else []
        return {"file": self.path, "valid": self.ok, "summary": self.summary, "problems": problems}


def validate_files(paths: Iterable[str | Path]) -> list[FileCheck]:
    """`validate_file` on every path; a bad file never stops the others (`searchvlm validate`)."""
    out = []
    for path in paths:
        try:
            out.append(FileCheck(str(path), validate_file(path)))
        except ConfigError as err:
            out.append(FileCheck(str(path), None, err))
    return out

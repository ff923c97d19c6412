"""User-facing errors that name the file, the key and the bad value; safe file readers.

L0 module: stdlib + pydantic + PyYAML's safe loader only.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

__all__ = [
    "COMMAND_LINE",
    "ConfigError",
    "DamagedFile",
    "NO_VALUE",
    "load_json",
    "load_yaml",
    "validate",
    "validation_problems",
    "warn_damaged",
]

M = TypeVar("M", bound=BaseModel)

#: the source of a problem with an argument (a CLI flag or the same-named function argument)
COMMAND_LINE = "command line"


class ConfigError(ValueError):
    """Bad input: `problems` is a list of (key path, value, reason); `str()` is one line each."""

    def __init__(self, source: str | Path | None, key: str, value: Any, reason: str):
        self.source = str(source) if source is not None else "<input>"
        self.problems: list[tuple[str, Any, str]] = [(key, value, reason)]
        super().__init__(self._render())

    @classmethod
    def many(cls, source: str | Path | None, problems: list[tuple[str, Any, str]]) -> "ConfigError":
        err = cls(source, *problems[0])
        err.problems = list(problems)
        err.args = (err._render(),)
        return err

    @classmethod
    def combine(cls, errors: list["ConfigError"]) -> "ConfigError":
        """One error holding the problems of several (each keeps its own source)."""
        if len(errors) == 1:
            return errors[0]
        err = cls.many(errors[0].source, [p for e in errors for p in e.problems])
        err.parts = [part for e in errors for part in e.parts]
        err.args = ("\n".join(str(e) for e in errors),)
        return err

    @property
    def parts(self) -> list["ConfigError"]:
        """The errors this one combines (itself when it is a single error)."""
        return self.__dict__.get("_parts") or [self]

    @parts.setter
    def parts(self, value: list["ConfigError"]) -> None:
        self.__dict__["_parts"] = value

    def records(self) -> list[dict[str, Any]]:
        """Every problem as `{source, key, value, reason}` (for `--json`)."""
        return [{"source": e.source, "key": key, "value": None if value is _UNSET else value, "reason": reason}
                for e in self.parts for key, value, reason in e.problems]  # fmt: skip

    def _render(self) -> str:
        return "\n".join(
            _one_line(f"{self.source}: {key or '<root>'}: {reason}")
            if value is _UNSET
            else _one_line(f"{self.source}: {key or '<root>'} = {_short(value)}: {reason}")
            for key, value, reason in self.problems
        )


class DamagedFile(UserWarning):
    """A damaged file a reader worked around (it used what was intact): `str()` is one line
    naming the file, where it is damaged and what was done. The CLI prints it as `warning:`."""


def warn_damaged(source: str | Path, key: str, reason: str) -> None:
    """Warn (DamagedFile) that `source` is damaged at `key` and what the reader did about it."""
    warnings.warn(DamagedFile(_one_line(f"{source}: {key}: {reason}" if key else f"{source}: {reason}")), stacklevel=2)


def _one_line(text: str) -> str:
    """Escape what would break 'one line per problem' (newlines, \x1e, \u2028, ...)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


_UNSET = object()
#: a problem's value when there is none to show (`file: key: reason`)
NO_VALUE = _UNSET
_NAMED = re.compile(r"^([A-Za-z_][\w.\[\]]*) (?:=|has|must) ")


def _short(value: Any, limit: int = 80) -> str:
    """repr(value), cut at `limit` characters; a text or a path (a file the user named, deep in a
    temp folder), or a list of them, is kept whole up to 1000, so that the error still names it."""
    text = repr(value)
    names = value if isinstance(value, (list, tuple)) else [value]
    limit = 1000 if names and all(isinstance(v, (str, Path)) for v in names) else limit
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _key_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def validation_problems(err: ValidationError, prefix: str = "") -> list[tuple[str, Any, str]]:
    problems = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = _key_path(loc)
        if prefix:
            key = f"{prefix}.{key}" if key else prefix
        msg = e["msg"].removeprefix("Value error, ")
        value = e.get("input")
        named = _NAMED.match(msg) if not loc else None
        if named:  # a model-level check whose message starts with the key it is about
            key = f"{prefix}.{named.group(1)}" if prefix else named.group(1)
            value = _UNSET
        problems.append((key, value, msg))
    return problems


def validate(model: type[M], data: Any, source: str | Path | None = None, prefix: str = "") -> M:
    """`model.model_validate(data)`, turning a ValidationError into a ConfigError."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError.many(source, validation_problems(err, prefix)) from None


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name} is not allowed")


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as err:
        raise ConfigError(path, "", str(path), f"cannot read file ({err.strerror})") from None
    except UnicodeDecodeError as err:  # garbage bytes, a binary file
        raise ConfigError(path, "", str(path), f"not a text file (byte {err.start} is not UTF-8)") from None


def load_json(path: str | Path) -> Any:
    path = Path(path)
    text = _read_text(path)
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError) as err:
        raise ConfigError(path, "", text[:40], f"not valid JSON ({err})") from None


def load_yaml(path: str | Path) -> Any:
    """YAML through the safe loader only; NaN/inf rejected."""
    import yaml

    path = Path(path)
    text = _read_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(path, "", text[:40], f"not valid YAML ({err})".replace("\n", " ")) from None
    bad = _non_finite(data)
    if bad is not None:
        raise ConfigError(path, bad[0], bad[1], "must be a finite number")
    return data


def _non_finite(data: Any, key: str = "") -> tuple[str, Any] | None:
    if isinstance(data, float) and not math.isfinite(data):
        return key, data
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list):
        items = ((f"[{i}]", v) for i, v in enumerate(data))
    else:
        return None
    for k, v in items:
        sub = f"{key}{k}" if str(k).startswith("[") else (f"{key}.{k}" if key else str(k))
        found = _non_finite(v, sub)
        if found:
            return found
    return None

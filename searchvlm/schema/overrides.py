"""Command-line overrides of a config file: `--set key.path=value`, values parsed as YAML.

L0 module (stdlib + PyYAML's safe loader + pydantic). One helper for every command that
takes `--set` (`trial`, `sweep`, `reproduce`) and for `benchmarks/calibrate_proxy.py`:
overrides are applied to the file's data before validation, so a set value is validated
exactly like the file's own; a problem whose key an override set is blamed on the command
line (`command line: --set training.steps = -1: ...`), the others on the file.

    --set training.steps=200 --set seeds=[0,1,2] --set synergy.at=final --set data.hf=null
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from searchvlm.schema.errors import COMMAND_LINE, ConfigError, validate

M = TypeVar("M", bound=BaseModel)
FLAG = "--set"

__all__ = ["FLAG", "Override", "apply_overrides", "dump_yaml", "parse_overrides", "validate_overridden"]


@dataclass(frozen=True)
class Override:
    """One `--set key.path=value`: the dotted key and its YAML-parsed value."""

    key: str
    value: Any

    @property
    def flag(self) -> str:
        return f"{FLAG} {self.key}"


def _parse_one(text: str) -> Override:
    import yaml

    from searchvlm.schema.errors import _non_finite

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part.strip() for part in key.split(".")):
        raise ConfigError(COMMAND_LINE, FLAG, text, "expected key.path=value such as training.steps=200")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(COMMAND_LINE, f"{FLAG} {key}", raw, f"not a YAML value ({err})".replace("\n", " ")) from None
    if _non_finite(value) is not None:
        raise ConfigError(COMMAND_LINE, f"{FLAG} {key}", value, "must be a finite number")
    return Override(key, value)


def parse_overrides(items: Iterable[str | Override] | None) -> list[Override]:
    """`["a.b=1", ...]` as Overrides (already parsed ones pass through); ConfigError names `--set`."""
    return [o if isinstance(o, Override) else _parse_one(o) for o in items or ()]


def apply_overrides(data: dict[str, Any], overrides: Iterable[str | Override] | None) -> dict[str, Any]:
    """A deep copy of `data` with every override set (missing sections are created)."""
    out = copy.deepcopy(data)
    for o in parse_overrides(overrides):
        *parents, leaf = [p.strip() for p in o.key.split(".")]
        node = out
        for i, part in enumerate(parents):
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                where = ".".join(parents[: i + 1])
                raise ConfigError(COMMAND_LINE, o.flag, o.value, f"{where} holds a {type(node).__name__} value, not a "
                                  f"section: set it whole (--set {where}=...)")  # fmt: skip
        node[leaf] = o.value
    return out


def _blamed(key: str, overrides: Sequence[Override]) -> Override | None:
    """The override a problem at `key` comes from (the key itself or a value below it)."""
    for o in reversed(overrides):  # the last one set wins
        if key == o.key or key.startswith((f"{o.key}.", f"{o.key}[")):
            return o
    return None


def attribute(err: ConfigError, overrides: Sequence[Override]) -> ConfigError:
    """`err` with the problems an override caused blamed on `--set KEY` (command line)."""
    if not overrides:
        return err
    ours = [(f"{FLAG} {key}", value, reason) for key, value, reason in err.problems if _blamed(key, overrides)]
    theirs = [p for p in err.problems if not _blamed(p[0], overrides)]
    parts = ([ConfigError.many(COMMAND_LINE, ours)] if ours else []) + (
        [ConfigError.many(err.source, theirs)] if theirs else [])  # fmt: skip
    return ConfigError.combine(parts)


def validate_overridden(model: type[M], data: Any, source: str | Path | None,
                        overrides: Iterable[str | Override] | None = None) -> M:  # fmt: skip
    """`model` from `data` with `overrides` applied; problems named as `attribute` says."""
    parsed = parse_overrides(overrides)
    merged = apply_overrides(data, parsed) if parsed and isinstance(data, dict) else data
    try:
        return validate(model, merged, source)
    except ConfigError as err:
        raise attribute(err, parsed) from None


def dump_yaml(config: BaseModel) -> str:
    """A resolved config as YAML (`--print-config`): every field, in schema order."""
    import yaml

    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)

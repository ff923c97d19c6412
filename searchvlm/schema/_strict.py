"""The pydantic base of every schema: unknown keys are errors.

L0 module: pydantic only. `Strict` is the base of the trial config and the search-space
file; `Frozen` (also immutable and hashable) the base of the explicit policy and the
schedules. `OneOf` marks a name out of a registry (selectors, `synergy.gen_metric`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, GetJsonSchemaHandler
from pydantic_core import PydanticKnownError, core_schema


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Frozen(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OneOf:
    """Pydantic marker: a name out of a registry (`names()`, read when a value is validated, so
    names registered later are taken), validated and reported in errors, JSON schemas and docs
    as pydantic reports a `Literal` of the registered names (same errors, same schema)."""

    def __init__(self, names: Callable[[], Iterable[str]]):
        self._names = names

    def choices(self) -> tuple[str, ...]:
        return tuple(self._names())

    def _check(self, value: Any) -> str:
        names = self.choices()
        if isinstance(value, str) and value in names:
            return value
        shown = [repr(n) for n in names]
        expected = " or ".join([", ".join(shown[:-1]), shown[-1]]) if len(shown) > 1 else "".join(shown)
        raise PydanticKnownError("literal_error", {"expected": expected})

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], Any]) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(self._check)

    def __get_pydantic_json_schema__(self, schema: Any, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return {"enum": list(self.choices()), "type": "string"}

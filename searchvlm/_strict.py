"""The pydantic base of every schema: unknown keys are errors.

L0 module: pydantic only. `Strict` is the base of the trial config and the search-space
file; `Frozen` (also immutable and hashable) the base of the explicit policy and the
schedules.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Frozen(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True)

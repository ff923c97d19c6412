"""The `export` command: the policy file (`searchvlm.objectives.export.export_policy`) and its picture."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec

from searchvlm.objectives.export import export_policy
from searchvlm.report._policy import png_beside, policy_picture
from searchvlm.schema.errors import COMMAND_LINE, ConfigError

__all__ = ["ExportReport", "export_report"]

_P = ParamSpec("_P")


@dataclass(frozen=True)
class ExportReport:
    """What `export_report` wrote: the policy file, its picture, and the file's provenance."""

    path: Path
    picture: Path
    provenance: dict[str, Any]


def _with_picture(export: Callable[_P, Path]) -> Callable[_P, ExportReport]:
    """`export` (same parameters), then the picture of the policy file it wrote."""

    def export_report(*args: _P.args, **kwargs: _P.kwargs) -> ExportReport:
        path = export(*args, **kwargs)
        provenance = json.loads(path.read_text())["provenance"]
        try:
            picture = policy_picture(path)
        except OSError as err:  # the policy file is written; say which file failed
            reason = f"cannot write the picture ({err.strerror or err})"
            raise ConfigError(COMMAND_LINE, "--output", str(png_beside(path)), reason) from None
        return ExportReport(path, picture, provenance)

    export_report.__qualname__ = "export_report"
    export_report.__signature__ = inspect.signature(export).replace(return_annotation=ExportReport)  # type: ignore[attr-defined]
    export_report.__doc__ = (
        f"The `export` command: `{export.__module__}.{export.__name__}` (same parameters), then the "
        "policy's picture beside the file (`policy_picture`: policy.json -> policy.png)."
    )
    return export_report


export_report = _with_picture(export_policy)

"""The command line's help texts (L5, beside `searchvlm.cli`): each option shows the shape of
its value (`--seeds 0,1,2`, `--runs-dir DIR`, `--top N`) and a flag shows none, as argparse and
click print them, instead of typer's type names (`<str>`, `<path>`, `<bool>`), which read as
values to type in.

`HelpGroup` sets every command's metavars once, when typer builds the command group: the
command functions keep plain `typer.Option(...)` declarations, and a new option gets its
metavar here without anything to remember.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperArgument

from searchvlm.cli._usage import PlainErrorsGroup

__all__ = ["HelpGroup", "metavar"]

#: options whose value has a structure a name cannot say (by option)
VALUE_SHAPES = {
    "--seeds": "0,1,2",
    "--set": "KEY=VALUE",
    "--ref": "FLOPS,SYNERGY",
    "--concurrency": "N|auto",
    "--presets": "NAME,NAME",
    "--tracking-uri": "URI",
    "--storage": "PATH|URI",
    "--trial": "ID|N",
    "--check": "RUN",
    "--rows": "all|targets",
    "--max-flops": "X",
    "--min-synergy": "Y",
}


class _Argument(TyperArgument):
    """A positional argument whose help shows its name (`SPACE_FILE`) and no type beside it."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw + ("..." if self.nargs != 1 else "")
        return name if self.required else f"[{name}]"


def _is_flag(param: Any) -> bool:
    return bool(getattr(param, "is_flag", False)) or param.type_descriptor.annotation is bool


def metavar(param: Any) -> str:
    """What the help prints after an option (empty for a flag) or for an argument."""
    if param.param_type_name == "argument":
        return str(param.name).upper()
    if _is_flag(param):
        return ""
    long = max(param.opts, key=len)
    if long in VALUE_SHAPES:
        return VALUE_SHAPES[long]
    annotation = param.type_descriptor.annotation
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "|".join(str(choice.value) for choice in annotation)
    if annotation is Path:
        return "DIR" if str(param.name).endswith("dir") else "FILE"
    if annotation is int:
        return "N"
    return long.lstrip("-").replace("-", "_").upper()


def plain_metavars(command: Any) -> None:
    """Give each parameter of `command` its metavar (an explicit `metavar=` stays), its
    `--help` flag included (made once per command, here before any context asks for it)."""
    help_option = command.get_help_option(typer.Context(command))
    if help_option is not None:
        help_option.metavar = ""
    for param in command.params:
        if param.metavar is None:
            param.metavar = metavar(param)
        if isinstance(param, TyperArgument):
            param.__class__ = _Argument  # typer prints an argument's type beside its name


class HelpGroup(PlainErrorsGroup):
    """The CLI's command group: `PlainErrorsGroup`'s one-line errors, and help that shows each
    value's shape (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for command in self.commands.values():
            plain_metavars(command)

    def get_params(self, ctx: Any) -> list[Any]:
        """The group's own options, typer's completion flags among them (added after `__init__`)."""
        plain_metavars(self)
        return super().get_params(ctx)

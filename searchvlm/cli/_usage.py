"""The command line's error handler (L5, beside `searchvlm.cli`): usage errors and every
command's `ConfigError` as `error:` lines, exit code 2.

typer reports a bad option value, an unknown option or a missing argument in a boxed rich
panel after a usage block. Here each is one line, like every other error of the CLI:
`error: command line: --layers = 'x': Input should be a valid integer (see 'searchvlm presets --help')`.
A `ConfigError` a command raises (a bad file, key or value; it names them) is printed the
same way, one line per problem, so no command catches it itself. `print_error` is the one
printer of `error:` lines (markup in a message is printed as text, never interpreted).
"""

from __future__ import annotations

import contextlib
import importlib
import warnings
from collections.abc import Iterator
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from searchvlm.schema.errors import COMMAND_LINE, ConfigError, DamagedFile

__all__ = ["PlainErrorsGroup", "print_error", "print_warning", "usage_line"]

# the exception classes of the click typer runs on (vendored in typer >= 0.17, click before)
_exceptions = importlib.import_module(typer.BadParameter.__module__)
_stderr = Console(stderr=True, soft_wrap=True)


def print_error(text: str, console: Console | None = None) -> None:
    """Print `error: <line>` for each line of `text` on stderr."""
    for line in text.splitlines() or [""]:
        (console or _stderr).print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)


def print_warning(text: str, console: Console | None = None) -> None:
    """Print `warning: <text>` (one line) on stderr."""
    (console or _stderr).print(f"[yellow]warning:[/yellow] {escape(text)}", highlight=False, soft_wrap=True)


@contextlib.contextmanager
def damaged_files_as_warnings() -> Iterator[None]:
    """Inside the block, each `DamagedFile` warning (a file a reader worked around) is one
    `warning:` line on stderr, printed once however often the file is read."""
    seen: set[str] = set()
    previous = warnings.showwarning

    def show(message: Any, category: type, *args: Any, **kwargs: Any) -> None:
        if not issubclass(category, DamagedFile):
            previous(message, category, *args, **kwargs)
        elif str(message) not in seen:
            seen.add(str(message))
            print_warning(str(message))

    with warnings.catch_warnings():
        warnings.simplefilter("always", DamagedFile)
        warnings.showwarning = show
        yield


def _value(err: Exception) -> tuple[bool, Any]:
    """The rejected value when the error carries it (typer's pydantic coercion keeps it as the cause)."""
    errors = getattr(err.__cause__, "errors", None)
    if callable(errors):
        found = errors()
        if found and "input" in found[0]:
            return True, found[0]["input"]
    return False, None


def _param_name(param: Any) -> str:
    if getattr(param, "param_type_name", "") == "argument":
        return str(param.name).upper()
    opts = sorted(getattr(param, "opts", []) or [], key=len)
    return opts[-1] if opts else str(getattr(param, "name", "?"))


def usage_line(err: Exception) -> str:
    """`command line: KEY = VALUE: reason (see 'PROG CMD --help')` for a usage error."""
    reason = str(getattr(err, "message", "") or err).removeprefix("Value error, ").strip().rstrip(".")
    key = ""
    if isinstance(err, _exceptions.MissingParameter):
        kind = err.param_type or getattr(err.param, "param_type_name", "parameter")
        key, reason = (_param_name(err.param) if err.param else ""), f"missing {kind}"
    elif isinstance(err, _exceptions.BadParameter) and err.param is not None:
        key = _param_name(err.param)
        known, value = _value(err)
        if known and repr(value) not in reason:
            key = f"{key} = {value!r}"
    elif isinstance(err, _exceptions.NoSuchOption):
        key, reason = err.option_name, "no such option"
        if err.possibilities:
            reason += f" (did you mean {', '.join(sorted(err.possibilities))}?)"
    elif isinstance(err, _exceptions.BadOptionUsage):
        key = err.option_name
    line = f"{COMMAND_LINE}: {key}: {reason}" if key else f"{COMMAND_LINE}: {reason}"
    ctx = getattr(err, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return " ".join(line.split()) + hint


class _PlainErrors:
    """Turn a usage error or a `ConfigError` raised inside the block into `error:` lines and
    exit 2 (a usage error: its own exit code, 2 for all of ours)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, err: BaseException | None, tb: Any) -> bool:
        if isinstance(err, ConfigError):
            print_error(str(err) or repr(err))
            raise typer.Exit(2) from None
        if err is None or not isinstance(err, _exceptions.ClickException):
            return False
        if isinstance(err, getattr(_exceptions, "NoArgsIsHelpError", ())):
            return False  # `searchvlm` alone prints the help, as typer does
        print_error(usage_line(err))
        raise typer.Exit(err.exit_code) from None


class PlainErrorsGroup(TyperGroup):
    """The CLI's command group: usage errors of the group and of every command, and every
    command's `ConfigError`, print `error:` lines and exit 2."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _PlainErrors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with _PlainErrors(), damaged_files_as_warnings():
            return super().invoke(ctx)

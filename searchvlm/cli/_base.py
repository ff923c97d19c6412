"""What every command of the `searchvlm` command line shares (L5, beside `searchvlm.cli`):
its two consoles (`out` for results, `console` for progress and messages on stderr), the
exit on an error that is not a `ConfigError`, JSON and config printing, the parsers of
option values that typer cannot check itself, and the help texts of shared options.
"""

from __future__ import annotations

import json
from typing import NoReturn, Optional

import typer
from rich.console import Console

from searchvlm.cli._usage import print_error
from searchvlm.schema.errors import COMMAND_LINE, ConfigError

console = Console(stderr=True)
out = Console(soft_wrap=True)  # plain lines are never broken: a terminal wraps them, logs keep them whole


def fail(err: Exception) -> NoReturn:
    """An error that is not a `ConfigError` as one `error:` line, exit 2 (a `ConfigError` a
    command raises gets the same from `PlainErrorsGroup`, the one handler of them)."""
    print_error(str(err) or repr(err), console)
    raise typer.Exit(2)


SET_HELP = "override a key of the space file: key.path=value (YAML value; repeatable), e.g. training.steps=200"
PRINT_CONFIG_HELP = "print the resolved config (YAML, after --set) and exit"


def print_json(data: object) -> None:
    out.print_json(json.dumps(data, default=str))


def exit_with_config(config) -> NoReturn:
    """`--print-config`: the resolved config as YAML on stdout, then exit 0."""
    from searchvlm.schema.overrides import dump_yaml

    out.print(dump_yaml(config), end="", highlight=False, markup=False)
    raise typer.Exit(0)


def seeds_option(text: str | None) -> list[int] | None:
    """`--seeds 0,1,2` as a list; None when not given (an empty value is refused)."""
    if text is None:
        return None
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise ConfigError(COMMAND_LINE, "--seeds", text, "expected comma-separated integers such as 0,1,2") from None


def concurrency_option(text: str | None) -> int | str | None:
    """`--concurrency 4` or `--concurrency auto`; None when not given."""
    if text is None or text == "auto":
        return text
    if not text.strip().isdigit() or int(text) < 1:
        raise ConfigError(COMMAND_LINE, "--concurrency", text, "expected a whole number >= 1 or auto")
    return int(text)


def ref_option(ref: Optional[str]) -> Optional[tuple[float, float]]:
    """`--ref FLOPS,SYNERGY` as a pair; None when not given."""
    if ref is None:
        return None
    try:
        flops, synergy = (float(x) for x in ref.split(","))
    except ValueError:
        raise ConfigError("command line", "--ref", ref, "expected FLOPS,SYNERGY such as 1.0,-0.2") from None
    return flops, synergy

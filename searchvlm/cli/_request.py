"""A command's options declared once, as the fields of a typed record (L5, beside `searchvlm.cli`).

A command takes one frozen dataclass, `def analyze(args: AnalyzeArgs)`, whose fields are
declared like typer parameters: `steps: Optional[int] = option(None, "--steps", min=1,
help="...")`, `space_file: Path = argument(help="...")`: one field, one option, one help
text. `@record_command` gives typer a signature generated from those fields (typer reads
`inspect.signature`) and calls the command with the record. A field whose text needs
parsing names its parser, `option(None, "--seeds", parse=seeds_option, help=...)`: typer
reads text, the record holds the parsed value (a parser's `ConfigError` naming the option is
one `error:` line, exit 2). `request(cls, args)` builds a library's typed request from the
record's fields of its names.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Optional, TypeVar, get_type_hints

import typer
from typer.models import ParameterInfo

__all__ = ["argument", "option", "record_command", "request"]

T = TypeVar("T")


@dataclass(frozen=True)
class _Spec:
    """What a record field is on the command line (kept in its `dataclasses.field` metadata)."""

    info: ParameterInfo  # the typer.Option / typer.Argument, without its default
    parse: Callable[[Any], Any] | None = None  # text -> the field's value


def option(default: Any, *flags: str, parse: Callable[[Any], Any] | None = None, **kwargs: Any) -> Any:
    """A record field that is the option `flags` with `default` (`kwargs`: `typer.Option`'s,
    help, min, show_default...); with `parse`, typer reads text and the field holds `parse(text)`."""
    spec = _Spec(typer.Option(*flags, **kwargs), parse)
    return dataclasses.field(default=default, metadata={"cli": spec})


def argument(**kwargs: Any) -> Any:
    """A record field that is a required positional argument (`kwargs`: `typer.Argument`'s)."""
    return dataclasses.field(metadata={"cli": _Spec(typer.Argument(**kwargs))})


def _parameter(field: dataclasses.Field, hint: Any) -> inspect.Parameter:
    """The typer parameter of one record field: `Annotated[type, Option(...)] = default`."""
    spec: _Spec = field.metadata["cli"]
    text = Optional[str] if spec.parse is not None else hint
    default = field.default if field.default is not dataclasses.MISSING else inspect.Parameter.empty
    kind = inspect.Parameter.KEYWORD_ONLY
    return inspect.Parameter(field.name, kind, default=default, annotation=Annotated[text, spec.info])


def record_command(func: Callable[[Any], T]) -> Callable[..., T]:
    """`func(args: Record)` as a typer command whose parameters are `Record`'s fields (see the module docstring)."""
    (record,) = (h for name, h in get_type_hints(func).items() if name != "return")
    hints = get_type_hints(record)
    fields = dataclasses.fields(record)
    params = [_parameter(f, hints[f.name]) for f in fields]
    parse = {f.name: f.metadata["cli"].parse for f in fields if f.metadata["cli"].parse is not None}

    @functools.wraps(func)
    def command(**values: Any) -> T:
        return func(record(**{name: parse[name](v) if name in parse else v for name, v in values.items()}))

    del command.__wrapped__  # typer reads the generated signature, not `func`'s
    command.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    return command


def request(cls: type[T], args: object, **values: Any) -> T:
    """A `cls` (a dataclass: a library's typed request) from `args`' fields of the same names,
    `values` given for the others; a field of `cls` that neither names is an error, so a new
    request field cannot be left off the command line unnoticed."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    missing = [n for n in names if n not in values and not hasattr(args, n)]
    if missing:
        raise TypeError(f"{cls.__name__}: no command-line field for {', '.join(missing)}")
    return cls(**{n: values[n] if n in values else getattr(args, n) for n in names})

"""The `searchvlm` command line: thin typer commands over the public API (L5)."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Search synergy-aware image-token reduction policies for unified VLMs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main() -> None:
    """searchvlm command line."""

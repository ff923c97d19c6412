"""`python -m searchvlm`: the same command line as the `searchvlm` script."""

from __future__ import annotations

from searchvlm.cli import app

app(prog_name="searchvlm")

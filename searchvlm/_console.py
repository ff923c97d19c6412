"""Tables that stay whole wherever they are printed: a terminal, a pipe, CI, nohup, a file.

rich lays a table out to the console's width, and a console that is not a terminal is 80
columns wide (or `$COLUMNS`): a wide table then gets one-character columns and numbers
cut to `-0.0…`. Off a terminal, `print_table` prints at the table's natural width instead
(no cell is cut, folded or wrapped), so logs hold the complete numbers. On a terminal the
table is laid out as rich does it (tables mark their number columns `no_wrap`, so the text
columns give way first).
"""

from __future__ import annotations

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

#: width a table is measured at off a terminal (wider than any table we print)
_UNBOUNDED = 100_000

__all__ = ["print_table"]


def natural_width(console: Console, table: Table) -> int:
    """The width `table` takes when nothing limits it (cells, padding and borders)."""
    options = console.options.update_width(_UNBOUNDED)
    return max(1, Measurement.get(console, options, table).maximum)


def print_table(console: Console, table: Table) -> None:
    """Print `table` on `console`; off a terminal at its natural width (see the module doc)."""
    if console.is_terminal:
        console.print(table)
        return
    width = max(natural_width(console, table), console.width)
    Console(file=console.file, width=width, color_system=None, highlight=False).print(table)

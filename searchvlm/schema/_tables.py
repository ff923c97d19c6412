"""The sweep folder's CSV tables as files (L0 module, stdlib only): atomic writes, and reads
that never drop a damaged row in silence (`searchvlm.schema.results` defines the tables' columns
and cells: trials.csv, confirmed.csv).
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from searchvlm.schema.errors import NO_VALUE, ConfigError, warn_damaged


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", newline="") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_table(path: str | Path, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    """Rows sorted by trial number, None as empty cells, written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    for row in sorted(rows, key=lambda r: int(r["number"])):
        writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in columns})
    atomic_write(Path(path), buf.getvalue())


#: what to do about a damaged table (`searchvlm.records.recover`), by the sweep's folder name
REPAIR_HINT = (
    "`searchvlm runs --check {name}` compares it with the Optuna study and MLflow, --repair rebuilds lost rows"
)
_Entry = tuple[int, "dict[str, Any] | None", "str | None"]  # (line, parsed row, problem)


def read_table(path: Path, required: tuple[str, ...], columns: tuple[str, ...], parse: Callable[[str, str], Any],
                strict: bool = False) -> list[dict[str, Any]]:  # fmt: skip
    """Rows of a CSV table with `required` header columns, every cell through `parse`;
    ConfigError naming the file on an unreadable file or a bad header. A damaged row (cut
    short, extra cells, a cell that does not parse) is never dropped in silence: with
    `strict` it is a ConfigError naming the file and line, otherwise it is skipped and one
    `DamagedFile` warning names the file and the damaged lines."""
    text = _text(path)
    if text and "\n" not in text:  # the writer ends the header line: the file was cut inside it
        _report_damage(path, [(1, "the file ends inside its header (cut short?)")], 0, strict)
        return []
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise ConfigError(path, "header", reader.fieldnames, f"missing columns {missing}")
    entries = _entries(reader, columns, parse)
    if entries and entries[-1][2] is None and not text.endswith("\n"):  # the writer ends every row
        entries[-1] = (entries[-1][0], None, "the file ends inside this row (cut short?)")
    damaged = [(line, problem) for line, _, problem in entries if problem is not None]
    if damaged:
        _report_damage(path, damaged, len(entries) - len(damaged), strict)
    return [row for _, row, problem in entries if problem is None and row is not None]


def _text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as err:
        raise ConfigError(path, "", str(path), f"cannot read file ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(path, "", str(path), f"not a text table (byte {err.start} is not UTF-8)") from None


def _entries(reader: csv.DictReader, columns: tuple[str, ...], parse: Callable[[str, str], Any]) -> list[_Entry]:
    """Every data row with the line it starts on: parsed, or the problem that damages it."""
    out: list[_Entry] = []
    line = reader.line_num + 1
    while True:
        try:
            raw = next(reader)
        except StopIteration:
            return out
        except csv.Error as err:
            out.append((line, None, f"unreadable row ({err})"))
        else:
            out.append((line, *_parsed(raw, reader, columns, parse)))
        line = reader.line_num + 1


def _parsed(raw: dict[Any, Any], reader: csv.DictReader, columns: tuple[str, ...],
            parse: Callable[[str, str], Any]) -> tuple[dict[str, Any] | None, str | None]:  # fmt: skip
    cells = len(reader.fieldnames or [])
    if None in raw:
        return None, f"{cells + len(raw[None])} cells for {cells} columns"
    short = [k for k, v in raw.items() if v is None]
    if short:
        return None, f"row cut short: {cells - len(short)} of {cells} cells (ends before column {short[0]!r})"
    try:
        return {c: parse(c, raw.get(c) or "") for c in columns}, None
    except ValueError as err:
        return None, f"trial {raw.get('trial_id')!r}: {err}"


def _report_damage(path: Path, damaged: list[tuple[int, str]], intact: int, strict: bool) -> None:
    line, problem = damaged[0]
    more = f" (and {len(damaged) - 1} more damaged rows)" if len(damaged) > 1 else ""
    hint = REPAIR_HINT.format(name=path.resolve().parent.name)
    where = f"line {line} (row {line - 1})" if line > 1 else "line 1 (the header)"
    if strict:
        raise ConfigError(path, where, NO_VALUE, f"{problem}{more}; {hint}")
    warn_damaged(path, where, f"{problem}{more}; skipped, {intact} intact rows used; {hint}")

"""Where Ray's, Optuna's and MLflow's log records go while a sweep runs.

Those libraries give their loggers handlers that hold the stderr stream of the moment
they were set up. On a terminal, rich's live view replaces `sys.stderr` with a proxy that
prints whole lines above the panel; a handler holding the old stream writes into the
middle of the panel instead. While `routed_logs` is active every record of those loggers
goes to `<run_dir>/sweep.log` (INFO and up: the chatter a live view has no room for),
and warnings and errors also go, one whole line each, to the *current* `sys.stderr`
(the live view's proxy on a terminal, the plain stream in a pipe, CI or nohup).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["LIBRARIES", "LOG_FILE", "routed_logs"]

#: top-level logger names whose records are routed (MLflow's store logs through alembic / sqlalchemy)
LIBRARIES = ("ray", "optuna", "mlflow", "alembic", "sqlalchemy")
#: the log file in a sweep's run directory
LOG_FILE = "sweep.log"


class _CurrentStderr(logging.Handler):
    """One line per record to whatever `sys.stderr` is when the record is emitted."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = " ".join(self.format(record).splitlines())  # a traceback stays in the file
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must never break the sweep
            self.handleError(record)


def _routed(name: str) -> bool:
    return name.split(".", 1)[0] in LIBRARIES


def _loggers() -> list[logging.Logger]:
    """The library loggers that have handlers of their own or stop propagation (where their records end up)."""
    found = [logging.getLogger(n) for n in LIBRARIES]
    found += [lg for n, lg in list(logging.Logger.manager.loggerDict.items())
              if _routed(n) and isinstance(lg, logging.Logger) and lg.handlers and n not in LIBRARIES]  # fmt: skip
    return found


@contextmanager
def routed_logs(log_file: Path, terminal_level: int = logging.WARNING) -> Iterator[Path]:
    """Route the libraries' records (see the module doc) until the block ends; then restore their handlers."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(log_file, encoding="utf-8")
    to_file.setLevel(logging.INFO)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    to_terminal = _CurrentStderr(terminal_level)
    to_terminal.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    saved = [(lg, lg.handlers[:], lg.propagate) for lg in _loggers()]
    for lg, _, _ in saved:
        lg.handlers = [to_file, to_terminal] if lg.name in LIBRARIES else []
        lg.propagate = lg.name not in LIBRARIES  # children reach the handlers above once
    try:
        yield log_file
    finally:
        for lg, handlers, propagate in saved:
            lg.handlers, lg.propagate = handlers, propagate
        to_file.close()

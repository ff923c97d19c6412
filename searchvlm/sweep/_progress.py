"""The rich live view of a running sweep and the final front table."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from searchvlm.pareto import front

Row = dict[str, Any]


def counts(rows: list[Row], running: int = 0) -> dict[str, int]:
    c = Counter(r["status"] for r in rows)
    return {"ok": c["ok"], "failed": c["failed"], "pruned": c["pruned"], "running": running}


def front_table(rows: list[Row], title: str = "Pareto front (ok trials)") -> Table:
    table = Table(title=title)
    for col in ("number", "trial", "preset", "flops_ratio", "synergy_gain", "und_acc", "gen_nll"):
        table.add_column(col, justify="right" if col not in ("trial", "preset") else "left", no_wrap=True)
    for r in front([r for r in rows if not r.get("duplicate_of")]):  # a repeat is its twin's point
        table.add_row(str(r["number"]), str(r["trial_id"]), str(r.get("preset") or ""),
                      *(_fmt(r.get(k)) for k in ("flops_ratio", "synergy_gain", "und_acc", "gen_nll")))  # fmt: skip
    return table


def _fmt(v: Any) -> str:
    return "" if v is None or v == "" else f"{float(v):.4f}"


class LiveView:
    """Trials done / running / failed / pruned and the current front, refreshed on events."""

    def __init__(self, name: str, samples: int, console: Console | None = None) -> None:
        self.name, self.samples = name, samples
        self.console = console or Console(stderr=True)
        self.live: Live | None = None
        self._running = 0
        self._last = 0.0

    def _render(self, rows: list[Row], running: int) -> Group:
        c = counts(rows, running)
        head = (f"[bold]sweep {self.name}[/]: {c['ok']} ok, {c['running']} running, "
                f"{c['failed']} failed, {c['pruned']} pruned / {self.samples} trials")  # fmt: skip
        return Group(head, front_table(rows))

    def start(self, rows: list[Row]) -> None:
        self.live = Live(self._render(rows, 0), console=self.console, refresh_per_second=2,
                         transient=True)  # fmt: skip
        self.live.start()

    def update(self, rows: list[Row], running: list[str] | None = None, force: bool = True) -> None:
        """Re-render (at most twice a second unless `force`); `running=None` keeps the count."""
        now = time.monotonic()
        if self.live is None or (not force and now - self._last < 0.5):
            return
        self._running = self._running if running is None else len(running)
        self._last = now
        self.live.update(self._render(rows, self._running))

    def stop(self, rows: list[Row]) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

"""The progress of a running sweep (a live panel on a terminal, event lines elsewhere) and the final front table."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from searchvlm.objectives.pareto import front
from searchvlm.schema.trial_result import gen_gain_text

Row = dict[str, Any]


def counts(rows: list[Row], running: int = 0) -> dict[str, int]:
    c = Counter(r["status"] for r in rows)
    return {"ok": c["ok"], "failed": c["failed"], "pruned": c["pruned"], "running": running}


#: the numbers the sweep's front table shows, after its number, trial and preset columns
FRONT_METRICS = ("flops_ratio", "synergy_gain", "und_acc", "gen_nll")


def front_table(rows: list[Row], title: str = "Pareto front (ok trials)") -> Table:
    table = Table(title=title)
    for col in ("number", "trial", "preset", *FRONT_METRICS):
        table.add_column(col, justify="right" if col not in ("trial", "preset") else "left", no_wrap=True)
    for r in front([r for r in rows if not r.get("duplicate_of")]):  # a repeat is its twin's point
        table.add_row(str(r["number"]), str(r["trial_id"]), str(r.get("preset") or ""),
                      *(_fmt(r.get(k)) for k in FRONT_METRICS))  # fmt: skip
    return table


def _fmt(v: Any) -> str:
    return "" if v is None or v == "" else f"{float(v):.4f}"


def clock(seconds: float | None) -> str:
    """`42s`, `3m05s`, `1h02m`; `?` when unknown."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _objectives(row: Row) -> str:
    if row.get("status") != "ok":
        return f"{row.get('status')}: {str(row.get('error') or '')[:200]}".rstrip(": ")

    def text(k: str) -> str:
        if k == "gen_gain":
            return gen_gain_text(row)  # 'below chance' over a below-chance isolated score
        return format(float(row[k]), ".4f" if k == "flops_ratio" else "+.4f")

    keys = ("flops_ratio", "synergy_gain", "und_gain", "gen_gain")
    return "ok: " + ", ".join(f"{k} {text(k)}" for k in keys if row.get(k) is not None)


class LiveView:
    """The sweep's progress: on a terminal a live panel (counts, elapsed time, ETA, current
    front) refreshed on events; anywhere else (a pipe, CI, nohup, a notebook's `!`) one
    plain line per event as it happens: a trial started, a trial finished with its
    objectives, each with the counts, elapsed time and ETA.

    ETA = the time this session took per finished trial times the trials still to run
    (trials recorded before a resume are not counted as this session's work)."""

    def __init__(self, name: str, samples: int, console: Console | None = None, plain: bool | None = None) -> None:
        self.name, self.samples = name, samples
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.plain = (not self.console.is_terminal) if plain is None else plain
        self.live: Live | None = None
        self._running = 0
        self._last = 0.0
        self._t0 = time.monotonic()
        self._base = 0  # trials recorded before this session

    # ---- timing

    def _timing(self, done: int) -> str:
        elapsed = time.monotonic() - self._t0
        now = done - self._base
        left = max(0, self.samples - done)
        eta = 0.0 if left == 0 else (elapsed / now * left if now > 0 else None)
        return f"elapsed {clock(elapsed)}, ETA {clock(eta)}"

    def _counts(self, rows: list[Row], running: int) -> str:
        c = counts(rows, running)
        return (f"{len(rows)}/{self.samples} done ({c['ok']} ok, {c['failed']} failed, {c['pruned']} pruned), "
                f"{running} running, {self._timing(len(rows))}")  # fmt: skip

    def _line(self, text: str) -> None:
        self.console.print(f"[{clock(time.monotonic() - self._t0):>6}] sweep {self.name}: {text}",
                           highlight=False, markup=False, soft_wrap=True)  # fmt: skip
        self.console.file.flush()

    # ---- terminal panel

    def _render(self, rows: list[Row], running: int) -> Group:
        head = f"[bold]sweep {self.name}[/]: {self._counts(rows, running)}"
        return Group(head, front_table(rows))

    # ---- events

    def start(self, rows: list[Row]) -> None:
        self._t0, self._base = time.monotonic(), len(rows)
        if self.plain:
            self._line(f"started, {len(rows)}/{self.samples} trials recorded")
            return
        self.live = Live(self._render(rows, 0), console=self.console, refresh_per_second=2,
                         transient=True)  # fmt: skip
        self.live.start()

    def trial_started(self, rows: list[Row], label: str, running: int) -> None:
        self._running = running
        if self.plain:
            self._line(f"trial {label} started; {self._counts(rows, running)}")
        else:
            self.update(rows)

    def trial_finished(self, rows: list[Row], label: str, row: Row, running: int) -> None:
        self._running = running
        if self.plain:
            self._line(f"trial {label} {_objectives(row)}; {self._counts(rows, running)}")
        else:
            self.update(rows)

    def update(self, rows: list[Row], running: list[str] | None = None, force: bool = True) -> None:
        """Re-render the panel (at most twice a second unless `force`); `running=None`
        keeps the count. Plain output prints events only."""
        now = time.monotonic()
        self._running = self._running if running is None else len(running)
        if self.live is None or (not force and now - self._last < 0.5):
            return
        self._last = now
        self.live.update(self._render(rows, self._running))

    def stop(self, rows: list[Row]) -> None:
        if self.plain:
            self._line(f"ended; {self._counts(rows, 0)}")
        if self.live is not None:
            self.live.stop()
            self.live = None

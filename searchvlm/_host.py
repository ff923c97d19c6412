"""The CPU model a result was measured on, and the check that results being combined share one.

L0 module (stdlib only). The same configuration on the same seeds gave g_G +0.157 +- 0.023
on one CPU type and +0.096 +- 0.012 on another (issue 35): float reductions differ between
machines and training amplifies them, so numbers from different CPU types differ more than
seeds do and must not be paired or pooled. A result records its CPU model(s) as one string,
several joined by `SEPARATOR` (a trial whose cached reference runs trained elsewhere).
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path

SEPARATOR = "; "
UNKNOWN = "unknown CPU"


@functools.cache
def cpu_model() -> str:
    """This machine's CPU model: /proc/cpuinfo's `model name` with its family, model and
    stepping numbers (a virtual machine may name only "AMD EPYC"), else `platform.processor()`,
    else the machine type, else `UNKNOWN`."""
    try:
        info = _first_cpu(Path("/proc/cpuinfo").read_text())
    except OSError:
        info = {}
    name = info.get("model name") or info.get("cpu model") or platform.processor() or platform.machine() or UNKNOWN
    numbers = ", ".join(f"{key.removeprefix('cpu ')} {info[key]}" for key in ("cpu family", "model", "stepping")
                        if info.get(key))  # fmt: skip
    return " ".join(name.split()) + (f" ({numbers})" if numbers else "")


def _first_cpu(text: str) -> dict[str, str]:
    """The `key: value` lines of /proc/cpuinfo's first processor block."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if out:
                break
            continue
        key, _, value = line.partition(":")
        out.setdefault(key.strip(), value.strip())
    return out


def cpu_set(recorded: str | None) -> set[str]:
    """The CPU models a recorded value names (empty: not recorded)."""
    return {part.strip() for part in (recorded or "").split(SEPARATOR.strip()) if part.strip()}


def joined(models: Iterable[str | None]) -> str | None:
    """One recorded value for results measured on `models` (None: none recorded)."""
    found = sorted(set().union(*(cpu_set(m) for m in models)))
    return SEPARATOR.join(found) or None


def mixed_cpus(rows: Mapping[str, str | None]) -> str | None:
    """Why rows (name -> recorded CPU value) must not be combined, or None when every row that
    recorded one names the same single CPU model."""
    groups: dict[str, list[str]] = {}  # CPU model(s) -> the rows measured on them
    for name, value in rows.items():
        if cpu_set(value):
            groups.setdefault(" + ".join(sorted(cpu_set(value))), []).append(name)
    if len(set().union(*map(cpu_set, rows.values()))) <= 1:
        return None
    listed = "; ".join(f"{models}: {', '.join(names)}" for models, names in groups.items())
    return f"rows measured on different CPU types ({listed}): their numbers are not comparable"


def unrecorded(rows: Mapping[str, str | None]) -> list[str]:
    """The rows that recorded no CPU model (made before it was recorded)."""
    return [name for name, value in rows.items() if not cpu_set(value)]


__all__ = ["SEPARATOR", "cpu_model", "cpu_set", "joined", "mixed_cpus", "unrecorded"]

"""The CPU model a result was measured on, and the check that results being combined share one.

L0 module (stdlib only). The same configuration on the same seeds gave g_G +0.157 +- 0.023
on one CPU type and +0.096 +- 0.012 on another (issue 35): float reductions differ between
machines and training amplifies them, so numbers from different CPU types differ more than
seeds do and must not be paired or pooled. A result records its CPU model(s) as one string,
several joined by `SEPARATOR` (a trial whose cached reference runs trained elsewhere).

The difference is the kernels, not the chip: torch picks AVX2 or AVX-512 kernels (ATen, MKL,
oneDNN) by what the CPU offers, and with all three pinned to AVX2 before torch loads, an
AVX-512 machine reproduced a 3-run default trial of an AVX2-only machine in every number
(benchmarks/calibration/PROXY_TABLE_PLAN.md addendum 3), where the native kernels moved its
synergy from -0.033 to +0.078. So `import searchvlm` pins them (`pin_kernels`, unless
`SEARCHVLM_CPU_KERNELS=native`), every process it starts inherits the pin, and a result made
with it records `"<cpu> [AVX2 kernels]"` (checked against torch's own answer): such values
compare by their kernels (`numerics_class`), so rows from different CPUs that both ran pinned
may be combined, and a native row stays tied to its CPU model. numpy's SIMD loops and
OpenBLAS's kernels are pinned with them: the known-cost sampler's Gaussian process proposed
other policies on the AVX-512 machine until both were (tests/sweep/test_known_cost.py).
"""

from __future__ import annotations

import functools
import os
import platform
import sys
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

SEPARATOR = "; "
UNKNOWN = "unknown CPU"
KERNELS_ENV = "SEARCHVLM_CPU_KERNELS"  # avx2 (default) or native
PINS = {  # kernel level -> the variables that pin torch's kernels (ATen, MKL's conditional numerical
    # reproducibility, oneDNN) and numpy's (its SIMD loops, and OpenBLAS's kernels: the samplers' GP)
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
             "ONEDNN_MAX_CPU_ISA": "AVX2", "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
             "OPENBLAS_CORETYPE": "Haswell"},
}  # fmt: skip
NEEDS = {"avx2": ("avx2", "fma")}  # the CPU flags a level's kernels use (OpenBLAS's Haswell: AVX2 and FMA)
PINNED_MARK = " [{} kernels]"


def pin_kernels(level: str | None = None) -> str | None:
    """Set the variables that pin torch's and numpy's CPU kernels to `level` (default:
    $SEARCHVLM_CPU_KERNELS, else avx2) in this process's environment, so torch and numpy, when
    they load here, and every process started from here (Ray workers, trial ranks) use them.
    A variable the user set is kept (with a warning where it differs); `native`, or a CPU that
    is not x86-64 or lacks AVX2 and FMA, pins nothing. Returns the level pinned, or None. torch
    or numpy already loaded here keep the kernels they chose: `pinned_level` tells what is in force."""
    level = (level or os.environ.get(KERNELS_ENV) or "avx2").lower()
    if level == "native":
        return None
    if level not in PINS:
        raise ValueError(f"{KERNELS_ENV}={level!r}: expected one of {sorted(PINS)} or 'native'")
    if not _offers(level):
        return None
    for key, value in PINS[level].items():
        if os.environ.setdefault(key, value) != value:
            warnings.warn(f"{key}={os.environ[key]!r} (yours) instead of {value!r}: torch's and numpy's kernels "
                          f"are not fully pinned, and results record the bare CPU model", stacklevel=3)  # fmt: skip
    return level


def _offers(level: str) -> bool:
    """Whether this CPU has the instructions of `level`: an x86-64 machine whose /proc/cpuinfo
    lists them (no /proc/cpuinfo or no `flags` line: not known, so no)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        flags = _first_cpu(Path("/proc/cpuinfo").read_text()).get("flags")
    except OSError:
        return False
    return flags is not None and set(NEEDS[level]) <= set(flags.split())


def pinned_level() -> str | None:
    """The kernel level in force: every variable of one `PINS` level set, and, for torch and numpy
    if loaded in this process, their own answers agreeing (torch's capability; numpy's AVX-512
    loops off: numpy loaded before the pin keeps them); else None (native kernels)."""
    for level, pins in PINS.items():
        if all(os.environ.get(k) == v for k, v in pins.items()):
            torch = sys.modules.get("torch")  # asked only when loaded: this module never loads them
            umath = sys.modules.get("numpy._core._multiarray_umath")
            features = getattr(umath, "__cpu_features__", {})
            if torch is not None and torch.backends.cpu.get_cpu_capability().lower() != level:
                continue
            if any(features.get(f) for f in ("X86_V4", "AVX512_SKX", "AVX512_ICL")):
                continue
            return level
    return None


def machine() -> str:
    """What a result records as its CPU: the model, marked with the pinned kernel level if any."""
    level = pinned_level()
    return cpu_model() + (PINNED_MARK.format(level.upper()) if level else "")


def numerics_class(recorded: str) -> str:
    """What must be equal for two results to be comparable: the pinned kernel level when the
    value carries one, else the CPU model."""
    for level in PINS:
        if recorded.endswith(PINNED_MARK.format(level.upper())):
            return f"{level.upper()} kernels"
    return recorded


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
    groups: dict[str, list[str]] = {}  # numerics class(es) -> the rows measured on them
    for name, value in rows.items():
        if cpu_set(value):
            groups.setdefault(" + ".join(sorted(_classes(value))), []).append(name)
    if len(set().union(*map(_classes, rows.values()))) <= 1:
        return None
    listed = "; ".join(f"{models}: {', '.join(names)}" for models, names in groups.items())
    return f"rows measured on different CPU types ({listed}): their numbers are not comparable"


def _classes(recorded: str | None) -> set[str]:
    return {numerics_class(m) for m in cpu_set(recorded)}


def unrecorded(rows: Mapping[str, str | None]) -> list[str]:
    """The rows that recorded no CPU model (made before it was recorded)."""
    return [name for name, value in rows.items() if not cpu_set(value)]


__all__ = ["KERNELS_ENV", "PINNED_MARK", "PINS", "SEPARATOR", "cpu_model", "cpu_set", "joined", "machine",
           "mixed_cpus", "numerics_class", "pin_kernels", "pinned_level", "unrecorded"]  # fmt: skip

"""The test tiers' guard: what a test starts that keeps it out of the fast tier.

`make test-fast` (`pytest --fast`) leaves out every test marked with one of `HEAVY`. So
that a new test cannot slip into it unmarked, tests/conftest.py watches every test of every
tier (its setup, fixtures included, its call and its teardown) and fails one that starts
something heavy without the marker that names why:

- `sweep`: a local Ray (`ray.init`, `run_sweep`: its gcs_server, raylet, `ray start`) or a
  `searchvlm sweep` process;
- `multiprocess`: a process of `multiprocessing` (gloo / DDP / FSDP ranks, `decide --jobs`,
  any process pool), an `mlflow server`, a Ray cluster (`ray start`; `sweep` also does);
- `compile`: `torch.compile`.

Processes are seen through Python's audit hook (`subprocess.Popen` events: Ray starts its
own services that way) and `multiprocessing`'s `BaseProcess.start`; `torch.compile` by
wrapping it. What a module- or session-scoped fixture starts is recorded against the fixture:
every test that uses it then needs the marker too, not only the first one (that set it up).
Short subprocesses (`python -c`, `searchvlm --version`, `mkdocs build`, a headless browser)
are not heavy: they stay in the fast tier.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Sequence

import pytest

#: the markers `--fast` deselects; `slow` means long (tens of seconds or more) whatever the reason
HEAVY = ("slow", "sweep", "compile", "multiprocess")

#: every collected test's node id -> whether `--fast` leaves it out (tests/conftest.py fills it
#: at collection, before deselecting anything)
COLLECTED = pytest.StashKey[dict[str, bool]]()

#: a heavy start -> the markers that allow it
ALLOWED = {
    "ray": {"sweep", "multiprocess"},
    "searchvlm sweep": {"sweep"},
    "mlflow server": {"multiprocess"},
    "multiprocessing": {"multiprocess"},
    "torch.compile": {"compile"},
}


def _tokens(args: Sequence[str]) -> list[str]:
    """A command line's words, `bash -c '...'`'s script split into words too."""
    out: list[str] = []
    for a in args:
        a = os.fsdecode(a) if isinstance(a, bytes) else str(a)
        try:
            out += shlex.split(a) if " " in a else [a]
        except ValueError:  # an unbalanced quote: not a script
            out.append(a)
    return out


def classify(args: Sequence[str] | str) -> str | None:
    """What a started command line is, as a key of ALLOWED, or None for a light process."""
    words = _tokens([args] if isinstance(args, str | bytes) else list(args))
    code = " ".join(words)  # `python -c` code runs a sweep or a Ray in the child, out of the hook's sight
    if "run_sweep(" in code:
        return "searchvlm sweep"
    if "ray.init(" in code or "ensure_ray(" in code:
        return "ray"
    names = [os.path.basename(w) for w in words]
    for i, (word, name) in enumerate(zip(words, names)):
        after = names[i + 1] if i + 1 < len(names) else ""
        if f"{os.sep}ray{os.sep}" in word and os.sep + "site-packages" in word:  # gcs_server, raylet, its scripts
            return "ray"
        if name == "ray" and after == "start":
            return "ray"
        if name in ("searchvlm", "searchvlm.cli") and after == "sweep":
            return "searchvlm sweep"
        if name == "mlflow" and after in ("server", "ui"):
            return "mlflow server"
    return None


def missing(reasons: Iterable[str], markers: set[str]) -> list[str]:
    """The reasons a test with `markers` is not marked for, each with the markers that would do."""
    unmarked = sorted(r for r in set(reasons) if not ALLOWED[r] & markers)
    return [f"{r} (mark it {' or '.join(sorted(ALLOWED[r]))})" for r in unmarked]

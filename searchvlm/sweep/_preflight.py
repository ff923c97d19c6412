"""Before a sweep on a Ray cluster trains anything: every node its trials may land on reads
what a trial reads and writes where a trial writes (L4, inside `searchvlm.sweep`).

Nodes of a cluster need not share a disk, and the driver's own checks (`check_data`, the
space's `model.hf`) only saw the driver's. One task per alive node that fits a trial,
pinned to it (`NodeAffinitySchedulingStrategy`, no CPU asked), checks there: each input
file readable with the driver's content (SHA-256), the baseline cache folder writable,
and the searchvlm and torch versions the driver runs. The first problem stops the sweep
before any trial as one `ConfigError` naming the node and the file.
"""

from __future__ import annotations

import os
import platform
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from searchvlm.schema._digest import file_sha256 as sha256
from searchvlm.schema._hf import config_path
from searchvlm.schema.errors import NO_VALUE, ConfigError
from searchvlm.schema.space import SearchSpace

#: seconds every node has to answer (a node's first task starts a Python worker there)
TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Expected:
    """What every node must have: `files` (path -> the driver's SHA-256 of its content, None
    for a folder that must only be listable), a writable `cache_dir`, the driver's versions."""

    files: dict[str, str | None]
    cache_dir: str
    versions: dict[str, str]


def versions() -> dict[str, str]:
    """searchvlm's and torch's versions here (read from the installed metadata: torch is not imported)."""
    from searchvlm import __version__

    try:
        torch = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch = "not installed"
    return {"searchvlm": __version__, "torch": torch}


def inputs(space: SearchSpace) -> dict[str, str | None]:
    """The files a trial of `space` reads, with the driver's content hash: the data file
    (`data.path`), `model.hf`'s config.json and, with `pretrained`, each file of its folder."""
    files: list[str] = []
    if space.data.path is not None:
        files.append(space.data.path)
    if space.model.hf is not None:
        files.append(str(config_path(space.model.hf)))
        root = Path(space.model.hf)
        if space.model.pretrained and root.is_dir():
            files += [str(f) for f in sorted(root.iterdir()) if f.is_file() and f.name != "config.json"]
    return {f: sha256(f) for f in dict.fromkeys(files)}


_MISSING = (
    "file not found on this node (the nodes do not share this disk: copy the file to the same path on "
    "every node, or put it on a shared filesystem)"
)


def node_problems(expected: Expected) -> list[tuple[str, str]]:
    """Run on one node: (file or folder, what is wrong there) for each problem found."""
    problems: list[tuple[str, str]] = []
    for path, want in expected.files.items():
        try:
            got = sha256(path)
        except FileNotFoundError:
            problems.append((path, _MISSING))
            continue
        except OSError as err:
            problems.append((path, f"cannot read it on this node ({err.strerror or err})"))
            continue
        if want is not None and got != want:
            differs = (
                f"its content differs from the driver's copy (sha256 {got[:12]} here, {want[:12]} on the "
                "driver): every node must read the same data"
            )
            problems.append((path, differs))
    try:
        os.makedirs(expected.cache_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=expected.cache_dir, prefix=".preflight."):
            pass
    except OSError as err:
        unwritable = (
            f"the baseline cache is not writable on this node ({err.strerror or err}); "
            "choose a folder every node can write with --cache-dir"
        )
        problems.append((expected.cache_dir, unwritable))
    here = versions()
    for name, want in expected.versions.items():
        if here.get(name) != want:
            other = (
                f"the driver runs {name} {want}: install the same version on every node "
                f"(python {platform.python_version()} here)"
            )
            problems.append((f"{name} {here.get(name)}", other))
    return problems


def trial_nodes(space: SearchSpace) -> list[dict[str, Any]]:
    """Alive nodes with the CPUs and GPUs one trial asks for (others never run one)."""
    s = space.search
    out = []
    for node in ray.nodes():
        have = node.get("Resources") or {}
        if node.get("Alive") and have.get("CPU", 0.0) >= s.cpus_per_trial and have.get("GPU", 0.0) >= s.gpus_per_trial:
            out.append(node)
    return out


def node_name(node: dict[str, Any]) -> str:
    return f"node {node.get('NodeManagerAddress', '?')} (id {str(node.get('NodeID', '?'))[:12]})"


def preflight(space: SearchSpace, space_path: str | Path, cache_dir: str | Path) -> int:
    """Check every node a trial of `space` may run on (see the module docstring); ConfigError
    naming the node and the file at the first problem. Returns the number of nodes checked."""
    expected = Expected(inputs(space), str(cache_dir), versions())
    task = ray.remote(num_cpus=0, max_retries=0)(node_problems)
    nodes = trial_nodes(space)
    refs = {task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(expected):
            n for n in nodes}  # fmt: skip
    ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=TIMEOUT_S)
    for ref in late:
        ray.cancel(ref, force=True)
    if late:
        raise ConfigError(space_path, node_name(refs[late[0]]), NO_VALUE,
                          f"did not answer the pre-flight check within {TIMEOUT_S:g} s")  # fmt: skip
    for ref in ready:
        try:
            problems = ray.get(ref)
        except Exception as err:  # noqa: BLE001 - a node that cannot run searchvlm at all
            last = str(err).strip().splitlines()[-1]
            raise ConfigError(space_path, node_name(refs[ref]), NO_VALUE,
                              f"the pre-flight check failed there: {last}") from None  # fmt: skip
        if problems:
            path, reason = problems[0]
            raise ConfigError(path, node_name(refs[ref]), NO_VALUE, reason)
    return len(nodes)

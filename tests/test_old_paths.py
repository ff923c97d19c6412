"""The module paths from before the packages by layer (`searchvlm.config`, `searchvlm.decide`,
...): a user's code keeps importing them, each as the very module at its new path
(`searchvlm._OLD_PATHS`, read by a finder that `searchvlm/__init__.py` installs), old pickles
load, and the package, its tests and benchmarks use only the new paths, so the table is for
users alone. The façade's public names all resolve.
"""

from __future__ import annotations

import ast
import importlib
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

import searchvlm
from helpers import ROOT

OLD_PATHS = searchvlm._OLD_PATHS


@pytest.mark.parametrize("old", sorted(OLD_PATHS))
def test_an_old_path_is_the_module_at_its_new_path(old: str) -> None:
    module = importlib.import_module(old)
    assert module is importlib.import_module(OLD_PATHS[old])
    assert module.__name__ == module.__spec__.name == OLD_PATHS[old]  # the import left its spec as it was
    assert sys.modules[old] is module


def test_old_imports_and_attribute_paths_work() -> None:
    from searchvlm.config import TrialConfig
    from searchvlm.decide import decide
    from searchvlm.policy import ReductionPolicy, load_policy

    import searchvlm.tracking

    assert ReductionPolicy is searchvlm.ReductionPolicy and load_policy is searchvlm.load_policy
    assert TrialConfig is searchvlm.TrialConfig and decide.__module__ == "searchvlm.records.decide"
    assert importlib.import_module("searchvlm.schema_doc").space_reference is searchvlm.space_reference
    assert searchvlm.tracking.__name__ == "searchvlm.tracking"


def test_a_pickle_of_an_old_path_loads() -> None:
    """A pickle written before the move names the class by its old module (protocol 0's GLOBAL)."""
    old = b"csearchvlm.trial_result\nTrialResult\n."
    assert pickle.loads(old) is searchvlm.TrialResult
    assert pickle.loads(pickle.dumps(searchvlm.TrialResult)) is searchvlm.TrialResult


def test_python_m_of_an_old_path_runs_the_module() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    old = subprocess.run([sys.executable, "-m", "searchvlm.schema_doc", "--check"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert old.returncode == 0, old.stdout + old.stderr


def test_every_facade_name_resolves() -> None:
    missing = [name for name in searchvlm.__all__ if getattr(searchvlm, name, None) is None]
    assert missing == []


# --------------------------------------------------------------------------- nobody here uses them

_OLD = re.compile(
    r"(?<![\w.])(" + "|".join(re.escape(o) for o in sorted(OLD_PATHS, key=len, reverse=True)) + r")(?![\w/])"
)
_OLD_LEAVES = {o.removeprefix("searchvlm.") for o in OLD_PATHS if o.count(".") == 1}
_OLD_FILES = re.compile(
    r"(?<![\w-])searchvlm/(" + "|".join(re.escape(o.removeprefix("searchvlm.").replace(".", "/")) for o in OLD_PATHS)
    + r")\.py\b"
)  # fmt: skip


def _sources() -> list[Path]:
    files = [
        p for d in ("searchvlm", "tests", "benchmarks") for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".sh")
    ]
    files += [ROOT / n for n in ("README.md", "CONTRIBUTING.md", "Makefile", "pyproject.toml", "mkdocs.yml")]
    files += sorted((ROOT / "docs").glob("*.md"))
    return [p for p in files if p.is_file() and p != Path(__file__).resolve() and "results" not in p.parts]


def _without_the_table(path: Path) -> str:
    """The file's text but the old-path table (searchvlm/__init__.py) and the note on the old
    paths (CONTRIBUTING.md), which name them on purpose (the relayout script keeps both)."""
    text = path.read_text()
    text = re.sub(r"# --- old module paths.*?# --- end of old module paths ---", "", text, flags=re.S)
    return re.sub(r"<!-- old paths -->.*?<!-- end of old paths -->", "", text, flags=re.S)


def test_the_package_tests_benchmarks_and_docs_use_only_the_new_paths() -> None:
    found = []
    for path in _sources():
        text = _without_the_table(path)
        for i, line in enumerate(text.splitlines(), 1):
            if _OLD.search(line) or _OLD_FILES.search(line):
                found.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
        if path.suffix == ".py":
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.ImportFrom) and node.module == "searchvlm" and not node.level:
                    found += [f"{path.relative_to(ROOT)}:{node.lineno}: from searchvlm import {a.name}"
                              for a in node.names if a.name in _OLD_LEAVES]  # fmt: skip
    assert found == [], "old module paths (see searchvlm._OLD_PATHS for the new ones):\n" + "\n".join(found)

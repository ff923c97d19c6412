"""The package's layering, read from the source with `ast`: every module has a layer (the
`LAYERS` table below is where it is declared), imports only from its own layer or lower,
and nothing imports cli; plus one real import that shows the light modules stay light at
run time (an AST cannot see what a lazy import loads).

Every import statement counts, lazy ones inside functions included; `importlib` strings
(the façade's `_LAZY`, `sweep.__getattr__`) are not imports and are not checked here.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import ROOT

PACKAGE = ROOT / "searchvlm"

# Every module of the package and its layer. A new module must be added here (the test
# below lists the ones that are missing). A package name covers its submodules.
LAYERS: dict[str, int] = {
    # L0: schemas and stdlib-level helpers (pydantic, PyYAML; no torch / ray / mlflow)
    "searchvlm": 0,  # the façade: eager names are L0, the rest load on first use by name
    "searchvlm.schema._digest": 0,
    "searchvlm.schema._hf": 0,
    "searchvlm.schema._host": 0,
    "searchvlm.schema._storage_uri": 0,  # --storage checked (Tune's state: searchvlm.records._storage)
    "searchvlm.schema._strict": 0,
    "searchvlm.schema._tables": 0,
    "searchvlm.schema.config": 0,
    "searchvlm.schema.metrics": 0,  # one row per metric a trial reports (its torch scorer: training.scorer)
    "searchvlm.schema.trial_result": 0,
    "searchvlm.schema.errors": 0,
    "searchvlm.schema.file_checks": 0,
    "searchvlm.schema.identity": 0,
    "searchvlm.schema.overrides": 0,
    "searchvlm.schema.policy": 0,
    "searchvlm.schema.policy.space": 0,
    "searchvlm.schema.policy.presets": 0,
    "searchvlm.schema.results": 0,
    "searchvlm.schema.policy.schedules": 0,
    "searchvlm.schema.doc": 0,
    "searchvlm.schema.search": 0,
    "searchvlm.schema.policy.selectors": 0,
    "searchvlm.schema.space": 0,
    # L1: arithmetic on numbers and schemas (numpy ok)
    "searchvlm.objectives.ehvi": 1,
    "searchvlm.objectives.export": 1,
    "searchvlm.objectives.flops": 1,
    "searchvlm.objectives.noninferiority": 1,
    "searchvlm.objectives.pareto": 1,
    "searchvlm.objectives.synergy": 1,
    # L2: data and the model
    "searchvlm.data": 2,
    "searchvlm.model": 2,
    # L3: training, trials, analysis
    "searchvlm.train.analysis": 3,
    "searchvlm.train.baselines": 3,
    "searchvlm.train.checkpoint": 3,
    "searchvlm.train.distributed": 3,  # data-parallel trials: the ranks, their batch shares and gradients
    "searchvlm.train.gradients": 3,  # each task's gradient per layer and parameter group (diagnose)
    "searchvlm.train._allocation": 3,  # the analysis figures, drawn by analysis (L3)
    "searchvlm.train._heatmap": 3,
    "searchvlm.train.training": 3,
    "searchvlm.train.trial": 3,
    # L4: engines and outputs
    "searchvlm.report._console": 4,
    "searchvlm.records.analysis_run": 4,
    "searchvlm.records.confirm": 4,
    "searchvlm.records.decide": 4,
    "searchvlm.records.diagnose": 4,
    "searchvlm.records.frames": 4,
    "searchvlm.report": 4,
    "searchvlm.records.recover": 4,
    "searchvlm.records.reproduce": 4,
    "searchvlm.records.runs": 4,
    "searchvlm.sweep": 4,
    "searchvlm.tracking": 4,
    # L5: the command line
    "searchvlm.cli": 5,
    "searchvlm.cli._base": 5,  # what every command shares (consoles, option parsers)
    "searchvlm.cli._request": 5,  # a command's options as the fields of one typed record
    "searchvlm.cli._runs": 5,  # the run-management commands, registered by cli
    "searchvlm.cli._usage": 5,  # usage errors as `error:` lines
    "searchvlm.cli._help": 5,  # help texts: value shapes as metavars
    "searchvlm.__main__": 5,  # `python -m searchvlm`: the one importer of cli
}
HEAVY = ("torch", "ray", "mlflow")  # L0 and L1 import none of them, not even lazily
ONLY_IN = {  # a third-party package -> the only place that may import it
    "ray": ("searchvlm.sweep",),
    "mlflow": ("searchvlm.tracking",),
}
CLI_IMPORTERS = ("searchvlm.__main__",)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute name) of everything the file imports, relative imports resolved:
    `from a import b` gives `a` and `a.b` (b may be a submodule: `from searchvlm import cli`)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            base = ".".join([*parts, node.module] if node.module else parts)
            yield node.lineno, base
            yield from ((node.lineno, f"{base}.{a.name}") for a in node.names if a.name != "*")


def _layer(module: str) -> int | None:
    """The layer of a package module (its longest listed package), None when unlisted; the
    façade `searchvlm` covers only itself."""
    parts = module.split(".")
    for n in range(len(parts), 1, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    return LAYERS.get(module)


def _first_per_line(found: list[str]) -> list[str]:
    """One entry per `module:line` (`from a import b, c` yields a, a.b and a.c)."""
    return list({f.split(" ", 1)[0]: f for f in reversed(found)}.values())[::-1]


def _within(module: str, owners: tuple[str, ...]) -> bool:
    return any(module == o or module.startswith(o + ".") for o in owners)


def _all_imports() -> list[tuple[str, int, str]]:
    return [(name, line, imported) for name, path in _modules().items() for line, imported in _imports(name, path)]


def test_every_module_has_a_layer() -> None:
    missing = [name for name in _modules() if _layer(name) is None]
    assert not missing, f"assign these modules a layer in tests/test_layering.py LAYERS: {missing}"
    stale = [name for name in LAYERS if name not in _modules()]
    assert not stale, f"LAYERS names modules that do not exist: {stale}"


def test_declared_layers_agree() -> None:
    """A module whose docstring says `L<n> module` is in layer n here."""
    wrong = []
    for name, path in _modules().items():
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        for n in range(6):
            if f"L{n} module" in doc and _layer(name) != n:
                wrong.append(f"{name}: docstring says L{n}, LAYERS says L{_layer(name)}")
    assert not wrong, wrong


def test_no_module_imports_from_a_higher_layer() -> None:
    upward = [
        f"{name}:{line} (L{_layer(name)}) imports {imported} (L{_layer(imported)})"
        for name, line, imported in _all_imports()
        if imported.startswith("searchvlm") and (_layer(imported) or 0) > (_layer(name) or 0)
    ]
    upward = _first_per_line(upward)
    assert not upward, "\n".join(upward)


def test_light_layers_import_no_torch_ray_mlflow() -> None:
    heavy = [
        f"{name}:{line} (L{_layer(name)}) imports {imported}"
        for name, line, imported in _all_imports()
        if (_layer(name) or 0) <= 1 and imported.split(".")[0] in HEAVY
    ]
    heavy = _first_per_line(heavy)
    assert not heavy, "\n".join(heavy)


@pytest.mark.parametrize("package", sorted(ONLY_IN))
def test_engine_imported_in_one_place(package: str) -> None:
    owners = ONLY_IN[package]
    outside = [
        f"{name}:{line} imports {imported}"
        for name, line, imported in _all_imports()
        if imported.split(".")[0] == package and not _within(name, owners)
    ]
    outside = _first_per_line(outside)
    assert not outside, f"only {owners} may import {package}:\n" + "\n".join(outside)


def test_nothing_imports_cli() -> None:
    importers = [
        f"{name}:{line}"
        for name, line, imported in _all_imports()
        if _within(imported, ("searchvlm.cli",)) and name not in CLI_IMPORTERS
    ]
    importers = _first_per_line(importers)
    assert not importers, importers


def test_the_checker_sees_relative_and_lazy_imports(tmp_path: Path) -> None:
    """The AST reader resolves relative imports and finds imports inside functions."""
    pkg = tmp_path / "searchvlm" / "sweep"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from ._driver import run\n")
    (pkg / "_driver.py").write_text("from . import _keys\nfrom .. import cli\n\ndef f():\n    import mlflow.tracking\n")
    got = {name: sorted(i for _, i in _imports(name, p)) for name, p in
           [("searchvlm.sweep", pkg / "__init__.py"), ("searchvlm.sweep._driver", pkg / "_driver.py")]}  # fmt: skip
    assert got == {
        "searchvlm.sweep": ["searchvlm.sweep._driver", "searchvlm.sweep._driver.run"],
        "searchvlm.sweep._driver": [
            "mlflow.tracking",
            "searchvlm",
            "searchvlm.cli",
            "searchvlm.sweep",
            "searchvlm.sweep._keys",
        ],
    }
    assert _layer("searchvlm.sweep._driver") == 4 and _layer("searchvlm.model._family") == 2
    assert _layer("numpy") is None and _layer("searchvlm.unlisted") is None and _layer("searchvlm") == 0


# --------------------------------------------------------------------------- at run time

LIGHT_MODULES = (
    "searchvlm", "searchvlm.schema.config", "searchvlm.schema.policy", "searchvlm.schema.space", "searchvlm.schema.results",
    "searchvlm.schema.errors", "searchvlm.schema.doc", "searchvlm.objectives.flops", "searchvlm.objectives.synergy", "searchvlm.objectives.pareto",
    "searchvlm.objectives.export", "searchvlm.report",
)  # fmt: skip
FACADE_NAMES = (
    "load_trials",
    "load_front",
    "list_runs",
    "compare_runs",
    "remove_run",
    "load_space",
    "validate_file",
    "pareto_report",
    "export_policy",
)  # resolved lazily
NOT_LOADED = ("torch", "ray", "mlflow", "optuna", "pandas", "matplotlib", "plotly")


def test_light_modules_load_nothing_heavy() -> None:
    """In a fresh interpreter (other tests load torch / ray / mlflow into this one): the L0/L1
    modules, `import searchvlm` with its results and run-management names, and the report
    module load none of the engines, pandas, plotting or optuna."""
    code = (
        f"import sys, importlib\nfor m in {LIGHT_MODULES!r}: importlib.import_module(m)\n"
        f"import searchvlm\nfor n in {FACADE_NAMES!r}: getattr(searchvlm, n)\n"
        f"print(sorted(m for m in {NOT_LOADED!r} if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_every_public_module_declares_all_and_it_names_real_definitions() -> None:
    """`__all__` on every module a user may import (no leading underscore), listing only names
    the module defines or imports: what `from searchvlm.x import *` and the docs show."""
    missing, unknown = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        if (
            path.name.startswith("_")
            and path.name != "__init__.py"
            or any(p.startswith("_") for p in path.parts[-2:-1])
        ):
            continue
        tree = ast.parse(path.read_text())
        declared = [n for n in tree.body if isinstance(n, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)]  # fmt: skip
        if not declared:
            missing.append(str(path.relative_to(ROOT)))
            continue
        value = declared[0].value  # the literal names (a starred part, e.g. a submodule's list, is skipped)
        names = [e.value for e in getattr(value, "elts", []) if isinstance(e, ast.Constant)]
        bound = {a.asname or a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                 for a in n.names}  # fmt: skip
        for n in tree.body:
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bound.add(n.name)
            for t in n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(n, ast.AnnAssign) else []:
                bound.update(x.id for x in ast.walk(t) if isinstance(x, ast.Name))
        lazy = "__getattr__" in bound  # a package's lazy names (`searchvlm`, `searchvlm.sweep`)
        unknown += [f"{path.relative_to(ROOT)}: {name}" for name in names if name not in bound and not lazy]
    assert not missing, f"no __all__: {missing}"
    assert not unknown, f"__all__ names nothing defined or imported: {unknown}"

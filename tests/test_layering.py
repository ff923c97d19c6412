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

# The package's top-level entries and their layers: one layer per package, a package's
# modules all in its layer (its submodules are not listed). A new top-level module or package
# must be added here (the test below lists the ones that are missing); CONTRIBUTING.md maps them.
LAYERS: dict[str, int] = {
    # L0: schemas and stdlib-level helpers (pydantic, PyYAML; no torch / ray / mlflow)
    "searchvlm": 0,  # the façade (__init__.py): eager names are L0, the rest load on first use by name
    "searchvlm.schema": 0,  # configs, the policy and its space, trial results, results tables, errors
    # L1: arithmetic on numbers and schemas (numpy ok)
    "searchvlm.objectives": 1,  # FLOPs, synergy, the front, EHVI, non-inferiority, the exported policy file
    # L2: data and the model
    "searchvlm.data": 2,
    "searchvlm.model": 2,
    # L3: training, trials, analysis
    "searchvlm.train": 3,  # with analysis's two figures
    # L4: engines and outputs
    "searchvlm.tracking": 4,  # MLflow's only importer
    "searchvlm.report": 4,  # the front's numbers and figures, `pareto`, `show`, `export`, the console's tables
    "searchvlm.records": 4,  # on a finished sweep: frames, runs, recover, confirm, decide, reproduce, diagnose, analyze
    "searchvlm.sweep": 4,  # Ray's only importer
    # L5: the command line
    "searchvlm.cli": 5,
    "searchvlm.__main__": 5,  # `python -m searchvlm`: the one importer of cli from outside it
}
MAX_TOP_LEVEL = 12  # entries of searchvlm/, __init__.py and __main__.py included
HEAVY = ("torch", "ray", "mlflow")  # L0 and L1 import none of them, not even lazily
ONLY_IN = {  # a third-party package -> the only place that may import it
    "ray": ("searchvlm.sweep",),
    "mlflow": ("searchvlm.tracking",),
}
CLI_IMPORTERS = ("searchvlm.__main__", "searchvlm.cli")  # cli's own modules import each other


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
        if _within(imported, ("searchvlm.cli",)) and not _within(name, CLI_IMPORTERS)
    ]
    importers = _first_per_line(importers)
    assert not importers, importers


def test_the_top_level_is_the_layers() -> None:
    """`ls searchvlm/` is LAYERS: at most 12 entries, each a package (or the façade and
    `__main__`) listed at one layer, so a package never spans two layers."""
    entries = sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__")
    assert len(entries) <= MAX_TOP_LEVEL, entries
    names = {"searchvlm" if e == "__init__.py" else f"searchvlm.{e.removesuffix('.py')}" for e in entries}
    assert names == set(LAYERS), (
        f"searchvlm/ has {sorted(names - set(LAYERS))}, LAYERS has {sorted(set(LAYERS) - names)}"
    )


def _runtime_imports(name: str, path: Path) -> Iterator[str]:
    """The package modules the file imports when it runs (lazy ones too), each resolved to the
    module that holds it; an `if TYPE_CHECKING:` block runs no import and is left out."""
    modules = _modules()

    def holder(imported: str) -> str | None:
        while imported and imported not in modules:
            imported = imported.rpartition(".")[0]
        return imported or None

    tree = ast.parse(path.read_text(), str(path))
    skipped = {id(n) for b in ast.walk(tree) if isinstance(b, ast.If) and ast.unparse(b.test).endswith("TYPE_CHECKING")
               for s in b.body for n in ast.walk(s)}  # fmt: skip
    lines = {n.lineno for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) in skipped}
    for line, imported in _imports(name, path):
        if line not in lines and imported.startswith("searchvlm") and (h := holder(imported)) and h != name:
            yield h


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while not part or part[-1] != v:
                part.append(stack.pop())
            if len(part) > 1:
                found.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _child(package: str, module: str) -> str | None:
    """The module or subpackage directly in `package` that holds `module` (None: outside it)."""
    if not module.startswith(package + "."):
        return None
    return ".".join(module.split(".")[: package.count(".") + 2])


def test_no_import_circle() -> None:
    """No module imports itself through others, and within every package its modules and
    subpackages import one another in one direction only (the package map reads in order)."""
    modules = _modules()
    graph = {name: set(_runtime_imports(name, path)) for name, path in modules.items()}
    assert _cycles(graph) == []
    packages = sorted(n for n, p in modules.items() if p.name == "__init__.py")
    circles = []
    for package in packages:
        children: dict[str, set[str]] = {}
        for name, imported in graph.items():
            if (c := _child(package, name)) is not None:
                children.setdefault(c, set()).update(d for i in imported if (d := _child(package, i)) not in (None, c))
        for c in {d for ds in children.values() for d in ds}:
            children.setdefault(c, set())
        circles += [f"{package}: {' <-> '.join(c)}" for c in _cycles(children)]
    assert circles == []


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
    "searchvlm", "searchvlm.schema", "searchvlm.schema.config", "searchvlm.schema.policy", "searchvlm.schema.space",
    "searchvlm.schema.results", "searchvlm.schema.errors", "searchvlm.schema.doc", "searchvlm.objectives",
    "searchvlm.objectives.flops", "searchvlm.objectives.synergy", "searchvlm.objectives.pareto",
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

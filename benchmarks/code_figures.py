"""Two code-size figures of the package, read from the source (no import of searchvlm):

    .venv/bin/python benchmarks/code_figures.py [--package searchvlm] [--min-params 7]

- the largest module under the package and its line count (`wc -l`: newline characters);
- the functions (and methods) with `--min-params` or more parameters, counted from the
  AST: positional-only, positional and keyword-only parameters, `self` / `cls` excluded,
  plus `*args` and `**kwargs` one each.

Prints both and exits 0 (a figure, not a gate).
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def param_count(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = node.args
    names = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    count = len([n for n in names if n not in ("self", "cls")])
    return count + (a.vararg is not None) + (a.kwarg is not None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default="searchvlm", help="directory under the repository root")
    parser.add_argument("--min-params", type=int, default=7)
    args = parser.parse_args()
    package = ROOT / args.package
    files = sorted(package.rglob("*.py"))
    lines = {p: p.read_bytes().count(b"\n") for p in files}
    largest = max(files, key=lambda p: lines[p])
    many = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = param_count(node)
                if n >= args.min_params:
                    many.append((str(path.relative_to(ROOT)), node.lineno, node.name, n))
    print(f"largest module: {largest.relative_to(ROOT)} {lines[largest]} lines")
    print(f"functions with >= {args.min_params} parameters: {len(many)}")
    for rel, line, name, n in many:
        print(f"  {rel}:{line} {name} ({n})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

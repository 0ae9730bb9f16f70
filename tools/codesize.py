"""Module sizes and the largest functions of a source tree (issue 7's measure).

    python tools/codesize.py [SRC_DIR] [--functions N]

Prints one line per module (lines, path), largest first, then the N largest functions
(lines, qualified name, file:line).  Lines are physical lines, docstrings and comments included.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def functions(tree: ast.AST, prefix: str = ""):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}{node.name}"
            yield name, node.lineno, node.end_lineno - node.lineno + 1
            yield from functions(node, name + ".")
        elif isinstance(node, ast.ClassDef):
            yield from functions(node, f"{prefix}{node.name}.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", nargs="?", default="src")
    parser.add_argument("--functions", type=int, default=10)
    args = parser.parse_args()
    root = Path(args.src)
    modules = []
    funcs = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        rel = path.relative_to(root)
        modules.append((len(text.splitlines()), str(rel)))
        for name, line, size in functions(ast.parse(text)):
            funcs.append((size, name, f"{rel}:{line}"))
    total = sum(n for n, _ in modules)
    print(f"modules ({len(modules)}, {total} lines):")
    for n, rel in sorted(modules, reverse=True):
        print(f"  {n:5d}  {rel}")
    print(f"largest functions ({args.functions}):")
    for size, name, where in sorted(funcs, reverse=True)[: args.functions]:
        print(f"  {size:5d}  {name}  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

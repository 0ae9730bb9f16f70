"""The agent and its lab apart: nothing in ``eni_guest`` imports ``eni_guest_lab``.

The agent runs on real VMs; the lab (the metadata simulator, the namespace VM, the demo) is
what the demo, the tests and the benchmarks build its world from. The one way from the agent
into the lab is ``eni-guest demo``, which loads ``eni_guest_lab.demo`` by name inside the
command, so a static import anywhere in the agent, or a lab module showing up in the agent's
import graph, fails here.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import eni_guest

AGENT = Path(eni_guest.__file__).resolve().parent
LAB = "eni_guest_lab"


def _agent_modules() -> list[str]:
    """Every module of the agent package (``__main__`` aside: importing it runs the CLI)."""
    names = []
    for path in sorted(AGENT.rglob("*.py")):
        parts = list(path.relative_to(AGENT.parent).with_suffix("").parts)
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def _lab_imports(source: str) -> list[str]:
    """The ``eni_guest_lab`` modules an ``import`` or ``from ... import`` statement names."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [n for n in names if n == LAB or n.startswith(f"{LAB}.")]
    return found


def _env() -> dict[str, str]:
    """The tree under test first on the path, for the subprocesses."""
    path = os.environ.get("PYTHONPATH")
    src = str(AGENT.parent)
    return {**os.environ, "PYTHONPATH": src + (os.pathsep + path if path else "")}


def test_no_agent_module_imports_the_lab() -> None:
    modules = sorted(AGENT.rglob("*.py"))
    assert AGENT / "cli.py" in modules and AGENT / "providers" / "aws.py" in modules
    offenders = {
        str(path.relative_to(AGENT.parent)): _lab_imports(path.read_text(encoding="utf-8"))
        for path in modules
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_scan_sees_lab_imports() -> None:
    """The scan itself: each spelling of an import of the lab is found."""
    source = (
        "import eni_guest_lab\n"
        "import os, eni_guest_lab.sim as sim\n"
        "from eni_guest_lab.testbed import SimVM\n"
        "def f():\n    from eni_guest_lab import demo\n"
        "from . import eni_guest_lab_like\n"
        "import eni_guest_labs\n"
    )
    assert _lab_imports(source) == [
        "eni_guest_lab",
        "eni_guest_lab.sim",
        "eni_guest_lab.testbed",
        "eni_guest_lab",
    ]


def test_importing_every_agent_module_loads_nothing_of_the_lab() -> None:
    modules = _agent_modules()
    for name in ("eni_guest.cli", "eni_guest.agent", "eni_guest.providers.aws"):
        assert name in modules
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps({'loaded': sorted(m for m in sys.modules if m.startswith('eni_guest')),"
        f" 'lab': sorted(m for m in sys.modules if m.split('.')[0] == {LAB!r})}}))\n"
    )
    cp = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60
    )
    assert cp.returncode == 0, cp.stderr
    out = json.loads(cp.stdout)
    assert set(modules) <= set(out["loaded"])
    assert out["lab"] == []


def _imported_by(*args: str) -> list[str]:
    """Top-level names of every module ``python -m eni_guest ARGS`` imports (-X importtime)."""
    cp = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "eni_guest", *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert cp.returncode == 0, cp.stderr
    names = [
        line.rsplit("|", 1)[1].strip()
        for line in cp.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    ]
    assert "eni_guest.cli" in names, cp.stderr  # the list is real
    return names


def test_the_cli_does_not_load_the_lab() -> None:
    for args in (["--version"], ["apply", "--dry-run", "--help"]):
        assert [n for n in _imported_by(*args) if n.split(".")[0] == LAB] == [], args

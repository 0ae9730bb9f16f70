"""Run a benchmark under an interpreter that starts as a VM's does: no site-packages hooks.

A `.pth` file in an interpreter's site-packages is executed at every start of it.  Development
and CI machines carry such hooks (this project's own machine has one that imports `certifi`
and with it `importlib.resources`, `pathlib`, `zipfile`, `tempfile`: ~45 ms of every start);
a cloud VM's Debian python3 has none.  Measured under such an interpreter, a bare
`python -c pass` costs three times what it costs on a VM and the agent's imports look
cheaper than they are (the hook already imported half of what it needs).

So a benchmark re-runs itself (`reexec`) under a virtual environment made from the same
interpreter, without pip and without the base's site-packages directory, whose one `.pth`
puts this checkout's `src` and the base's site-packages on `sys.path` as plain paths (the
base's `.pth` files are not executed that way).  Every child the benchmark starts, the agent
and the bare `python -c pass` it is compared with, then runs under it: the same Python, the
same packages, no hooks.  `--system-python` keeps the interpreter as it is.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

MARK = "EGBENCH_CLEAN_PYTHON"  # not ENI_GUEST_*: the agent refuses unknown settings
SRC = Path(__file__).resolve().parents[1] / "src"


def reexec(argv: list[str]) -> None:
    """Re-run this benchmark under a hook-free virtual environment; returns only when it is
    already running under one (or `--system-python` was given)."""
    if "--system-python" in argv:
        return
    if os.environ.get(MARK):
        # The re-run owns the venv its parent made: gone when the benchmark ends.
        atexit.register(shutil.rmtree, os.environ[MARK], ignore_errors=True)
        return
    venv = Path(tempfile.mkdtemp(prefix="eni-guest-bench-venv-"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    base = sysconfig.get_paths()["purelib"]
    Path(purelib, "eni_guest_bench.pth").write_text(f"{SRC}\n{base}\n")
    os.environ[MARK] = str(venv)
    os.execv(str(python), [str(python), *argv])


def describe() -> str:
    """What the benchmark runs under, for its report."""
    venv = os.environ.get(MARK)
    if venv:
        return f"python {sys.version.split()[0]}, a venv without site hooks ({venv})"
    return f"python {sys.version.split()[0]} as it is (--system-python: site hooks included)"

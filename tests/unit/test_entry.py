"""entry.py: the systemd units' exact command lines run without click, everything else with it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from eni_guest.entry import _direct


@pytest.mark.parametrize(
    "argv", [["apply"], ["watch"], ["hotplug", "add", "eth1"], ["hotplug", "remove", "ens6"]]
)
def test_the_units_command_lines_are_run_directly(argv: list[str]) -> None:
    assert _direct(argv) is not None


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--help"],
        ["-v", "apply"],
        ["apply", "--dry-run"],
        ["apply", "--json"],
        ["watch", "--interval", "5"],
        ["hotplug", "add"],
        ["hotplug", "add", "--help"],
        ["hotplug", "add", "eth1", "--timeout", "5"],
        ["hotplug", "add", ""],
        ["hotplug", "plug", "eth1"],
        ["show"],
        ["--version"],
    ],
)
def test_anything_else_is_clicks(argv: list[str]) -> None:
    assert _direct(argv) is None


def _run_as_uid_1000(*argv: str) -> tuple[int, str, bool]:
    """`python -m eni_guest ARGV` in a child that pretends not to be root (so nothing is
    changed on this machine): exit code, stderr, whether click was imported."""
    code = (
        "import os, runpy, sys\n"
        "os.geteuid = lambda: 1000\n"
        "real_exit = os._exit\n"
        "def report(code):\n"
        "    sys.stdout.write(f'{code} {\"click\" in sys.modules}')\n"
        "    sys.stdout.flush()\n"
        "    real_exit(code)\n"
        "os._exit = report  # the units' command lines end with os._exit (entry._exit_now)\n"
        f"sys.argv = ['eni-guest', *{list(argv)!r}]\n"
        "try:\n"
        "    runpy.run_module('eni_guest', run_name='__main__')\n"
        "except SystemExit as e:  # click's\n"
        "    report(e.code)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    exit_code, clicked = r.stdout.split()
    assert r.returncode == int(exit_code)  # the process's own exit status
    return int(exit_code), r.stderr, clicked == "True"


def test_same_outcome_with_or_without_click() -> None:
    direct = _run_as_uid_1000("hotplug", "remove", "eni-absent0")
    clicked = _run_as_uid_1000("hotplug", "remove", "eni-absent0", "--provider", "aws")
    line = "eni-guest: eni-guest hotplug remove changes addresses and routes and must run as root\n"
    assert direct == (6, line, False)
    assert clicked == (6, line, True)

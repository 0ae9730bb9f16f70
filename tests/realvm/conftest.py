"""Fixtures for the real-VM tests: one Debian guest booted under QEMU (software emulation) in
the simulated VPC, reused by every scenario of a module (``eni_guest_lab.realvm``).

A machine that cannot boot the VM FAILS these tests, it never skips them: they are the only
proof that eni-guest works under systemd, udev and NetworkManager.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest

from eni_guest_lab.realvm.qemu import tools_missing
from eni_guest_lab.testbed import check_environment, cleanup_stale

_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _DIR in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.realvm)


@pytest.fixture(scope="session", autouse=True)
def realvm_environment() -> None:
    problem = check_environment()
    missing = tools_missing()
    if problem or missing:
        pytest.fail(
            f"the real-VM tests cannot run: {problem or ''} {' '.join(missing)} missing "
            "(tests/run.sh installs qemu-system-x86 qemu-utils debootstrap e2fsprogs)",
            pytrace=False,
        )
    cleanup_stale()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.stash[_FAILED] = rep.failed


_FAILED = pytest.StashKey[bool]()


@pytest.fixture(autouse=True)
def journal_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """When a test fails, the guest's journal goes into the report (and a file)."""
    yield
    if not request.node.stash.get(_FAILED, False):
        return
    for arg in ("vm", "vm_b"):  # vm_b: the migration test's second VM
        vm = request.node.funcargs.get(arg)
        if vm is None:
            continue
        text = vm.journal()
        out = Path(os.environ.get("ENI_GUEST_LAB_LOGS", "/tmp/eni-guest-lab-logs"))
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{request.node.name}.{arg}.journal"
        path.write_text(text)
        print(f"--- {arg}: guest journal ({path}), eni-guest and NetworkManager lines ---")
        for line in text.splitlines():
            if "eni-guest" in line or "NetworkManager" in line or "Failed" in line:
                print(line)

"""Fixtures for the end-to-end tests, which run on simulated VMs (``eni_guest_lab.testbed``).

These tests are the proof that the routing works (docs/routing.md), so a machine that cannot run
them must say so loudly: they FAIL unless ``ENI_GUEST_SKIP_E2E=1`` is set, never skip silently.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from e2e_support import PRIMARY_MAC, SECOND_MAC, THIRD_MAC, three_eni

from eni_guest_lab.testbed import SimVM, check_environment, cleanup_stale

__all__ = ["PRIMARY_MAC", "SECOND_MAC", "THIRD_MAC"]  # the tests import them from here

_E2E_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/e2e carries the ``e2e`` mark, even if its module forgot it."""
    for item in items:
        if _E2E_DIR in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session", autouse=True)
def no_writes_to_this_machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Safety net: a simulated VM shares this machine's /run, so any agent a test starts
    without the testbed's environment still writes its lock and NetworkManager/networkd
    drop-ins to a temporary directory, never to the host's /run."""
    root = tmp_path_factory.mktemp("host-run")
    saved = {k: os.environ.get(k) for k in ("ENI_GUEST_DISTRO_ROOT", "ENI_GUEST_LOCK_FILE")}
    os.environ.setdefault("ENI_GUEST_DISTRO_ROOT", str(root))
    os.environ.setdefault("ENI_GUEST_LOCK_FILE", str(root / "eni-guest.lock"))
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session", autouse=True)
def e2e_environment() -> None:
    """Check once that namespaces can be built; fail (or skip on request) with the reason."""
    problem = check_environment()
    if problem is not None:
        if os.environ.get("ENI_GUEST_SKIP_E2E") == "1":
            pytest.skip(f"end-to-end tests skipped (ENI_GUEST_SKIP_E2E=1): {problem}")
        pytest.fail(
            f"end-to-end tests cannot run: {problem}. Run them as root on Linux with iproute2 "
            "and nftables, or set ENI_GUEST_SKIP_E2E=1 to skip them explicitly.",
            pytrace=False,
        )
    cleanup_stale()


@pytest.fixture
def scenario_3eni() -> dict[str, Any]:
    """A realistic three-ENI instance (a fresh copy per test; see ``e2e_support.three_eni``).

    eth0 (primary, 10.0.1.10 + secondary 10.0.1.11 + IPv6, with an Elastic IP), eth1 in the
    primary's own subnet (10.0.1.20/.21), eth2 in another subnet (10.0.2.30/.31 + IPv6).
    """
    return three_eni()


@pytest.fixture
def simvm() -> Iterator[Callable[..., SimVM]]:
    """Factory: ``simvm(scenario, **SimVM options)`` returns a started SimVM, closed afterwards."""
    made: list[SimVM] = []

    def make(scenario: dict[str, Any], **kwargs: Any) -> SimVM:
        vm = SimVM(scenario, **kwargs)
        made.append(vm)
        return vm.start()

    yield make
    errors = []
    for vm in reversed(made):
        try:
            vm.close()
        except Exception as e:  # close every VM, then report
            errors.append(e)
    if errors:
        raise errors[0]

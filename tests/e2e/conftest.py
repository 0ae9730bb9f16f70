"""Fixtures for the end-to-end tests, which run on simulated VMs (``eni_guest.testbed``).

These tests are the proof that the routing works (ROUTING.md), so a machine that cannot run
them must say so loudly: they FAIL unless ``ENI_GUEST_SKIP_E2E=1`` is set, never skip silently.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from eni_guest.testbed import SimVM, check_environment, cleanup_stale

_E2E_DIR = Path(__file__).resolve().parent

# MACs sort in the opposite order of device numbers (as in cloud-init's EC2 tests), so any code
# that orders ENIs by MAC gets the wrong answer.
PRIMARY_MAC = "0e:00:00:00:00:c3"
SECOND_MAC = "0e:00:00:00:00:b2"
THIRD_MAC = "0e:00:00:00:00:a1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/e2e carries the ``e2e`` mark, even if its module forgot it."""
    for item in items:
        if _E2E_DIR in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


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
    """A realistic three-ENI instance.

    eth0 (primary, 10.0.1.10 + secondary 10.0.1.11 + IPv6, with an Elastic IP), eth1 in the
    primary's own subnet (10.0.1.20/.21), eth2 in another subnet (10.0.2.30/.31 + IPv6).
    """
    return {
        "provider": "aws",
        "primary_mac": PRIMARY_MAC,
        "instance_id": "i-0123456789abcdef0",
        "enis": [
            {
                "mac": PRIMARY_MAC,
                "interface-id": "eni-0000000000000000a",
                "device-number": 0,
                "local-ipv4s": ["10.0.1.10", "10.0.1.11"],
                "subnet-ipv4-cidr-block": "10.0.1.0/24",
                "ipv6s": ["2001:db8:1::10"],
                "subnet-ipv6-cidr-blocks": ["2001:db8:1::/64"],
                "ipv4-associations": {"203.0.113.5": "10.0.1.11"},
            },
            {
                "mac": SECOND_MAC,
                "interface-id": "eni-0000000000000000b",
                "device-number": 1,
                "local-ipv4s": ["10.0.1.20", "10.0.1.21"],
                "subnet-ipv4-cidr-block": "10.0.1.0/24",
                "subnet-ipv6-cidr-blocks": ["2001:db8:1::/64"],
            },
            {
                "mac": THIRD_MAC,
                "interface-id": "eni-0000000000000000c",
                "device-number": 2,
                "local-ipv4s": ["10.0.2.30", "10.0.2.31"],
                "subnet-ipv4-cidr-block": "10.0.2.0/24",
                "ipv6s": ["2001:db8:2::30"],
                "subnet-ipv6-cidr-blocks": ["2001:db8:2::/64"],
            },
        ],
        "paths": {},
        "control": {"delay": 0, "fail": None, "fail_paths": []},
    }


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

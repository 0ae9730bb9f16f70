"""An ENI migrating between two simulated VMs (failover), with real packets.

Two VMs share one VPC; each reads its own metadata.  The ENI's veth end moves from VM A's
namespace into VM B's, A's metadata stops listing it and B's lists it (at B's device number).
What a user notices: A keeps nothing of it (no rule still claims its IPs), B sends the ENI's
IPs out through it, and neither VM's other traffic is disturbed.  Done once with the hot-plug
commands udev would run, once with nobody typing anything (a watch daemon on each VM).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional

import pytest
from e2e_support import THIRD_MAC
from hotplug_support import Daemon, rules, second_vm, sources, wait_for

from eni_guest_lab.testbed import FAR_V4, FAR_V6, OTHER_SUBNET_V4, Guest, SimVM

pytestmark = pytest.mark.e2e

Factory = Callable[..., SimVM]
THIRD_V4 = ("10.0.2.30", "10.0.2.31")
THIRD_IPS = {*THIRD_V4, "2001:db8:2::30"}


@pytest.fixture
def two_vms(simvm: Factory, scenario_3eni: dict[str, Any]) -> tuple[SimVM, Guest]:
    """VM A (the 3-ENI VM, applied) and VM B (its primary only, applied), one VPC."""
    vm = simvm(scenario_3eni, docker=False)
    b = vm.add_guest(second_vm())
    for guest in (None, b):
        r = vm.agent("apply", guest=guest)
        assert r.returncode == 0, r.stderr
    return vm, b


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    made: list[Daemon] = []
    yield made
    for d in made:
        d.close()


def carries(vm: SimVM, src: str, ifname: str, guest: Optional[Guest] = None) -> bool:
    dst = FAR_V6 if ":" in src else FAR_V4
    # one echo, but time for it on a loaded machine: no caller expects it to fail
    probe = vm.probe(src, dst, count=1, timeout=1.5, guest=guest)
    return probe.ok and probe.exit_iface == ifname


def assert_a_and_b_unharmed(vm: SimVM, b: Guest) -> None:
    assert carries(vm, "10.0.1.21", "eth1") and carries(vm, "10.0.1.11", "eth0")
    assert carries(vm, "10.0.1.50", "eth0", guest=b)
    assert carries(vm, "2001:db8:1::50", "eth0", guest=b)


def test_migration_with_hotplug_commands(two_vms: tuple[SimVM, Guest]) -> None:
    vm, b = two_vms
    assert carries(vm, "10.0.2.31", "eth2")

    name = vm.move(THIRD_MAC, b)  # device-number 1 in B's metadata
    assert name == "eth1"
    gone = vm.agent("hotplug", "remove", "eth2")
    came = vm.agent("hotplug", "add", name, guest=b)

    assert gone.returncode == 0, gone.stderr
    assert came.returncode == 0, came.stderr
    assert not THIRD_IPS & sources(vm)  # A claims none of its IPs any more
    assert vm.guest_routes("10002") == []
    assert {(p, t) for p, s, t in rules(vm, b) if s in THIRD_IPS} == {(10002, "10001")}
    for ip in THIRD_IPS:
        assert carries(vm, ip, "eth1", guest=b), ip
    probe = vm.probe("10.0.2.30", OTHER_SUBNET_V4, guest=b)
    assert probe.ok and probe.exit_iface == "eth1", probe.detail
    # in A the address is gone: nothing can send from it any more
    assert not vm.probe("10.0.2.31", FAR_V4).ok
    assert_a_and_b_unharmed(vm, b)


def test_migration_and_back_with_watch_daemons(
    two_vms: tuple[SimVM, Guest], daemons: list[Daemon]
) -> None:
    vm, b = two_vms
    for guest in (None, b):
        daemons.append(Daemon(vm, guest=guest))

    vm.move(THIRD_MAC, b, "ens5", device_number=2)
    wait_for("A cleaned up", lambda: not THIRD_IPS & sources(vm), 5)
    wait_for("B sends from the ENI's IP", lambda: carries(vm, "10.0.2.31", "ens5", b), 5)
    assert {(p, t) for p, s, t in rules(vm, b) if s in THIRD_IPS} == {(10003, "10002")}
    assert_a_and_b_unharmed(vm, b)

    vm.move(THIRD_MAC, vm.main_guest, "eth2", device_number=2)  # failback
    wait_for("B cleaned up", lambda: not THIRD_IPS & sources(vm, b), 5)
    wait_for("A sends from it again", lambda: carries(vm, "10.0.2.31", "eth2"), 5)
    assert carries(vm, "2001:db8:2::30", "eth2")
    assert_a_and_b_unharmed(vm, b)
    for d in daemons:
        code, _ = d.stop()
        assert code == 0, d.log()
        assert "Traceback" not in d.log() and "error" not in d.log()

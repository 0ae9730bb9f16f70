"""Debian 12 with NetworkManager, booted under QEMU in the simulated VPC (tests/realvm/).

One VM, eni-guest installed with its default configuration (``provider = auto``), booted once
with the three ENIs of the e2e tests attached, then:

* boot: eni-guest's boot unit has configured every ENI: each private IPv4 reaches the far
  host through its own ENI (the VPC's source check would drop it anywhere else), and
  NetworkManager has put no DHCP client or second default route on a secondary ENI;
* hot-plug a fourth ENI through QMP: udev starts the unit, the unit exits 0, its IPs reach
  the far host through it; the time from ``device_add`` to the first such reply is printed;
  no DHCP client ever ran on it (the VPC's DHCP server saw nothing from its MAC);
* unplug it: the unplug unit removes its rules and tables, the other ENIs keep working;
* hot-plug a fifth ENI, as the fourth.

The tests share the VM and run in file order.

DHCP on secondary ENIs at boot: NetworkManager activates its "Wired connection N" (DHCP) on
every NIC present at boot, before any eni-guest run could say which one is the primary; the
boot run then takes the secondaries away from it.  The tests assert the state once eni-guest
has run (unmanaged, no leased address, one default route) and print a FINDING line when a DHCP
client ran at boot.  After that first run a hot-plugged ENI is unmanaged from its first udev
event (eni_guest.distro_hotplug): asserted.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Iterator, Optional, TypeVar

import pytest

from eni_guest_lab import scenarios
from eni_guest_lab.realvm.bed import RealVM
from eni_guest_lab.testbed import FAR_V4

T = TypeVar("T")

PRIMARY_MAC, SECOND_MAC, THIRD_MAC = scenarios.macs(scenarios.three_eni())
BOOT_IPS = [
    (PRIMARY_MAC, "10.0.1.10"),
    (PRIMARY_MAC, "10.0.1.11"),
    (SECOND_MAC, "10.0.1.20"),
    (SECOND_MAC, "10.0.1.21"),
    (THIRD_MAC, "10.0.2.30"),
    (THIRD_MAC, "10.0.2.31"),
]
HOTPLUG_ENI: dict[str, Any] = {
    "mac": "0e:00:00:00:10:04",
    "interface-id": "eni-00000000000000004",
    "device-number": 3,
    "local-ipv4s": ["10.0.14.10", "10.0.14.11"],
    "subnet-ipv4-cidr-block": "10.0.14.0/24",
}

SECOND_HOTPLUG_ENI: dict[str, Any] = {
    "mac": "0e:00:00:00:10:05",
    "interface-id": "eni-00000000000000005",
    "device-number": 3,
    "local-ipv4s": ["10.0.15.10"],
    "subnet-ipv4-cidr-block": "10.0.15.0/24",
}


def wait_for(what: str, check: Callable[[], Optional[T]], timeout: float, step: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


@pytest.fixture(scope="module")
def vm() -> Iterator[RealVM]:
    with RealVM(scenarios.three_eni()) as machine:
        yield machine


def default_routes(vm: RealVM) -> list[dict[str, Any]]:
    return json.loads(vm.sh("ip -j -4 route show default table main").stdout or "[]")


def nm_states(vm: RealVM) -> dict[str, str]:
    out = vm.sh("nmcli -t -f DEVICE,STATE device").stdout
    return dict(line.split(":", 1) for line in out.splitlines() if ":" in line)


def unit_results(vm: RealVM, pattern: str) -> str:
    """The journal of units matching ``pattern`` (finished template instances are gone from
    ``systemctl show``: the journal keeps their result)."""
    return vm.sh(f"journalctl -b --no-pager -o cat -u '{pattern}'").stdout


def assert_no_dhcp_now(vm: RealVM, mac: str) -> None:
    """No DHCP client on the ENI now: NetworkManager leaves it unmanaged and it holds no
    dynamic (leased) address."""
    ifname = vm.ifname_of(mac) or "?"
    assert nm_states(vm).get(ifname) == "unmanaged", nm_states(vm)
    addrs = vm.sh(f"ip -4 -o addr show dev {ifname}").stdout
    assert "dynamic" not in addrs, addrs


def dhcp_ran(vm: RealVM, mac: str) -> bool:
    """Whether a DHCP client ever ran on this ENI: the VPC's DHCP server heard from its MAC."""
    log = vm.dhcp_log(mac)
    return "DHCPDISCOVER" in log or "DHCPREQUEST" in log


def report_dhcp_at_boot(vm: RealVM, macs: list[str]) -> None:
    """Print whether a DHCP client ran on these ENIs at boot (see the module docstring)."""
    for mac in macs:
        if dhcp_ran(vm, mac):
            print(f"[realvm] FINDING (boot): a DHCP client ran on secondary ENI {mac}")


def hotplug_unit_journal(vm: RealVM, ifname: Optional[str]) -> str:
    """The journal of ``eni-guest-hotplug@IFNAME`` once it has finished."""

    def finished() -> Optional[str]:
        j = unit_results(vm, f"eni-guest-hotplug@{ifname}.service")
        return j if "Deactivated successfully" in j or "Failed" in j else None

    return wait_for("the hot-plug unit to finish", finished, timeout=90.0)


def test_boot_configures_three_enis(vm: RealVM) -> None:
    boot = vm.sh("systemctl show -p Result -p ExecMainStatus eni-guest-boot.service").stdout
    assert "Result=success" in boot and "ExecMainStatus=0" in boot, boot + unit_results(
        vm, "eni-guest-boot.service"
    )
    for mac, ip in BOOT_IPS:
        p = vm.ping(ip, FAR_V4)
        assert p.ok and p.exit_iface == mac and not p.dropped_by_rpf, p
    primary = vm.ifname_of(PRIMARY_MAC)
    routes = default_routes(vm)
    assert [r["dev"] for r in routes] == [primary], routes
    for mac in (SECOND_MAC, THIRD_MAC):
        assert_no_dhcp_now(vm, mac)
    report_dhcp_at_boot(vm, [SECOND_MAC, THIRD_MAC])


def test_hotplug(vm: RealVM) -> None:
    mac = HOTPLUG_ENI["mac"]
    vm.sim.add_eni(HOTPLUG_ENI)
    t0 = vm.hotplug(mac)

    def arrived() -> Optional[float]:
        p = vm.ping("10.0.14.10", FAR_V4, count=1, wait=1.0)
        return time.monotonic() - t0 if p.ok and p.exit_iface == mac else None

    took = wait_for("traffic through the hot-plugged ENI", arrived, timeout=120.0)
    vm.timings["hotplug_to_traffic"] = took
    print(f"[realvm] hot-plug: device_add to traffic through the new ENI: {took:.1f} s")
    p = vm.ping("10.0.14.11", FAR_V4)
    assert p.ok and p.exit_iface == mac and not p.dropped_by_rpf, p
    ifname = vm.ifname_of(mac)
    journal = hotplug_unit_journal(vm, ifname)
    assert "Failed" not in journal and "status=" not in journal, journal
    assert [r["dev"] for r in default_routes(vm)] == [vm.ifname_of(PRIMARY_MAC)]
    assert_no_dhcp_now(vm, mac)
    assert not dhcp_ran(vm, mac), vm.dhcp_log(mac)


def test_unplug_cleans_up(vm: RealVM) -> None:
    mac = HOTPLUG_ENI["mac"]
    ifname = vm.ifname_of(mac)
    took = vm.unplug(mac)
    print(f"[realvm] unplug: device_del to DEVICE_DELETED: {took:.1f} s")

    def clean() -> bool:
        rules = vm.sh("ip -4 rule show").stdout
        return "10.0.14." not in rules

    wait_for("the unplugged ENI's rules to go", clean, timeout=60.0)
    journal = unit_results(vm, f"eni-guest-unplug@{ifname}.service")
    assert "Failed" not in journal, journal
    for mac_, ip in BOOT_IPS:
        p = vm.ping(ip, FAR_V4)
        assert p.ok and p.exit_iface == mac_, p


def test_second_hotplug(vm: RealVM) -> None:
    """Another ENI, after an unplug: the same promises (the unit exits 0, no DHCP client)."""
    mac = SECOND_HOTPLUG_ENI["mac"]
    vm.sim.add_eni(SECOND_HOTPLUG_ENI)
    t0 = vm.hotplug(mac)

    def arrived() -> Optional[float]:
        p = vm.ping("10.0.15.10", FAR_V4, count=1, wait=1.0)
        return time.monotonic() - t0 if p.ok and p.exit_iface == mac else None

    took = wait_for("traffic through the second hot-plugged ENI", arrived, 120.0)
    print(f"[realvm] second hot-plug: device_add to traffic: {took:.1f} s")
    journal = hotplug_unit_journal(vm, vm.ifname_of(mac))
    assert "Failed" not in journal and "status=" not in journal, journal
    assert_no_dhcp_now(vm, mac)
    assert not dhcp_ran(vm, mac), vm.dhcp_log(mac)

"""Properties 1-5 of docs/routing.md, with real packets through the simulated VPC.

One VM (the three-ENI scenario: eth1 sits in the primary's subnet, eth2 in a subnet of its own
with IPv6) is observed before ``apply``, then applied once; every test below only reads it. The
guest also has what real hosts have besides ENIs: a Docker bridge with a container, a route an
administrator added to the main table (192.0.2.0/24 via the container) and a VPN-like link
(``vpn0``, a veth into the container's namespace) with its routes in main.

The VPC drops any packet whose source does not belong to the veth it arrived on, so a probe that
succeeds *and* was counted on the owner's veth proves the exit ENI.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from e2e_support import (
    OURS,
    PRIMARY_MAC,
    SECOND_MAC,
    THIRD_MAC,
    THREE_ENI_IPS,
    apply_json,
    eni_of,
    foreign_view,
    primary_state,
    route_get,
    three_eni,
    wait_no_tentative,
)

from eni_guest_lab.testbed import (
    CONTAINER_V4,
    CONTAINER_V6,
    FAR_V4,
    FAR_V6,
    METADATA_V4,
    METADATA_V6,
    OTHER_SUBNET_V4,
    OTHER_SUBNET_V6,
    Probe,
    SimVM,
    neighbour_of,
)

pytestmark = pytest.mark.e2e

# Local, non-ENI networks (property 4).
ADMIN_V4, ADMIN_V6 = "192.0.2.10", "2001:db8:99::10"  # admin's route in main, via the container
VPN_V4, VPN_V6 = "198.18.0.10", "fd00:18::10"  # behind the VPN-like link vpn0

UNBOUND_DESTINATIONS = [
    FAR_V4,
    OTHER_SUBNET_V4,
    "10.0.1.200",
    "10.0.2.200",
    CONTAINER_V4,
    METADATA_V4,
    ADMIN_V4,
    VPN_V4,
    FAR_V6,
    OTHER_SUBNET_V6,
    "2001:db8:1::200",
    "2001:db8:2::200",
    CONTAINER_V6,
    METADATA_V6,
    ADMIN_V6,
    VPN_V6,
]
UNBOUND_PROBES = [FAR_V4, FAR_V6, OTHER_SUBNET_V4, "10.0.2.200", "2001:db8:2::200"]


@dataclass
class Routed:
    vm: SimVM
    before: dict[str, Any]
    applied: dict[str, Any]


def _add_local_networks(vm: SimVM) -> None:
    """An administrator's route and a VPN-like link, both in the guest's main table."""
    c = vm.container_ns
    assert c is not None
    vm.guest(["ip", "link", "add", "vpn0", "type", "veth", "peer", "name", "vpn0c", "netns", c])
    vm.guest(["sysctl", "-q", "-w", "net.ipv6.conf.vpn0.accept_dad=0"])
    vm.container(["sysctl", "-q", "-w", "net.ipv6.conf.vpn0c.accept_dad=0"])
    for cmd in (
        ["ip", "addr", "add", "100.64.0.1/30", "dev", "vpn0"],
        ["ip", "addr", "add", "fd00:64::1/64", "dev", "vpn0", "nodad"],
        ["ip", "link", "set", "vpn0", "up"],
        ["ip", "route", "add", "198.18.0.0/24", "via", "100.64.0.2", "dev", "vpn0"],
        ["ip", "-6", "route", "add", "fd00:18::/64", "via", "fd00:64::2", "dev", "vpn0"],
        ["ip", "route", "add", "192.0.2.0/24", "via", CONTAINER_V4, "proto", "static"],
        ["ip", "-6", "route", "add", "2001:db8:99::/64", "via", CONTAINER_V6, "proto", "static"],
    ):
        vm.guest(cmd)
    for cmd in (
        ["ip", "addr", "add", "100.64.0.2/30", "dev", "vpn0c"],
        ["ip", "addr", "add", "fd00:64::2/64", "dev", "vpn0c", "nodad"],
        ["ip", "link", "set", "vpn0c", "up"],
        ["ip", "addr", "add", f"{ADMIN_V4}/32", "dev", "lo"],
        ["ip", "addr", "add", f"{ADMIN_V6}/128", "dev", "lo"],
        ["ip", "addr", "add", f"{VPN_V4}/32", "dev", "lo"],
        ["ip", "addr", "add", f"{VPN_V6}/128", "dev", "lo"],
        # The far end answers from its VPN address back through the tunnel (the guest has
        # strict rp_filter, as RHEL images do).
        ["ip", "rule", "add", "from", VPN_V4, "lookup", "100", "priority", "100"],
        ["ip", "route", "add", "default", "via", "100.64.0.1", "dev", "vpn0c", "table", "100"],
        ["ip", "-6", "rule", "add", "from", VPN_V6, "lookup", "100", "priority", "100"],
        ["ip", "-6", "route", "add", "default", "via", "fd00:64::1", "table", "100"],
    ):
        vm.container(cmd)


@pytest.fixture(scope="module")
def routed() -> Iterator[Routed]:
    vm = SimVM(three_eni(), kernel_rp_filter=True)  # the kernel's strict rp_filter too
    try:
        vm.start()
        _add_local_networks(vm)
        assert vm.container_ns is not None
        wait_no_tentative(vm, [vm.guest_ns, vm.container_ns])
        secondary = [ip for _, ip in THREE_ENI_IPS if ip not in ("10.0.1.10", "2001:db8:1::10")]
        configured = set()
        for ifname in ("eth0", "eth1", "eth2"):
            configured |= {a.split("/")[0] for a in vm.guest_ips(ifname)}
        before = {
            "configured": configured,
            "secondary": {ip: vm.probe(ip, FAR_V6 if ":" in ip else FAR_V4) for ip in secondary},
            "route_get": {dst: route_get(vm, dst) for dst in UNBOUND_DESTINATIONS},
            "unbound": {dst: vm.probe(None, dst, count=1) for dst in UNBOUND_PROBES},
            "nat": vm.probe(None, FAR_V4, count=1, via_container=True),
            "main4": vm.guest_routes("main", 4),
            "main6": vm.guest_routes("main", 6),
            "primary": primary_state(vm),
            "foreign": foreign_view(vm),
        }
        applied = apply_json(vm)
        yield Routed(vm, before, applied)
    finally:
        vm.close()


_NAMES = {PRIMARY_MAC: "eth0", SECOND_MAC: "eth1", THIRD_MAC: "eth2"}


def _ids(item: tuple[str, str]) -> str:
    mac, ip = item
    return f"{_NAMES[mac]}-{ip}"


def _subnet(mac: str, ip: str) -> str:
    eni = eni_of(three_eni(), mac)
    if ":" in ip:
        return next(
            c
            for c in eni["subnet-ipv6-cidr-blocks"]
            if ipaddress.ip_address(ip) in ipaddress.ip_network(c)
        )
    return str(eni["subnet-ipv4-cidr-block"])


def test_apply_succeeded_and_changed_something(routed: Routed) -> None:
    assert routed.applied["changes"], "the first apply must configure the secondary ENIs"


def test_secondary_ips_are_unusable_before_apply(routed: Routed) -> None:
    """Before apply the secondary IPs are not even configured: nothing can use them."""
    before = routed.before
    assert not set(before["secondary"]) & before["configured"]
    assert {"10.0.1.10", "2001:db8:1::10"} <= before["configured"]
    for probe in before["secondary"].values():
        assert not probe.ok, probe.detail
        assert probe.exit_iface is None, probe.detail


@pytest.mark.parametrize("owner", THREE_ENI_IPS, ids=_ids)
def test_property1_far_host_through_own_eni(routed: Routed, owner: tuple[str, str]) -> None:
    mac, ip = owner
    vm = routed.vm
    probe = vm.probe(ip, FAR_V6 if ":" in ip else FAR_V4, count=1)
    assert probe == Probe(True, vm.ifname_of(mac), False), probe.detail


@pytest.mark.parametrize("owner", THREE_ENI_IPS, ids=_ids)
def test_property2_own_subnet_neighbour_through_own_eni(
    routed: Routed, owner: tuple[str, str]
) -> None:
    """Also for eth1, whose subnet is the primary's (main's connected route points at eth0)."""
    mac, ip = owner
    vm = routed.vm
    probe = vm.probe(ip, neighbour_of(_subnet(mac, ip)), count=1)
    assert probe == Probe(True, vm.ifname_of(mac), False), probe.detail


@pytest.mark.parametrize("owner", THREE_ENI_IPS, ids=_ids)
def test_property3_other_subnets_through_own_eni(routed: Routed, owner: tuple[str, str]) -> None:
    """A subnet of no ENI, and the subnet of *another* ENI: still through the IP's own ENI."""
    mac, ip = owner
    vm = routed.vm
    if ":" in ip:
        others = [OTHER_SUBNET_V6, "2001:db8:2::200" if mac == PRIMARY_MAC else "2001:db8:1::200"]
    else:
        others = [OTHER_SUBNET_V4, "10.0.1.200" if mac == THIRD_MAC else "10.0.2.200"]
    for dst in others:
        probe = vm.probe(ip, dst, count=1)
        assert probe == Probe(True, vm.ifname_of(mac), False), probe.detail


@pytest.mark.parametrize("owner", THREE_ENI_IPS, ids=_ids)
def test_property4_local_networks_from_every_eni_ip(routed: Routed, owner: tuple[str, str]) -> None:
    """The container, the admin's route and the VPN stay local: no packet reaches the VPC."""
    _, ip = owner
    vm = routed.vm
    dsts = [CONTAINER_V6, ADMIN_V6, VPN_V6] if ":" in ip else [CONTAINER_V4, ADMIN_V4, VPN_V4]
    for dst in dsts:
        probe = vm.probe(ip, dst, count=1)
        assert probe == Probe(True, None, False), probe.detail


def test_property4_admin_routes_still_in_main(routed: Routed) -> None:
    main4 = {r["dst"]: r for r in routed.vm.guest_routes("main", 4)}
    main6 = {r["dst"]: r for r in routed.vm.guest_routes("main", 6)}
    assert main4["192.0.2.0/24"]["gateway"] == CONTAINER_V4
    assert main4["198.18.0.0/24"]["dev"] == "vpn0"
    assert main6["2001:db8:99::/64"]["gateway"] == CONTAINER_V6
    assert main6["fd00:18::/64"]["dev"] == "vpn0"


def test_property5_route_get_for_unbound_traffic_unchanged(routed: Routed) -> None:
    after = {dst: route_get(routed.vm, dst) for dst in UNBOUND_DESTINATIONS}
    assert after == routed.before["route_get"]


def test_property5_unbound_traffic_leaves_through_primary(routed: Routed) -> None:
    vm = routed.vm
    for dst, before in routed.before["unbound"].items():
        assert before == Probe(True, "eth0", False), before.detail
        after = vm.probe(None, dst, count=1)
        assert after == before, after.detail


def test_property5_container_behind_nat_leaves_through_primary(routed: Routed) -> None:
    before = routed.before["nat"]
    assert before == Probe(True, "eth0", False), before.detail
    after = routed.vm.probe(None, FAR_V4, count=1, via_container=True)
    assert after == before, after.detail


def test_property5_main_table_unchanged(routed: Routed) -> None:
    """No route appears in main for the secondary ENIs' subnets (only the kernel's own
    link-local fe80::/64 of links the agent brought up)."""
    vm = routed.vm
    assert vm.guest_routes("main", 4) == routed.before["main4"]

    def v6(routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in routes if not (r["dst"] == "fe80::/64" and r["dev"] in ("eth1", "eth2"))]

    assert v6(vm.guest_routes("main", 6)) == v6(routed.before["main6"])
    assert all(r.get("protocol") != OURS for r in vm.guest_routes("main", 4))


def test_property6_primary_untouched_by_apply(routed: Routed) -> None:
    assert primary_state(routed.vm) == routed.before["primary"]


def test_property7_foreign_objects_untouched_by_apply(routed: Routed) -> None:
    assert foreign_view(routed.vm) == routed.before["foreign"]

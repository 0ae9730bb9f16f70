"""eni-guest's two address marks on a real kernel: protocol 229 and metric 229.

Kernels before 5.18 drop the address protocol (IFA_PROTO) and keep the metric
(IFA_RT_PRIORITY, since 4.18), so eni-guest adds every address with both and recognises one
as its own by the metric when no protocol is reported (docs/routing.md, "Kernels before 5.18").
This machine's kernel keeps protocols, so the old kernel's view of an address (metric 229, no
protocol) is made by hand with `ip addr add ... metric 229` in the guest; a kernel before 5.18
itself is the real-VM suite's.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest
from e2e_support import (
    OURS,
    PRIMARY_MAC,
    SECOND_MAC,
    THREE_ENI_IPS,
    addr_protocols,
    apply_json,
    eni_of,
)

from eni_guest_lab.testbed import FAR_V4, FAR_V6, Probe, SimVM

pytestmark = pytest.mark.e2e

Factory = Callable[..., SimVM]
METRIC = int(OURS)

ADDED = {
    ("eth0", "10.0.1.11/32"),
    ("eth1", "10.0.1.20/32"),
    ("eth1", "10.0.1.21/32"),
    ("eth2", "10.0.2.30/32"),
    ("eth2", "10.0.2.31/32"),
    ("eth2", "2001:db8:2::30/128"),
}


def metrics(vm: SimVM) -> dict[tuple[str, str], Any]:
    """``{(ifname, "ip/plen"): metric or None}`` of every address, as ``ip -j addr`` shows it."""
    links = json.loads(vm.guest(["ip", "-j", "addr", "show"]).stdout)
    return {
        (link["ifname"], f"{a['local']}/{a['prefixlen']}"): a.get("metric")
        for link in links
        for a in link.get("addr_info", [])
    }


def all_routes(vm: SimVM) -> list[dict[str, Any]]:
    return vm.guest_routes("all", 4) + vm.guest_routes("all", 6)


def test_added_addresses_carry_protocol_and_metric_and_routing_is_unchanged(
    simvm: Factory, scenario_3eni: dict[str, Any]
) -> None:
    vm = simvm(scenario_3eni, docker=False)
    out = apply_json(vm)
    protos, shown = addr_protocols(vm), metrics(vm)
    assert {k for k, p in protos.items() if p == METRIC} == ADDED
    assert {k for k, m in shown.items() if m == METRIC} == ADDED
    # the DHCP client's and RA's addresses carry neither mark
    for key in [("eth0", "10.0.1.10/24"), ("eth0", "2001:db8:1::10/64")]:
        assert protos[key] is None and shown[key] is None, key
    # this kernel keeps protocols: nothing to say about the marks
    assert not any("address protocols" in n or "no eni-guest mark" in n for n in out["notes"])
    # the metric made no route: every route with a metric of 229 would be a prefix route
    assert [r for r in all_routes(vm) if r.get("metric") == METRIC] == []
    for mac, ip in THREE_ENI_IPS:
        probe = vm.probe(ip, FAR_V6 if ":" in ip else FAR_V4, count=1)
        assert probe == Probe(True, vm.ifname_of(mac), False), probe.detail


def test_metric_without_protocol_is_ours_and_removed_when_unlisted(
    simvm: Factory, scenario_3eni: dict[str, Any]
) -> None:
    vm = simvm(scenario_3eni, docker=False)
    apply_json(vm)
    by_hand = [
        # what a kernel before 5.18 keeps of an address eni-guest added: the metric only
        ["ip", "addr", "add", "10.0.1.22/32", "dev", "eth1", "metric", "229", "noprefixroute"],
        ["ip", "addr", "add", "2001:db8:2::33/128", "dev", "eth2", "metric", "229"]
        + ["noprefixroute", "nodad"],
        # someone else's: no metric, another metric, our metric on a subnet address
        ["ip", "addr", "add", "10.0.1.23/32", "dev", "eth1", "noprefixroute"],
        ["ip", "addr", "add", "10.0.1.24/32", "dev", "eth1", "metric", "100", "noprefixroute"],
        ["ip", "addr", "add", "10.0.9.1/24", "dev", "eth1", "metric", "229", "noprefixroute"],
    ]
    for cmd in by_hand:
        vm.guest(cmd)
    ours_by_metric = [("eth1", "10.0.1.22/32"), ("eth2", "2001:db8:2::33/128")]
    protos, shown = addr_protocols(vm), metrics(vm)
    assert [(protos[k], shown[k]) for k in ours_by_metric] == [(None, METRIC), (None, METRIC)]
    out = apply_json(vm)
    # ours by the metric go; someone else's inside eth1's subnet stay and get eth1's rule
    # (floating.py), the one outside it (10.0.9.1/24) none
    assert sorted(out["changes"]) == [
        "addr del 10.0.1.22/32 dev eth1",
        "addr del 2001:db8:2::33/128 dev eth2",
        "rule add from 10.0.1.23 lookup 10001 priority 10002",
        "rule add from 10.0.1.24 lookup 10001 priority 10002",
    ]
    assert "10.0.1.22/32" not in vm.guest_ips("eth1")
    assert "2001:db8:2::33/128" not in vm.guest_ips("eth2")
    assert {"10.0.1.23/32", "10.0.1.24/32", "10.0.9.1/24"} <= vm.guest_ips("eth1")
    assert apply_json(vm)["changes"] == []


def test_failover_off_an_address_with_only_the_metric(
    simvm: Factory, scenario_3eni: dict[str, Any]
) -> None:
    """10.0.1.21 moves from eth1 to the primary, as on an old kernel: it leaves eth1."""
    vm = simvm(scenario_3eni, docker=False)
    apply_json(vm)
    # eth1's 10.0.1.21 as a kernel before 5.18 holds it: our metric, no protocol
    vm.guest(["ip", "addr", "del", "10.0.1.21/32", "dev", "eth1"])
    vm.guest(["ip", "addr", "add", "10.0.1.21/32", "dev", "eth1", "metric", "229", "noprefixroute"])
    assert addr_protocols(vm)[("eth1", "10.0.1.21/32")] is None
    assert metrics(vm)[("eth1", "10.0.1.21/32")] == METRIC
    scn = vm.scenario
    eni_of(scn, SECOND_MAC)["local-ipv4s"].remove("10.0.1.21")
    eni_of(scn, PRIMARY_MAC)["local-ipv4s"].append("10.0.1.21")
    vm.update_scenario(scn)
    assert apply_json(vm)["changes"] == [
        "addr add 10.0.1.21/32 dev eth0 metric 229 noprefixroute",
        "rule add from 10.0.1.21 lookup 10000 priority 10001",
        "rule del from 10.0.1.21 lookup 10001 priority 10002",
        "addr del 10.0.1.21/32 dev eth1",
    ]
    assert "10.0.1.21/32" not in vm.guest_ips("eth1")
    probe = vm.probe("10.0.1.21", FAR_V4, count=1)
    assert probe == Probe(True, "eth0", False), probe.detail

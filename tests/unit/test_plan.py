"""The planner: (instance, config, kernel state) -> ordered changes.  Pure, so no kernel needed."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional

import pytest

from eni_guest.changes import ip_text
from eni_guest.config import Config, load
from eni_guest.model import (
    Eni,
    Excluded,
    Instance,
    RawEni,
    RawInstance,
    Unsettled,
    build_instance,
)
from eni_guest.plan import (
    AddrChange,
    LinkChange,
    Plan,
    RouteChange,
    RuleChange,
    plan,
)
from eni_guest.state import Addr, KernelState, Link, Route, Rule

if TYPE_CHECKING:
    from eni_guest.changes import Change

G = 229  # default interface group
PROTO = 229  # default protocol
MAIN = 254
MAC1, MAC2, MAC3 = "0e:00:00:00:00:01", "0e:00:00:00:00:02", "0e:00:00:00:00:03"
DEFAULT4 = ip_network("0.0.0.0/0")
DEFAULT6 = ip_network("::/0")


def ip(text: str) -> Any:
    return ip_address(text)


def net(text: str) -> Any:
    return ip_network(text)


def make_eni(
    mac: str,
    device: int,
    ipv4s: Iterable[str] = (),
    subnet: Optional[str] = None,
    gateway: Optional[str] = None,
    *,
    primary: bool = False,
    card: int = 0,
    ipv6s: Iterable[str] = (),
    subnet6: Optional[str] = None,
    prefixes: Iterable[str] = (),
) -> Eni:
    subnets = (net(subnet),) if subnet else ()
    subnets6 = (net(subnet6),) if subnet6 else ()
    gw4 = ip(gateway) if gateway else (subnets[0].network_address + 1 if subnets else None)
    gw6 = subnets6[0].network_address + 1 if subnets6 and ipv6s else None
    return Eni(
        mac=mac,
        eni_id="eni-" + mac.replace(":", ""),
        device_number=device,
        network_card=card,
        primary=primary,
        ipv4s=tuple(ip(a) for a in ipv4s),
        ipv4_subnets=subnets,
        ipv4_gateway=gw4 if ipv4s else None,
        ipv6s=tuple(ip(a) for a in ipv6s),
        ipv6_subnets=subnets6,
        ipv6_gateway=gw6,
        ipv4_prefixes=tuple(net(p) for p in prefixes),
    )


# A 3-ENI VM: the primary with a secondary IP, a second ENI in the primary's subnet, a third
# ENI in another subnet.
P = make_eni(MAC1, 0, ["10.0.1.10", "10.0.1.20"], "10.0.1.0/24", primary=True)
B = make_eni(MAC2, 1, ["10.0.1.30"], "10.0.1.0/24")
C = make_eni(MAC3, 2, ["10.0.2.10", "10.0.2.11"], "10.0.2.0/24")
C6 = make_eni(
    MAC3,
    2,
    ["10.0.2.10", "10.0.2.11"],
    "10.0.2.0/24",
    ipv6s=["2600:1f18:1:2::10"],
    subnet6="2600:1f18:1:2::/64",
)

LO = Link(1, "lo", "00:00:00:00:00:00", 0, True, 65536)
ETH0 = Link(2, "eth0", MAC1, 0, True, 9001)
ETH1 = Link(3, "eth1", MAC2, 0, False, 1500)
ETH2 = Link(4, "eth2", MAC3, 0, False, 1500)
DOCKER0 = Link(5, "docker0", "02:42:ac:11:00:01", 0, True, 1500, kind="bridge")
DHCP_ADDR = Addr(2, ip("10.0.1.10"), 24, None)  # the DHCP client's: no protocol reported
BOOT_STATE = KernelState(
    links=(LO, ETH0, ETH1, ETH2, DOCKER0),
    addrs=(
        Addr(1, ip("127.0.0.1"), 8, None),
        DHCP_ADDR,
        Addr(5, ip("172.17.0.1"), 16, None),
    ),
)


def vm(*enis: Eni, unsettled: Iterable[Unsettled] = ()) -> Instance:
    return Instance("aws", "i-1", MAC1, tuple(enis), tuple(unsettled))


def applied(state: KernelState, changes: Iterable[Change], proto: int = PROTO) -> KernelState:
    """The kernel state after `changes`, as the kernel would hold it (adds of what exists fail)."""
    links = {link.index: link for link in state.links}
    addrs = {(a.index, a.ip): a for a in state.addrs}
    # the kernel tells routes of a table apart by destination and metric
    routes = {(r.family, r.table, r.dst, r.metric): r for r in state.routes}
    rules = list(state.rules)
    for c in changes:
        if isinstance(c, LinkChange):
            link = links[c.index]
            links[c.index] = replace(
                link,
                group=link.group if c.group is None else c.group,
                up=link.up if c.up is None else c.up,
                mtu=link.mtu if c.mtu is None else c.mtu,
            )
        elif isinstance(c, AddrChange):
            key = (c.index, c.ip)
            if c.op == "add":
                assert key not in addrs, f"adds an address that exists: {c.describe()}"
                addrs[key] = Addr(c.index, c.ip, c.prefixlen, proto, c.metric)
            else:
                assert key in addrs, f"deletes an address that does not exist: {c.describe()}"
                del addrs[key]
        elif isinstance(c, RouteChange):
            key = (c.family, c.table, c.dst, c.metric)
            if c.op == "add":
                assert key not in routes, f"adds a route that exists: {c.describe()}"
                routes[key] = Route(c.family, c.table, c.dst, c.oif, c.gateway, c.metric, c.prefsrc)
            elif c.op == "replace":
                assert key in routes, f"replaces a route that is not ours: {c.describe()}"
                routes[key] = Route(c.family, c.table, c.dst, c.oif, c.gateway, c.metric, c.prefsrc)
            else:
                assert key in routes, f"deletes a route that does not exist: {c.describe()}"
                del routes[key]
        else:
            assert isinstance(c, RuleChange)
            if c.op == "add":
                assert c.key() not in rules, f"adds a rule that exists: {c.describe()}"
                rules.append(c.key())
            else:
                assert c.key() in rules, f"deletes a rule that does not exist: {c.describe()}"
                rules.remove(c.key())
    return replace(
        state,
        links=tuple(links.values()),
        addrs=tuple(addrs.values()),
        routes=tuple(routes.values()),
        rules=tuple(rules),
    )


def converged(instance: Instance, config: Config, state: KernelState) -> KernelState:
    return applied(state, plan(instance, config, state).changes, config.protocol)


def of(p: Plan, kind: type, op: Optional[str] = None) -> list[Any]:
    return [c for c in p.changes if isinstance(c, kind) and (op is None or c.op == op)]


def rule_keys(changes: Iterable[RuleChange]) -> set[tuple]:
    return {(c.priority, c.table, c.src, c.suppress_ifgroup) for c in changes}


def route_keys(changes: Iterable[RouteChange]) -> set[tuple]:
    return {(c.table, c.dst, c.oif, c.gateway) for c in changes}


def addr_keys(changes: Iterable[AddrChange]) -> set[tuple]:
    return {(c.index, c.ip, c.prefixlen) for c in changes}


def deletes(p: Plan) -> list[Change]:
    return [c for c in p.changes if c.op == "del" or (isinstance(c, LinkChange) and c.group == 0)]


def h(text: str) -> Any:
    return net(text + ("/128" if ":" in text else "/32"))


# ---------------------------------------------------------------- first apply


def test_first_apply_on_a_three_eni_vm() -> None:
    p = plan(vm(P, B, C), Config(), BOOT_STATE)

    assert set(of(p, LinkChange)) == {
        LinkChange(2, "eth0", group=G, eni=MAC1),  # the primary: group only, no up, no mtu
        LinkChange(3, "eth1", group=G, up=True, eni=MAC2),
        LinkChange(4, "eth2", group=G, up=True, eni=MAC3),
    }
    # /32 host addresses for every IP but the primary's DHCP address
    assert addr_keys(of(p, AddrChange)) == {
        (2, ip("10.0.1.20"), 32),
        (3, ip("10.0.1.30"), 32),
        (4, ip("10.0.2.10"), 32),
        (4, ip("10.0.2.11"), 32),
    }
    assert all(c.op == "add" and "noprefixroute" in c.describe() for c in of(p, AddrChange))
    # a table per ENI: subnet route on its link and a default route via the subnet's gateway
    assert route_keys(of(p, RouteChange)) == {
        (10000, net("10.0.1.0/24"), 2, None),
        (10000, DEFAULT4, 2, ip("10.0.1.1")),
        (10001, net("10.0.1.0/24"), 3, None),
        (10001, DEFAULT4, 3, ip("10.0.1.1")),
        (10002, net("10.0.2.0/24"), 4, None),
        (10002, DEFAULT4, 4, ip("10.0.2.1")),
    }
    assert {c.op for c in of(p, RouteChange)} == {"add"}
    # the shared rule, then one `from IP` rule per IP at priority_base + 1 + slot
    assert rule_keys(of(p, RuleChange)) == {
        (10000, MAIN, None, G),
        (10001, 10000, h("10.0.1.10"), None),
        (10001, 10000, h("10.0.1.20"), None),
        (10002, 10001, h("10.0.1.30"), None),
        (10003, 10002, h("10.0.2.10"), None),
        (10003, 10002, h("10.0.2.11"), None),
    }
    assert {c.op for c in of(p, RuleChange)} == {"add"}
    assert all(c.family == 4 for c in of(p, RuleChange) + of(p, RouteChange))
    assert deletes(p) == []
    assert not p.removals_withheld and p.notes == ()
    assert [(e.eni.mac, e.link, e.table, e.priority) for e in p.enis] == [
        (MAC1, ETH0, 10000, 10001),
        (MAC2, ETH1, 10001, 10002),
        (MAC3, ETH2, 10002, 10003),
    ]


def test_first_apply_order() -> None:
    changes = list(plan(vm(P, B, C), Config(), BOOT_STATE).changes)
    shared = [i for i, c in enumerate(changes) if isinstance(c, RuleChange) and c.src is None]
    per_ip = [i for i, c in enumerate(changes) if isinstance(c, RuleChange) and c.src is not None]
    assert len(shared) == 1 and per_ip and shared[0] < min(per_ip)
    # addresses and routes exist before any rule sends traffic to them
    others = [i for i, c in enumerate(changes) if not isinstance(c, RuleChange)]
    assert max(others) < shared[0]
    # in each table the subnet route comes before the default route via the gateway
    for table in (10000, 10001, 10002):
        routes = [c for c in changes if isinstance(c, RouteChange) and c.table == table]
        assert [c.dst.prefixlen == 0 for c in routes] == [False, True]


def test_enis_are_matched_by_mac_not_by_name() -> None:
    # eth1 carries the ENI in device 2, eth2 the one in device 1
    swapped = replace(
        BOOT_STATE,
        links=(LO, ETH0, replace(ETH1, mac=MAC3), replace(ETH2, mac=MAC2), DOCKER0),
    )
    p = plan(vm(P, B, C), Config(), swapped)
    assert (10001, net("10.0.1.0/24"), 4, None) in route_keys(of(p, RouteChange))
    assert (10002, net("10.0.2.0/24"), 3, None) in route_keys(of(p, RouteChange))
    assert (4, ip("10.0.1.30"), 32) in addr_keys(of(p, AddrChange))
    assert (3, ip("10.0.2.10"), 32) in addr_keys(of(p, AddrChange))
    table_10001 = [c for c in of(p, RouteChange) if c.table == 10001]
    assert {c.ifname for c in table_10001} == {"eth2"}


# ---------------------------------------------------------------- convergence


@pytest.mark.parametrize(
    "config",
    [Config(), Config(mtu=9001), Config(ipv6=False), Config(table_base=20000, priority_base=500)],
)
def test_second_plan_after_applying_is_empty(config: Config) -> None:
    inst = vm(P, B, C6)
    state = converged(inst, config, BOOT_STATE)
    p = plan(inst, config, state)
    assert p.changes == ()
    assert all(p.in_sync(e.mac) for e in inst.enis)


def test_removed_ip_deletes_exactly_its_rule_and_address() -> None:
    state = converged(vm(P, B, C), Config(), BOOT_STATE)
    c_less = make_eni(MAC3, 2, ["10.0.2.10"], "10.0.2.0/24")
    p = plan(vm(P, B, c_less), Config(), state)
    assert set(p.changes) == {
        RuleChange("del", 4, 10003, 10002, h("10.0.2.11"), eni=MAC3),
        AddrChange("del", 4, "eth2", ip("10.0.2.11"), 32, eni=MAC3),
    }
    # the rule goes first: no moment where a rule points at an IP the host no longer has
    assert isinstance(p.changes[0], RuleChange)
    assert plan(vm(P, B, c_less), Config(), applied(state, p.changes)).changes == ()


def test_removed_eni_deletes_its_rules_routes_addresses_and_group_only() -> None:
    state = converged(vm(P, B, C), Config(), BOOT_STATE)
    p = plan(vm(P, B), Config(), state)
    assert rule_keys(of(p, RuleChange)) == {
        (10003, 10002, h("10.0.2.10"), None),
        (10003, 10002, h("10.0.2.11"), None),
    }
    assert route_keys(of(p, RouteChange)) == {
        (10002, net("10.0.2.0/24"), 4, None),
        (10002, DEFAULT4, 4, ip("10.0.2.1")),
    }
    assert addr_keys(of(p, AddrChange)) == {(4, ip("10.0.2.10"), 32), (4, ip("10.0.2.11"), 32)}
    assert of(p, LinkChange) == [LinkChange(4, "eth2", group=0)]
    assert len(p.changes) == 7 and len(deletes(p)) == 7
    after = applied(state, p.changes)
    assert after.link(4) == replace(ETH2, group=0, up=True)  # left up: only the group changes
    assert plan(vm(P, B), Config(), after).changes == ()


def test_detached_eni_whose_link_is_gone_loses_its_rules() -> None:
    state = converged(vm(P, B, C), Config(), BOOT_STATE)
    # detach: the kernel removes the link, its addresses and its routes; rules stay
    gone = replace(
        state,
        links=tuple(link for link in state.links if link.index != 4),
        addrs=tuple(a for a in state.addrs if a.index != 4),
        routes=tuple(r for r in state.routes if r.oif != 4),
    )
    p = plan(vm(P, B), Config(), gone)
    assert rule_keys(p.changes) == {  # type: ignore[arg-type]
        (10003, 10002, h("10.0.2.10"), None),
        (10003, 10002, h("10.0.2.11"), None),
    }
    assert {c.op for c in p.changes} == {"del"}


def test_ip_moving_between_enis_adds_before_it_deletes() -> None:
    state = converged(vm(P, B, C), Config(), BOOT_STATE)
    p_moved = make_eni(MAC1, 0, ["10.0.1.10"], "10.0.1.0/24", primary=True)
    b_moved = make_eni(MAC2, 1, ["10.0.1.30", "10.0.1.20"], "10.0.1.0/24")
    p = plan(vm(p_moved, b_moved, C), Config(), state)
    assert set(p.changes) == {
        AddrChange("add", 3, "eth1", ip("10.0.1.20"), 32, eni=MAC2, metric=PROTO),
        RuleChange("add", 4, 10002, 10001, h("10.0.1.20"), eni=MAC2),
        RuleChange("del", 4, 10001, 10000, h("10.0.1.20"), eni=MAC1),
        AddrChange("del", 2, "eth0", ip("10.0.1.20"), 32, eni=MAC1),
    }
    ops = [c.op for c in p.changes]
    assert ops == ["add", "add", "del", "del"]


# ---------------------------------------------------------------- incomplete metadata


def test_unsettled_eni_withholds_every_removal_but_still_adds() -> None:
    state = converged(vm(P, C), Config(), BOOT_STATE)
    # metadata now lists B (settled) and a just-attached ENI, and no longer C's second IP
    c_less = make_eni(MAC3, 2, ["10.0.2.10"], "10.0.2.0/24")
    inst = vm(P, B, c_less, unsettled=[Unsettled("0e:00:00:00:00:09", "no private IP listed yet")])
    p = plan(inst, Config(), state)
    assert p.removals_withheld
    assert deletes(p) == []
    assert (3, ip("10.0.1.30"), 32) in addr_keys(of(p, AddrChange))
    assert (10002, 10001, h("10.0.1.30"), None) in rule_keys(of(p, RuleChange))
    assert any("0e:00:00:00:00:09" in note for note in p.notes)
    # the same metadata once settled: the removal happens
    settled = plan(vm(P, B, c_less), Config(), state)
    assert not settled.removals_withheld
    assert (10003, 10002, h("10.0.2.11"), None) in rule_keys(of(settled, RuleChange, "del"))


def test_unsettled_eni_withholds_group_reset_of_a_removed_eni() -> None:
    state = converged(vm(P, B, C), Config(), BOOT_STATE)
    p = plan(vm(P, B, unsettled=[Unsettled(MAC3, "device-number reads 0")]), Config(), state)
    assert p.changes == ()


def test_listed_eni_whose_link_is_absent_keeps_its_rules() -> None:
    state = converged(vm(P, B, C), Config(), BOOT_STATE)
    renamed_away = replace(
        state,
        links=tuple(link for link in state.links if link.index != 4),
        addrs=tuple(a for a in state.addrs if a.index != 4),
    )
    p = plan(vm(P, B, C), Config(), renamed_away)
    assert p.changes == ()
    assert any(MAC3 in note and "no interface" in note for note in p.notes)
    assert [e.link for e in p.enis if e.eni.mac == MAC3] == [None]


# ---------------------------------------------------------------- what is not ours


def test_foreign_addresses_are_never_removed() -> None:
    state = replace(
        BOOT_STATE,
        addrs=(
            *BOOT_STATE.addrs,
            Addr(2, ip("10.0.1.99"), 24, 0),  # an administrator's address, proto 0
            Addr(2, ip("fe80::c:ff:fe00:1"), 64, None),
            Addr(3, ip("192.168.50.1"), 24, 2),  # another tool's (proto kernel_lo)
            Addr(5, ip("172.17.0.2"), 16, None),
        ),
    )
    p = plan(vm(P, B, C), Config(), state)
    assert deletes(p) == []
    assert not any(isinstance(c, AddrChange) and c.ip == ip("10.0.1.10") for c in p.changes)


def test_foreign_addresses_survive_removal_of_their_eni() -> None:
    state = converged(vm(P, B, C), Config(), BOOT_STATE)
    state = replace(state, addrs=(*state.addrs, Addr(4, ip("192.168.7.1"), 24, None)))
    p = plan(vm(P, B), Config(), state)
    assert addr_keys(of(p, AddrChange)) == {(4, ip("10.0.2.10"), 32), (4, ip("10.0.2.11"), 32)}


def test_deletes_only_what_the_state_lists_as_ours() -> None:
    state = converged(vm(P, B, C), Config(), BOOT_STATE)
    p = plan(vm(P), Config(), state)
    for c in of(p, RuleChange, "del"):
        assert c.key() in state.rules
    for c in of(p, RouteChange, "del"):
        assert Route(c.family, c.table, c.dst, c.oif, c.gateway) in state.routes
    for c in of(p, AddrChange, "del"):
        assert Addr(c.index, c.ip, c.prefixlen, PROTO, PROTO) in state.addrs
    # the shared rule and the primary's things stay
    assert (10000, MAIN, None, G) not in rule_keys(of(p, RuleChange))
    assert not [c for c in p.changes if getattr(c, "index", None) == 2]


def test_our_address_on_a_link_that_is_no_eni_is_deleted() -> None:
    stray = Link(6, "ens9", "0e:00:00:00:00:09", 0, True, 1500)
    state = converged(vm(P, B, C), Config(), BOOT_STATE)
    state = replace(
        state,
        links=(*state.links, stray),
        addrs=(*state.addrs, Addr(6, ip("10.0.3.10"), 32, PROTO)),
    )
    p = plan(vm(P, B, C), Config(), state)
    assert p.changes == (AddrChange("del", 6, "ens9", ip("10.0.3.10"), 32, eni=""),)


def test_without_address_protocols_our_metric_marks_our_addresses() -> None:
    # A kernel that keeps no address protocols (before 5.18) kept the metric we sent.
    state = applied(BOOT_STATE, plan(vm(P, B, C), Config(), BOOT_STATE).changes, proto=None)
    assert all(a.proto is None for a in state.addrs)
    old_kernel = replace(state, addr_proto_supported=False)
    p = plan(vm(P, B), Config(), old_kernel)
    assert addr_keys(of(p, AddrChange, "del")) == {
        (4, ip("10.0.2.10"), 32),
        (4, ip("10.0.2.11"), 32),
    }
    assert len(of(p, RuleChange, "del")) == 2
    assert plan(vm(P, B), Config(), applied(old_kernel, p.changes, proto=None)).changes == ()
    # the note says how addresses are told apart, and warns of nothing
    assert p.notes == (
        "this kernel keeps no address protocols: eni-guest's addresses are recognised by "
        "their metric 229 (host addresses without a protocol)",
    )


def test_without_either_mark_unlisted_addresses_stay_with_a_note() -> None:
    # An eni-guest without address metrics on such a kernel (or a kernel before 4.18, which
    # keeps neither mark) left addresses that nothing tells from someone else's.
    state = converged(vm(P, B, C), Config(), BOOT_STATE)
    unmarked = replace(state, addrs=tuple(replace(a, proto=None, metric=0) for a in state.addrs))
    p = plan(vm(P, B), Config(), unmarked)
    assert of(p, AddrChange) == []
    assert len(of(p, RuleChange, "del")) == 2  # rules and routes still carry our marks
    assert len(p.notes) == 1
    assert "keeps neither" in p.notes[0] and "never removed" in p.notes[0]
    assert "10.0.1.20 dev eth0, 10.0.1.30 dev eth1" in p.notes[0]  # the listed ones, named
    # on a kernel that shows protocols, an unmarked listed address is someone else's (the
    # primary's DHCPv6 address): nothing to say
    assert plan(vm(P, B), Config(), replace(unmarked, addr_proto_supported=True)).notes == ()


def test_vlan_and_bridge_with_an_enis_mac_are_not_the_eni() -> None:
    vlan = Link(6, "eth1.100", MAC2, 0, True, 1500, kind="vlan")
    bridge = Link(7, "br0", MAC1, 0, True, 1500, kind="bridge")
    macvlan = Link(8, "mv0", MAC3, 0, True, 1500, kind="macvlan")
    state = replace(BOOT_STATE, links=(vlan, bridge, macvlan, *BOOT_STATE.links))
    p = plan(vm(P, B, C), Config(), state)
    assert [e.link.name if e.link else None for e in p.enis] == ["eth0", "eth1", "eth2"]
    assert p.notes == ()
    touched = {getattr(c, "index", None) for c in p.changes} | {
        getattr(c, "oif", None) for c in p.changes
    }
    assert not touched & {6, 7, 8}


def test_link_enslaved_to_a_bond_is_left_alone_with_a_note() -> None:
    bond = Link(7, "bond0", MAC2, 0, True, 1500, kind="bond")
    slave = replace(ETH1, master=7)
    state = replace(BOOT_STATE, links=(LO, ETH0, slave, ETH2, DOCKER0, bond))
    p = plan(vm(P, B, C), Config(), state)
    touched = {getattr(c, "index", None) for c in p.changes} | {
        getattr(c, "oif", None) for c in p.changes
    }
    assert not touched & {3, 7}
    assert not any(c.eni == MAC2 for c in p.changes)
    assert any("eth1" in note and "enslaved" in note for note in p.notes)
    assert [e.link for e in p.enis if e.eni.mac == MAC2] == [None]


def test_link_enslaved_after_configuration_keeps_what_metadata_still_lists() -> None:
    # Property 9 of docs/routing.md: removal only when metadata no longer lists the IP or ENI;
    # and the note promises the link is "left alone".
    state = converged(vm(P, B, C), Config(), BOOT_STATE)
    bond = Link(7, "bond0", MAC2, 0, True, 1500, kind="bond")
    state = replace(
        state,
        links=tuple(replace(x, master=7) if x.index == 3 else x for x in state.links) + (bond,),
    )
    p = plan(vm(P, B, C), Config(), state)
    assert any("enslaved" in note for note in p.notes)
    assert deletes(p) == [], [c.describe() for c in p.changes]


def test_eni_mac_on_two_links_keeps_what_metadata_still_lists() -> None:
    # Which link is the ENI cannot be told; like an absent link, nothing of it may be removed
    # while metadata still lists it (property 9 of docs/routing.md).
    state = converged(vm(P, B, C), Config(), BOOT_STATE)
    twin = Link(6, "macsec0", MAC3, 0, True, 1468, kind="macsec")
    state = replace(state, links=(*state.links, twin))
    p = plan(vm(P, B, C), Config(), state)
    assert any(MAC3 in note and "several" in note for note in p.notes)
    assert deletes(p) == [], [c.describe() for c in p.changes]


# ---------------------------------------------------------------- settings and details


def test_ipv6_disabled_plans_no_ipv6_changes() -> None:
    with_v6 = plan(vm(P, B, C6), Config(), BOOT_STATE)
    v6 = [c for c in with_v6.changes if getattr(c, "family", None) == 6 or _v6_addr(c)]
    assert rule_keys(c for c in v6 if isinstance(c, RuleChange)) == {
        (10000, MAIN, None, G),
        (10003, 10002, h("2600:1f18:1:2::10"), None),
    }
    assert route_keys(c for c in v6 if isinstance(c, RouteChange)) == {
        (10002, net("2600:1f18:1:2::/64"), 4, None),
        (10002, DEFAULT6, 4, ip("2600:1f18:1:2::1")),
    }
    assert addr_keys(c for c in v6 if isinstance(c, AddrChange)) == {
        (4, ip("2600:1f18:1:2::10"), 128)
    }

    without = plan(vm(P, B, C6), Config(ipv6=False), BOOT_STATE)
    assert [c for c in without.changes if getattr(c, "family", None) == 6 or _v6_addr(c)] == []
    assert len(without.changes) == len(with_v6.changes) - len(v6)


def _v6_addr(c: Change) -> bool:
    return isinstance(c, AddrChange) and c.ip.version == 6


def test_eni_mtu_beats_the_global_one_and_the_primary_keeps_its_own() -> None:
    p = plan(vm(replace(P, mtu=1500), replace(B, mtu=1450), C), Config(mtu=9001), BOOT_STATE)
    assert {c.ifname: c.mtu for c in of(p, LinkChange)} == {
        "eth0": None,  # 9001 stays: the primary's MTU is its DHCP client's
        "eth1": 1450,
        "eth2": 9001,
    }
    assert [w for w in p.warnings if "MTU" in w] == [
        "primary ENI eth0 has MTU 9001, its metadata or [[eni]] table says 1500: left alone, "
        "the primary's MTU is its DHCP client's (set it in the distro's network configuration)"
    ]


def test_global_mtu_below_1280_is_not_set_on_an_eni_with_ipv6() -> None:
    p = plan(vm(P, B, C6), Config(mtu=1200), BOOT_STATE)
    assert {c.ifname: c.mtu for c in of(p, LinkChange)} == {
        "eth0": None,
        "eth1": 1200,
        "eth2": None,
    }
    assert f"mtu = 1200 is not set on eth2 ({C6.eni_id}): it has IPv6 addresses" in (
        " ".join(p.warnings)
    )


def test_mtu_is_set_on_secondaries_only() -> None:
    state = replace(BOOT_STATE, links=(LO, ETH0, replace(ETH1, mtu=9001), ETH2, DOCKER0))
    p = plan(vm(P, B, C), Config(mtu=9001), state)
    assert {c.ifname: c.mtu for c in of(p, LinkChange)} == {
        "eth0": None,
        "eth1": None,
        "eth2": 9001,
    }
    assert (
        plan(vm(P, B, C), Config(), state).changes
        == plan(vm(P, B, C), Config(), BOOT_STATE).changes
    )


def test_gateway_change_is_one_route_replace() -> None:
    state = converged(vm(P, B, C), Config(), BOOT_STATE)
    new_gw = make_eni(MAC3, 2, ["10.0.2.10", "10.0.2.11"], "10.0.2.0/24", "10.0.2.254")
    p = plan(vm(P, B, new_gw), Config(), state)
    assert p.changes == (
        RouteChange("replace", 10002, DEFAULT4, 4, "eth2", ip("10.0.2.254"), eni=MAC3),
    )


def test_primary_in_a_foreign_group_is_not_regrouped() -> None:
    # The primary link's group is only set while it is 0; a group some other tool gave it is
    # left as it is, with a warning on every run because ENI routing cannot work that way
    # (the secondaries are still put in G).
    state = replace(
        BOOT_STATE,
        links=(LO, replace(ETH0, group=5), replace(ETH1, group=5), ETH2, DOCKER0),
    )
    p = plan(vm(P, B, C), Config(), state)
    assert not [c for c in of(p, LinkChange) if c.index == 2]
    assert LinkChange(3, "eth1", group=G, up=True, eni=MAC2) in of(p, LinkChange)
    assert len(p.warnings) == 1
    assert "eth0" in p.warnings[0] and "group 5" in p.warnings[0]


def test_primary_already_in_our_group_is_left_alone() -> None:
    state = replace(BOOT_STATE, links=(LO, replace(ETH0, group=G), ETH1, ETH2, DOCKER0))
    p = plan(vm(P, B, C), Config(), state)
    assert not [c for c in of(p, LinkChange) if c.index == 2]


def test_tables_and_priorities_follow_the_configured_bases() -> None:
    card1 = make_eni(MAC3, 1, ["10.0.2.10"], "10.0.2.0/24", card=1)
    config = Config(table_base=20000, priority_base=5000, interface_group=77)
    p = plan(vm(P, B, card1), config, BOOT_STATE)
    assert rule_keys(of(p, RuleChange)) == {
        (5000, MAIN, None, 77),
        (5001, 20000, h("10.0.1.10"), None),
        (5001, 20000, h("10.0.1.20"), None),
        (5002, 20001, h("10.0.1.30"), None),
        (5066, 20065, h("10.0.2.10"), None),
    }
    assert {c.table for c in of(p, RouteChange)} == {20000, 20001, 20065}
    assert {c.group for c in of(p, LinkChange)} == {77}


def test_delegated_prefix_gets_a_rule_and_no_address() -> None:
    c_pfx = make_eni(MAC3, 2, ["10.0.2.10"], "10.0.2.0/24", prefixes=["10.0.2.48/28"])
    p = plan(vm(P, B, c_pfx), Config(), BOOT_STATE)
    assert (10003, 10002, net("10.0.2.48/28"), None) in rule_keys(of(p, RuleChange))
    assert not any(isinstance(c, AddrChange) and c.ip in net("10.0.2.48/28") for c in p.changes)
    assert "rule add from 10.0.2.48/28 lookup 10002 priority 10003" in [
        c.describe() for c in p.changes
    ]


def test_in_sync_per_eni() -> None:
    fresh = plan(vm(P, B, C), Config(), BOOT_STATE)
    assert not any(fresh.in_sync(m) for m in (MAC1, MAC2, MAC3))
    half = converged(vm(P, B), Config(), BOOT_STATE)
    p = plan(vm(P, B, C), Config(), half)
    assert p.in_sync(MAC1) and p.in_sync(MAC2)
    assert not p.in_sync(MAC3)


def test_describe_reads_like_ip_commands() -> None:
    p = plan(vm(P, B, C6), Config(mtu=9001), BOOT_STATE)
    text = [c.describe() for c in p.changes]
    for expected in [
        "link set dev eth0 group 229",
        "link set dev eth1 up group 229 mtu 9001",
        "addr add 10.0.1.20/32 dev eth0 metric 229 noprefixroute",
        "addr add 2600:1f18:1:2::10/128 dev eth2 metric 229 noprefixroute nodad",
        "route add 10.0.1.0/24 dev eth1 scope link table 10001",
        "route add default via 10.0.2.1 dev eth2 onlink table 10002",
        "route add 2600:1f18:1:2::/64 dev eth2 scope link table 10002",
        "route add default via 2600:1f18:1:2::1 dev eth2 onlink table 10002",
        "rule add from all lookup main suppress_ifgroup 229 priority 10000",
        "rule add from 10.0.1.20 lookup 10000 priority 10001",
        "rule add from 10.0.1.30 lookup 10001 priority 10002",
        "rule add from 2600:1f18:1:2::10 lookup 10002 priority 10003",
    ]:
        assert expected in text
    state = converged(vm(P, B, C6), Config(), BOOT_STATE)
    gone = [c.describe() for c in plan(vm(P, B), Config(), state).changes]
    for expected in [
        "rule del from 10.0.2.11 lookup 10002 priority 10003",
        "addr del 10.0.2.11/32 dev eth2",
        "route del default via 10.0.2.1 dev eth2 onlink table 10002",
        "link set dev eth2 group 0",
    ]:
        assert expected in gone


def test_an_unlisted_ip_of_ours_on_a_link_twice_goes_with_both_prefix_lengths() -> None:
    # The kernel keeps one IPv4 address twice on a link when the prefix lengths differ; the
    # planner tells addresses apart by link and IP, so each of the two must still be removed
    # (and the DHCP client's, unmarked, still never).
    state = converged(vm(P, B, C), Config(), BOOT_STATE)
    twice = (Addr(4, ip("10.0.2.99"), 32, PROTO), Addr(4, ip("10.0.2.99"), 24, PROTO))
    state = replace(state, addrs=(*state.addrs, *twice))
    gone = [c.describe() for c in plan(vm(P, B, C), Config(), state).changes]
    assert gone == ["addr del 10.0.2.99/24 dev eth2", "addr del 10.0.2.99/32 dev eth2"]


@pytest.mark.parametrize(
    "text",
    ["0.0.0.0", "10.0.1.20", "10.0.1.0", "100.64.0.1", "169.254.169.254", "255.255.255.255",
     "2600:1f18:1:2::10", "::", "::ffff:10.0.1.20", "fe80::1", "2001:db8:0:0:1:0:0:1"],
)  # fmt: skip
def test_the_logged_address_text_is_the_one_ip_and_str_write(text: str) -> None:
    # The logs and --dry-run write IPv4 through inet_ntoa (changes.ip_text): every address
    # must read as str() writes it, so a logged line given to `ip` makes the same change.
    addr = ip_address(text)
    assert ip_text(addr) == str(addr)
    change = AddrChange("add", 3, "eth1", addr, addr.max_prefixlen)
    assert change.describe().startswith(f"addr add {addr}/{addr.max_prefixlen} dev eth1")


def test_a_changed_gateway_replaces_our_route_and_a_new_route_is_an_exclusive_add() -> None:
    # "add" is sent with NLM_F_EXCL, so a route someone else put in our table is never
    # overwritten; only a route of ours (seen in the state) is ever replaced.
    state = converged(vm(P, B, C), Config(), BOOT_STATE)
    moved = replace(C, ipv4_gateway=ip("10.0.2.254"))
    ops = {(c.op, c.dst.prefixlen) for c in of(plan(vm(P, B, moved), Config(), state), RouteChange)}
    assert ops == {("replace", 0)}
    assert {c.op for c in of(plan(vm(P, B, C), Config(), BOOT_STATE), RouteChange)} == {"add"}


def test_no_eni_is_in_sync_while_the_shared_rule_is_missing() -> None:
    # Without `lookup main suppress_ifgroup` every ENI's traffic to local bridges breaks.
    state = converged(vm(P, B, C), Config(), BOOT_STATE)
    assert all(plan(vm(P, B, C), Config(), state).in_sync(m) for m in (MAC1, MAC2, MAC3))
    broken = replace(state, rules=tuple(r for r in state.rules if r.suppress_ifgroup is None))
    p = plan(vm(P, B, C), Config(), broken)
    assert not any(p.in_sync(m) for m in (MAC1, MAC2, MAC3))


# ---------------------------------------------------------------- overlay configuration


def excluded_c(slot: Optional[int] = 2) -> Excluded:
    """ENI C as `exclude_enis` leaves it: kept apart by the model, with its listed IPs."""
    return Excluded(
        MAC3, "eni-c", "exclude_enis 'eni-c'", (ip("10.0.2.10"), ip("10.0.2.11")), (), slot
    )


def touches(p: Plan, index: int) -> list[Change]:
    return [
        c for c in p.changes if getattr(c, "index", None) == index or getattr(c, "oif", 0) == index
    ]


def test_excluded_eni_is_not_configured() -> None:
    inst = replace(vm(P, B), excluded=(excluded_c(),))
    p = plan(inst, Config(), BOOT_STATE)
    assert touches(p, 4) == []  # eth2: not up, not grouped, no address
    assert not [c for c in p.changes if getattr(c, "table", None) == 10002]
    assert not [c for c in of(p, RuleChange) if c.src in (h("10.0.2.10"), h("10.0.2.11"))]
    assert [(x.excluded.mac, x.link, x.table) for x in p.excluded] == [(MAC3, ETH2, 10002)]
    assert any("eni-c" in n and "left alone" in n for n in p.notes)


def test_excluded_eni_keeps_everything_eni_guest_had_configured() -> None:
    state = converged(vm(P, B, C), Config(), BOOT_STATE)
    # even when metadata no longer lists one of its IPs, and with an unknowable slot
    for x in (excluded_c(), replace(excluded_c(None), ips=(ip("10.0.2.10"),))):
        p = plan(replace(vm(P, B), excluded=(x,)), Config(), state)
        assert p.changes == (), [c.describe() for c in p.changes]


def test_excluded_interface_by_name_is_neither_configured_nor_stripped() -> None:
    config = Config(exclude_interfaces=("eth[2-9]",))
    fresh = plan(vm(P, B, C), config, BOOT_STATE)
    assert touches(fresh, 4) == []
    assert not [c for c in fresh.changes if c.eni == MAC3]
    ep = next(e for e in fresh.enis if e.eni.mac == MAC3)
    assert ep.link == ETH2 and ep.excluded == "interface eth2 matches exclude_interfaces 'eth[2-9]'"
    assert any("eth2 matches exclude_interfaces" in n for n in fresh.notes)
    # configured before the exclusion: nothing of it goes, also once metadata drops an IP
    state = converged(vm(P, B, C), Config(), BOOT_STATE)
    c_less = make_eni(MAC3, 2, ["10.0.2.10"], "10.0.2.0/24")
    assert plan(vm(P, B, c_less), config, state).changes == ()
    # and once metadata no longer lists the ENI at all
    assert plan(vm(P, B), config, state).changes == ()


def test_excluded_interface_that_is_no_eni_keeps_our_address_and_group() -> None:
    stray = Link(6, "cni0", "0e:00:00:00:00:09", G, True, 1500)
    state = converged(vm(P, B, C), Config(), BOOT_STATE)
    state = replace(
        state,
        links=(*state.links, stray),
        addrs=(*state.addrs, Addr(6, ip("10.0.3.10"), 32, PROTO)),
        routes=(*state.routes, Route(4, 10009, net("10.0.3.0/24"), 6)),
        rules=(*state.rules, Rule(4, 10010, 10009, h("10.0.3.10"))),
    )
    without = plan(vm(P, B, C), Config(), state)
    assert len(touches(without, 6)) == 3  # address, route, group: all ours, all removed
    p = plan(vm(P, B, C), Config(exclude_interfaces=("cni*",)), state)
    assert p.changes == (), [c.describe() for c in p.changes]


def test_excluded_ips_get_no_address_and_no_rule_and_keep_what_exists() -> None:
    # The model has taken 10.0.2.11 off C (exclude_ips = ["10.0.2.8/30"]).
    c_kept = make_eni(MAC3, 2, ["10.0.2.10"], "10.0.2.0/24")
    nets = (net("10.0.2.8/30"),)
    fresh = plan(replace(vm(P, B, c_kept), excluded_ips=nets), Config(), BOOT_STATE)
    assert ip("10.0.2.11") not in {c.ip for c in of(fresh, AddrChange)}
    assert h("10.0.2.11") not in {c.src for c in of(fresh, RuleChange)}
    # an address and rule of ours for it (made before the exclusion) stay, and so does a
    # CNI's address for it
    state = converged(vm(P, B, C), Config(), BOOT_STATE)
    state = replace(state, addrs=(*state.addrs, Addr(4, ip("10.0.2.9"), 32, None)))
    p = plan(replace(vm(P, B, c_kept), excluded_ips=nets), Config(), state)
    assert p.changes == (), [c.describe() for c in p.changes]
    # without the exclusion the same metadata removes them
    assert len(deletes(plan(vm(P, B, c_kept), Config(), state))) == 2


def test_a_kept_rule_keeps_the_table_it_leads_into() -> None:
    # exclude_ips covers every IP of C: the model leaves C with none, so C wants no table,
    # but the rules of its (excluded) IPs stay, and they must still lead somewhere.
    state = converged(vm(P, B, C), Config(), BOOT_STATE)
    c_empty = make_eni(MAC3, 2, [], "10.0.2.0/24")
    p = plan(replace(vm(P, B, c_empty), excluded_ips=(net("10.0.2.8/29"),)), Config(), state)
    assert p.changes == (), [c.describe() for c in p.changes]


def test_a_kept_rule_keeps_the_shared_rule_it_relies_on() -> None:
    state = converged(vm(P, C), Config(), BOOT_STATE)
    primary_only = make_eni(MAC1, 0, [], "10.0.1.0/24", primary=True)
    p = plan(replace(vm(primary_only), excluded=(excluded_c(),)), Config(), state)
    assert (10000, MAIN, None, G) not in rule_keys(of(p, RuleChange, "del"))
    assert not [c for c in of(p, RuleChange, "del") if c.table == 10002]


def test_excluded_primary_outside_our_group_is_a_warning() -> None:
    primary_x = Excluded(MAC1, "eni-p", "exclude_enis 'eni-p'", (ip("10.0.1.10"),), (), 0)
    p = plan(replace(vm(B, C), excluded=(primary_x,)), Config(), BOOT_STATE)
    assert touches(p, 2) == []
    (warning,) = p.warnings
    assert "primary ENI (eth0) is excluded" in warning and "ip link set eth0 group 229" in warning
    grouped = replace(BOOT_STATE, links=(LO, replace(ETH0, group=G), ETH1, ETH2, DOCKER0))
    assert plan(replace(vm(B, C), excluded=(primary_x,)), Config(), grouped).warnings == ()


def test_excluded_primary_ip_lets_the_next_one_be_added() -> None:
    # exclude_ips took 10.0.1.10, the DHCP address, off the primary: 10.0.1.20 is a secondary
    p_rest = replace(
        make_eni(MAC1, 0, ["10.0.1.20"], "10.0.1.0/24", primary=True), ipv4s_lack_primary_ip=True
    )
    p = plan(replace(vm(p_rest), excluded_ips=(h("10.0.1.10"),)), Config(), BOOT_STATE)
    assert addr_keys(of(p, AddrChange)) == {(2, ip("10.0.1.20"), 32)}
    assert h("10.0.1.10") not in {c.src for c in of(p, RuleChange)}


def overlaid(tmp_path: Path, toml: str, *raws: RawEni) -> tuple[Instance, Config]:
    path = tmp_path / "eni-guest.toml"
    path.write_text(toml)
    config = load(path, environ={})
    raw = RawInstance("aws", MAC1, "/latest/meta-data/mac", list(raws))
    return build_instance(raw, config), config


def raw_c(**kw: Any) -> RawEni:
    return RawEni(
        source=f"/latest/meta-data/network/interfaces/macs/{MAC3}/",
        mac=MAC3,
        eni_id="eni-c",
        device_number="2",
        ipv4s=["10.0.2.10", "10.0.2.11"],
        ipv4_subnets=["10.0.2.0/24"],
        **kw,
    )


RAW_P = RawEni("p/", MAC1, "eni-p", "0", ipv4s=["10.0.1.10"], ipv4_subnets=["10.0.1.0/24"])


def test_added_ips_are_configured_like_listed_ones(tmp_path: Path) -> None:
    inst, config = overlaid(
        tmp_path, '[[eni]]\nmatch = "eni-c"\nadd_ipv4s = ["10.0.2.12"]\n', RAW_P, raw_c()
    )
    state = converged(
        build_instance(RawInstance("aws", MAC1, "mac", [RAW_P, raw_c()])), Config(), BOOT_STATE
    )
    p = plan(inst, config, state)
    assert set(p.changes) == {
        AddrChange("add", 4, "eth2", ip("10.0.2.12"), 32, eni=MAC3, metric=PROTO),
        RuleChange("add", 4, 10003, 10002, h("10.0.2.12"), eni=MAC3),
    }


def test_gateway_and_prefix_overrides_change_the_tables_routes(tmp_path: Path) -> None:
    inst, config = overlaid(
        tmp_path,
        '[[eni]]\nmatch = "eni-c"\nipv4_subnet = "10.0.2.0/23"\nipv4_gateway = "10.0.2.254"\n',
        RAW_P,
        raw_c(),
    )
    state = converged(
        build_instance(RawInstance("aws", MAC1, "mac", [RAW_P, raw_c()])), Config(), BOOT_STATE
    )
    p = plan(inst, config, state)
    assert set(p.changes) == {
        RouteChange("add", 10002, net("10.0.2.0/23"), 4, "eth2", eni=MAC3),
        RouteChange("replace", 10002, DEFAULT4, 4, "eth2", ip("10.0.2.254"), eni=MAC3),
        RouteChange("del", 10002, net("10.0.2.0/24"), 4, "eth2", eni=MAC3),
    }
    assert plan(inst, config, applied(state, p.changes)).changes == ()


def test_ipv4_added_to_an_ipv6_only_primary_is_not_taken_for_its_dhcp_address(
    tmp_path: Path,
) -> None:
    raw_p = RawEni(
        "p/", MAC1, "eni-p", "0", ipv6s=["2001:db8:1::10"], ipv6_subnets=["2001:db8:1::/64"]
    )
    raw_p.ipv4_subnets = ["10.0.1.0/24"]
    inst, config = overlaid(
        tmp_path, '[[eni]]\nmatch = "eni-p"\nadd_ipv4s = ["10.0.1.20"]\n', raw_p
    )
    assert inst.enis[0].ipv4s_lack_primary_ip
    p = plan(inst, config, BOOT_STATE)
    assert (2, ip("10.0.1.20"), 32) in addr_keys(of(p, AddrChange))

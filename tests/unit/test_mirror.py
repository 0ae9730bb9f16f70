"""Administrators' main-table routes through an ENI are mirrored into its table (mirror.py).

The planner is pure: the kernel states are built by hand, with the administrator's routes in
`KernelState.main_routes` as the kernel read gives them (someone else's, table main).
"""

from __future__ import annotations

import socket
from dataclasses import replace
from typing import Any

from pyroute2_ref import NL
from test_plan import (
    BOOT_STATE,
    C6,
    DOCKER0,
    ETH0,
    ETH1,
    ETH2,
    MAC2,
    MAC3,
    B,
    P,
    converged,
    ip,
    net,
    of,
    vm,
)

from eni_guest.config import Config
from eni_guest.netlink_decode import main_route, parse_route
from eni_guest.plan import RouteChange, plan
from eni_guest.show import render_text, rows
from eni_guest.state import KernelState, MainRoute, Route

CFG = Config()
M = 229  # the mirror metric: the protocol number
BOOT, STATIC, KERNEL = 3, 4, 2  # route protocols of others
ADMIN = Route(4, 254, net("10.50.0.0/16"), ETH2.index, ip("10.0.2.5"))


def with_main(state: KernelState, *routes: Route, proto: int = BOOT) -> KernelState:
    return replace(state, main_routes=tuple(MainRoute(r, proto) for r in routes))


def mirrors(p) -> list[tuple[int, str, str, str]]:
    """(table, destination, gateway, op) of every mirror change."""
    return [
        (c.table, str(c.dst), str(c.gateway), c.op) for c in of(p, RouteChange) if c.metric == M
    ]


def configured(state: KernelState = BOOT_STATE) -> KernelState:
    return converged(vm(P, B, C6), CFG, state)


def test_admin_route_through_an_eni_is_mirrored_into_its_table_only() -> None:
    state = with_main(configured(), ADMIN)
    p = plan(vm(P, B, C6), CFG, state)
    (change,) = of(p, RouteChange)
    assert change == RouteChange(
        "add", 10002, net("10.50.0.0/16"), ETH2.index, "eth2", ip("10.0.2.5"), MAC3, M
    )
    assert change.describe() == (
        "route add 10.50.0.0/16 via 10.0.2.5 dev eth2 onlink table 10002 metric 229"
    )
    assert not p.in_sync(MAC3) and p.in_sync(MAC2)
    # nothing else: the other ENIs' tables do not get it, so their traffic to 10.50.0.0/16
    # still leaves through their own ENI
    assert [m.describe() for m in p.mirrors] == ["10.50.0.0/16 via 10.0.2.5 dev eth2"]
    after = converged(vm(P, B, C6), CFG, state)
    assert Route(4, 10002, net("10.50.0.0/16"), ETH2.index, ip("10.0.2.5"), M) in after.routes
    assert plan(vm(P, B, C6), CFG, after).changes == ()  # idempotent


def test_mirror_goes_when_the_original_goes_and_follows_a_new_gateway() -> None:
    state = converged(vm(P, B, C6), CFG, with_main(configured(), ADMIN))
    moved = with_main(state, replace(ADMIN, gateway=ip("10.0.2.6")))
    assert mirrors(plan(vm(P, B, C6), CFG, moved)) == [
        (10002, "10.50.0.0/16", "10.0.2.6", "replace")
    ]
    gone = replace(state, main_routes=())
    p = plan(vm(P, B, C6), CFG, gone)
    assert mirrors(p) == [(10002, "10.50.0.0/16", "10.0.2.5", "del")]
    assert of(p, RouteChange)[0].describe().endswith("table 10002 metric 229")
    assert plan(vm(P, B, C6), CFG, converged(vm(P, B, C6), CFG, gone)).changes == ()


def test_mirror_goes_with_its_eni_and_needs_a_complete_read_to_go() -> None:
    state = converged(vm(P, B, C6), CFG, with_main(configured(), ADMIN))
    p = plan(vm(P, B), CFG, state)  # ENI C no longer listed: its table goes, mirror included
    assert (10002, "10.50.0.0/16", "10.0.2.5", "del") in mirrors(p)
    # while the read is incomplete nothing is removed, the mirror neither
    from eni_guest.model import Unsettled

    lagging = vm(P, B, unsettled=[Unsettled(MAC3, "device-number 0")])
    assert mirrors(plan(lagging, CFG, state)) == []


def test_what_is_not_mirrored() -> None:
    routes = (
        Route(4, 254, net("0.0.0.0/0"), ETH1.index, ip("10.0.1.1")),  # stray DHCP default
        Route(4, 254, net("10.0.1.0/24"), ETH0.index),  # the primary's connected route
        Route(6, 254, net("fe80::/64"), ETH2.index),  # every link's link-local route
        Route(6, 254, net("2600:1f18:1:2::/64"), ETH2.index),  # C6's own IPv6 subnet
        Route(6, 254, net("2001:db8:9::/48"), ETH1.index, ip("fe80::1")),  # B has no IPv6
        Route(4, 254, net("192.168.0.0/16"), DOCKER0.index),  # not an ENI
        Route(4, 254, net("10.60.0.0/16"), 99, ip("10.0.2.5")),  # a link that is not here
    )
    state = with_main(configured(), *routes, proto=KERNEL)
    assert plan(vm(P, B, C6), CFG, state).changes == ()


def test_ipv6_route_and_device_route_and_lowest_metric() -> None:
    routes = (
        Route(6, 254, net("2001:db8:50::/48"), ETH2.index, ip("2600:1f18:1:2::5")),
        Route(4, 254, net("192.0.2.0/24"), ETH1.index),  # a device route: scope link
        Route(4, 254, net("10.70.0.0/16"), ETH2.index, ip("10.0.2.8"), metric=200),
        Route(4, 254, net("10.70.0.0/16"), ETH2.index, ip("10.0.2.7"), metric=100),
    )
    p = plan(vm(P, B, C6), CFG, with_main(configured(), *routes, proto=STATIC))
    assert sorted(mirrors(p)) == [
        (10001, "192.0.2.0/24", "None", "add"),
        (10002, "10.70.0.0/16", "10.0.2.7", "add"),
        (10002, "2001:db8:50::/48", "2600:1f18:1:2::5", "add"),
    ]
    device = next(c for c in of(p, RouteChange) if c.table == 10001)
    assert device.describe() == "route add 192.0.2.0/24 dev eth1 scope link table 10001 metric 229"
    no_v6 = Config(ipv6=False)
    state = with_main(converged(vm(P, B, C6), no_v6, BOOT_STATE), *routes, proto=STATIC)
    assert all(c.family == 4 for c in plan(vm(P, B, C6), no_v6, state).changes)


def test_own_route_at_a_mirrored_destination_takes_over() -> None:
    """Metadata gives ENI C a subnet an administrator had routed through it: the ENI's own
    subnet route (metric 0) is added, the mirror (metric 229) deleted, both in one plan."""
    dst = net("10.0.3.0/24")
    state = converged(vm(P, B, C6), CFG, with_main(configured(), replace(ADMIN, dst=dst)))
    grown = replace(C6, ipv4_subnets=(*C6.ipv4_subnets, dst))
    p = plan(vm(P, B, grown), CFG, state)
    assert [(c.op, c.metric) for c in of(p, RouteChange)] == [("add", 0), ("del", M)]
    assert plan(vm(P, B, grown), CFG, converged(vm(P, B, grown), CFG, state)).changes == ()


def test_show_lists_the_mirrors_of_each_eni() -> None:
    from eni_guest.agent import Result

    state = converged(vm(P, B, C6), CFG, with_main(configured(), ADMIN))
    instance = vm(P, B, C6)
    result = Result(instance, plan(instance, CFG, state), state)
    by_mac = {r["mac"]: r for r in rows(result)}
    assert by_mac[MAC3]["mirrored_routes"] == ["10.50.0.0/16 via 10.0.2.5 dev eth2"]
    assert by_mac[MAC3]["in_sync"] is True and by_mac[MAC2]["mirrored_routes"] == []
    text = render_text(result)
    assert "main-table route mirrored into table 10002: 10.50.0.0/16 via 10.0.2.5 dev eth2" in text


def _route_msg(attrs: list, **header: Any) -> bytes:
    msg = NL.rtmsg()
    for key, value in {"family": socket.AF_INET, "table": 254, "proto": 4, "type": 1}.items():
        msg[key] = header.get(key, value)
    msg["dst_len"] = header.get("dst_len", 0)
    msg["attrs"] = attrs
    msg.encode()
    return bytes(msg.data)


def test_main_table_routes_are_decoded_without_pyroute2() -> None:
    v4 = _route_msg(
        [("RTA_TABLE", 254), ("RTA_DST", "10.50.0.0"), ("RTA_OIF", 4), ("RTA_GATEWAY", "10.0.2.5")],
        dst_len=16,
    )
    assert main_route(v4) == (ADMIN, STATIC) == parse_route(v4)
    assert main_route(v4, {4}) == (ADMIN, STATIC) and main_route(v4, {3}) is None
    v6 = _route_msg(
        [("RTA_DST", "2001:db8:50::"), ("RTA_OIF", 4), ("RTA_PRIORITY", 1024)],
        family=socket.AF_INET6,
        dst_len=48,
    )
    assert main_route(v6) == (Route(6, 254, net("2001:db8:50::/48"), 4), STATIC)
    metric = _route_msg([("RTA_OIF", 4), ("RTA_PRIORITY", 100)], dst_len=0)
    assert main_route(metric) == (Route(4, 254, net("0.0.0.0/0"), 4, None, 100), STATIC)
    assert main_route(_route_msg([("RTA_OIF", 4)], table=10)) is None  # another table
    assert main_route(_route_msg([("RTA_OIF", 4)], type=6)) is None  # a blackhole
    assert main_route(_route_msg([("RTA_DST", "10.1.0.0")], dst_len=16)) is None  # no link
    assert main_route(v4[:20]) is None

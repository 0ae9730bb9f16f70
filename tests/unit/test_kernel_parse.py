"""Pure helpers of the kernel layer: netlink message parsing, address marks.

The kernel's messages are written with pyroute2's classes (pyroute2_ref.py), shaped the way
the kernel sends them in dumps.  The requests eni-guest sends are tested byte for byte in
test_netlink_encode.py.
"""

from __future__ import annotations

import socket
from ipaddress import ip_address, ip_network
from typing import Any, Optional

import pytest
from pyroute2_ref import NL

from eni_guest import kernel, netlink_decode
from eni_guest.config import Config
from eni_guest.plan import AddrChange
from eni_guest.state import Addr, Link, Route, Rule

RT_TABLE_COMPAT = 252  # what the kernel puts in the header for tables > 255


def encode(cls: Any, attrs: list, **header: Any) -> bytes:
    msg = cls()
    for key, value in header.items():
        msg[key] = value
    msg["attrs"] = attrs
    msg.encode()
    return bytes(msg.data)


def rule_msg(attrs: list, family: int = socket.AF_INET, **header: Any) -> bytes:
    header.setdefault("table", 0)
    header.setdefault("action", 1)
    return encode(NL.fibmsg, attrs, family=family, **header)


# ---------------------------------------------------------------- rules


def test_parse_our_per_ip_rule_in_a_table_above_255() -> None:
    data = rule_msg(
        [
            ("FRA_TABLE", 10001),
            ("FRA_PRIORITY", 10002),
            ("FRA_PROTOCOL", 229),
            ("FRA_SRC", "10.0.1.20"),
        ],
        src_len=32,
        table=RT_TABLE_COMPAT,
    )
    assert netlink_decode.parse_rule(data) == (
        Rule(4, 10002, 10001, ip_network("10.0.1.20/32")),
        229,
    )


def test_parse_shared_suppress_ifgroup_rule() -> None:
    data = rule_msg(
        [
            ("FRA_TABLE", 254),
            ("FRA_PRIORITY", 10000),
            ("FRA_PROTOCOL", 229),
            ("FRA_SUPPRESS_IFGROUP", 229),
        ],
        table=254,
    )
    assert netlink_decode.parse_rule(data) == (Rule(4, 10000, 254, None, suppress_ifgroup=229), 229)


def test_parse_ipv6_prefix_rule() -> None:
    data = rule_msg(
        [
            ("FRA_TABLE", 10002),
            ("FRA_PRIORITY", 10003),
            ("FRA_PROTOCOL", 229),
            ("FRA_SRC", "2600:1f18:1:2::"),
        ],
        family=socket.AF_INET6,
        src_len=80,
        table=RT_TABLE_COMPAT,
    )
    rule, proto = netlink_decode.parse_rule(data)  # type: ignore[misc]
    assert rule == Rule(6, 10003, 10002, ip_network("2600:1f18:1:2::/80"))
    assert proto == 229


def test_parse_kernel_rule_without_priority_or_protocol() -> None:
    # `0: from all lookup local`: the header's table, no FRA_PRIORITY, protocol absent
    data = rule_msg([], table=255)
    assert netlink_decode.parse_rule(data) == (Rule(4, 0, 255), 0)


@pytest.mark.parametrize(
    "selector",
    [
        ("FRA_DST", "10.0.2.0"),
        ("FRA_IIFNAME", "docker0"),
        ("FRA_FWMARK", 0x10),
    ],
)
def test_rules_with_selectors_we_never_write_are_not_ours(selector: tuple) -> None:
    data = rule_msg(
        [
            ("FRA_TABLE", 10001),
            ("FRA_PRIORITY", 10002),
            ("FRA_PROTOCOL", 229),
            ("FRA_SRC", "10.0.1.20"),
            selector,
        ],
        src_len=32,
        dst_len=24 if selector[0] == "FRA_DST" else 0,
        table=RT_TABLE_COMPAT,
    )
    assert netlink_decode.parse_rule(data) is None


# ---------------------------------------------------------------- routes


def test_parse_subnet_route_in_a_table_above_255() -> None:
    data = encode(
        NL.rtmsg,
        [("RTA_TABLE", 10001), ("RTA_DST", "10.0.2.0"), ("RTA_OIF", 4)],
        family=socket.AF_INET,
        dst_len=24,
        table=RT_TABLE_COMPAT,
        proto=229,
        scope=253,
        type=1,
    )
    assert netlink_decode.parse_route(data) == (Route(4, 10001, ip_network("10.0.2.0/24"), 4), 229)


def test_parse_default_routes_with_gateway() -> None:
    v4 = encode(
        NL.rtmsg,
        [("RTA_TABLE", 10002), ("RTA_OIF", 5), ("RTA_GATEWAY", "10.0.2.1")],
        family=socket.AF_INET,
        dst_len=0,
        table=RT_TABLE_COMPAT,
        proto=229,
        type=1,
    )
    assert netlink_decode.parse_route(v4) == (
        Route(4, 10002, ip_network("0.0.0.0/0"), 5, ip_address("10.0.2.1")),
        229,
    )
    v6 = encode(
        NL.rtmsg,
        [("RTA_TABLE", 10002), ("RTA_OIF", 5), ("RTA_GATEWAY", "2600:1f18:1:2::1")],
        family=socket.AF_INET6,
        dst_len=0,
        table=RT_TABLE_COMPAT,
        proto=229,
        type=1,
    )
    assert netlink_decode.parse_route(v6) == (
        Route(6, 10002, ip_network("::/0"), 5, ip_address("2600:1f18:1:2::1")),
        229,
    )


def test_parse_main_table_route_of_another_protocol() -> None:
    data = encode(
        NL.rtmsg,
        [("RTA_DST", "172.17.0.0"), ("RTA_OIF", 9)],
        family=socket.AF_INET,
        dst_len=16,
        table=254,
        proto=2,
        type=1,
    )
    assert netlink_decode.parse_route(data) == (Route(4, 254, ip_network("172.17.0.0/16"), 9), 2)


# ---------------------------------------------------------------- addresses


def test_parse_our_ipv4_address() -> None:
    data = encode(
        NL.ifaddrmsg,
        [("IFA_ADDRESS", "10.0.1.20"), ("IFA_LOCAL", "10.0.1.20"), ("IFA_PROTO", 229)],
        family=socket.AF_INET,
        prefixlen=32,
        index=3,
    )
    assert netlink_decode.parse_addr(data) == Addr(3, ip_address("10.0.1.20"), 32, 229)


def test_parse_address_without_protocol() -> None:
    data = encode(
        NL.ifaddrmsg,
        [("IFA_ADDRESS", "10.0.1.10"), ("IFA_LOCAL", "10.0.1.10")],
        family=socket.AF_INET,
        prefixlen=24,
        index=2,
    )
    assert netlink_decode.parse_addr(data) == Addr(2, ip_address("10.0.1.10"), 24, None)


def test_parse_point_to_point_address_uses_the_local_one() -> None:
    data = encode(
        NL.ifaddrmsg,
        [("IFA_ADDRESS", "10.8.0.1"), ("IFA_LOCAL", "10.8.0.2")],
        family=socket.AF_INET,
        prefixlen=32,
        index=9,
    )
    assert netlink_decode.parse_addr(data) == Addr(9, ip_address("10.8.0.2"), 32, None)


def test_parse_ipv6_address() -> None:
    data = encode(
        NL.ifaddrmsg,
        [("IFA_ADDRESS", "2600:1f18:1:2::10"), ("IFA_PROTO", 229)],
        family=socket.AF_INET6,
        prefixlen=128,
        index=4,
    )
    assert netlink_decode.parse_addr(data) == Addr(4, ip_address("2600:1f18:1:2::10"), 128, 229)


def addr_msg(ip: str, prefixlen: int, *marks: tuple) -> bytes:
    """An address as the kernel dumps it, with the marks it reports (IFA_PROTO, metric)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    attrs = [("IFA_ADDRESS", ip)] + ([("IFA_LOCAL", ip)] if family == socket.AF_INET else [])
    flags = [("IFA_FLAGS", 0x200)]  # noprefixroute, as eni-guest adds them
    return encode(
        NL.ifaddrmsg, attrs + flags + list(marks), family=family, prefixlen=prefixlen, index=3
    )


PROTO_229, METRIC_229 = ("IFA_PROTO", 229), ("IFA_RT_PRIORITY", 229)


# What a kernel dumps for an address and whether it is eni-guest's, for both kernel kinds:
# one that keeps address protocols (Linux 5.18 on) and one that drops them (4.18..5.17) but
# keeps the metric.  Without the protocol, the metric of a host address is the mark.
@pytest.mark.parametrize(
    ("data", "proto", "metric", "ours"),
    [
        # kernels that keep address protocols: what eni-guest adds carries both marks
        (addr_msg("10.0.1.20", 32, PROTO_229, METRIC_229), 229, 229, True),
        (addr_msg("2600:1f18:1:2::10", 128, PROTO_229, METRIC_229), 229, 229, True),
        # ... an earlier eni-guest's, protocol only
        (addr_msg("10.0.1.20", 32, PROTO_229), 229, 0, True),
        # ... another protocol with our metric: someone else's
        (addr_msg("10.0.1.20", 32, ("IFA_PROTO", 2), METRIC_229), 2, 229, False),
        # kernels that keep no address protocols: the same adds come back with the metric only
        (addr_msg("10.0.1.20", 32, METRIC_229), None, 229, True),
        (addr_msg("2600:1f18:1:2::10", 128, METRIC_229), None, 229, True),
        # ... another metric, or none (a DHCP client's, an earlier eni-guest's): not ours
        (addr_msg("10.0.1.20", 32, ("IFA_RT_PRIORITY", 100)), None, 100, False),
        (addr_msg("10.0.1.20", 32), None, 0, False),
        # ... our metric on a subnet address: eni-guest adds host addresses only
        (addr_msg("10.0.1.10", 24, METRIC_229), None, 229, False),
        (addr_msg("2600:1f18:1:2::10", 64, METRIC_229), None, 229, False),
    ],
)
def test_address_marks_decoded_and_recognised(
    data: bytes, proto: Optional[int], metric: int, ours: bool
) -> None:
    addr = netlink_decode.parse_addr(data)
    assert addr is not None
    assert (addr.proto, addr.metric) == (proto, metric)
    assert addr.marked(229) is ours
    assert addr.marked(230) is False  # another protocol setting: another agent's marks


def _addr(proto: Optional[int], metric: int = 0, ip: str = "10.0.1.20", plen: int = 32) -> Addr:
    return Addr(3, ip_address(ip), plen, proto, metric)


DHCP = _addr(None, 0, "10.0.1.10", 24)
LINK_LOCAL_NEW = _addr(3, 0, "fe80::1", 64)  # kernel_ll: what a protocol-keeping kernel says
LINK_LOCAL_OLD = _addr(None, 0, "fe80::1", 64)


@pytest.mark.parametrize(
    ("addrs", "kept"),
    [
        ((DHCP, LINK_LOCAL_NEW), True),  # the kernel's own link-local address has one
        ((DHCP, _addr(229, 229)), True),  # ours came back with its protocol
        ((DHCP, LINK_LOCAL_OLD, _addr(None, 229)), False),  # ours came back with the metric only
        ((DHCP, LINK_LOCAL_OLD), None),  # nothing of ours yet, no protocol anywhere: unknown
        ((DHCP, _addr(None, 100)), None),  # someone else's metric tells nothing
        ((), None),
    ],
)
def test_whether_the_kernel_keeps_address_protocols_is_read_from_the_dump(
    addrs: tuple, kept: Optional[bool]
) -> None:
    assert kernel.addr_protocols_kept(addrs, 229) is kept


def test_an_added_address_carries_both_marks() -> None:
    c = AddrChange("add", 3, "eth1", ip_address("10.0.1.20"), 32, metric=229)
    k = kernel.Kernel(Config())
    try:
        msg = NL.ifaddrmsg(k.encoder.request(c))
        msg.decode()
    finally:
        k.close()
    assert msg.get_attr("IFA_PROTO") == 229
    assert msg.get_attr("IFA_RT_PRIORITY") == 229
    assert msg.get_attr("IFA_FLAGS") == 0x200  # noprefixroute: the metric makes no route
    assert c.describe() == "addr add 10.0.1.20/32 dev eth1 metric 229 noprefixroute"


# ---------------------------------------------------------------- links


def test_parse_physical_link() -> None:
    data = encode(
        NL.ifinfmsg,
        [
            ("IFLA_IFNAME", "ens6"),
            ("IFLA_ADDRESS", "0E:00:00:00:00:02"),
            ("IFLA_GROUP", 229),
            ("IFLA_MTU", 9001),
        ],
        index=3,
        flags=1 | 0x40,  # IFF_UP | IFF_RUNNING
    )
    assert netlink_decode.parse_link(data) == Link(3, "ens6", "0e:00:00:00:00:02", 229, True, 9001)


def test_parse_link_down_with_kind_and_master() -> None:
    data = encode(
        NL.ifinfmsg,
        [
            ("IFLA_IFNAME", "eth1.100"),
            ("IFLA_ADDRESS", "0e:00:00:00:00:02"),
            ("IFLA_GROUP", 0),
            ("IFLA_MTU", 1500),
            ("IFLA_MASTER", 7),
            ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "vlan")]}),
        ],
        index=8,
        flags=0,
    )
    assert netlink_decode.parse_link(data) == Link(
        8, "eth1.100", "0e:00:00:00:00:02", 0, False, 1500, kind="vlan", master=7
    )

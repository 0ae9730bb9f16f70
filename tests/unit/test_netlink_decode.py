"""netlink_decode's struct decoders against pyroute2's: the same messages, the same values.

The messages are encoded with pyroute2's classes, shaped as the kernel sends them; the
reference decoders below are what eni-guest used before netlink_decode.py read messages with
`struct` (pyroute2's generic decoder, then the same field-by-field mapping into state values).
Every attribute the planner looks at is covered: rule selectors (a business's `to`, `fwmark`
with its mask, `uidrange`, `ipproto`, `dport`), a route's metric (IPv6's default 1024 read as
0) and preferred source, an address's marks (IFA_RT_PRIORITY, IFA_PROTO).
"""

from __future__ import annotations

import socket
from ipaddress import ip_address, ip_network
from typing import Any, Optional

import pytest
from pyroute2_ref import NL
from test_kernel_parse import encode  # pyroute2's encoding of one message

from eni_guest import netlink_decode
from eni_guest.state import Addr, ForeignRule, Route, Rule

AF4, AF6 = socket.AF_INET, socket.AF_INET6
FAMILY = {AF4: 4, AF6: 6}


def _decoded(cls: Any, data: bytes) -> Any:
    msg = cls(data)
    msg.decode()
    return msg


# ---------------------------------------------------------------- the reference (pyroute2)


def _range(value: Any) -> Optional[tuple[int, int]]:
    if value is None:
        return None
    first, last = str(value).split(":")
    return int(first), int(last)


def ref_rule(data: bytes) -> Optional[tuple[Rule, int]]:
    m = _decoded(NL.fibmsg, data)
    src = m.get_attr("FRA_SRC")
    dst, mark, uids = m.get_attr("FRA_DST"), m.get_attr("FRA_FWMARK"), m.get_attr("FRA_UID_RANGE")
    proto, dports = m.get_attr("FRA_IP_PROTO"), m.get_attr("FRA_DPORT_RANGE")
    if m.get_attr("FRA_IIFNAME") or (src and (dst or mark or uids or proto or dports)):
        return None
    mask = m.get_attr("FRA_FWMASK")
    rule = Rule(
        family=FAMILY.get(m["family"], 0),
        priority=m.get_attr("FRA_PRIORITY") or 0,
        table=m.get_attr("FRA_TABLE") or m["table"],
        src=ip_network(f"{src}/{m['src_len']}") if src else None,
        suppress_ifgroup=m.get_attr("FRA_SUPPRESS_IFGROUP"),
        dst=ip_network(f"{dst}/{m['dst_len']}") if dst else None,
        fwmark=(mark, 0xFFFFFFFF if mask is None else mask) if mark else None,
        uids=_range(uids),
        ipproto=proto or None,
        dports=_range(dports),
    )
    return rule, m.get_attr("FRA_PROTOCOL") or 0


def ref_foreign_rule(data: bytes) -> Optional[ForeignRule]:
    d = netlink_decode
    m = _decoded(NL.fibmsg, data)
    src = m.get_attr("FRA_SRC")
    if not src or not m["src_len"]:
        return None
    narrowed = ["not"] if m["flags"] & d.FIB_RULE_INVERT else []
    if m["tos"]:
        narrowed.append(f"tos {m['tos']:#x}")
    for name, value in m["attrs"]:
        if name in d._NOT_SELECTORS:
            continue
        if name == "FRA_SUPPRESS_PREFIXLEN" and value == d.NO_SUPPRESS_PREFIXLEN:
            continue
        word = d._SELECTOR_WORDS.get(name, str(name).lower())
        text = f"{word} {value}" if name in ("FRA_DST", "FRA_IIFNAME", "FRA_OIFNAME") else word
        if name == "FRA_DST":
            text = f"to {value}/{m['dst_len']}"
        if text not in narrowed:
            narrowed.append(text)
    return ForeignRule(
        family=FAMILY.get(m["family"], 0),
        priority=m.get_attr("FRA_PRIORITY") or 0,
        src=ip_network(f"{src}/{m['src_len']}", strict=False),
        action=d.RULE_ACTIONS.get(m["action"], f"action {m['action']}"),
        table=m.get_attr("FRA_TABLE") or m["table"],
        narrowed_by=tuple(narrowed),
    )


def ref_route(data: bytes) -> tuple[Route, int]:
    m = _decoded(NL.rtmsg, data)
    fam = FAMILY.get(m["family"], 0)
    dst = m.get_attr("RTA_DST") or ("0.0.0.0" if fam == 4 else "::")
    gw, prefsrc = m.get_attr("RTA_GATEWAY"), m.get_attr("RTA_PREFSRC")
    metric = m.get_attr("RTA_PRIORITY") or 0
    route = Route(
        family=fam,
        table=m.get_attr("RTA_TABLE") or m["table"],
        dst=ip_network(f"{dst}/{m['dst_len']}"),
        oif=m.get_attr("RTA_OIF") or 0,
        gateway=ip_address(gw) if gw else None,
        metric=0 if fam == 6 and metric == 1024 else metric,
        prefsrc=ip_address(prefsrc) if prefsrc else None,
    )
    return route, m["proto"]


def ref_addr(data: bytes) -> Optional[Addr]:
    m = _decoded(NL.ifaddrmsg, data)
    text = m.get_attr("IFA_LOCAL") or m.get_attr("IFA_ADDRESS")
    if text is None:
        return None
    return Addr(
        index=m["index"],
        ip=ip_address(text),
        prefixlen=m["prefixlen"],
        proto=m.get_attr("IFA_PROTO"),
        metric=m.get_attr("IFA_RT_PRIORITY") or 0,
    )


# ---------------------------------------------------------------- rules

BASE = [("FRA_TABLE", 12048), ("FRA_PRIORITY", 12049), ("FRA_PROTOCOL", 229)]
RULES = {
    "to": (BASE + [("FRA_DST", "198.51.100.0")], dict(dst_len=24)),
    "to v6": (BASE + [("FRA_DST", "2001:db8::")], dict(dst_len=32, family=AF6)),
    "fwmark with mask": (BASE + [("FRA_FWMARK", 0x10), ("FRA_FWMASK", 0xFF)], {}),
    "fwmark alone": (BASE + [("FRA_FWMARK", 7)], {}),
    "uidrange": (BASE + [("FRA_UID_RANGE", "1000:1999")], {}),
    "ipproto": (BASE + [("FRA_IP_PROTO", 17)], {}),
    "dport": (BASE + [("FRA_IP_PROTO", 6), ("FRA_DPORT_RANGE", "443:443")], {}),
    "dport range": (BASE + [("FRA_IP_PROTO", 6), ("FRA_DPORT_RANGE", "8000:8099")], {}),
    "all of them": (
        BASE
        + [
            ("FRA_DST", "203.0.113.7"),
            ("FRA_FWMARK", 0x100),
            ("FRA_FWMASK", 0xF00),
            ("FRA_UID_RANGE", "0:0"),
            ("FRA_IP_PROTO", 6),
            ("FRA_DPORT_RANGE", "22:22"),
        ],
        dict(dst_len=32),
    ),
    "per-IP": (BASE + [("FRA_SRC", "10.0.1.20")], dict(src_len=32)),
    "shared": ([("FRA_TABLE", 254), ("FRA_PRIORITY", 10000), ("FRA_SUPPRESS_IFGROUP", 229)], {}),
    "source and to": (BASE + [("FRA_SRC", "10.0.1.20"), ("FRA_DST", "10.9.0.0")], {}),
    "source and fwmark": (BASE + [("FRA_SRC", "10.0.1.20"), ("FRA_FWMARK", 1)], {}),
    "source and uidrange": (BASE + [("FRA_SRC", "10.0.1.20"), ("FRA_UID_RANGE", "5:9")], {}),
    "source and dport": (BASE + [("FRA_SRC", "10.0.1.20"), ("FRA_DPORT_RANGE", "80:80")], {}),
    "iif": (BASE + [("FRA_IIFNAME", "eth0")], {}),
}


def rule_data(attrs: list, header: dict) -> bytes:
    header = {"family": AF4, "table": 252, "action": 1, **header}
    if any(name == "FRA_SRC" for name, _ in attrs):
        header.setdefault("src_len", 32)
    if any(name == "FRA_DST" for name, _ in attrs):
        header.setdefault("dst_len", 16)
    return encode(NL.fibmsg, attrs, **header)


@pytest.mark.parametrize("case", sorted(RULES))
def test_rule_decodes_as_pyroute2_decodes_it(case: str) -> None:
    data = rule_data(*RULES[case])
    assert netlink_decode.parse_rule(data) == ref_rule(data)


def test_business_rule_selectors_decoded() -> None:
    rule, proto = netlink_decode.parse_rule(rule_data(*RULES["all of them"]))
    assert proto == 229 and (rule.priority, rule.table) == (12049, 12048)
    assert rule.dst == ip_network("203.0.113.7/32")
    assert rule.fwmark == (0x100, 0xF00)
    assert rule.uids == (0, 0) and rule.ipproto == 6 and rule.dports == (22, 22)
    rule, _ = netlink_decode.parse_rule(rule_data(*RULES["fwmark alone"]))
    assert rule.fwmark == (7, 0xFFFFFFFF)  # no mask: all bits
    rule, _ = netlink_decode.parse_rule(rule_data(*RULES["uidrange"]))
    assert rule.uids == (1000, 1999) and rule.dst is None and rule.selects


FOREIGN = {
    "sport and dport": [("FRA_SRC", "10.0.1.20"), ("FRA_SPORT_RANGE", "1:2"),
                        ("FRA_DPORT_RANGE", "3:4"), ("FRA_IP_PROTO", 6)],
    "to and uidrange": [("FRA_SRC", "10.0.1.0"), ("FRA_DST", "10.9.0.0"),
                        ("FRA_UID_RANGE", "7:8")],
    "fwmark, mask and iif": [("FRA_SRC", "10.0.1.20"), ("FRA_FWMARK", 3), ("FRA_FWMASK", 3),
                             ("FRA_IIFNAME", "eth1")],
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(FOREIGN))
def test_foreign_rule_decodes_as_pyroute2_decodes_it(case: str) -> None:
    attrs = [("FRA_TABLE", 77), ("FRA_PRIORITY", 100)] + FOREIGN[case]
    data = rule_data(attrs, dict(src_len=24, table=77))
    ours = netlink_decode.foreign_rule_of(netlink_decode.decode_rule(data))
    assert ours is not None and ours == ref_foreign_rule(data)


# ---------------------------------------------------------------- routes


def route_data(family: int, attrs: list, dst_len: int = 0, table: int = 252) -> bytes:
    return encode(
        NL.rtmsg, attrs, family=family, dst_len=dst_len, table=table, proto=229, type=1, scope=0
    )


ROUTES = {
    "business route with prefsrc": (
        AF4,
        [("RTA_TABLE", 12048), ("RTA_DST", "198.51.100.0"), ("RTA_OIF", 4),
         ("RTA_GATEWAY", "10.0.2.1"), ("RTA_PREFSRC", "10.0.2.11")],
        24,
    ),
    "mirrored metric": (
        AF4,
        [("RTA_TABLE", 10002), ("RTA_DST", "10.50.0.0"), ("RTA_OIF", 4),
         ("RTA_GATEWAY", "10.0.2.5"), ("RTA_PRIORITY", 4229)],
        16,
    ),
    "v6 default metric": (
        AF6, [("RTA_TABLE", 10002), ("RTA_OIF", 4), ("RTA_PRIORITY", 1024)], 0,
    ),
    "v6 metric": (
        AF6,
        [("RTA_TABLE", 10002), ("RTA_DST", "2600:1f18:1:2::"), ("RTA_OIF", 4),
         ("RTA_PRIORITY", 300), ("RTA_PREFSRC", "2600:1f18:1:2::11")],
        64,
    ),
    "v6 gateway": (
        AF6, [("RTA_TABLE", 10002), ("RTA_OIF", 4), ("RTA_GATEWAY", "fe80::1")], 0,
    ),
    "no table attribute": (AF4, [("RTA_DST", "10.0.1.0"), ("RTA_OIF", 3)], 24),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(ROUTES))
def test_route_decodes_as_pyroute2_decodes_it(case: str) -> None:
    family, attrs, dst_len = ROUTES[case]
    table = 254 if case == "no table attribute" else 252
    data = route_data(family, attrs, dst_len, table)
    assert netlink_decode.parse_route(data) == ref_route(data)


def test_route_metric_and_prefsrc_decoded() -> None:
    route, proto = netlink_decode.parse_route(route_data(*ROUTES["business route with prefsrc"]))
    assert proto == 229 and route.prefsrc == ip_address("10.0.2.11") and route.metric == 0
    assert route.table == 12048 and route.dst == ip_network("198.51.100.0/24")
    route, _ = netlink_decode.parse_route(route_data(*ROUTES["mirrored metric"]))
    assert route.metric == 4229 and route.prefsrc is None
    route, _ = netlink_decode.parse_route(route_data(*ROUTES["v6 default metric"]))
    assert route.metric == 0  # the kernel's 1024
    route, _ = netlink_decode.parse_route(route_data(*ROUTES["v6 metric"]))
    assert route.metric == 300 and route.prefsrc == ip_address("2600:1f18:1:2::11")


# ---------------------------------------------------------------- addresses

ADDRS = {
    "both marks": (AF4, "10.0.1.20", 24, [("IFA_RT_PRIORITY", 229), ("IFA_PROTO", 229)]),
    "metric only": (AF4, "10.0.1.21", 32, [("IFA_RT_PRIORITY", 1229)]),
    "protocol only": (AF6, "2600:1f18:1:2::11", 128, [("IFA_PROTO", 229)]),
    "no marks": (AF4, "10.0.1.22", 24, []),
    "kernel's v6 link-local": (AF6, "fe80::1", 64, [("IFA_PROTO", 3)]),
}


def addr_data(family: int, ip: str, prefixlen: int, marks: list) -> bytes:
    attrs = [("IFA_ADDRESS", ip)] + ([("IFA_LOCAL", ip)] if family == AF4 else []) + marks
    return encode(NL.ifaddrmsg, attrs, family=family, prefixlen=prefixlen, index=5)


@pytest.mark.parametrize("case", sorted(ADDRS))
def test_address_decodes_as_pyroute2_decodes_it(case: str) -> None:
    data = addr_data(*ADDRS[case])
    assert netlink_decode.parse_addr(data) == ref_addr(data)


def test_address_marks_decoded() -> None:
    a = netlink_decode.parse_addr(addr_data(*ADDRS["both marks"]))
    assert a is not None and (a.proto, a.metric) == (229, 229)
    a = netlink_decode.parse_addr(addr_data(*ADDRS["metric only"]))
    assert a is not None and (a.proto, a.metric) == (None, 1229)
    a = netlink_decode.parse_addr(addr_data(*ADDRS["protocol only"]))
    assert a is not None and (a.proto, a.metric) == (229, 0)

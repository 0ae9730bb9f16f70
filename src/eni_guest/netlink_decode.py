"""The kernel's netlink messages as the planner's state values (state.Link, Addr, Rule, Route).

One function a message kind, each given the bytes of one message from a dump or an event.
Rules and routes come with their protocol number, so kernel.py can keep only ours; an
address keeps its protocol and metric (either only when the kernel reports one), so the
planner can tell ours (`state.Addr.marked`).
"""

from __future__ import annotations

import socket
import struct
from ipaddress import ip_address, ip_network
from typing import Any, Container, Optional

from .netlink import IFF_UP, NL, NLMSGHDR_LEN
from .state import Addr, ForeignRule, Link, Route, Rule

FAMILY = {socket.AF_INET: 4, socket.AF_INET6: 6}


def _decode(cls: Any, data: bytes) -> Any:
    msg = cls(data)
    msg.decode()
    return msg


def parse_link(data: bytes) -> Optional[Link]:
    m = _decode(NL.ifinfmsg, data)
    kind = ""
    info = m.get_attr("IFLA_LINKINFO")
    if info is not None:
        kind = info.get_attr("IFLA_INFO_KIND") or ""
    return Link(
        index=m["index"],
        name=m.get_attr("IFLA_IFNAME") or "",
        mac=(m.get_attr("IFLA_ADDRESS") or "").lower(),
        group=m.get_attr("IFLA_GROUP") or 0,
        up=bool(m["flags"] & IFF_UP),
        mtu=m.get_attr("IFLA_MTU") or 0,
        kind=kind,
        master=m.get_attr("IFLA_MASTER") or 0,
    )


def parse_addr(data: bytes) -> Optional[Addr]:
    m = _decode(NL.ifaddrmsg, data)
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


def parse_rule(data: bytes) -> Optional[tuple[Rule, int]]:
    """(rule, its protocol), or None for a rule with selectors eni-guest never writes."""
    return rule_of(decode_rule(data))


def decode_rule(data: bytes) -> Any:
    """A rule message, decoded once for `rule_of` and `foreign_rule_of`."""
    return _decode(NL.fibmsg, data)


def rule_of(m: Any) -> Optional[tuple[Rule, int]]:
    """parse_rule's answer for a decoded message.

    eni-guest writes `from IP` rules, the shared `from all ... suppress_ifgroup` rule and
    businesses' rules, which select on `to`, `fwmark`, `uidrange`, `ipproto` and `dport` but
    never on a source (business.py).  Any other combination is not ours.
    """
    src = m.get_attr("FRA_SRC")
    dst, mark, uids = m.get_attr("FRA_DST"), m.get_attr("FRA_FWMARK"), m.get_attr("FRA_UID_RANGE")
    proto, dports = m.get_attr("FRA_IP_PROTO"), m.get_attr("FRA_DPORT_RANGE")
    if m.get_attr("FRA_IIFNAME") or (src and (dst or mark or uids or proto or dports)):
        return None  # we never write such selectors: not ours
    fam = FAMILY.get(m["family"], 0)
    mask = m.get_attr("FRA_FWMASK")
    rule = Rule(
        family=fam,
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


def _range(value: Any) -> Optional[tuple[int, int]]:
    """A uid or port range as pyroute2 decodes it ("first:last"), or None."""
    if value is None:
        return None
    first, last = str(value).split(":")
    return int(first), int(last)


# Rule actions (FR_ACT_*) and what `ip rule` calls them.
RULE_ACTIONS = {1: "lookup", 2: "goto", 3: "nop", 6: "blackhole", 7: "unreachable", 8: "prohibit"}
FIB_RULE_INVERT = 0x2
NO_SUPPRESS_PREFIXLEN = 0xFFFFFFFF  # what the kernel reports for a rule without one
# The attributes that select nothing (FRA_SRC is the source itself); any other one present,
# known or not, narrows the rule's traffic.
_NOT_SELECTORS = frozenset(
    {"FRA_UNSPEC", "FRA_SRC", "FRA_PRIORITY", "FRA_TABLE", "FRA_PROTOCOL", "FRA_GOTO", "FRA_PAD"}
)
_SELECTOR_WORDS = {
    "FRA_DST": "to",
    "FRA_IIFNAME": "iif",
    "FRA_OIFNAME": "oif",
    "FRA_FWMARK": "fwmark",
    "FRA_FWMASK": "fwmark",
    "FRA_FLOW": "realms",
    "FRA_TUN_ID": "tun_id",
    "FRA_SUPPRESS_IFGROUP": "suppress_ifgroup",
    "FRA_SUPPRESS_PREFIXLEN": "suppress_prefixlength",
    "FRA_L3MDEV": "l3mdev",
    "FRA_UID_RANGE": "uidrange",
    "FRA_IP_PROTO": "ipproto",
    "FRA_SPORT_RANGE": "sport",
    "FRA_DPORT_RANGE": "dport",
}


def foreign_rule_of(m: Any) -> Optional[ForeignRule]:
    """The rule as capture.py sees it, or None when it selects no source ("from all")."""
    src = m.get_attr("FRA_SRC")
    if not src or not m["src_len"]:
        return None
    narrowed = ["not"] if m["flags"] & FIB_RULE_INVERT else []
    if m["tos"]:
        narrowed.append(f"tos {m['tos']:#x}")
    for name, value in m["attrs"]:
        if name in _NOT_SELECTORS:
            continue
        if name == "FRA_SUPPRESS_PREFIXLEN" and value == NO_SUPPRESS_PREFIXLEN:
            continue
        word = _SELECTOR_WORDS.get(name, str(name).lower())
        text = f"{word} {value}" if name in ("FRA_DST", "FRA_IIFNAME", "FRA_OIFNAME") else word
        if name == "FRA_DST":
            text = f"to {value}/{m['dst_len']}"
        if text not in narrowed:
            narrowed.append(text)
    return ForeignRule(
        family=FAMILY.get(m["family"], 0),
        priority=m.get_attr("FRA_PRIORITY") or 0,
        src=ip_network(f"{src}/{m['src_len']}", strict=False),
        action=RULE_ACTIONS.get(m["action"], f"action {m['action']}"),
        table=m.get_attr("FRA_TABLE") or m["table"],
        narrowed_by=tuple(narrowed),
    )


IP6_DEFAULT_METRIC = 1024  # what the kernel gives an IPv6 route added without a metric


def parse_route(data: bytes) -> Optional[tuple[Route, int]]:
    """(route, its protocol).  The kernel's default metric is read as 0 (state.Route)."""
    m = _decode(NL.rtmsg, data)
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
        metric=0 if fam == 6 and metric == IP6_DEFAULT_METRIC else metric,
        prefsrc=ip_address(prefsrc) if prefsrc else None,
    )
    return route, m["proto"]


RT_TABLE_MAIN, RTN_UNICAST = 254, 1
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_MULTIPATH = 1, 4, 5, 6, 9
_ADDR_LEN = {4: 4, 6: 16}


def main_route(data: bytes, links: Optional[Container[int]] = None) -> Optional[tuple[Route, int]]:
    """(route, protocol) of a main-table unicast route through one link (one of `links`, if
    given), else None (another table or type, a multipath route).  Decoded with struct, not
    pyroute2 (~15 us against ~0.5 ms a route): every main-table route passes here, in the
    kernel read and in the watch daemon's route events (mirror.py), and a busy main table
    must cost no more than a scan of its messages.
    """
    at = NLMSGHDR_LEN  # rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type
    if len(data) < at + 12 or data[at + 4] != RT_TABLE_MAIN or data[at + 7] != RTN_UNICAST:
        return None
    fam = FAMILY.get(data[at], 0)
    if not fam:
        return None
    values: dict[int, bytes] = {}
    offset = at + 12
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        values[kind] = data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    oif = values.get(RTA_OIF, b"")
    if len(oif) != 4 or RTA_MULTIPATH in values:
        return None
    index = struct.unpack("=i", oif)[0]
    if links is not None and index not in links:
        return None
    size = _ADDR_LEN[fam]
    dst, gw = values.get(RTA_DST, bytes(size)), values.get(RTA_GATEWAY)
    if len(dst) != size or (gw is not None and len(gw) != size):
        return None
    metric = struct.unpack("=I", values[RTA_PRIORITY][:4])[0] if RTA_PRIORITY in values else 0
    route = Route(
        family=fam,
        table=RT_TABLE_MAIN,
        dst=ip_network((ip_address(dst), data[at + 1]), strict=False),
        oif=index,
        gateway=ip_address(gw) if gw is not None else None,
        metric=0 if fam == 6 and metric == IP6_DEFAULT_METRIC else metric,
    )
    return route, data[at + 5]


def route_protocol(data: bytes) -> int:
    """The protocol of a route message, read from its header without decoding it (rtmsg:
    family, dst_len, src_len, tos, table, protocol): the watch daemon's cheap pre-filter."""
    at = NLMSGHDR_LEN + 5
    return data[at] if len(data) > at else -1

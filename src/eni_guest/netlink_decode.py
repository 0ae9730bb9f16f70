"""The kernel's netlink messages as the planner's state values (state.Link, Addr, Rule, Route).

One function a message kind, each given the bytes of one message from a dump or an event.
Rules and routes come with their protocol number, so kernel.py can keep only ours; an
address keeps its protocol and metric (either only when the kernel reports one), so the
planner can tell ours (`state.Addr.marked`).
"""

from __future__ import annotations

import socket
from ipaddress import ip_address, ip_network
from typing import Any, Optional

from .netlink import IFF_UP, NL, NLMSGHDR_LEN
from .state import Addr, Link, Route, Rule

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
    m = _decode(NL.fibmsg, data)
    if m.get_attr("FRA_DST") or m.get_attr("FRA_IIFNAME") or m.get_attr("FRA_FWMARK"):
        return None  # we never write such selectors: not ours
    src = m.get_attr("FRA_SRC")
    fam = FAMILY.get(m["family"], 0)
    rule = Rule(
        family=fam,
        priority=m.get_attr("FRA_PRIORITY") or 0,
        table=m.get_attr("FRA_TABLE") or m["table"],
        src=ip_network(f"{src}/{m['src_len']}") if src else None,
        suppress_ifgroup=m.get_attr("FRA_SUPPRESS_IFGROUP"),
    )
    return rule, m.get_attr("FRA_PROTOCOL") or 0


def parse_route(data: bytes) -> Optional[tuple[Route, int]]:
    """(route, its protocol)."""
    m = _decode(NL.rtmsg, data)
    fam = FAMILY.get(m["family"], 0)
    dst = m.get_attr("RTA_DST") or ("0.0.0.0" if fam == 4 else "::")
    gw = m.get_attr("RTA_GATEWAY")
    route = Route(
        family=fam,
        table=m.get_attr("RTA_TABLE") or m["table"],
        dst=ip_network(f"{dst}/{m['dst_len']}"),
        oif=m.get_attr("RTA_OIF") or 0,
        gateway=ip_address(gw) if gw else None,
    )
    return route, m["proto"]


def route_protocol(data: bytes) -> int:
    """The protocol of a route message, read from its header without decoding it (rtmsg:
    family, dst_len, src_len, tos, table, protocol): the watch daemon's cheap pre-filter."""
    at = NLMSGHDR_LEN + 5
    return data[at] if len(data) > at else -1

"""Planned changes as rtnetlink requests, marked with eni-guest's protocol (addresses also metric).

One builder a change kind (link, address, route, rule) packs the request's fixed header
(ifinfomsg, ifaddrmsg, rtmsg, fib_rule_hdr) and its attributes with `struct`, as
linux/rtnetlink.h, if_link.h, if_addr.h and fib_rules.h lay them out; `Encoder` puts the
netlink header with one socket's sequence numbers in front.  An attribute is a u16 length
(4 + its payload, unpadded), a u16 type and the payload padded to 4 bytes; the requests are
byte for byte what pyroute2's message classes encoded before (tests/unit/test_netlink_encode.py
checks that against pyroute2 itself).  Packing them here keeps pyroute2 out of a first apply:
importing its message classes took ~30-60 ms of it and its generic encoder ~75 us a message,
more than the kernel needs to apply one.
"""

from __future__ import annotations

import _socket  # socket.py's C core; socket.py's enums and selectors cost ~3 ms a start
import struct

from .changes import AddrChange, LinkChange, RouteChange, RuleChange
from .netlink import (
    IFF_UP,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    RTM_DELADDR,
    RTM_DELROUTE,
    RTM_DELRULE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTM_NEWRULE,
    Netlink,
)
from .netlink_decode import (
    IFA_ADDRESS,
    IFA_LOCAL,
    IFA_PROTO,
    IFA_RT_PRIORITY,
    IFLA_GROUP,
    IFLA_MTU,
    RTA_DST,
    RTA_GATEWAY,
    RTA_OIF,
    RTA_PREFSRC,
    RTA_PRIORITY,
    RTA_TABLE,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Callable

    from .changes import Change

IFA_F_NODAD, IFA_F_NOPREFIXROUTE = 0x02, 0x200
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
RTN_UNICAST, RTNH_F_ONLINK, FR_ACT_TO_TBL = 1, 4, 1
RT_TABLE_UNSPEC = 0
AF_INET, AF_INET6 = _socket.AF_INET, _socket.AF_INET6
AF = {4: AF_INET, 6: AF_INET6}

# attribute numbers the decoder has no use for (linux/if_addr.h, fib_rules.h)
IFA_FLAGS = 8
FRA_DST, FRA_SRC, FRA_PRIORITY, FRA_FWMARK, FRA_SUPPRESS_IFGROUP = 1, 2, 6, 10, 13
FRA_TABLE, FRA_FWMASK, FRA_UID_RANGE, FRA_PROTOCOL, FRA_IP_PROTO = 15, 16, 20, 21, 22
FRA_DPORT_RANGE = 24

REQUEST = NLM_F_REQUEST | NLM_F_ACK
CREATE = REQUEST | NLM_F_CREATE | NLM_F_EXCL  # EXCL: never overwrite what is there

# Fixed headers.  A rule's fib_rule_hdr has rtmsg's layout: family, dst_len, src_len, tos,
# table, res1, res2, action, flags.
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = "BBBBI"  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope,
# type, flags
# Attributes: length, type, the payload padded to 4.
_NLA = struct.Struct("=HH")
_NLA_U8 = struct.Struct("=HHB3x")
_NLA_U32 = struct.Struct("=HHI")
_NLA_U16_PAIR = struct.Struct("=HHHH")  # fib_rule_port_range: start, end
_NLA_U32_PAIR = struct.Struct("=HHII")  # fib_rule_uid_range: start, end
# What every request of a kind has, packed in one go: a first apply for 15 ENIs x 50 IPs sends
# 750 addresses and 750 rules, and one pack a message instead of four about halves their time.
_ADDR4 = struct.Struct("=" + _IFADDRMSG + "HH4s" + "HH4s")  # IFA_LOCAL, IFA_ADDRESS
_ADDR6 = struct.Struct("=" + _IFADDRMSG + "HH16s")  # IFA_ADDRESS
_ADDR_MARKS = struct.Struct("=HHI" + "HHB3x")  # IFA_FLAGS, IFA_PROTO
_RULE = struct.Struct("=BBBBBBBBI" + "HHI" + "HHI" + "HHB3x")  # fib_rule_hdr, FRA_PRIORITY,
# FRA_TABLE, FRA_PROTOCOL


def _u8(kind: int, value: int) -> bytes:
    return _NLA_U8.pack(5, kind, value)


def _u32(kind: int, value: int) -> bytes:
    return _NLA_U32.pack(8, kind, value)


def _ip(kind: int, packed: bytes) -> bytes:
    """An address attribute: 4 bytes (IPv4) or 16 (IPv6), network order, no padding needed."""
    return _NLA.pack(4 + len(packed), kind) + packed


# A builder: (change, protocol) -> (payload: fixed header and attributes, message type, flags)
Built = tuple[bytes, int, int]


def _link(c: LinkChange, protocol: int) -> Built:
    flags, change = ((IFF_UP if c.up else 0), IFF_UP) if c.up is not None else (0, 0)
    payload = _IFINFOMSG.pack(0, 0, c.index, flags, change)
    if c.group is not None:
        payload += _u32(IFLA_GROUP, c.group)
    if c.mtu is not None:
        payload += _u32(IFLA_MTU, c.mtu)
    return payload, RTM_NEWLINK, REQUEST


def _addr(c: AddrChange, protocol: int) -> Built:
    ip, index, plen = c.ip.packed, c.index, c.prefixlen
    if len(ip) == 4:
        # IPv4 names the address twice: IFA_LOCAL is the interface's own, IFA_ADDRESS the
        # peer's on a point-to-point link (the same one here); IPv6 has IFA_ADDRESS only.
        payload = _ADDR4.pack(AF_INET, plen, 0, 0, index, 8, IFA_LOCAL, ip, 8, IFA_ADDRESS, ip)
        flags = IFA_F_NOPREFIXROUTE
    else:
        payload = _ADDR6.pack(AF_INET6, plen, 0, 0, index, 20, IFA_ADDRESS, ip)
        flags = IFA_F_NOPREFIXROUTE | IFA_F_NODAD
    if c.op != "add":
        return payload, RTM_DELADDR, REQUEST
    # Both marks: the protocol where the kernel keeps one, the metric everywhere (4.18+);
    # a kernel that does not know IFA_PROTO ignores it (rtnetlink skips unknown attributes).
    payload += _ADDR_MARKS.pack(8, IFA_FLAGS, flags, 5, IFA_PROTO, protocol)
    if c.metric:
        payload += _u32(IFA_RT_PRIORITY, c.metric)
    return payload, RTM_NEWADDR, CREATE


def _route(c: RouteChange, protocol: int) -> Built:
    via = c.gateway is not None
    payload = _RTMSG.pack(
        AF[c.family],
        c.dst.prefixlen,
        0,  # src_len
        0,  # tos
        c.table if c.table < 256 else RT_TABLE_UNSPEC,  # RTA_TABLE says which
        protocol,
        RT_SCOPE_UNIVERSE if via else RT_SCOPE_LINK,
        RTN_UNICAST,
        RTNH_F_ONLINK if via else 0,
    )
    payload += _u32(RTA_TABLE, c.table) + _u32(RTA_OIF, c.oif)
    if c.dst.prefixlen:
        payload += _ip(RTA_DST, c.dst.network_address.packed)
    if via:
        payload += _ip(RTA_GATEWAY, c.gateway.packed)  # type: ignore[union-attr]
    if c.metric:
        payload += _u32(RTA_PRIORITY, c.metric)
    if c.prefsrc is not None and c.op != "del":
        payload += _ip(RTA_PREFSRC, c.prefsrc.packed)
    if c.op == "replace":  # only ever a route of ours (the planner saw it)
        return payload, RTM_NEWROUTE, REQUEST | NLM_F_CREATE | NLM_F_REPLACE
    if c.op == "add":  # EXCL: a route someone else put there is never overwritten
        return payload, RTM_NEWROUTE, CREATE
    return payload, RTM_DELROUTE, REQUEST


def _rule(c: RuleChange, protocol: int) -> Built:
    payload = _RULE.pack(
        AF[c.family],
        c.dst.prefixlen if c.dst is not None else 0,
        c.src.prefixlen if c.src is not None else 0,
        0,  # tos
        c.table if c.table < 256 else RT_TABLE_UNSPEC,  # FRA_TABLE says which
        0,  # res1
        0,  # res2
        FR_ACT_TO_TBL,
        0,  # flags
        *(8, FRA_PRIORITY, c.priority),
        *(8, FRA_TABLE, c.table),
        *(5, FRA_PROTOCOL, protocol),
    )
    if c.src is not None:
        payload += _ip(FRA_SRC, c.src.network_address.packed)
    if c.suppress_ifgroup is not None:
        payload += _u32(FRA_SUPPRESS_IFGROUP, c.suppress_ifgroup)
    payload += _business_selectors(c)
    if c.op == "add":
        return payload, RTM_NEWRULE, CREATE
    return payload, RTM_DELRULE, REQUEST


def _business_selectors(c: RuleChange) -> bytes:
    """A business rule's selectors (business.py); none for per-IP and shared rules."""
    out = b""
    if c.dst is not None:
        out += _ip(FRA_DST, c.dst.network_address.packed)
    if c.fwmark is not None:
        out += _u32(FRA_FWMARK, c.fwmark[0]) + _u32(FRA_FWMASK, c.fwmark[1])
    if c.uids is not None:  # uidrange FIRST-LAST: two u32
        out += _NLA_U32_PAIR.pack(12, FRA_UID_RANGE, *c.uids)
    if c.ipproto is not None:
        out += _u8(FRA_IP_PROTO, c.ipproto)
    if c.dports is not None:  # dport FIRST-LAST: two u16
        out += _NLA_U16_PAIR.pack(8, FRA_DPORT_RANGE, *c.dports)
    return out


_BUILDERS: dict[type, Callable[[Any, int], Built]] = {
    LinkChange: _link,
    AddrChange: _addr,
    RouteChange: _route,
    RuleChange: _rule,
}


class Encoder:
    """Requests for one socket's sequence numbers, marked with `protocol`."""

    def __init__(self, nl: Netlink, protocol: int) -> None:
        self.nl = nl
        self.protocol = protocol

    def request(self, c: Change) -> bytes:
        """The request for `c` (netlink header with the next sequence number, payload)."""
        build = _BUILDERS.get(type(c))
        if build is None:
            raise TypeError(f"unknown change {c!r}")
        return self.nl.pack(*build(c, self.protocol))

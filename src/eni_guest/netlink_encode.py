"""Planned changes as rtnetlink requests, marked with eni-guest's protocol (addresses also metric).

One builder a change kind (link, address, route, rule) fills a pyroute2 message; `Encoder`
turns it into bytes for one socket's sequence numbers, and copies the bytes of an earlier
request of the same shape where pyroute2's generic encoder would be the slow part.
"""

from __future__ import annotations

import socket
import struct
from typing import Any, Callable

from . import netlink
from .changes import AddrChange, Change, LinkChange, RouteChange, RuleChange
from .netlink import (
    IFF_UP,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NLMSGHDR_LEN,
    RTM_DELADDR,
    RTM_DELROUTE,
    RTM_DELRULE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTM_NEWRULE,
    Netlink,
    fields,
)

IFA_F_NODAD, IFA_F_NOPREFIXROUTE = 0x02, 0x200
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
RTN_UNICAST, RTNH_F_ONLINK, FR_ACT_TO_TBL = 1, 4, 1
RT_TABLE_UNSPEC = 0
AF = {4: socket.AF_INET, 6: socket.AF_INET6}
IFADDRMSG_LEN, FIBMSG_LEN = 8, 12
ADDR_NLAS = frozenset({1, 2})  # IFA_ADDRESS, IFA_LOCAL
RULE_NLAS = frozenset({2})  # FRA_SRC

REQUEST = NLM_F_REQUEST | NLM_F_ACK
CREATE = REQUEST | NLM_F_CREATE | NLM_F_EXCL  # EXCL: never overwrite what is there

# A builder: (change, protocol) -> (pyroute2 message, message type, header flags)
Built = tuple[Any, int, int]


def _link(c: LinkChange, protocol: int) -> Built:
    msg = fields(netlink.NL.ifinfmsg(), family=0, index=c.index)
    attrs = []
    if c.up is not None:
        msg["flags"], msg["change"] = (IFF_UP if c.up else 0), IFF_UP
    if c.group is not None:
        attrs.append(("IFLA_GROUP", c.group))
    if c.mtu is not None:
        attrs.append(("IFLA_MTU", c.mtu))
    msg["attrs"] = attrs
    return msg, RTM_NEWLINK, REQUEST


def _addr(c: AddrChange, protocol: int) -> Built:
    af = AF[c.ip.version]
    msg = fields(netlink.NL.ifaddrmsg(), family=af, prefixlen=c.prefixlen, index=c.index)
    ip = str(c.ip)
    attrs = (
        [("IFA_LOCAL", ip), ("IFA_ADDRESS", ip)] if af == socket.AF_INET else [("IFA_ADDRESS", ip)]
    )
    if c.op != "add":
        msg["attrs"] = attrs
        return msg, RTM_DELADDR, REQUEST
    flags = IFA_F_NOPREFIXROUTE | (IFA_F_NODAD if c.ip.version == 6 else 0)
    # Both marks: the protocol where the kernel keeps one, the metric everywhere (4.18+);
    # a kernel that does not know IFA_PROTO ignores it (rtnetlink skips unknown attributes).
    marks = [("IFA_PROTO", protocol)] + ([("IFA_RT_PRIORITY", c.metric)] if c.metric else [])
    msg["attrs"] = attrs + [("IFA_FLAGS", flags)] + marks
    return msg, RTM_NEWADDR, CREATE


def _route(c: RouteChange, protocol: int) -> Built:
    msg = fields(
        netlink.NL.rtmsg(),
        family=AF[c.family],
        dst_len=c.dst.prefixlen,
        table=c.table if c.table < 256 else RT_TABLE_UNSPEC,
        proto=protocol,
        scope=RT_SCOPE_UNIVERSE if c.gateway is not None else RT_SCOPE_LINK,
        type=RTN_UNICAST,
        flags=RTNH_F_ONLINK if c.gateway is not None else 0,
    )
    attrs = [("RTA_TABLE", c.table), ("RTA_OIF", c.oif)]
    if c.dst.prefixlen:
        attrs.append(("RTA_DST", str(c.dst.network_address)))
    if c.gateway is not None:
        attrs.append(("RTA_GATEWAY", str(c.gateway)))
    if c.metric:
        attrs.append(("RTA_PRIORITY", c.metric))
    if c.prefsrc is not None and c.op != "del":
        attrs.append(("RTA_PREFSRC", str(c.prefsrc)))
    msg["attrs"] = attrs
    if c.op == "replace":  # only ever a route of ours (the planner saw it)
        return msg, RTM_NEWROUTE, REQUEST | NLM_F_CREATE | NLM_F_REPLACE
    if c.op == "add":  # EXCL: a route someone else put there is never overwritten
        return msg, RTM_NEWROUTE, CREATE
    return msg, RTM_DELROUTE, REQUEST


def _rule(c: RuleChange, protocol: int) -> Built:
    msg = fields(
        netlink.NL.fibmsg(),
        family=AF[c.family],
        src_len=c.src.prefixlen if c.src is not None else 0,
        table=c.table if c.table < 256 else RT_TABLE_UNSPEC,
        action=FR_ACT_TO_TBL,
    )
    attrs = [("FRA_PRIORITY", c.priority), ("FRA_TABLE", c.table), ("FRA_PROTOCOL", protocol)]
    if c.src is not None:
        attrs.append(("FRA_SRC", str(c.src.network_address)))
    if c.suppress_ifgroup is not None:
        attrs.append(("FRA_SUPPRESS_IFGROUP", c.suppress_ifgroup))
    attrs += _business_selectors(c)
    if c.dst is not None:
        msg["dst_len"] = c.dst.prefixlen
    msg["attrs"] = attrs
    if c.op == "add":
        return msg, RTM_NEWRULE, CREATE
    return msg, RTM_DELRULE, REQUEST


def _business_selectors(c: RuleChange) -> list[tuple[str, Any]]:
    """A business rule's selectors (business.py); none for per-IP and shared rules.  pyroute2
    takes a uid or port range as "first:last"."""
    attrs: list[tuple[str, Any]] = []
    if c.dst is not None:
        attrs.append(("FRA_DST", str(c.dst.network_address)))
    if c.fwmark is not None:
        attrs += [("FRA_FWMARK", c.fwmark[0]), ("FRA_FWMASK", c.fwmark[1])]
    if c.uids is not None:
        attrs.append(("FRA_UID_RANGE", f"{c.uids[0]}:{c.uids[1]}"))
    if c.ipproto is not None:
        attrs.append(("FRA_IP_PROTO", c.ipproto))
    if c.dports is not None:
        attrs.append(("FRA_DPORT_RANGE", f"{c.dports[0]}:{c.dports[1]}"))
    return attrs


_BUILDERS: tuple[tuple[type, Callable[[Any, int], Built]], ...] = (
    (LinkChange, _link),
    (AddrChange, _addr),
    (RouteChange, _route),
    (RuleChange, _rule),
)


class Encoder:
    """Requests for one socket's sequence numbers, marked with `protocol`."""

    def __init__(self, nl: Netlink, protocol: int) -> None:
        self.nl = nl
        self.protocol = protocol
        self._templates: dict[tuple, tuple[bytes, list[int]]] = {}

    def encode(self, c: Change) -> bytes:
        """The request for `c`, encoded by pyroute2."""
        for cls, build in _BUILDERS:
            if isinstance(c, cls):
                return self.nl.encode(*build(c, self.protocol))
        raise TypeError(f"unknown change {c!r}")

    def request(self, c: Change) -> bytes:
        """The encoded request for `c`, reusing pyroute2's encoding of an earlier twin.

        Address and rule requests come by the hundred and differ only in the IP and the
        sequence number.  pyroute2's generic encoder takes ~75 us a message, more than the
        kernel needs to apply it, so the first request of each shape is encoded by pyroute2
        and the later ones copy its bytes with their own IP and sequence number patched in.
        """
        if isinstance(c, AddrChange):
            shape: tuple = ("addr", c.op, c.index, c.prefixlen, c.ip.version, c.metric)
            packed, header, types_ = c.ip.packed, IFADDRMSG_LEN, ADDR_NLAS
        elif isinstance(c, RuleChange) and c.src is not None:
            shape = ("rule", c.op, c.family, c.priority, c.table, c.src.prefixlen)
            packed, header, types_ = c.src.network_address.packed, FIBMSG_LEN, RULE_NLAS
        else:
            return self.encode(c)
        cached = self._templates.get(shape)
        if cached is None:
            data = self.encode(c)
            self._templates[shape] = (data, _nla_offsets(data, header, types_))
            return data
        template, offsets = cached
        data = bytearray(template)
        struct.pack_into("=I", data, 8, self.nl.next_seq())
        for offset in offsets:
            data[offset : offset + len(packed)] = packed
        return bytes(data)


def _nla_offsets(data: bytes, header: int, types_: frozenset[int]) -> list[int]:
    """Payload offsets of the attributes of the given types in one encoded message."""
    offsets, offset = [], NLMSGHDR_LEN + header
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if kind in types_:
            offsets.append(offset + 4)
        offset += (length + 3) & ~3
    return offsets

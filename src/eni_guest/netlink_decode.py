"""The kernel's netlink messages as the planner's state values (state.Link, Addr, Rule, Route).

One function a message kind, each given the bytes of one message from a dump or an event.
Rules and routes come with their protocol number, so kernel.py can keep only ours; an
address keeps its protocol and metric (either only when the kernel reports one), so the
planner can tell ours (`state.Addr.marked`).

The messages are read with `struct`, field by field as linux/rtnetlink.h, if_link.h,
if_addr.h and fib_rules.h lay them out, and only the attributes the planner looks at are
decoded.  pyroute2's generic decoder took ~200 us a message: 0.2 s to read the kernel state
of 15 ENIs x 50 IPs, five times what `ip -batch` needs to apply all of it.
"""

from __future__ import annotations

import _socket  # socket.py's C core; socket.py's enums and selectors cost ~3 ms a start
import struct
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from .netlink import IFF_UP, NLMSGHDR_LEN
from .state import Addr, ForeignRule, Link, Route, Rule

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Container, Iterator, Optional

FAMILY = {_socket.AF_INET: 4, _socket.AF_INET6: 6}
_IP = {4: IPv4Address, 16: IPv6Address}
_NET = {4: IPv4Network, 16: IPv6Network}

_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope,
# type, flags; a rule's header (fib_rule_hdr) has the same layout: family, dst_len, src_len,
# tos, table, res1, res2, action, flags
_NLA = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_UID_RANGE = struct.Struct("=II")  # fib_rule_uid_range: start, end
_PORT_RANGE = struct.Struct("=HH")  # fib_rule_port_range: start, end
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER

# attribute numbers
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO, IFLA_GROUP = 1, 3, 4, 10, 18, 27
IFLA_INFO_KIND = 1
IFA_ADDRESS, IFA_LOCAL, IFA_RT_PRIORITY, IFA_PROTO = 1, 2, 9, 11
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_PREFSRC = 1, 4, 5, 6, 7
RTA_MULTIPATH, RTA_TABLE = 9, 15
FRA_NAMES = {
    0: "FRA_UNSPEC",
    1: "FRA_DST",
    2: "FRA_SRC",
    3: "FRA_IIFNAME",
    4: "FRA_GOTO",
    6: "FRA_PRIORITY",
    10: "FRA_FWMARK",
    11: "FRA_FLOW",
    12: "FRA_TUN_ID",
    13: "FRA_SUPPRESS_IFGROUP",
    14: "FRA_SUPPRESS_PREFIXLEN",
    15: "FRA_TABLE",
    16: "FRA_FWMASK",
    17: "FRA_OIFNAME",
    18: "FRA_PAD",
    19: "FRA_L3MDEV",
    20: "FRA_UID_RANGE",
    21: "FRA_PROTOCOL",
    22: "FRA_IP_PROTO",
    23: "FRA_SPORT_RANGE",
    24: "FRA_DPORT_RANGE",
}
_FRA_ADDRS = frozenset({1, 2})
_FRA_NAMES_ = frozenset({3, 17})
_FRA_U8 = frozenset({19, 21, 22})
_FRA_U32 = frozenset({4, 6, 10, 11, 13, 14, 15, 16})
_FRA_RANGES = {20: _UID_RANGE, 23: _PORT_RANGE, 24: _PORT_RANGE}  # (first, last)


def attributes(data: bytes, offset: int) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each attribute from `offset` to the end of `data`."""
    end = len(data)
    while offset + 4 <= end:
        length, kind = _NLA.unpack_from(data, offset)
        if length < 4:
            return
        yield kind & NLA_TYPE_MASK, data[offset + 4 : offset + length]
        offset += (length + 3) & ~3


def _u32(value: bytes) -> int:
    return _U32.unpack_from(value)[0] if len(value) >= 4 else 0


def _text(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode("utf-8", "replace")


def _ip(value: bytes) -> Any:
    cls = _IP.get(len(value))
    return cls(value) if cls is not None else None


def _net(value: bytes, prefixlen: int, strict: bool = True) -> Any:
    """The network of a packed address and a prefix length (from the integer: no parsing)."""
    return _NET[len(value)]((int.from_bytes(value, "big"), prefixlen), strict=strict)


def parse_link(data: bytes) -> Optional[Link]:
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(data, NLMSGHDR_LEN)
    name = mac = kind = ""
    mtu = master = group = 0
    for t, v in attributes(data, NLMSGHDR_LEN + _IFINFOMSG.size):
        if t == IFLA_IFNAME:
            name = _text(v)
        elif t == IFLA_ADDRESS:
            mac = ":".join(f"{b:02x}" for b in v)
        elif t == IFLA_MTU:
            mtu = _u32(v)
        elif t == IFLA_MASTER:
            master = _u32(v)
        elif t == IFLA_GROUP:
            group = _u32(v)
        elif t == IFLA_LINKINFO:
            for it, iv in attributes(v, 0):
                if it == IFLA_INFO_KIND:
                    kind = _text(iv)
    return Link(
        index=index,
        name=name,
        mac=mac,
        group=group,
        up=bool(flags & IFF_UP),
        mtu=mtu,
        kind=kind,
        master=master,
    )


def parse_addr(data: bytes) -> Optional[Addr]:
    # The attributes walked inline (not through `attributes`): a dump has one message per
    # address, and the generator's yields and slices were half of this function's time.
    _family, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(data, NLMSGHDR_LEN)
    local = address = None
    proto: Optional[int] = None
    metric = 0
    offset, end = NLMSGHDR_LEN + _IFADDRMSG.size, len(data)
    while offset + 4 <= end:
        length, t = _NLA.unpack_from(data, offset)
        if length < 4:
            break
        t &= NLA_TYPE_MASK
        if t == IFA_LOCAL:
            local = data[offset + 4 : offset + length]
        elif t == IFA_ADDRESS:
            address = data[offset + 4 : offset + length]
        elif t == IFA_PROTO and length > 4:
            proto = data[offset + 4]
        elif t == IFA_RT_PRIORITY and length >= 8:
            metric = _U32.unpack_from(data, offset + 4)[0]
        offset += (length + 3) & ~3
    ip = _ip(local or address or b"")
    if ip is None:
        return None
    return Addr(index=index, ip=ip, prefixlen=prefixlen, proto=proto, metric=metric)


class RuleMessage:
    """A rule message's header fields and attributes, decoded once for `rule_of` and
    `foreign_rule_of`.  `attrs` holds (name, value) in the message's order:
    interface names as text, numbers as int, addresses packed, uid and port ranges as
    (first, last), anything else as bytes."""

    __slots__ = ("family", "dst_len", "src_len", "tos", "table", "action", "flags", "attrs")

    def __init__(self, data: bytes) -> None:
        header = _RTMSG.unpack_from(data, NLMSGHDR_LEN)
        self.family, self.dst_len, self.src_len, self.tos, self.table = header[:5]
        self.action, self.flags = header[7], header[8]
        attrs: dict[str, Any] = {}
        # Walked inline, as parse_addr: a dump has one message per rule.
        offset, end = NLMSGHDR_LEN + _RTMSG.size, len(data)
        while offset + 4 <= end:
            length, t = _NLA.unpack_from(data, offset)
            if length < 4:
                break
            t &= NLA_TYPE_MASK
            name = FRA_NAMES.get(t) or f"FRA_{t}"
            if t in _FRA_U32:
                attrs[name] = _U32.unpack_from(data, offset + 4)[0] if length >= 8 else 0
            elif t in _FRA_U8:
                attrs[name] = data[offset + 4] if length > 4 else 0
            else:
                v = data[offset + 4 : offset + length]
                if t in _FRA_ADDRS:
                    attrs[name] = v if len(v) in (4, 16) else None  # packed: see _net
                elif t in _FRA_NAMES_:
                    attrs[name] = _text(v)
                elif t in _FRA_RANGES:
                    form = _FRA_RANGES[t]
                    attrs[name] = form.unpack_from(v) if len(v) >= form.size else None
                else:
                    attrs[name] = v
            offset += (length + 3) & ~3
        self.attrs = attrs

    def get_attr(self, name: str) -> Any:
        return self.attrs.get(name)


def parse_rule(data: bytes) -> Optional[tuple[Rule, int]]:
    """(rule, its protocol), or None for a rule with selectors eni-guest never writes."""
    return rule_of(decode_rule(data))


def decode_rule(data: bytes) -> RuleMessage:
    """A rule message, decoded once for `rule_of` and `foreign_rule_of`."""
    return RuleMessage(data)


def rule_of(m: RuleMessage) -> Optional[tuple[Rule, int]]:
    """parse_rule's answer for a decoded message.

    eni-guest writes `from IP` rules, the shared `from all ... suppress_ifgroup` rule and
    businesses' rules, which select on `to`, `fwmark`, `uidrange`, `ipproto` and `dport` but
    never on a source (business.py).  Any other combination is not ours.
    """
    a = m.attrs
    src, dst, mark = a.get("FRA_SRC"), a.get("FRA_DST"), a.get("FRA_FWMARK")
    uids, proto, dports = a.get("FRA_UID_RANGE"), a.get("FRA_IP_PROTO"), a.get("FRA_DPORT_RANGE")
    if a.get("FRA_IIFNAME") or (src and (dst or mark or uids or proto or dports)):
        return None  # we never write such selectors: not ours
    mask = a.get("FRA_FWMASK")
    rule = Rule(
        family=FAMILY.get(m.family, 0),
        priority=a.get("FRA_PRIORITY", 0),
        table=a.get("FRA_TABLE") or m.table,
        src=_net(src, m.src_len) if src else None,
        suppress_ifgroup=a.get("FRA_SUPPRESS_IFGROUP"),
        dst=_net(dst, m.dst_len) if dst else None,
        fwmark=(mark, 0xFFFFFFFF if mask is None else mask) if mark else None,
        uids=uids,
        ipproto=proto or None,
        dports=dports,
    )
    return rule, a.get("FRA_PROTOCOL", 0)


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


def foreign_rule_of(m: RuleMessage) -> Optional[ForeignRule]:
    """The rule as capture.py sees it, or None when it selects no source ("from all")."""
    src = m.attrs.get("FRA_SRC")
    if src is None or not m.src_len:
        return None
    narrowed = ["not"] if m.flags & FIB_RULE_INVERT else []
    if m.tos:
        narrowed.append(f"tos {m.tos:#x}")
    for name, value in m.attrs.items():
        if name in _NOT_SELECTORS:
            continue
        if name == "FRA_SUPPRESS_PREFIXLEN" and value == NO_SUPPRESS_PREFIXLEN:
            continue
        word = _SELECTOR_WORDS.get(name, name.lower())
        text = f"{word} {value}" if name in ("FRA_IIFNAME", "FRA_OIFNAME") else word
        if name == "FRA_DST":
            text = f"to {_ip(value or b'')}/{m.dst_len}"
        if text not in narrowed:
            narrowed.append(text)
    return ForeignRule(
        family=FAMILY.get(m.family, 0),
        priority=m.attrs.get("FRA_PRIORITY", 0),
        src=_net(src, m.src_len, strict=False),
        action=RULE_ACTIONS.get(m.action, f"action {m.action}"),
        table=m.attrs.get("FRA_TABLE") or m.table,
        narrowed_by=tuple(narrowed),
    )


IP6_DEFAULT_METRIC = 1024  # what the kernel gives an IPv6 route added without a metric


def parse_route(data: bytes) -> Optional[tuple[Route, int]]:
    """(route, its protocol).  The kernel's default metric is read as 0 (state.Route)."""
    header = _RTMSG.unpack_from(data, NLMSGHDR_LEN)
    family, dst_len, table, proto = header[0], header[1], header[4], header[5]
    fam = FAMILY.get(family, 0)
    dst: Optional[bytes] = None
    gw = prefsrc = None
    oif = metric = 0
    for t, v in attributes(data, NLMSGHDR_LEN + _RTMSG.size):
        if t == RTA_DST:
            dst = v
        elif t == RTA_OIF:
            oif = _u32(v)
        elif t == RTA_GATEWAY:
            gw = _ip(v)
        elif t == RTA_PRIORITY:
            metric = _u32(v)
        elif t == RTA_PREFSRC:
            prefsrc = _ip(v)
        elif t == RTA_TABLE:
            table = _u32(v) or table
    if dst is None:
        dst = bytes(4 if fam == 4 else 16)
    route = Route(
        family=fam,
        table=table,
        dst=_net(dst, dst_len),
        oif=oif,
        gateway=gw,
        metric=0 if fam == 6 and metric == IP6_DEFAULT_METRIC else metric,
        prefsrc=prefsrc,
    )
    return route, proto


RT_TABLE_MAIN, RTN_UNICAST = 254, 1
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

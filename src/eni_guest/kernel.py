"""The only code that speaks netlink: reads kernel state, applies planned changes.

pyroute2 supplies the message formats (encoding and decoding).  We drive the socket ourselves
for two reasons measured in benchmarks/: pyroute2's synchronous IPRoute waits for each
acknowledgement in turn (about 0.5 ms a message: 1.2 s for 15 ENIs x 50 IPs against 0.15 s for
`ip -batch`), while one send of many messages lets the kernel work through them in one go;
and importing the top-level `pyroute2` package loads every netlink family it knows (~200 ms),
which every hot-plug would pay, while the message classes alone load in ~30 ms.

Changes go out in stages (links, addresses, routes, the shared rule, per-IP rules, then the
removals in reverse); a stage with an error stops the run, so a later stage never builds on
a missing earlier one, and the next run converges from whatever was applied.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import socket
import struct
import sys
import types
from ipaddress import ip_address, ip_network
from typing import Any, Callable, Iterable, Optional

from .config import SLOTS, Config
from .errors import KernelError
from .plan import AddrChange, Change, LinkChange, RouteChange, RuleChange
from .state import Addr, KernelState, Link, Route, Rule


def _load_messages() -> types.SimpleNamespace:
    """Import pyroute2's rtnetlink message classes without its heavy package __init__."""
    shim = None
    if "pyroute2" not in sys.modules:
        spec = importlib.util.find_spec("pyroute2")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("pyroute2 is not installed")
        shim = types.ModuleType("pyroute2")
        shim.__path__ = list(spec.submodule_search_locations)
        shim.__spec__ = spec
        sys.modules["pyroute2"] = shim
    try:
        from pyroute2.netlink import (
            NLM_F_ACK,
            NLM_F_CREATE,
            NLM_F_DUMP,
            NLM_F_EXCL,
            NLM_F_REPLACE,
            NLM_F_REQUEST,
        )
        from pyroute2.netlink.rtnl.fibmsg import fibmsg
        from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
        from pyroute2.netlink.rtnl.rtmsg import rtmsg
    finally:
        if shim is not None and sys.modules.get("pyroute2") is shim:
            # Let a later `import pyroute2` (the watch daemon's IPRoute) load the real package.
            del sys.modules["pyroute2"]
    return types.SimpleNamespace(
        NLM_F_ACK=NLM_F_ACK,
        NLM_F_CREATE=NLM_F_CREATE,
        NLM_F_DUMP=NLM_F_DUMP,
        NLM_F_EXCL=NLM_F_EXCL,
        NLM_F_REPLACE=NLM_F_REPLACE,
        NLM_F_REQUEST=NLM_F_REQUEST,
        fibmsg=fibmsg,
        ifaddrmsg=ifaddrmsg,
        ifinfmsg=ifinfmsg,
        rtmsg=rtmsg,
    )


NL = _load_messages()

# rtnetlink message types (linux/rtnetlink.h)
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTMGRP_LINK = 1  # multicast group of link events (the watch daemon's subscription)
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWRULE, RTM_DELRULE, RTM_GETRULE = 32, 33, 34
NLMSG_ERROR, NLMSG_DONE = 2, 3
SOL_NETLINK, NETLINK_GET_STRICT_CHK = 270, 12
IFF_UP = 1
IFA_F_NODAD, IFA_F_NOPREFIXROUTE = 0x02, 0x200
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
RTN_UNICAST, RTNH_F_ONLINK, FR_ACT_TO_TBL = 1, 4, 1
RT_TABLE_UNSPEC = 0
AF = {4: socket.AF_INET, 6: socket.AF_INET6}
FAMILY = {socket.AF_INET: 4, socket.AF_INET6: 6}
NLMSGHDR_LEN, IFADDRMSG_LEN, FIBMSG_LEN = 16, 8, 12
ADDR_NLAS = frozenset({1, 2})  # IFA_ADDRESS, IFA_LOCAL
RULE_NLAS = frozenset({2})  # FRA_SRC
CHUNK = 32 * 1024  # bytes of requests per send(); acks for them always fit the receive buffer

_GONE = frozenset({errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL, errno.ENODEV})


def _harmless(change: Change, err: int) -> bool:
    """Errors that mean "already the way we want it" (another run or the kernel got there)."""
    if change.op == "del":
        return err in _GONE
    # An address or rule that appeared since the dump is ours to keep.  A route is different:
    # the planner saw none of ours there, so an existing one was put there by someone else.
    return change.op == "add" and err == errno.EEXIST and not isinstance(change, RouteChange)


def _refusal(change: Change, err: int) -> str:
    text = f"{change.describe()}: {os.strerror(err)}"
    if isinstance(change, RouteChange) and err == errno.EEXIST:
        text += (
            f" (a route eni-guest did not create holds this destination in table "
            f"{change.table}, inside eni-guest's table range: remove it or change table_base)"
        )
    return text


def kernel_supports_addr_proto(release: Optional[str] = None) -> bool:
    """IFA_PROTO (who added an address) exists since Linux 6.3."""
    release = release or os.uname().release
    try:
        major, minor = (int(x) for x in release.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (6, 3)


class Netlink:
    """One NETLINK_ROUTE socket: dumps, and batches of requests with their acks."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        # strict dump checking lets the kernel filter route dumps by protocol for us
        self.sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
        self.sock.bind((0, 0))
        self.seq = 0
        self.requests_sent = 0  # change requests (not dumps): the benchmark's netlink count

    def close(self) -> None:
        self.sock.close()

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _encode(self, msg, mtype: int, flags: int) -> bytes:
        msg["header"]["type"] = mtype
        msg["header"]["flags"] = flags
        msg["header"]["sequence_number"] = self._next_seq()
        msg.encode()
        return bytes(msg.data)

    def dump(self, msg, mtype: int, parse: Callable) -> list:
        data = self._encode(msg, mtype, NL.NLM_F_REQUEST | NL.NLM_F_DUMP)
        seq = self.seq
        self.sock.send(data)
        out: list = []
        while True:
            buf = self.sock.recv(1 << 20)
            offset = 0
            while offset < len(buf):
                length, kind, _flags, rseq, _pid = struct.unpack_from("=IHHII", buf, offset)
                if rseq == seq:
                    if kind == NLMSG_DONE:
                        return out
                    if kind == NLMSG_ERROR:
                        err = -struct.unpack_from("=i", buf, offset + 16)[0]
                        raise KernelError(f"netlink dump failed: {os.strerror(err)}")
                    parsed = parse(buf[offset : offset + length])
                    if parsed is not None:
                        out.append(parsed)
                offset += (length + 3) & ~3

    def get(self, msg, mtype: int, parse: Callable) -> Any:
        """One non-dump request and its single answer; None when the object does not exist."""
        data = self._encode(msg, mtype, NL.NLM_F_REQUEST)
        seq = self.seq
        self.sock.send(data)
        while True:
            buf = self.sock.recv(1 << 20)
            offset = 0
            while offset < len(buf):
                length, kind, _flags, rseq, _pid = struct.unpack_from("=IHHII", buf, offset)
                if rseq == seq:
                    if kind == NLMSG_ERROR:
                        err = -struct.unpack_from("=i", buf, offset + 16)[0]
                        if err in (errno.ENODEV, errno.ENOENT):
                            return None
                        raise KernelError(f"netlink request failed: {os.strerror(err)}")
                    return parse(buf[offset : offset + length])
                offset += (length + 3) & ~3

    def batch(self, requests: list[tuple[bytes, str]]) -> list[tuple[str, int]]:
        """Send (data, op) requests in as few send() calls as fit; return (op, errno) each.

        Only the last request of each send() asks for an acknowledgement: the kernel handles
        the requests of one send() in order and reports every failure anyway, so when that
        last ack arrives, every request without an error report has succeeded.  This saves one
        recv() per request (a third of the time of a large apply).
        """
        results: list[tuple[str, int]] = []
        i = 0
        while i < len(requests):
            chunk, size = [], 0
            while i < len(requests) and (not chunk or size + len(requests[i][0]) <= CHUNK):
                chunk.append(requests[i])
                size += len(requests[i][0])
                i += 1
            first = struct.unpack_from("=I", chunk[0][0], 8)[0]
            last = first + len(chunk) - 1
            data = bytearray(b"".join(d for d, _ in chunk))
            offset = 0
            for d, _ in chunk[:-1]:
                flags = struct.unpack_from("=H", data, offset + 6)[0]
                struct.pack_into("=H", data, offset + 6, flags & ~NL.NLM_F_ACK)
                offset += len(d)
            self.sock.send(data)
            self.requests_sent += len(chunk)
            errs: dict[int, int] = {}
            while last - first not in errs:
                buf = self.sock.recv(1 << 20)
                offset = 0
                while offset < len(buf):
                    length, kind, _flags, rseq, _pid = struct.unpack_from("=IHHII", buf, offset)
                    if kind == NLMSG_ERROR and first <= rseq <= last:
                        errs[rseq - first] = -struct.unpack_from("=i", buf, offset + 16)[0]
                    offset += (length + 3) & ~3
            results += [(op, errs.get(n, 0)) for n, (_, op) in enumerate(chunk)]
        return results


class Kernel:
    """Reads the kernel into a KernelState and applies plan changes, marked as ours."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.nl = Netlink()
        self.addr_proto = kernel_supports_addr_proto()
        self._templates: dict[tuple, tuple[bytes, list[int]]] = {}

    def close(self) -> None:
        self.nl.close()

    @property
    def requests_sent(self) -> int:
        return self.nl.requests_sent

    # ------------------------------------------------------------ reading

    def read_state(self) -> KernelState:
        cfg = self.config
        links = self.nl.dump(_fields(NL.ifinfmsg(), family=0), RTM_GETLINK, _parse_link)
        addrs = self.nl.dump(_fields(NL.ifaddrmsg(), family=0), RTM_GETADDR, _parse_addr)
        rules: list[Rule] = []
        routes: list[Route] = []
        prio_range = range(cfg.priority_base, cfg.priority_base + SLOTS + 1)
        table_range = range(cfg.table_base, cfg.table_base + SLOTS)
        for af in (socket.AF_INET, socket.AF_INET6):
            for r in self.nl.dump(_fields(NL.fibmsg(), family=af), RTM_GETRULE, _parse_rule):
                rule, proto = r
                if proto == cfg.protocol and rule.priority in prio_range:
                    rules.append(rule)
            req = _fields(NL.rtmsg(), family=af, proto=cfg.protocol)
            for route, proto in self.nl.dump(req, RTM_GETROUTE, _parse_route):
                if proto == cfg.protocol and route.table in table_range:
                    routes.append(route)
        return KernelState(
            links=tuple(links),
            addrs=tuple(addrs),
            rules=tuple(rules),
            routes=tuple(routes),
            addr_proto_supported=self.addr_proto,
        )

    def read_links(self) -> list[Link]:
        """Every link of this namespace (the watch daemon's starting point)."""
        return self.nl.dump(_fields(NL.ifinfmsg(), family=0), RTM_GETLINK, _parse_link)

    def link_by_name(self, name: str) -> Optional[Link]:
        """The link called `name` now, or None: one request, cheap enough for every hot-plug."""
        if not name or len(name.encode()) > 15:  # IFNAMSIZ - 1: no such link can exist
            return None
        msg = _fields(NL.ifinfmsg(), family=0)
        msg["attrs"] = [("IFLA_IFNAME", name)]
        return self.nl.get(msg, RTM_GETLINK, _parse_link)

    def link_by_index(self, index: int) -> Optional[Link]:
        """The link with this index now (it survives renames), or None once it is gone."""
        msg = _fields(NL.ifinfmsg(), family=0, index=index)
        return self.nl.get(msg, RTM_GETLINK, _parse_link)

    # ------------------------------------------------------------ writing

    def apply(self, changes: Iterable[Change], on_done: Callable[[list[Change]], None]) -> None:
        """Apply changes stage by stage; raise KernelError naming the first refused change.

        `on_done` gets, once per stage, the changes that took effect (not those found already
        done), so the caller can log them as they happen.
        """
        stages: list[list[Change]] = []
        last = None
        for change in changes:
            stage = _stage(change)
            if stage != last:
                stages.append([])
                last = stage
            stages[-1].append(change)
        for stage in stages:
            requests = [(self._request(c), c.op) for c in stage]
            failed, done = [], []
            for change, (_op, err) in zip(stage, self.nl.batch(requests)):
                if err == 0:
                    done.append(change)
                elif not _harmless(change, err):
                    failed.append(_refusal(change, err))
            if done:
                on_done(done)
            if failed:
                more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
                raise KernelError(f"kernel refused: {failed[0]}{more}")

    def _request(self, c: Change) -> bytes:
        """The encoded request for `c`, reusing pyroute2's encoding of an earlier twin.

        Address and rule requests come by the hundred and differ only in the IP and the
        sequence number.  pyroute2's generic encoder takes ~75 us a message, more than the
        kernel needs to apply it, so the first request of each shape is encoded by pyroute2
        and the later ones copy its bytes with their own IP and sequence number patched in.
        """
        if isinstance(c, AddrChange):
            shape: tuple = ("addr", c.op, c.index, c.prefixlen, c.ip.version)
            packed, header, types_ = c.ip.packed, IFADDRMSG_LEN, ADDR_NLAS
        elif isinstance(c, RuleChange) and c.src is not None:
            shape = ("rule", c.op, c.family, c.priority, c.table, c.src.prefixlen)
            packed, header, types_ = c.src.network_address.packed, FIBMSG_LEN, RULE_NLAS
        else:
            return self._encode(c)
        cached = self._templates.get(shape)
        if cached is None:
            data = self._encode(c)
            self._templates[shape] = (data, _nla_offsets(data, header, types_))
            return data
        template, offsets = cached
        data = bytearray(template)
        struct.pack_into("=I", data, 8, self.nl._next_seq())
        for offset in offsets:
            data[offset : offset + len(packed)] = packed
        return bytes(data)

    def _encode(self, c: Change) -> bytes:
        cfg, flags = self.config, NL.NLM_F_REQUEST | NL.NLM_F_ACK
        if isinstance(c, LinkChange):
            msg = _fields(NL.ifinfmsg(), family=0, index=c.index)
            attrs = []
            if c.up is not None:
                msg["flags"], msg["change"] = (IFF_UP if c.up else 0), IFF_UP
            if c.group is not None:
                attrs.append(("IFLA_GROUP", c.group))
            if c.mtu is not None:
                attrs.append(("IFLA_MTU", c.mtu))
            msg["attrs"] = attrs
            return self.nl._encode(msg, RTM_NEWLINK, flags)
        if isinstance(c, AddrChange):
            af = AF[c.ip.version]
            msg = _fields(NL.ifaddrmsg(), family=af, prefixlen=c.prefixlen, index=c.index)
            ip = str(c.ip)
            attrs = (
                [("IFA_LOCAL", ip), ("IFA_ADDRESS", ip)]
                if af == socket.AF_INET
                else [("IFA_ADDRESS", ip)]
            )
            if c.op == "add":
                fl = IFA_F_NOPREFIXROUTE | (IFA_F_NODAD if c.ip.version == 6 else 0)
                attrs += [("IFA_FLAGS", fl), ("IFA_PROTO", cfg.protocol)]
                flags |= NL.NLM_F_CREATE | NL.NLM_F_EXCL
                mtype = RTM_NEWADDR
            else:
                mtype = RTM_DELADDR
            msg["attrs"] = attrs
            return self.nl._encode(msg, mtype, flags)
        if isinstance(c, RouteChange):
            msg = _fields(
                NL.rtmsg(),
                family=AF[c.family],
                dst_len=c.dst.prefixlen,
                table=c.table if c.table < 256 else RT_TABLE_UNSPEC,
                proto=cfg.protocol,
                scope=RT_SCOPE_UNIVERSE if c.gateway is not None else RT_SCOPE_LINK,
                type=RTN_UNICAST,
                flags=RTNH_F_ONLINK if c.gateway is not None else 0,
            )
            attrs = [("RTA_TABLE", c.table), ("RTA_OIF", c.oif)]
            if c.dst.prefixlen:
                attrs.append(("RTA_DST", str(c.dst.network_address)))
            if c.gateway is not None:
                attrs.append(("RTA_GATEWAY", str(c.gateway)))
            msg["attrs"] = attrs
            if c.op == "replace":  # only ever a route of ours (the planner saw it)
                return self.nl._encode(
                    msg, RTM_NEWROUTE, flags | NL.NLM_F_CREATE | NL.NLM_F_REPLACE
                )
            if c.op == "add":  # EXCL: a route someone else put there is never overwritten
                return self.nl._encode(msg, RTM_NEWROUTE, flags | NL.NLM_F_CREATE | NL.NLM_F_EXCL)
            return self.nl._encode(msg, RTM_DELROUTE, flags)
        if isinstance(c, RuleChange):
            msg = _fields(
                NL.fibmsg(),
                family=AF[c.family],
                src_len=c.src.prefixlen if c.src is not None else 0,
                table=c.table if c.table < 256 else RT_TABLE_UNSPEC,
                action=FR_ACT_TO_TBL,
            )
            attrs = [
                ("FRA_PRIORITY", c.priority),
                ("FRA_TABLE", c.table),
                ("FRA_PROTOCOL", cfg.protocol),
            ]
            if c.src is not None:
                attrs.append(("FRA_SRC", str(c.src.network_address)))
            if c.suppress_ifgroup is not None:
                attrs.append(("FRA_SUPPRESS_IFGROUP", c.suppress_ifgroup))
            msg["attrs"] = attrs
            if c.op == "add":
                return self.nl._encode(msg, RTM_NEWRULE, flags | NL.NLM_F_CREATE | NL.NLM_F_EXCL)
            return self.nl._encode(msg, RTM_DELRULE, flags)
        raise TypeError(f"unknown change {c!r}")


class EventsLost(Exception):
    """The kernel dropped link events (socket buffer overflow): re-read the links."""


class LinkMonitor:
    """Link events (RTMGRP_LINK) of this namespace: interfaces appearing, changing, leaving.

    A plain netlink socket bound to the link group rather than pyroute2's IPRoute: the message
    classes are already loaded for the rest of this module, and the daemon then pays no extra
    import cost.  Non-blocking, so the daemon can wait on it together with its signal pipe.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((0, RTMGRP_LINK))
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def read_events(self) -> list[tuple[bool, Link]]:
        """Every queued event as (present, link): present is False for a link that left.

        Raises EventsLost when the kernel had to drop events; the caller then re-reads every
        link, which is always correct because only the current state of links matters.
        """
        events: list[tuple[bool, Link]] = []
        while True:
            try:
                buf = self.sock.recv(1 << 20)
            except BlockingIOError:
                return events
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    raise EventsLost() from None
                raise
            offset = 0
            while offset + NLMSGHDR_LEN <= len(buf):
                length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", buf, offset)
                if length < NLMSGHDR_LEN:
                    break
                if kind in (RTM_NEWLINK, RTM_DELLINK):
                    link = _parse_link(buf[offset : offset + length])
                    if link is not None:
                        events.append((kind == RTM_NEWLINK, link))
                offset += (length + 3) & ~3


def _nla_offsets(data: bytes, header: int, types_: frozenset[int]) -> list[int]:
    """Payload offsets of the attributes of the given types in one encoded message."""
    offsets, offset = [], NLMSGHDR_LEN + header
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if kind in types_:
            offsets.append(offset + 4)
        offset += (length + 3) & ~3
    return offsets


def _stage(c: Change) -> tuple:
    """Changes of one stage go out together; a stage runs only after the previous succeeded."""
    if isinstance(c, RuleChange):
        return ("rule", c.op, c.suppress_ifgroup is None)
    return (type(c).__name__, c.op)


def _fields(msg, **values):
    for k, v in values.items():
        msg[k] = v
    return msg


def _decode(cls, data: bytes):
    msg = cls(data)
    msg.decode()
    return msg


def _parse_link(data: bytes) -> Optional[Link]:
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


def _parse_addr(data: bytes) -> Optional[Addr]:
    m = _decode(NL.ifaddrmsg, data)
    text = m.get_attr("IFA_LOCAL") or m.get_attr("IFA_ADDRESS")
    if text is None:
        return None
    return Addr(
        index=m["index"],
        ip=ip_address(text),
        prefixlen=m["prefixlen"],
        proto=m.get_attr("IFA_PROTO"),
    )


def _parse_rule(data: bytes) -> Optional[tuple[Rule, int]]:
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


def _parse_route(data: bytes) -> Optional[tuple[Route, int]]:
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

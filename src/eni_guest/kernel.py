"""Reads the kernel into a KernelState and applies planned changes: the agent's one door to it.

Reading: links and addresses are dumped whole; rules and routes are dumped per family and only
ours are kept (our protocol number, in our priority or table range), because nothing else
may ever be changed.  Whether the kernel keeps address protocols is read from the address
dump itself (`addr_protocols_kept`), never from the kernel's version.

Changes go out in stages (links, addresses, routes, the shared rule, per-IP rules, then the
removals in reverse); a stage with an error stops the run, so a later stage never builds on
a missing earlier one, and the next run converges from whatever was applied.

The netlink code itself: netlink.py (the socket, dumps, batched requests and their acks),
netlink_decode.py (messages into state values), netlink_encode.py (changes into requests).
No other module speaks netlink.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Callable, Iterable, Optional

from .changes import Change, RouteChange, RuleChange
from .config import SLOTS, Config
from .errors import KernelError
from .netlink import (
    NL,
    RTM_DELLINK,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETROUTE,
    RTM_GETRULE,
    RTM_NEWLINK,
    RTMGRP_LINK,
    Netlink,
    fields,
    messages,
)
from .netlink_decode import parse_addr, parse_link, parse_route, parse_rule
from .netlink_encode import Encoder
from .state import Addr, KernelState, Link, Route, Rule, addr_metric

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


def addr_protocols_kept(addrs: Iterable[Addr], protocol: int) -> Optional[bool]:
    """Whether this kernel keeps address protocols (IFA_PROTO), as its address dump shows.

    The kernel reports an address's protocol only when it has one, and one that keeps them
    gives one to its own IPv6 addresses (`::1` kernel_lo, link-local kernel_ll) and keeps
    ours: a protocol anywhere in the dump says yes.  None anywhere, while an address carries
    our metric, says no: we send both marks with every address, and the kernel kept only the
    metric.  Neither: the dump cannot tell (None), and there is nothing of ours to recognise.
    No version number is read (IFA_PROTO came with Linux 5.18, and distributions backport).
    """
    metric, seen_metric = addr_metric(protocol), False
    for a in addrs:
        if a.proto is not None:
            return True
        seen_metric = seen_metric or a.metric == metric
    return False if seen_metric else None


class Kernel:
    """Reads the kernel into a KernelState and applies plan changes, marked as ours."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.nl = Netlink()
        self.encoder = Encoder(self.nl, config.protocol)

    def close(self) -> None:
        self.nl.close()

    @property
    def requests_sent(self) -> int:
        return self.nl.requests_sent

    # ------------------------------------------------------------ reading

    def read_state(self) -> KernelState:
        cfg = self.config
        links = self.nl.dump(fields(NL.ifinfmsg(), family=0), RTM_GETLINK, parse_link)
        addrs = self.nl.dump(fields(NL.ifaddrmsg(), family=0), RTM_GETADDR, parse_addr)
        rules: list[Rule] = []
        routes: list[Route] = []
        prio_range = range(cfg.priority_base, cfg.priority_base + SLOTS + 1)
        table_range = range(cfg.table_base, cfg.table_base + SLOTS)
        for af in (socket.AF_INET, socket.AF_INET6):
            for r in self.nl.dump(fields(NL.fibmsg(), family=af), RTM_GETRULE, parse_rule):
                rule, proto = r
                if proto == cfg.protocol and rule.priority in prio_range:
                    rules.append(rule)
            req = fields(NL.rtmsg(), family=af, proto=cfg.protocol)
            for route, proto in self.nl.dump(req, RTM_GETROUTE, parse_route):
                if proto == cfg.protocol and route.table in table_range:
                    routes.append(route)
        return KernelState(
            links=tuple(links),
            addrs=tuple(addrs),
            rules=tuple(rules),
            routes=tuple(routes),
            addr_proto_supported=addr_protocols_kept(addrs, cfg.protocol),
        )

    def read_links(self) -> list[Link]:
        """Every link of this namespace (the watch daemon's starting point)."""
        return self.nl.dump(fields(NL.ifinfmsg(), family=0), RTM_GETLINK, parse_link)

    def link_by_name(self, name: str) -> Optional[Link]:
        """The link called `name` now, or None: one request, cheap enough for every hot-plug."""
        if not name or len(name.encode()) > 15:  # IFNAMSIZ - 1: no such link can exist
            return None
        msg = fields(NL.ifinfmsg(), family=0)
        msg["attrs"] = [("IFLA_IFNAME", name)]
        return self.nl.get(msg, RTM_GETLINK, parse_link)

    def link_by_index(self, index: int) -> Optional[Link]:
        """The link with this index now (it survives renames), or None once it is gone."""
        msg = fields(NL.ifinfmsg(), family=0, index=index)
        return self.nl.get(msg, RTM_GETLINK, parse_link)

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
            requests = [(self.encoder.request(c), c.op) for c in stage]
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


def _stage(c: Change) -> tuple:
    """Changes of one stage go out together; a stage runs only after the previous succeeded."""
    if isinstance(c, RuleChange):
        return ("rule", c.op, c.suppress_ifgroup is None)
    return (type(c).__name__, c.op)


class EventsLost(Exception):
    """The kernel dropped link events (socket buffer overflow): re-read the links."""


class LinkMonitor:
    """Link events (RTMGRP_LINK) of this namespace: interfaces appearing, changing, leaving.

    A plain netlink socket bound to the link group rather than pyroute2's IPRoute: the message
    classes are already loaded for reading and applying, and the daemon then pays no extra
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
            for kind, _seq, data in messages(buf):
                if kind in (RTM_NEWLINK, RTM_DELLINK):
                    link = parse_link(data)
                    if link is not None:
                        events.append((kind == RTM_NEWLINK, link))

"""Reads the kernel into a KernelState and applies planned changes: the agent's one door to it.

Reading: links and addresses are dumped whole; rules and routes are dumped per family and only
ours are kept (our protocol number, in our priority or table range), because nothing else
may ever be changed; other rules that select a source are kept apart, read only, for
capture.py (a rule of someone else's that takes an ENI IP's traffic first), and so are
main-table routes of others through NIC links, for mirror.py.  Whether the
kernel keeps address protocols is read from the address dump itself (`addr_protocols_kept`),
never from the kernel's version.

Changes go out in stages (links, addresses, routes, the shared rule, per-IP rules, then the
removals in reverse); a stage with an error stops the run, so a later stage never builds on
a missing earlier one, and the next run converges from whatever was applied.

The netlink code itself: netlink.py (the socket, dumps, batched requests and their acks),
netlink_decode.py (messages into state values), netlink_encode.py (changes into requests),
witness.py (the kernel's events while changes go out: whether any could have undone one).
No other module speaks netlink.
"""

from __future__ import annotations

import _socket  # socket.py's C core; socket.py's enums and selectors cost ~3 ms a start
import errno
import os
import struct

from . import metrics
from .business_plan import priority_band, table_band
from .changes import MAIN_TABLE, RouteChange, RuleChange
from .config import SLOTS, Config
from .errors import KernelError
from .netlink import (
    OBJECT_GROUPS,
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_DELROUTE,
    RTM_DELRULE,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETROUTE,
    RTM_GETRULE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTNLGRP_LINK,
    Netlink,
    drain,
    event_socket,
)
from .netlink_decode import (
    RTN_UNICAST,
    decode_rule,
    foreign_rule_of,
    main_route,
    parse_addr,
    parse_link,
    parse_route,
    parse_rule,
    route_protocol,
    rule_of,
)
from .record import record
from .state import Addr, ForeignRule, KernelState, Link, MainRoute, Route, Rule, addr_metric

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Callable, Iterable, Optional, Union

    from .changes import Change
    from .netlink_encode import Encoder
    from .witness import Witness

# Dump and get requests, packed: ifinfomsg (family, type, index, flags, change), ifaddrmsg
# (family, prefixlen, flags, scope, index), and the rtmsg / fib_rule_hdr layout (family,
# dst_len, src_len, tos, table, protocol or res1, scope or res2, type or action, flags).
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
IFLA_IFNAME = 3


def _link_request(index: int = 0, name: str = "") -> bytes:
    payload = _IFINFOMSG.pack(0, 0, index, 0, 0)
    if name:
        value = name.encode() + b"\0"
        payload += struct.pack("=HH", 4 + len(value), IFLA_IFNAME) + value
        payload += b"\0" * (-len(payload) % 4)
    return payload


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


def our_rule(config: Config, rule: Rule, proto: int) -> bool:
    """A rule of ours: our protocol number and a priority in our range (the shared rule at
    priority_base, one per-ENI priority above it per slot), or, for a rule with a business's
    selectors, in the businesses' band after them (business_plan.py)."""
    if proto != config.protocol:
        return False
    if rule.selects:
        return rule.priority in priority_band(config)
    return config.priority_base <= rule.priority <= config.priority_base + SLOTS


def our_route(config: Config, route: Route, proto: int) -> bool:
    """A route of ours: our protocol number, in one of our tables (the ENIs' and, after
    them, the businesses')."""
    return proto == config.protocol and (config.table_base <= route.table < table_band(config).stop)


class Kernel:
    """Reads the kernel into a KernelState and applies plan changes, marked as ours."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.nl = Netlink()
        self._encoder: Optional[Encoder] = None
        self._witness: Optional[Witness] = None

    @property
    def encoder(self) -> Encoder:
        """The change encoder, imported with the first change: a run that changes nothing
        (a no-op apply, a hot-plug of a NIC already configured) never loads it."""
        if self._encoder is None:
            from .netlink_encode import Encoder

            self._encoder = Encoder(self.nl, self.config.protocol)
        return self._encoder

    def close(self) -> None:
        if self.nl.sock.fileno() >= 0:  # counted once, should close be called again
            metrics.count("netlink_requests", self.nl.requests_sent)
        self.nl.close()
        if self._witness is not None:
            self._witness.close()

    @property
    def requests_sent(self) -> int:
        return self.nl.requests_sent

    # ------------------------------------------------------------ reading

    def read_state(self) -> KernelState:
        cfg = self.config
        links = self.nl.dump(_link_request(), RTM_GETLINK, parse_link)
        addrs = self.nl.dump(_IFADDRMSG.pack(0, 0, 0, 0, 0), RTM_GETADDR, parse_addr)
        rules: list[Rule] = []
        foreign: list[ForeignRule] = []
        routes: list[Route] = []
        main: list[MainRoute] = []
        for af in (_socket.AF_INET, _socket.AF_INET6):
            rule_req = _RTMSG.pack(af, 0, 0, 0, 0, 0, 0, 0, 0)
            for m in self.nl.dump(rule_req, RTM_GETRULE, decode_rule):
                ours = rule_of(m)
                if ours is not None and our_rule(cfg, *ours):
                    rules.append(ours[0])
                    continue
                other = foreign_rule_of(m)  # read only: capture.py looks at it
                if other is not None:
                    foreign.append(other)
            route_req = _RTMSG.pack(af, 0, 0, 0, 0, cfg.protocol, 0, 0, 0)
            for route, proto in self.nl.dump(route_req, RTM_GETROUTE, parse_route):
                if our_route(cfg, route, proto):
                    routes.append(route)
            for seen in self._main_routes(af, {x.index for x in links if x.could_be_nic}):
                if seen.proto == cfg.protocol:  # a [[route]] with main = true (static_routes)
                    routes.append(seen.route)
                else:
                    main.append(seen)
        return KernelState(
            links=tuple(links),
            addrs=tuple(addrs),
            rules=tuple(rules),
            routes=tuple(routes),
            addr_proto_supported=addr_protocols_kept(addrs, cfg.protocol),
            foreign_rules=tuple(foreign),
            main_routes=tuple(main),
        )

    def _main_routes(self, af: int, nics: set[int]) -> list[MainRoute]:
        """Unicast routes in `main` through a link that may be an ENI: others', for the
        mirrors (mirror.py), and ours (protocol 229: `[[route]]` entries, static_routes.py).

        One dump per family that the kernel limits to table main and unicast routes (strict
        dump checking; an older kernel sends more, which `main_route` drops).  Decoded with
        struct (`main_route`), so a main table full of routes through other links (a BGP
        feed on a tunnel, Docker bridges) costs a scan of each message, not a decode.
        """

        def parse(data: bytes) -> Optional[MainRoute]:
            seen = main_route(data, nics)
            return None if seen is None else MainRoute(*seen)

        req = _RTMSG.pack(af, 0, 0, 0, MAIN_TABLE, 0, 0, RTN_UNICAST, 0)
        return self.nl.dump(req, RTM_GETROUTE, parse)

    def read_links(self) -> list[Link]:
        """Every link of this namespace (the watch daemon's starting point)."""
        return self.nl.dump(_link_request(), RTM_GETLINK, parse_link)

    def read_addrs(self, index: int) -> list[Addr]:
        """The addresses on one link (the kernel filters the dump by index)."""
        addrs = self.nl.dump(_IFADDRMSG.pack(0, 0, 0, 0, index), RTM_GETADDR, parse_addr)
        return [a for a in addrs if a.index == index]

    def read_dhcp_view(self, index: int) -> tuple[list[Addr], list[Route]]:
        """One link's IPv4 addresses and the main table's IPv4 routes: what a DHCP client on
        that link configured (JD Cloud's primary ENI: its subnet and gateway)."""
        req = _IFADDRMSG.pack(_socket.AF_INET, 0, 0, 0, index)
        addrs = [a for a in self.nl.dump(req, RTM_GETADDR, parse_addr) if a.index == index]
        req = _RTMSG.pack(_socket.AF_INET, 0, 0, 0, MAIN_TABLE, 0, 0, 0, 0)
        routes = [
            r for r, _ in self.nl.dump(req, RTM_GETROUTE, parse_route) if r.table == MAIN_TABLE
        ]
        return addrs, routes

    def link_by_name(self, name: str) -> Optional[Link]:
        """The link called `name` now, or None: one request, cheap enough for every hot-plug."""
        if not name or len(name.encode()) > 15:  # IFNAMSIZ - 1: no such link can exist
            return None
        return self.nl.get(_link_request(name=name), RTM_GETLINK, parse_link)

    def link_by_index(self, index: int) -> Optional[Link]:
        """The link with this index now (it survives renames), or None once it is gone."""
        return self.nl.get(_link_request(index=index), RTM_GETLINK, parse_link)

    # ------------------------------------------------------------ writing

    def watch(self) -> None:
        """Watch the kernel's events from now on, for `doubt` after an apply (witness.py):
        called before the apply whose changes are to be verified."""
        if self._witness is None:
            from .witness import Witness

            self._witness = Witness(self.nl.port)

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

    def doubt(self, applied: list[Change], before: KernelState) -> Optional[str]:
        """Why the kernel's events since `watch` cannot vouch that every applied change
        still holds (then read the kernel again), or None when they can (witness.py).
        `before`: the state the plan was made from."""
        witness, self._witness = self._witness, None
        if witness is None:
            return "its events were not watched"
        try:
            return witness.doubt(applied, before.links, self.config.protocol)
        finally:
            witness.close()


def _stage(c: Change) -> tuple:
    """Changes of one stage go out together; a stage runs only after the previous succeeded."""
    if isinstance(c, RuleChange):
        return ("rule", c.op, c.suppress_ifgroup is None)
    return (type(c).__name__, c.op)


class EventsLost(Exception):
    """The kernel dropped events (socket buffer overflow): re-read the links, and reconcile."""


@record(frozen=True)
class Gone:
    """An address, rule or route the kernel deleted: anyone's (the watch daemon tells ours
    with our_rule, our_route and the address's protocol).  proto is None for an address on a
    kernel that does not report address protocols."""

    obj: Union[Addr, Rule, Route]
    proto: Optional[int]


@record(frozen=True)
class MainRouteEvent:
    """Someone else's main-table unicast route through a link appeared, changed or went
    (mirror.py copies those through an ENI into its table): the watch daemon reconciles."""

    route: Route
    present: bool


@record(frozen=True)
class Added:
    """An address the kernel added (or updated): decoded only when the monitor's
    `addresses_added` is set: others' addresses on ENI links (watch_floating.py)."""

    addr: Addr


if TYPE_CHECKING:  # only type checkers need it: annotations are never evaluated
    Event = Union[tuple[bool, Link], Gone, MainRouteEvent, Added]


class LinkMonitor:
    """Kernel events of this namespace: links appearing, changing, leaving; and, with
    `objects`, every address, rule and route deleted (who deleted it is not said).

    A plain netlink socket bound to the groups rather than pyroute2's IPRoute: the message
    classes are already loaded for reading and applying, and the daemon then pays no extra
    import cost.  Non-blocking, so the daemon can wait on it together with its signal pipe.
    Only deletions are decoded, and a route's only when it carries `protocol` (read from the
    header before anything is decoded): a busy host's route churn (containers, IPv6 router
    advertisements) then costs a byte compare per message.  The one addition decoded is a
    main-table unicast route of someone else's with a single link (MainRouteEvent, for the
    mirrors; decoded with struct), and the daemon acts only when its link is an ENI's.
    """

    def __init__(self, *, objects: bool = False, protocol: Optional[int] = None) -> None:
        groups = (RTNLGRP_LINK,) + (OBJECT_GROUPS if objects else ())
        self.protocol = protocol
        self.addresses_added = False  # decode RTM_NEWADDR too (watch_floating.py)
        self.sock = event_socket(groups, force=False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def read_events(self) -> list[Event]:
        """Every queued event: (present, link) for a link (present is False for one that
        left), Gone for a deleted address, rule or route.

        Raises EventsLost when the kernel had to drop events; the caller then re-reads every
        link and reconciles, which is always correct because only the current state matters.
        """
        try:
            queued = drain(self.sock)
        except OSError as e:
            if e.errno == errno.ENOBUFS:
                raise EventsLost() from None
            raise
        events: list[Event] = []
        for kind, data in queued:
            event = self._decode(kind, data)
            if event is not None:
                events.append(event)
        return events

    def _decode(self, kind: int, data: bytes) -> Optional[Event]:
        if kind in (RTM_NEWLINK, RTM_DELLINK):
            link = parse_link(data)
            return None if link is None else (kind == RTM_NEWLINK, link)
        if kind == RTM_DELADDR:
            addr = parse_addr(data)
            return None if addr is None else Gone(addr, addr.proto)
        if kind == RTM_NEWADDR and self.addresses_added:
            addr = parse_addr(data)
            return None if addr is None else Added(addr)
        if kind == RTM_DELRULE:
            rule = parse_rule(data)
            return None if rule is None else Gone(*rule)
        main = main_route(data) if kind in (RTM_NEWROUTE, RTM_DELROUTE) else None
        if main is not None and main[1] != self.protocol:
            return MainRouteEvent(main[0], kind == RTM_NEWROUTE)
        if kind == RTM_DELROUTE and self.protocol in (None, route_protocol(data)):
            route, proto = parse_route(data)
            return Gone(route, proto)
        return None  # other additions: only what disappears needs an answer

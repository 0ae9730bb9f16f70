"""Verify without reading the kernel again: the kernel's own events, from the first change on.

After an apply, the run must know that the kernel still holds every change it acknowledged
(agent.verify).  Reading the kernel again costs as much as the first read: ~8 ms for
15 ENIs x 50 IPs, a tenth of a first apply.  But an acknowledged change can only be undone
by something the kernel announces on its link, address, route and rule groups, so a socket
subscribed to them *before the first change goes out* sees it:

* a deletion of something we added: someone's `ip addr del`, `ip route flush table N`,
  `ip rule del`;
* a route of ours written over (`ip route replace` in one of our tables);
* a link going down: the kernel then drops the link's IPv4 routes without a word;
* a link's MTU or group set otherwise after we set it.

Most events cannot undo anything, and the kernel does not even queue them: the socket's
filter (classic BPF, which the kernel runs on each event) drops every address or rule
added, our own requests' routes and removals, the kernel's routes in table local, and its
own additions to main (the prefix route each address brings).  What passes is looked at
here, a handful in a first apply.

When the events cannot tell, verify reads the kernel again and names what differs, as it
always did: the queue overflowed (ENOBUFS), the socket could not be made, an event above
showed up (then the read decides whether it touched one of ours), or the run added a
business's rules with selectors (an old kernel may drop a selector it does not know and
still acknowledge the rule: only reading it back shows that).
"""

from __future__ import annotations

import errno

from .changes import AddrChange, LinkChange, RouteChange, RuleChange
from .netlink import (
    ACCEPT,
    BPF_JEQ,
    BPF_LD_B,
    BPF_LD_H,
    BPF_LD_W,
    BPF_RET,
    DROP,
    OBJECT_GROUPS,
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_DELROUTE,
    RTM_DELRULE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTM_NEWRULE,
    RTNLGRP_LINK,
    bpf,
    drain,
    event_socket,
    host_order,
)
from .netlink_decode import parse_addr, parse_link, parse_route, parse_rule, route_protocol

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Iterable, Optional

    from .changes import Change
    from .state import Link, Route

# Where the filter looks: the netlink header (length, type, flags, sequence number, port id
# of the socket whose request caused the event, 0 for the kernel's own), then rtmsg
# (family, dst_len, src_len, tos, table, ...).
TYPE_AT, PORT_AT, TABLE_AT = 4, 12, 20
MAIN, LOCAL = 254, 255


def program(port: int) -> bytes:
    """The filter: which events the kernel queues for a run whose requests go out from
    netlink port `port` (see the module's docstring for why each is dropped)."""
    kind = lambda t: host_order(t, 2)  # noqa: E731
    own = host_order(port, 4)
    return bpf(
        [
            (BPF_LD_H, TYPE_AT),
            (BPF_JEQ, kind(RTM_NEWADDR), "drop", None),
            (BPF_JEQ, kind(RTM_NEWRULE), "drop", None),
            (BPF_JEQ, kind(RTM_NEWROUTE), "route", None),
            (BPF_JEQ, kind(RTM_DELADDR), "removal", None),
            (BPF_JEQ, kind(RTM_DELROUTE), "removal", None),
            (BPF_JEQ, kind(RTM_DELRULE), "removal", None),
            (BPF_RET, ACCEPT),  # a link's event
            "route",
            (BPF_LD_B, TABLE_AT),
            (BPF_JEQ, LOCAL, "drop", None),
            (BPF_LD_W, PORT_AT),
            (BPF_JEQ, own, "drop", None),
            (BPF_JEQ, 0, None, "accept"),  # someone else's route: looked at
            (BPF_LD_B, TABLE_AT),
            (BPF_JEQ, MAIN, "drop", "accept"),  # the kernel's own: only outside main
            "removal",
            (BPF_LD_W, PORT_AT),
            (BPF_JEQ, own, "drop", "accept"),  # our own removals were acknowledged
            "accept",
            (BPF_RET, ACCEPT),
            "drop",
            (BPF_RET, DROP),
        ]
    )


class Witness:
    """The kernel's events from now on, filtered (`program`), for `doubt` after the apply."""

    def __init__(self, port: int, rcvbuf: int = 4 << 20) -> None:
        self.unavailable = ""
        self.sock = None
        try:
            self.sock = event_socket((RTNLGRP_LINK, *OBJECT_GROUPS), program(port), rcvbuf)
        except OSError as e:
            self.unavailable = f"no event socket ({e.strerror or e})"

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def doubt(self, applied: list[Change], before: Iterable[Link], protocol: int) -> Optional[str]:
        """Why the events cannot vouch that every applied change still holds; None if they
        can.  `before`: the links as the plan saw them."""
        if self.sock is None:
            return self.unavailable
        try:
            events = drain(self.sock)
        except OSError as e:
            if e.errno == errno.ENOBUFS:
                return "the kernel dropped events (its queue overflowed)"
            return f"events unreadable ({e.strerror or e})"
        return doubt(events, applied, before, protocol)


def doubt(
    events: Iterable[tuple[int, bytes]],
    applied: list[Change],
    before: Iterable[Link],
    protocol: int,
) -> Optional[str]:
    """What in these events (type, message), in the order the kernel sent them, may have
    undone one of the applied changes, or None: nothing could have.

    Removals: a removal of ours is fine, anything else removed is a doubt (a route only if
    it carries our protocol: others' and the kernel's are never ours).  A route written by
    someone else over one we added or replaced.  A link that was up and went down, if a
    change was on it or through it.  A link set of ours that the link's last event shows
    otherwise (a link that left took its changes along, as diff.not_taken counts it).
    """
    for c in applied:
        if isinstance(c, RuleChange) and c.op == "add" and _selects(c):
            return "rules with selectors were added (an old kernel may not keep a selector)"
    seen = _Applied(applied)  # what was applied, looked up only when an event needs it
    up = {link.index: link.up for link in before}
    last: dict[int, Optional[Link]] = {}
    for kind, data in events:
        if kind in (RTM_NEWLINK, RTM_DELLINK):
            link = parse_link(data)
            if link is None:
                continue
            if kind == RTM_DELLINK:
                last[link.index] = None
            elif up.get(link.index) and not link.up and link.index in seen.touched:
                return f"link {link.name} went down (its IPv4 routes went with it)"
            else:
                up[link.index], last[link.index] = link.up, link
        elif kind == RTM_DELADDR:
            addr = parse_addr(data)
            if addr is not None and (addr.index, addr.ip) not in seen.removed_addrs:
                return f"address {addr.ip} was removed from link {addr.index}"
        elif kind == RTM_DELROUTE and route_protocol(data) == protocol:
            route, _ = parse_route(data)
            if _key(route) not in seen.removed_routes:
                return f"route {route.dst} in table {route.table} was removed"
        elif kind == RTM_DELRULE:
            parsed = parse_rule(data)
            if parsed is not None and parsed[1] == protocol and parsed[0] not in seen.removed_rules:
                return f"rule priority {parsed[0].priority} was removed"
        elif kind == RTM_NEWROUTE:
            route, _ = parse_route(data)
            if _key(route) in seen.written_routes:
                return f"route {route.dst} in table {route.table} was written by someone else"
    for c in applied:
        link = last.get(c.index) if isinstance(c, LinkChange) else None
        if link is not None and not c.holds_on(link):  # type: ignore[union-attr]
            return f"link {c.ifname} reads otherwise than `{c.describe()}`"  # type: ignore[union-attr]
    return None


def _selects(c: RuleChange) -> bool:
    return (c.dst, c.fwmark, c.uids, c.ipproto, c.dports) != (None,) * 5


def _key(r: Route | RouteChange) -> tuple:
    """What tells routes apart (as diff.py tells them apart)."""
    return (r.family, r.table, r.dst, r.metric)


class _Applied:
    """Sets of the applied changes, each made the first time an event asks for it: in most
    runs none is (a first apply of 750 IPs would spend ~2 ms making them all)."""

    def __init__(self, applied: list[Change]) -> None:
        self.applied = applied

    def __getattr__(self, name: str) -> set:
        c = self.applied
        if name == "touched":  # the links a change was on or went through
            made = {x.index for x in c if isinstance(x, (LinkChange, AddrChange))}
            made |= {x.oif for x in c if isinstance(x, RouteChange)}
        elif name == "removed_addrs":
            made = {(x.index, x.ip) for x in c if isinstance(x, AddrChange) and x.op == "del"}
        elif name == "removed_routes":
            made = {_key(x) for x in c if isinstance(x, RouteChange) and x.op == "del"}
        elif name == "written_routes":
            made = {_key(x) for x in c if isinstance(x, RouteChange) and x.op != "del"}
        elif name == "removed_rules":
            made = {x.key() for x in c if isinstance(x, RuleChange) and x.op == "del"}
        else:
            raise AttributeError(name)
        setattr(self, name, made)
        return made

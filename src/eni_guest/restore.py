"""Which deletions the watch daemon answers, and when: the restore schedule.

networkd reconfiguring the primary (a restart, a package upgrade, netplan apply), a tool
flushing a table or an administrator's `ip rule del` deletes what eni-guest put there, and
until it is back every ENI IP's traffic leaves through the wrong NIC.  The daemon follows
address, rule and route deletions, and this module decides which of them are eni-guest's
(the same recognition as the kernel read: kernel.our_rule, kernel.our_route; an address of
our protocol on a link of our interface group, or any address on such a link where the
kernel reports no address protocol; and any IPv4 address on such a link, because the kernel
deletes the IPv4 routes through a link that lost its last IPv4 address without a word about
them), and when to put them back:

* debounced: a burst of deletions (networkd deletes every rule in a few milliseconds) is one
  reconcile, DEBOUNCE after the last of them and never later than MAX_DELAY after the first;
* not for its own deletions: what the daemon's own reconcile deleted is remembered for
  OWN_MEMORY seconds and its deletion events are ignored.  A reconcile that still finds
  nothing to do (an event that slipped past) changes nothing, so it causes no events: the
  chain stops there;
* not for what left with its link (a detached ENI's addresses and routes).

Beside deletions, a main-table route of someone else's through an ENI link that appears,
changes or goes is answered the same way (kernel.MainRouteEvent): the reconcile adds, changes
or removes its copy in the ENI's table (mirror.py).

The reconcile itself (watch.py) uses the last complete metadata read: what the same metadata
asked for is put back without a metadata round trip.
"""

from __future__ import annotations

from .changes import AddrChange, RouteChange, RuleChange
from .config import Config
from .kernel import Gone, MainRouteEvent, our_route, our_rule
from .state import Addr, Link, Route, Rule

DEBOUNCE = 0.15  # s of quiet after the last deletion before restoring
MAX_DELAY = 0.5  # s after the first deletion at the latest
OWN_MEMORY = 2.0  # s a deletion of the daemon's own is remembered

# ("rule", Rule) | ("route", family, table, dst) | ("addr", ifindex, ip)
Key = tuple
TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:  # only type checkers need it: annotations are never evaluated
    from typing import Any, Callable, Iterable, Mapping, Optional, Union

    from .changes import Change

    Obj = Union[Addr, Rule, Route]


def key_of(obj: Obj) -> Key:
    """How a deleted object is told apart (the kernel's own identity of each kind)."""
    if isinstance(obj, Rule):
        return ("rule", obj)
    if isinstance(obj, Route):
        return ("route", obj.family, obj.table, obj.dst)
    return ("addr", obj.index, obj.ip)


def key_of_change(change: Change) -> Optional[Key]:
    """The key of what a change deletes; None for anything else (an add, a link change)."""
    if change.op != "del":
        return None
    if isinstance(change, RuleChange):
        return ("rule", change.key())
    if isinstance(change, RouteChange):
        return ("route", change.family, change.table, change.dst)
    if isinstance(change, AddrChange):
        return ("addr", change.index, change.ip)
    return None


def ours(
    gone: Gone, config: Config, group_of: Callable[[int], Optional[int]]
) -> Optional[tuple[Key, int]]:
    """(key, ifindex it was on: 0 for a rule) of a deleted object if it is eni-guest's, else
    None.  `group_of(ifindex)` is the interface group of a link the daemon knows (None:
    unknown)."""
    obj, proto = gone.obj, gone.proto
    if isinstance(obj, Rule):
        return (key_of(obj), 0) if proto is not None and our_rule(config, obj, proto) else None
    if isinstance(obj, Route):
        ok = proto is not None and our_route(config, obj, proto)
        return (key_of(obj), obj.oif) if ok else None
    if group_of(obj.index) != config.interface_group:
        return None  # not on an ENI link
    if proto in (None, config.protocol) or obj.ip.version == 4:
        # Anyone's IPv4 address too: when a link loses its last one (networkd dropping the
        # primary's DHCP address on a reconfigure) the kernel deletes every IPv4 route through
        # it, our tables' included, and says nothing about the routes.
        return (key_of(obj), obj.index)
    return None


def collect(events: Iterable[Any], config: Config, links: Mapping[int, Link]) -> dict[Key, int]:
    """The deletions of ours among a batch of events (kernel.Gone; others are skipped), as
    key -> the ifindex it was on (0: a rule).  `links` are the links present after the batch:
    what left with its link (a detached ENI's addresses and routes) is unplug's business."""

    def group_of(index: int) -> Optional[int]:
        link = links.get(index)
        return None if link is None else link.group

    out = {}
    for event in events:
        seen = ours(event, config, group_of) if isinstance(event, Gone) else None
        if (
            isinstance(event, MainRouteEvent)
            and group_of(event.route.oif) == config.interface_group
        ):
            # someone else's main-table route through an ENI came, changed or went: its copy
            # in the ENI's table (mirror.py) follows, with the same debounce
            r = event.route
            seen = (("main", r.family, r.dst, r.oif, r.gateway, r.metric, event.present), r.oif)
        if seen is not None and (not seen[1] or seen[1] in links):
            out[seen[0]] = seen[1]
    return out


class Schedule:
    """Deletions in, one due time out.  Owned by the worker thread (no locking)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._own: dict[Key, float] = {}  # key -> until when it is remembered
        self._first: Optional[float] = None
        self.due: Optional[float] = None

    def mine(self, changes: Iterable[Change]) -> None:
        """The daemon applied these: their deletion events are its own."""
        now = self._clock()
        self._own = {k: t for k, t in self._own.items() if t > now}  # bounded without events
        until = now + OWN_MEMORY
        for change in changes:
            key = key_of_change(change)
            if key is not None:
                self._own[key] = until

    def deleted(self, seen: Iterable[tuple[Key, int]], left: Iterable[int] = ()) -> bool:
        """Deletions of ours were seen, as (key, ifindex) from `ours`; `left` are links that
        departed meanwhile.  True when one is to be restored (there is then a due time)."""
        now = self._clock()
        self._own = {k: t for k, t in self._own.items() if t > now}
        gone_links = set(left)
        wanted = False
        for key, index in seen:
            if self._own.pop(key, None) is not None:
                continue  # the daemon's own deletion
            if index and index in gone_links:
                continue  # left with its link: unplug's business
            wanted = True
        if wanted:
            self.soon()
        return wanted

    def soon(self) -> None:
        """Restore soon: debounced, within MAX_DELAY of the first request."""
        now = self._clock()
        if self._first is None:
            self._first = now
        self.due = min(self._first + MAX_DELAY, now + DEBOUNCE)

    def since_first(self) -> float:
        return 0.0 if self._first is None else self._clock() - self._first

    def take(self) -> bool:
        """True (once) when a restore is due now."""
        if self.due is None or self._clock() < self.due:
            return False
        self.cancel()
        return True

    def cancel(self) -> None:
        """A reconcile is about to run anyway."""
        self._first = self.due = None

"""Which address events the watch daemon answers at once: others' addresses on ENI links
(floating.py).

keepalived adds a VIP to an ENI's link the moment it becomes master and deletes it when it
steps down; an administrator's or a HaVip agent's `ip addr add` is the same.  The address's
rule must follow within milliseconds, not at the next reconcile.  The daemon's main thread
asks `came_or_went` about every batch of kernel events: an address without eni-guest's
protocol, on a link of our interface group, that appeared or left (not a link-local one:
those come with the link, whose event is answered anyway).  The worker then reconciles at
once with the last complete metadata read (no metadata round trip), which adds or removes the
rule and nothing else.  Whether the address is inside the ENI's subnets, excluded or listed
elsewhere is the planner's question, asked with the instance in hand.
"""

from __future__ import annotations

import time

from .config import Config
from .state import Addr, Link

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Iterable, Mapping, Optional


def came_or_went(
    events: Iterable[Any], config: Config, links: Mapping[int, Link]
) -> Optional[float]:
    """The time (time.monotonic) someone else's address on an ENI link appeared or left in
    this batch of events, or None.  `links` are the links present after the batch."""
    from .kernel import Added, Gone

    for event in events:
        if isinstance(event, Added):
            addr = event.addr
        elif isinstance(event, Gone) and isinstance(event.obj, Addr):
            addr = event.obj
        else:
            continue
        link = links.get(addr.index)
        if link is None or link.group != config.interface_group:
            continue  # not on an ENI link (or it left with its link: unplug's business)
        if addr.proto != config.protocol and not addr.ip.is_link_local:
            return time.monotonic()
    return None

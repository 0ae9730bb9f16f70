"""Which address events the watch daemon answers for floating IPs (floating.py).

keepalived adds a VIP to an ENI's link the moment it becomes master and deletes it when it
steps down; the VIP's rule must follow within milliseconds, not at the next reconcile.  The
daemon's main thread asks `came_or_went` about every batch of kernel events: an address inside
`floating_ips`, on a link of our interface group, that appeared or left.  The worker then
reconciles at once with the last complete metadata read (no metadata round trip), which adds
or removes the rule and nothing else.  Address additions are decoded only when `floating_ips`
is set (`wanted`): without it the daemon pays nothing for the address churn of a busy host.
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Mapping, Optional

from .config import Config
from .floating import is_floating
from .state import Addr, Link


def wanted(config: Config) -> bool:
    """Whether the daemon must decode address additions at all."""
    return bool(config.floating_ips)


def came_or_went(
    events: Iterable[Any], config: Config, links: Mapping[int, Link]
) -> Optional[float]:
    """The time (time.monotonic) a floating address on an ENI link appeared or left in this
    batch of events, or None.  `links` are the links present after the batch."""
    from .kernel import Added, Gone

    if not config.floating_ips:
        return None
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
        if addr.proto != config.protocol and is_floating(addr.ip, config):
            return time.monotonic()
    return None

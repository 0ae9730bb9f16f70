"""What the watch daemon's main thread hands to its worker (watch.py), and the STATUS= line
the worker tells systemd after each full reconcile."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional

from .config import Config
from .state import Link


@dataclass
class Waiting:
    """A link that appeared and waits for metadata to list its MAC as a settled ENI."""

    link: Link
    deadline: float


@dataclass
class Inbox:
    """What the main thread hands to the worker (guarded by Watcher._cond)."""

    appeared: dict[int, Link] = field(default_factory=dict)
    left: set[int] = field(default_factory=set)
    unplug: bool = False
    reconcile: bool = False
    gone: dict[tuple, int] = field(default_factory=dict)  # ours deleted: key -> its ifindex
    lost: bool = False  # events were dropped: deletions may have been among them
    floating: Optional[float] = None  # when a floating address came or went (floating.py)

    def has_mail(self) -> bool:
        return bool(
            self.appeared or self.left or self.unplug or self.reconcile or self.gone or self.lost
        ) or (self.floating is not None)

    def put(
        self,
        appeared: Optional[Link],
        left: Optional[Link],
        reconcile: bool,
        gone: Optional[dict[tuple, int]],
        lost: bool,
        floating: Optional[float],
        config: Config,
    ) -> None:
        """Add events: a link that appears cancels its departure and the other way round; a
        departing link in our interface group means an ENI to clean up after."""
        if appeared is not None:
            self.appeared[appeared.index] = appeared
            self.left.discard(appeared.index)
        if left is not None:
            self.appeared.pop(left.index, None)
            self.left.add(left.index)
            self.unplug |= left.group == config.interface_group
        self.reconcile |= reconcile
        self.gone.update(gone or {})
        self.lost |= lost
        if floating is not None and self.floating is None:
            self.floating = floating


def status_text(done: Optional[tuple[Any, Any]], outage: Optional[str], failed: Any) -> str:
    """What `systemctl status` shows: the last full reconcile's outcome (done: the instance
    and the result; else why it did not happen)."""
    at = time.strftime("%H:%M:%S")
    if done is not None:
        enis = done[0].enis
        ips = sum(len(e.ips) for e in enis)
        return f"reconciled at {at}: {len(enis)} ENIs, {ips} IPs, {len(done[1].applied)} changes"
    if outage is not None:
        return f"metadata unavailable at {at}, changing nothing: {outage}"
    return f"reconcile failed at {at}: {failed}"

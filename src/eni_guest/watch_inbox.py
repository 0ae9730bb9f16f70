"""What the watch daemon's main thread hands to its worker (watch.py), how the worker judges
the links waiting for metadata to settle, and what it tells systemd: the STATUS= line after
each full reconcile, the watchdog's WATCHDOG=1."""

from __future__ import annotations

import time

from . import settle
from .config import Config
from .log import log
from .model import Instance
from .record import field, record
from .state import Link

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Optional


@record
class Waiting:
    """A link that appeared and waits for metadata to list its MAC as a settled ENI."""

    link: Link
    deadline: float


@record
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


def watchdog(notify: Any, main_quiet_for: float) -> None:
    """WATCHDOG=1 when due, and only while the main thread (kernel events, signals) is alive
    too: it wakes at least once per watchdog interval (watch_loop.py), so `main_quiet_for`,
    the time since it last woke, stays under two intervals."""
    interval = notify.interval
    if interval is not None and main_quiet_for <= 2 * interval + 1:
        notify.ping()


def judge_waiting(
    waiting: dict[int, Waiting],
    instance: Optional[Instance],
    *,
    error: Optional[str],
    now: float,
    timeout: float,
    configured: bool = True,
) -> bool:
    """Judge every waiting link after one metadata read (None: it failed, `error` says why);
    forget the decided ones, saying why where it matters.  True when one of them is to be
    configured.  configured=False keeps those waiting: the reconcile that configures them is
    yet to run (and if it fails, the next poll tries again)."""
    configure = False
    for index, w in list(waiting.items()):
        verdict = settle.judge(
            w.link, instance, error=error, time_left=w.deadline - now, timeout=timeout
        )
        configure |= verdict.action == settle.CONFIGURE
        if verdict.action == settle.WAIT or (verdict.action == settle.CONFIGURE and not configured):
            continue
        del waiting[index]
        if verdict.why:
            log.log(verdict.level, "%s", verdict.why)
    return configure

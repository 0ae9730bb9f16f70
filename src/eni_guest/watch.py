"""`eni-guest watch`: a daemon that follows kernel events and re-reads metadata every interval.

Why a daemon besides udev: some images have no udev hook installed, a rename or a MAC change
produces no udev "add", and IPs assigned or unassigned in the console (keepalived-style IP
failover) produce no event at all in the guest: only reading metadata again finds them.

Two threads:
* the main thread owns the netlink event socket and the signal pipe.  It keeps the name
  and MAC of every present link (bounded by the links that exist, so memory stays flat) and
  passes on only what matters: a new link, a rename or MAC change (maybe an ENI to configure),
  the departure of a link in our interface group (an ENI whose rules must go), and the
  deletion of an address, rule or route of eni-guest's (restore.py: which ones, and when);
* the worker does every metadata read and every kernel change, one at a time, so two
  reconciles never run at once in this process (other processes are kept out by the run
  lock).  Links waiting for metadata to settle share one backoff schedule: a burst of new
  interfaces costs one metadata read per poll, not one per interface, and a slow wait never
  blocks events, the periodic reconcile or a detach.  What someone else deleted is put back
  by a reconcile with the last complete metadata read, within a second, no metadata read
  needed (also during a metadata outage: the deletion was not metadata's doing).  Someone
  else's address (a floating IP) coming or going on an ENI link is answered the same way, at
  once, with no debounce: keepalived just became master or stepped down (watch_floating.py).

While metadata fails nothing is changed (reconcile reads metadata before the kernel), and the
outage is logged once when it starts and once when it ends.  Cleaning up after a detach needs
no metadata and still happens, and so does putting back what someone deleted.  SIGTERM
stops within about a second; SIGHUP re-reads the configuration and keeps the old one if the
new one is invalid.

A periodic read asks only for what can change (the MAC listing, each ENI's key listing,
IPs, prefixes): the token, the primary's MAC and each ENI's fixed keys are kept between
reads (and shared with the boot's other runs through /run) and forgotten whenever a link
comes or goes or a read fails (providers/memo.py).

Under systemd (Type=notify, sdnotify.py) the worker tells what each full reconcile did
(STATUS=) and sends the watchdog's WATCHDOG=1 while both threads are alive; every reconcile
rewrites the Prometheus text file when metrics_file is set (textfile.py).
"""

from __future__ import annotations

import threading
import time

from . import hotplug, restore, sdnotify, settle, textfile
from .config import Config
from .errors import ConfigError, EniGuestError, MetadataError, MetadataUnavailable
from .log import log
from .mirror import mirror_metric
from .model import Instance
from .providers import memo
from .state import ForeignRule, Link
from .watch_inbox import Inbox, Waiting, judge_waiting, status_text, watchdog

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Callable, Optional


class Watcher:
    """The daemon.  `run()` is the whole process; `cycle()` is one periodic reconcile."""

    def __init__(
        self,
        load_config: Callable[[], Config],
        config: Optional[Config] = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load_config
        self.config = config if config is not None else load_config()
        self._clock = clock
        self._cond = threading.Condition()
        self._inbox = Inbox()
        self._stopping = False
        self._waiting: dict[int, Waiting] = {}  # worker-owned, keyed by ifindex
        self._backoff = settle.Backoff()
        self._poll_at = 0.0
        self._polled_at = float("-inf")  # when the waiting links' last read was
        self._next_full = 0.0  # the first cycle runs at once
        self._outage: Optional[str] = None
        self._warnings: frozenset[str] = frozenset()
        self._captures_warned: set[ForeignRule] = set()  # once a process for each such rule
        self._detected: Optional[tuple[Config, Config]] = None
        self._restore = restore.Schedule(clock)
        self._instance: Optional[Instance] = None  # the last complete metadata read
        self._floating_retry = False  # the last floating reconcile failed: once more
        self._floating_at: Optional[float] = None  # a floating address came or went then
        self.notify = sdnotify.Notifier()  # systemd: READY, STATUS, WATCHDOG (Type=notify)
        self.main_seen = clock()  # when the main thread last woke (watch_loop), for WATCHDOG
        self._failed: Optional[str] = None  # why the last reconcile failed (kernel, lock)
        self.cycles = 0
        self.restores = 0

    # ------------------------------------------------------------ the worker

    def _effective(self) -> Config:
        """The configuration with provider "auto" resolved once per configuration loaded."""
        cfg = self.config
        if cfg.provider != "auto":
            return cfg
        if self._detected is None or self._detected[0] is not cfg:
            self._detected = (cfg, hotplug.resolve_provider(cfg))
        return self._detected[1]

    def _metadata(self, read: Callable[[Config], Any]) -> Any:
        """Run a metadata read; log an outage once when it starts and once when it ends."""
        try:
            out = read(self._effective())
        except MetadataError as e:
            memo.forget()  # read everything again once the service answers
            if self._outage is None:
                log.error("metadata unavailable, changing nothing until it answers: %s", e)
            self._outage = str(e)
            return None
        if self._outage is not None:
            log.info("metadata available again")
            self._outage = None
        return out

    def cycle(self) -> bool:
        """One full reconcile under the run lock; False when metadata or the kernel failed."""
        from .agent import read_instance

        self._cycle_begins()
        return self._cycle_done(
            self._reconcile(lambda: self._metadata(lambda c: read_instance(c)[0]))
        )

    def _cycle_begins(self) -> None:
        self._next_full = self._clock() + self.config.watch_interval
        self._restore.cancel()  # this reconcile reads the kernel after any deletion so far
        self.cycles += 1

    def _cycle_done(self, done: Optional[tuple]) -> bool:
        self.notify.send(f"STATUS={status_text(done, self._outage, self._failed)}")
        if done is None:
            return False
        self._instance = done[0]
        self._judge_waiting(done[0])
        return True

    def _restore_now(self) -> None:
        """Put back what someone deleted: reconcile with the last complete metadata read."""
        if self._instance is None:  # none yet (or the configuration changed): a full one
            self._next_full = self._clock()
            return
        took = self._restore.since_first()
        self.restores += 1
        done = self._reconcile(lambda: self._instance)
        if done is not None and done[1].applied:
            metric = mirror_metric(self.config.protocol)
            if all(getattr(c, "metric", 0) == metric for c in done[1].applied):
                log.info("followed main-table routes through ENIs (%.2f s after the change)", took)
            else:
                log.info("restored what was deleted (%.2f s after the first deletion)", took)

    def _floating_now(self) -> None:
        """A floating address came or went: its rule follows at once, from the last complete
        metadata read (floating.py); before the first one, a full reconcile."""
        at, self._floating_at = self._floating_at, None
        if self._instance is None:
            self._next_full = self._clock()
            return
        # Its check may lose a race with keepalived flapping the address before that event
        # is even read: the first failure is followed by one more try at once, quietly.
        first, self._floating_retry = not self._floating_retry, False
        done = self._reconcile(
            lambda: self._instance, quiet=lambda: first or self._floating_again()
        )
        if done is None and first:
            self._floating_retry, self._floating_at = True, at
            return
        if done is not None and done[1].applied and at is not None:
            took = (time.monotonic() - at) * 1000
            log.info("floating IPs followed (%.0f ms after the address event)", took)

    def _floating_again(self) -> bool:
        """A floating address came or went again meanwhile: the next reconcile follows it."""
        with self._cond:
            return self._inbox.floating is not None

    def _reconcile(
        self,
        instance_of: Callable[[], Optional[Instance]],
        quiet: Callable[[], bool] = lambda: False,
        *,
        recorded: bool = True,
    ) -> Optional[tuple]:
        """Under the run lock: get the instance (None: give up), reconcile, remember our own
        deletions, log new warnings.  (instance, agent.Result), or None when it failed (an
        error is logged, unless `quiet()` says the next reconcile is due anyway: keepalived
        flapping a VIP while its rule was being checked).  recorded=False: giving up is not
        a reconcile for the text file (a poll that found nothing settled, or no answer)."""
        from .agent import reconcile
        from .lock import run_lock

        cfg = self.config
        try:
            with run_lock(cfg.lock_file, cfg.lock_timeout):
                instance = instance_of()
                if instance is None:
                    if recorded:
                        textfile.record(cfg, error=MetadataUnavailable(self._outage or ""))
                    return None
                try:
                    result = reconcile(self._effective(), instance=instance, log_warnings=False)
                except EniGuestError as e:
                    textfile.record(cfg, error=e)
                    raise
                textfile.record(cfg, result)
        except EniGuestError as e:  # kernel refused a change, lock held too long
            if quiet():
                log.debug("%s (a floating address changed again: following it)", e)
            else:
                log.error("%s", e)
            self._failed = str(e)
            return None
        self._failed = None
        self._restore.mine(result.applied)
        new = frozenset(result.plan.warnings)
        for warning in sorted(new - self._warnings):
            log.warning("warning: %s", warning)
        self._warnings = new
        for c in result.plan.captures:  # a foreign rule taking ENI IPs' traffic (capture.py)
            if c.rule not in self._captures_warned:
                self._captures_warned.add(c.rule)
                log.warning("warning: %s", c.warning)
        return instance, result

    def _judge_waiting(self, instance: Optional[Instance], *, configured: bool = True) -> bool:
        """Judge every waiting link after one metadata read (watch_inbox.judge_waiting)."""
        return judge_waiting(
            self._waiting,
            instance,
            error=self._outage,
            now=self._clock(),
            timeout=self.config.hotplug_timeout,
            configured=configured,
        )

    def _poll(self) -> None:
        """One metadata read for the waiting links, under the run lock; as soon as one has
        settled, the cycle's reconcile runs with that same read (a read under the lock is
        never older than the kernel state: see hotplug.py for why that matters)."""
        from .agent import read_instance

        settled: list[bool] = []

        def read_and_judge() -> Optional[Instance]:
            if self._configured_meanwhile():
                return None
            instance: Optional[Instance] = self._metadata(lambda c: read_instance(c)[0])
            if not self._judge_waiting(instance, configured=False):
                return None  # nothing to configure yet: no reconcile
            settled.append(True)
            self._cycle_begins()
            return instance

        done = self._reconcile(read_and_judge, recorded=False)
        if settled:
            self._cycle_done(done)
        self._polled_at = self._clock()
        self._poll_at = self._polled_at + self._backoff.next()

    def _configured_meanwhile(self) -> bool:
        """Forget the waiting links another run (udev's `hotplug add`) configured meanwhile
        (hotplug.configured_now).  True when none is left waiting (no read needed)."""
        for index, w in list(self._waiting.items()):
            if hotplug.configured_now(index, self.config):
                log.debug("%s was configured by another run meanwhile", w.link.name)
                del self._waiting[index]
        return not self._waiting

    def _unplug(self) -> None:
        from .lock import run_lock

        cfg = self.config
        try:
            with run_lock(cfg.lock_file, cfg.lock_timeout):
                self._restore.mine(hotplug.unplug(cfg))
        except EniGuestError as e:
            log.error("%s", e)

    def _take(self, box: Inbox) -> None:
        """Act on what the main thread passed on (called without holding the condition)."""
        now = self._clock()
        for index in box.left:
            self._waiting.pop(index, None)
        if box.appeared:
            for index, link in box.appeared.items():
                self._waiting[index] = Waiting(link, now + self.config.hotplug_timeout)
            self._backoff.reset()
            # At once, but reads for waiting links stay FIRST_DELAY apart: a burst of links
            # (Docker starting 20 containers) costs a read per FIRST_DELAY, not one per link.
            self._poll_at = max(now, self._polled_at + settle.FIRST_DELAY)
        if box.unplug:
            self._unplug()
        if box.reconcile:
            self._next_full = now
        if box.gone:
            self._restore.deleted(box.gone.items(), box.left)
        if box.lost:
            self._restore.soon()
        if box.floating is not None and self._floating_at is None:
            self._floating_at = box.floating

    def _due(self) -> float:
        due = min(self._next_full, self._poll_at) if self._waiting else self._next_full
        return due if self._restore.due is None else min(due, self._restore.due)

    def work(self) -> None:
        """The worker thread's loop; returns when stop() is called."""
        while True:
            with self._cond:
                while not self._stopping and not self._has_mail():
                    watchdog(self.notify, self._clock() - self.main_seen)
                    left = self._due() - self._clock()
                    if left <= 0:
                        break
                    ping = self.notify.watchdog_due()  # None: no watchdog
                    self._cond.wait(left if ping is None else min(left, ping or 1.0))
                if self._stopping:
                    return
                box, self._inbox = self._inbox, Inbox()
            try:
                self._take(box)
                now = self._clock()
                if now >= self._next_full:
                    self.cycle()
                elif self._floating_at is not None:
                    self._floating_now()
                elif self._restore.take():
                    self._restore_now()
                elif self._waiting and now >= self._poll_at:
                    self._poll()
            except Exception:  # a bug: say so, keep the daemon alive for the next cycle
                log.exception("internal error (a bug), continuing")
                self._next_full = self._clock() + self.config.watch_interval

    def _has_mail(self) -> bool:
        return self._inbox.has_mail()

    # ------------------------------------------------------------ the main thread

    def post(
        self,
        appeared: Optional[Link] = None,
        left: Optional[Link] = None,
        reconcile: bool = False,
        gone: Optional[dict[tuple, int]] = None,
        lost: bool = False,
        floating: Optional[float] = None,
    ) -> None:
        """Hand events to the worker."""
        if appeared is not None or left is not None:
            memo.forget()  # an ENI detached and attached again has a new device number
        if left is not None:
            memo.forget_departed(self.config, None, left)  # and the boot's file forgets it too
        with self._cond:
            self._inbox.put(appeared, left, reconcile, gone, lost, floating, self.config)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def reload(self) -> None:
        """SIGHUP: a new configuration, or the old one kept with the reason logged."""
        try:
            new = self._load()
        except ConfigError as e:
            log.error("configuration not reloaded, keeping the old one: %s", e)
            return
        memo.forget()  # maybe another metadata_url
        with self._cond:
            self.config = new
            self._instance = None  # read with the old configuration: not restored from
            self._next_full = min(self._next_full, self._clock() + new.watch_interval)
            self._cond.notify()
        log.info("configuration reloaded")

    def run(self) -> int:
        """Subscribe to kernel events, start the worker, serve signals until SIGTERM (the
        main thread: watch_loop.py)."""
        from .watch_loop import run

        memo.enable()  # what cannot change is read once a boot (providers/memo.py)
        return run(self)

    def _seen(self, known: dict[int, Link], link: Link, startup: bool = False) -> None:
        """A link exists now: pass it on if it is new, renamed or has a new MAC."""
        before = known.get(link.index)
        known[link.index] = link
        if startup or (before is not None and (before.name, before.mac) == (link.name, link.mac)):
            return  # present at start (the first cycle covers it), or flags/group/MTU changed
        if settle.first_look(link, self.config) is not None:
            return  # not a cloud NIC, or left alone (exclude_interfaces): nothing to wait for
        self.post(appeared=link, reconcile=before is not None and before.mac != link.mac)


def run(load_config: Callable[[], Config]) -> int:
    """`eni-guest watch`: load the configuration (errors exit 2) and run until SIGTERM."""
    return Watcher(load_config).run()

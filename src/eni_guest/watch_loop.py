"""The watch daemon's main thread: kernel events and signals, handed to the worker (watch.py).

It subscribes to link events and to address, rule and route deletions (kernel.LinkMonitor)
before the first dump of the links, so a link appearing in between is not missed.  It keeps
the links that exist (bounded by them, so memory stays flat), passes on a new, renamed or
readdressed link and the departure of an ENI link, the deletions of eni-guest's objects
and the changes of main-table routes through ENI links (restore.collect, mirror.py), and
others' addresses on ENI links coming and going (watch_floating.py).  Events the kernel had
to drop (a full socket buffer) mean: re-read every link and reconcile.  Signals arrive through a
pipe, so select() wakes for them: SIGTERM and SIGINT stop, SIGHUP reloads the
configuration.  It never busy-loops: it sleeps in select(), at most one watchdog interval
under systemd (sdnotify.py), so the worker's WATCHDOG=1 pings also vouch for this thread.
It tells systemd READY=1 once it watches, STOPPING=1 at the end.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading

from . import restore, watch_floating
from .log import log
from .state import Link

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Callable

    from .watch import Watcher


STOP_GRACE = 0.8  # seconds SIGTERM waits for the worker to finish what it is doing


def run(w: Watcher) -> int:
    """Subscribe to kernel events, start the worker, serve signals until SIGTERM."""
    from .kernel import Kernel, LinkMonitor

    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    got: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        got.append(signum)
        with contextlib.suppress(BlockingIOError):  # full pipe: a wake-up is pending
            os.write(wake_w, b"!")

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, on_signal)
    # Subscribe before the first dump: a link appearing in between is then not missed.
    monitor = LinkMonitor(objects=True, protocol=w.config.protocol)
    monitor.addresses_added = True  # others' addresses on ENI links (watch_floating.py)
    known: dict[int, Link] = {}

    def resync(startup: bool) -> None:
        """Re-read every link and post the differences (start, and lost events)."""
        kernel = Kernel(w.config)
        try:
            now = {link.index: link for link in kernel.read_links()}
        finally:
            kernel.close()
        for index, link in list(known.items()):
            if index not in now:
                w.post(left=link)
                del known[index]
        for link in now.values():
            w._seen(known, link, startup)

    worker = threading.Thread(target=w.work, name="eni-guest-worker", daemon=True)
    try:
        resync(startup=True)
        w.notify.send("READY=1", "STATUS=watching; the first reconcile is under way")
        worker.start()
        log.info(
            "watching link events and deletions of eni-guest's addresses, rules and "
            "routes; full reconcile every %g s",
            w.config.watch_interval,
        )
        _serve(w, monitor, wake_r, got, known, resync)
    finally:
        w.notify.send("STOPPING=1")
        w.stop()
        if worker.is_alive():
            worker.join(STOP_GRACE)
        monitor.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
        os.close(wake_r)
        os.close(wake_w)
        w.notify.close()
    log.info("stopped")
    return 0


def _serve(
    w: Watcher,
    monitor: Any,
    wake_r: int,
    got: list[int],
    known: dict[int, Link],
    resync: Callable[[bool], None],
) -> None:
    """The loop: signals and kernel events, until SIGTERM or SIGINT."""
    while True:
        w.main_seen = w._clock()  # the worker's WATCHDOG=1 pings check that this loop runs
        try:
            # with a watchdog, wake at least once per interval (watch_inbox.watchdog)
            ready, _, _ = select.select([monitor, wake_r], [], [], w.notify.interval)
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_r, 64):
                    pass
            signums = []
            while got:  # pop, not copy-and-clear: a signal may arrive meanwhile
                signums.append(got.pop())
            if any(s in (signal.SIGTERM, signal.SIGINT) for s in signums):
                break
            if signal.SIGHUP in signums:
                w.reload()
        if monitor in ready:
            _events(w, monitor, known, resync)


def _events(
    w: Watcher, monitor: Any, known: dict[int, Link], resync: Callable[[bool], None]
) -> None:
    """Read what the kernel queued and pass on what matters."""
    from .kernel import EventsLost

    monitor.protocol = w.config.protocol  # SIGHUP may have changed it
    try:
        events = monitor.read_events()
    except EventsLost:
        log.debug("kernel events were lost: re-reading every link, reconciling")
        resync(False)
        w.post(lost=True)
        return
    for event in events:
        if not isinstance(event, tuple):  # a deletion, a main-table route, an address added
            continue
        present, link = event
        if present:
            w._seen(known, link)
        elif known.pop(link.index, None) is not None:
            w.post(left=link)
    gone = restore.collect(events, w.config, known)  # after the links: who left is known
    if gone:
        w.post(gone=gone)
    at = watch_floating.came_or_went(events, w.config, known)
    if at is not None:
        w.post(floating=at)

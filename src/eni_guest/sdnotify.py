"""systemd's notification protocol for the watch daemon (Type=notify): ready, status, watchdog.

systemd passes the address of a datagram socket in $NOTIFY_SOCKET (a path, or "@name" for an
abstract socket); a message is lines of `KEY=value` (sd_notify(3)).  The daemon sends
READY=1 once it watches kernel events, STATUS= lines `systemctl status` shows (what the last
reconcile did), STOPPING=1, and WATCHDOG=1 at half of $WATCHDOG_USEC (the unit's
WatchdogSec=): should the daemon hang, systemd kills and restarts it.  This is the whole
protocol a daemon needs, over a plain AF_UNIX socket: no library.  Without $NOTIFY_SOCKET (run
by hand) nothing is sent; a failed send is logged at debug level and never stops the daemon.
"""

from __future__ import annotations

import os
import socket
import threading
import time

from .log import log

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Callable, Mapping, Optional


class Notifier:
    """Sends notifications to systemd, and WATCHDOG=1 when due (see `watchdog_due`)."""

    def __init__(
        self,
        environ: Optional[Mapping[str, str]] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        env = os.environ if environ is None else environ
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self.interval = _watchdog_interval(env)  # seconds between pings, None: no watchdog
        self._clock = clock
        self._pinged = -1e18
        self._lock = threading.Lock()
        self._sock: Optional[socket.socket] = None

    def send(self, *lines: str) -> bool:
        """One notification (e.g. "READY=1", "STATUS=..."); False when not sent."""
        if self.address is None:
            return False
        data = "\n".join(line.replace("\n", " ") for line in lines).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(
                        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                    )
                self._sock.sendto(data, self.address)
            except OSError as e:
                log.debug("sd_notify to %r failed: %s", self.address, e)
                return False
        return True

    def watchdog_due(self) -> Optional[float]:
        """Seconds until the next WATCHDOG=1 is due (0: now); None without a watchdog."""
        if self.interval is None:
            return None
        return max(0.0, self._pinged + self.interval - self._clock())

    def ping(self) -> None:
        """WATCHDOG=1 if it is due."""
        if self.watchdog_due() == 0.0:
            self._pinged = self._clock()
            self.send("WATCHDOG=1")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _address(text: str) -> Optional[str]:
    """The socket address of $NOTIFY_SOCKET: a path, or "@name" for the abstract "\\0name"."""
    if text.startswith("@"):
        return "\0" + text[1:]
    return text if text.startswith("/") else None


def _watchdog_interval(env: Mapping[str, str]) -> Optional[float]:
    """Half of $WATCHDOG_USEC (sd_watchdog_enabled(3)): None when unset, invalid, or meant for
    another process ($WATCHDOG_PID)."""
    pid = env.get("WATCHDOG_PID")
    if pid is not None and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None

"""systemd's notification protocol (sdnotify.py) over real AF_UNIX datagram sockets.

A path socket and an abstract one ("@name" in $NOTIFY_SOCKET) receive what the Notifier
sends; the watchdog interval is half of $WATCHDOG_USEC and only for our own $WATCHDOG_PID.
(`tests/e2e/test_watch.py::test_systemd_notify_watchdog_and_the_metrics_file` has a real
`eni-guest watch` process send READY=1, STATUS= and WATCHDOG=1.)
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

from eni_guest.sdnotify import Notifier


def receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2)
    return sock


def test_path_and_abstract_sockets_receive_the_notifications(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    name = f"eni-guest-test-{secrets.token_hex(6)}"
    for env, bound in ((path, path), (f"@{name}", f"\0{name}")):
        sock = receiver(bound)
        try:
            n = Notifier({"NOTIFY_SOCKET": env})
            assert n.send("READY=1", "STATUS=watching\nnow")
            assert sock.recv(4096) == b"READY=1\nSTATUS=watching now"  # one line per key
            n.close()
        finally:
            sock.close()


def test_without_a_socket_nothing_is_sent_and_a_dead_one_never_raises(tmp_path: Path) -> None:
    assert not Notifier({}).send("READY=1")
    assert not Notifier({"NOTIFY_SOCKET": "relative/path"}).send("READY=1")
    assert not Notifier({"NOTIFY_SOCKET": str(tmp_path / "absent")}).send("READY=1")


def test_watchdog_pings_at_half_the_interval_and_only_when_due(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    sock = receiver(path)
    now = [100.0]
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}
    n = Notifier(env, clock=lambda: now[0])
    try:
        assert n.interval == 1.5 and n.watchdog_due() == 0.0
        n.ping()
        assert sock.recv(64) == b"WATCHDOG=1"
        now[0] += 1.0
        assert n.watchdog_due() == 0.5
        n.ping()  # not due: nothing sent
        now[0] += 0.5
        n.ping()
        assert sock.recv(64) == b"WATCHDOG=1"
        sock.setblocking(False)
        try:
            sock.recv(64)
            raise AssertionError("one ping too many")
        except BlockingIOError:
            pass
    finally:
        n.close()
        sock.close()


def test_no_watchdog_unless_it_is_ours() -> None:
    assert (
        Notifier({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid() + 1)}).interval
        is None
    )
    assert Notifier({"WATCHDOG_USEC": "soon"}).interval is None
    assert Notifier({"WATCHDOG_USEC": "0"}).interval is None
    assert Notifier({}).watchdog_due() is None

"""Sockets made inside a network namespace by a thread of this process.

A socket belongs to the namespace it was created in, whichever thread later uses it.  The
cloud API (sim/cloudapi.py), the HA test bed's client and responders (ha.py) are threads of
the test process that must listen and send inside the simulated VPC or VM: a short-lived
helper thread enters the namespace (setns affects only the calling thread), creates and binds
the socket, and exits; the process itself never leaves its own namespace.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from typing import Callable

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, CLONE_NEWNET)
        return
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def in_namespace(ns: str, make: Callable[[], socket.socket]) -> socket.socket:
    """`make()` run in a thread that entered the named namespace (/run/netns/<ns>)."""
    out: list[object] = []

    def body() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            out.append(make())
        except BaseException as e:  # handed to the caller
            out.append(e)

    t = threading.Thread(target=body, name=f"netns-{ns}", daemon=True)
    t.start()
    t.join()
    result = out[0]
    if isinstance(result, BaseException):
        raise result
    assert isinstance(result, socket.socket)
    return result


def udp(ns: str, addr: str, port: int, *, freebind: bool = False) -> socket.socket:
    """A UDP socket bound to addr:port in `ns` (freebind: before the address exists there)."""

    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
        if freebind:
            s.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND
        s.bind((addr, port))
        return s

    return in_namespace(ns, make)


def tcp_listener(ns: str, addr: str, port: int) -> socket.socket:
    """A listening TCP socket on addr:port in `ns`."""

    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        s.listen(64)
        return s

    return in_namespace(ns, make)

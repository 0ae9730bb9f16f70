"""One run at a time: udev, the boot unit, the timer and a person can all start us at once.

flock is released by the kernel when the process dies, so a crash never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from typing import Iterator

from .errors import LockTimeout, NotPermitted


@contextmanager
def run_lock(path: str, timeout: float) -> Iterator[None]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except PermissionError:
        raise NotPermitted(
            f"cannot open lock file {path}: permission denied (run as root)"
        ) from None
    except OSError as e:
        raise LockTimeout(f"cannot open lock file {path}: {e.strerror}") from None
    try:
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"another eni-guest run held {path} for more than {timeout:g} s "
                        "(lock_timeout); nothing changed"
                    ) from None
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, 0.2)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)

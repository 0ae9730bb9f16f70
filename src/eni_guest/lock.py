"""One run at a time: udev, the boot unit, the timer and a person can all start us at once.

flock is released by the kernel when the process dies, so a crash never leaves a stale lock.

The lock file is opened as root in a directory like /run, so it is opened with care: never
through a symbolic link (O_NOFOLLOW), never truncated (the holder's pid is written over the
first bytes), and only when it is a regular file of ours in a directory no one else can write:
otherwise a local user could make eni-guest overwrite a file of their choosing.  A lock file
that fails these checks is a configuration error (exit 2) naming the path.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time

from .errors import ConfigError, LockTimeout, NotPermitted

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any

PID_WIDTH = 11  # the pid, padded: written over the first bytes, the file is never truncated


def _refuse(path: str, why: str) -> ConfigError:
    return ConfigError(f"config lock_file = {path[:200]!r}: {why}")


def _open(path: str) -> int:
    """The lock file's descriptor, after the checks of the module docstring."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        d = os.stat(directory)
    except FileNotFoundError:
        raise _refuse(path, f"directory {directory} does not exist") from None
    except OSError as e:
        raise _refuse(path, f"directory {directory}: {e.strerror}") from None
    if d.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not d.st_mode & stat.S_ISVTX:
        raise _refuse(path, f"directory {directory} is writable by others")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except PermissionError:
        raise NotPermitted(
            f"cannot open lock file {path}: permission denied (run as root)"
        ) from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _refuse(path, "is a symbolic link: refused") from None
        raise _refuse(path, e.strerror or str(e)) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        what = "not a regular file" if not stat.S_ISREG(st.st_mode) else "owned by someone else"
        raise _refuse(path, f"{what}: refused")
    return fd


class run_lock:  # noqa: N801 (used as a function: `with run_lock(path, timeout) as waited`)
    """Hold the run lock; `as` gives whether another run held it first (this one waited).

    A class rather than contextlib.contextmanager: contextlib is ~0.5 ms of every start."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path, self.timeout = path, timeout
        self.fd = -1

    def __enter__(self) -> bool:
        path, timeout = self.path, self.timeout
        fd = _open(path)
        waited = False
        try:
            deadline = time.monotonic() + timeout
            delay = 0.01
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    waited = True
                    if time.monotonic() >= deadline:
                        raise LockTimeout(
                            f"another eni-guest run held {path} for more than {timeout:g} s "
                            "(lock_timeout); nothing changed"
                        ) from None
                    time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                    delay = min(delay * 2, 0.2)
            os.pwrite(fd, f"{os.getpid():<{PID_WIDTH - 1}}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return waited

    def __exit__(self, *exc: Any) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

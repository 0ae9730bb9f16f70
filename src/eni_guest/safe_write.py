"""Writing a file as root without being led astray by a planted symbolic link.

eni-guest runs as root and writes its drop-ins into directories such as /run/systemd/network.
A symbolic link planted there, at the file's own path or in place of a directory on the way,
would make a naive write replace or create a file of the planter's choosing.  So a file is
written the way the kernel makes safe:

* every directory from a trusted `root` down to the file's own is opened one level at a time
  with O_NOFOLLOW (and created, mode 0755, when missing), and everything after that is done
  relative to the last one's descriptor, so nothing can be swapped in between;
* the current content is read with O_NOFOLLOW, and only from a regular file;
* the new content goes to a fresh temporary file (O_EXCL) in the same directory, is flushed
  to disk and renamed over the file: a reader sees the old file or the new one, never half.

A symbolic link or something that is not a regular file (a directory, a FIFO) where the file
or one of those directories should be is refused: `UnsafePath`, a configuration error
(exit 2) whose one line names the path.  Nothing is written then.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .errors import ConfigError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Optional

MAX_CURRENT = 1024 * 1024  # more than any drop-in: the rest is not read (and then rewritten)


class UnsafePath(ConfigError):
    """A file or directory eni-guest writes is a symbolic link or not what it must be."""


def _refuse(path: Path, why: str) -> UnsafePath:
    return UnsafePath(f"{str(path)[:300]}: {why}: refused (eni-guest writes it only itself)")


def write_if_changed(
    path: Path, content: Optional[str], mode: int = 0o644, *, root: Optional[Path] = None
) -> bool:
    """Atomically make `path` hold `content` (None: absent); True if anything changed.

    No symbolic link is followed below `root` (default: the file's own directory, so only
    the file itself is checked): neither the file nor a directory between `root` and it.
    """
    path = Path(path)
    base = Path(root) if root is not None else path.parent
    try:
        below = path.parent.relative_to(base).parts
    except ValueError:
        raise ValueError(f"{path} is not below {base}") from None
    dfd = _open_dirs(base, below, create=content is not None)
    if dfd is None:
        return False  # a directory on the way is missing: so is the file
    try:
        current = _read(dfd, path)
        if current == content:
            return False
        if content is None:
            os.unlink(path.name, dir_fd=dfd)
        else:
            _replace(dfd, path.name, content, mode)
        return True
    finally:
        os.close(dfd)


def _open_dirs(base: Path, below: tuple[str, ...], *, create: bool) -> Optional[int]:
    """A descriptor of base/below..., each level opened without following a link; None if
    one is missing and `create` is False."""
    if create:
        os.makedirs(base, 0o755, exist_ok=True)  # the trusted part (a test's or image's root)
    try:
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    where = base
    try:
        for name in below:
            where = where / name
            if create:
                try:  # noqa: SIM105 (contextlib.suppress: ~0.5 ms of imports)
                    os.mkdir(name, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                nfd = os.open(
                    name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
                )
            except FileNotFoundError:
                if create:
                    raise
                os.close(fd)
                return None
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    link = stat.S_ISLNK(os.lstat(name, dir_fd=fd).st_mode)
                    why = "is a symbolic link" if link else "not a directory"
                    raise _refuse(where, why) from None
                raise
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read(dfd: int, path: Path) -> Optional[str]:
    """The file's content (None: there is none), read without following a link."""
    try:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = os.open(path.name, flags, dir_fd=dfd)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _refuse(path, "is a symbolic link") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _refuse(path, "not a regular file")
        data = b""
        while len(data) <= MAX_CURRENT:
            chunk = os.read(fd, 64 * 1024)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    return data.decode("utf-8", "replace")  # bytes that are not ours differ: rewritten


def _replace(dfd: int, name: str, content: str, mode: int) -> None:
    """Write a fresh temporary file next to `name` and rename it over `name`."""
    tmp = f".{name}.{os.urandom(6).hex()}"  # what secrets.token_hex does, without hmac
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd
    )
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content.encode())
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        try:  # noqa: SIM105 (contextlib.suppress: ~0.5 ms of imports)
            os.unlink(tmp, dir_fd=dfd)
        except OSError:
            pass
        raise

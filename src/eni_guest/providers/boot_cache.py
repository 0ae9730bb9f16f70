"""The answer of `--provider auto` kept for the rest of the boot, in a small file under /run.

A cloud does not change while a VM runs, but the probes that tell clouds apart cost up to a
few seconds and, in a slow guest at boot, may see no answer at all.  So once they answered,
which cloud it is (and why) is written beside the run lock (`/run/eni-guest.lock` ->
`/run/eni-guest.provider`), and every later run of the same boot (apply, show, hotplug,
watch) reads it instead of probing again:

    {"boot_id": "...", "provider": "aws", "why": "metadata probe: ...", "metadata_url": ""}

The file is trusted only when all of it holds: it is a regular file of root's (or of the
user running eni-guest) that nobody else may write, it is for this boot (`boot_id` is the
kernel's /proc/sys/kernel/random/boot_id, which changes at every boot; /run is normally
emptied at boot anyway), for the same `metadata_url`, and names a known cloud.  Anything else
(another boot, a different metadata_url, a malformed or half-written file) is ignored and the
cloud is detected again.  It is written atomically (a temporary file in the same directory,
then a rename), so a reader never sees half of it.  Failing to write it (not root, /run
read-only) only costs a new detection next time.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from ..config import Config
from ..log import log
from .registry import names

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Optional


BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
FIELDS = ("boot_id", "provider", "why", "metadata_url")
MAX_SIZE = 4096  # bytes read: an answer is far smaller
EARLIER = "earlier this boot: "  # starts the reason of an answer read from the file


def path_for(config: Config) -> Optional[Path]:
    """Where this configuration's answer is kept: beside its lock file (None: no lock file)."""
    lock = Path(config.lock_file)
    return lock.with_suffix(".provider") if lock.name else None


def boot_id(source: Optional[Path] = None) -> Optional[str]:
    """This boot's id, or None when the kernel does not say (then nothing is kept)."""
    try:
        text = (source or BOOT_ID).read_text().strip()
    except OSError:
        return None
    return text or None


def read_json(path: Path, limit: int = MAX_SIZE) -> Optional[object]:
    """The JSON in a file of ours (read_ours), or None when it is missing or not to be
    trusted (logged at debug: a file of the boot that is wrong is asked again, not fatal)."""
    try:
        return json.loads(read_ours(path, limit))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # unreadable, not ours, not JSON, not UTF-8
        log.debug("ignoring %s: %s", path, e)
        return None


def load(config: Config, boot: Optional[str]) -> Optional[tuple[str, str]]:
    """(provider, why) kept earlier this boot for this configuration, or None."""
    path = path_for(config)
    if boot is None or path is None:
        return None
    data = read_json(path)
    if data is None:
        return None
    problem = _problem(data, config, boot)
    if problem is not None:
        log.debug("ignoring %s: %s", path, problem)
        return None
    return data["provider"], data["why"]


def read_ours(path: Path, limit: int = MAX_SIZE) -> str:
    """The file's text if it is a regular file (not a symlink) owned by root or by us and
    writable by nobody else: an answer anyone could have planted is no answer."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022:
            raise ValueError("owned or writable by someone else")
        return f.read(limit).decode()


def _problem(data: object, config: Config, boot: str) -> Optional[str]:
    """Why `data` is not a trustworthy answer for this boot, or None."""
    if not isinstance(data, dict) or set(data) != set(FIELDS):
        return f"not an object with exactly {', '.join(FIELDS)}"
    if not all(isinstance(data[k], str) for k in FIELDS):
        return "a field is not a string"
    if data["boot_id"] != boot:
        return "written in another boot"
    if data["metadata_url"] != config.metadata_url:
        return f"written for metadata_url {data['metadata_url']!r}"
    if data["provider"] not in names():
        return f"unknown provider {data['provider']!r}"
    return None


def store(config: Config, boot: Optional[str], provider: str, why: str) -> bool:
    """Keep (provider, why) for this boot; False when it could not be written."""
    path = path_for(config)
    if boot is None or path is None:
        return False
    record = dict(zip(FIELDS, (boot, provider, why, config.metadata_url)))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        import tempfile  # only when the answer is new (once a boot): ~2 ms of every run

        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
                f.write("\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        log.debug("cannot keep the detected provider in %s: %s", path, e)
        return False
    return True

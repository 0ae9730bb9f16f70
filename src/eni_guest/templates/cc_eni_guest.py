# Written by `eni-guest install` (eni-guest's cloud-init module; README "Installing into an image").
"""eni_guest: run ``eni-guest apply`` at every boot, with settings from user-data.

cloud-init runs this module in its init stage (listed in cloud_init_modules by
/etc/cloud/cloud.cfg.d/99-eni-guest.cfg): after the network is up, before network-online.target.

It only shells out to the installed ``eni-guest``: cloud-init's Python (the distro's
/usr/bin/python3) need not be able to import eni-guest, which may live in a virtualenv or
another Python.  User-data::

    #cloud-config
    eni_guest:
      enabled: true           # false: do nothing (the systemd units still run)
      persist: true           # keep these settings for the systemd units (see ENV_FILE)
      provider: aws           # any eni-guest setting: passed as ENI_GUEST_<KEY>
      metadata_url: http://169.254.169.254

Works with cloud-init 22.x, which calls ``handle(name, cfg, cloud, log, args)``, and with 23.2+,
which calls ``handle(name=, cfg=, cloud=, args=)`` and adds ``log=`` only for functions with
exactly five parameters (deprecated).
"""

import contextlib
import errno
import logging
import os
import re
import secrets
import shutil
import stat
import subprocess
from typing import Any, Dict, List, Optional, Tuple

try:
    from cloudinit.distros import ALL_DISTROS
    from cloudinit.settings import PER_ALWAYS
except ImportError:  # imported outside cloud-init (tests, linters)
    ALL_DISTROS, PER_ALWAYS = "all", "always"

LOG = logging.getLogger(__name__)

# `eni-guest install` copies this file into cloud-init's package with two values set,
# ENI_GUEST_COMMAND and ENV_FILE (install.render_module); every other line is copied as is.
# The installed eni-guest (absolute, written at install time); PATH is the fallback.
ENI_GUEST_COMMAND = ["/usr/local/bin/eni-guest"]
# User-data settings kept for the systemd units (EnvironmentFile=-), so the boot unit, the
# hot-plug units and the watch daemon use the settings this module's run used.
ENV_FILE = "/etc/eni-guest/cloud-init.env"
# Seconds for one `eni-guest apply`: lock_timeout (30) + metadata_deadline (15), with room.
TIMEOUT = 300

MODULE_KEYS = ("enabled", "persist")
_KEY = re.compile(r"^[a-z][a-z0-9_]*$")

meta = {
    "id": "cc_eni_guest",
    "name": "eni-guest",
    "title": "Configure cloud ENIs and per-IP source routing",
    "description": "Runs `eni-guest apply` with settings from the eni_guest key.",
    "distros": [ALL_DISTROS],
    "frequency": PER_ALWAYS,
    # Empty: run at every boot, also without an eni_guest key in user-data.
    "activate_by_schema_keys": [],
    "examples": [],
}
# cloud-init before 22.1 (Debian 11 has 20.4) reads these two module attributes, not ``meta``:
# without ``frequency`` it would run this module only at an instance's first boot.
frequency = PER_ALWAYS
distros = [ALL_DISTROS]


def _flag(section: Dict[str, Any], key: str) -> bool:
    value = section.get(key, True)
    if not isinstance(value, bool):
        raise ValueError(f"eni_guest: {key} must be true or false, not {value!r}")
    return value


def settings(cfg: Dict[str, Any]) -> Tuple[bool, bool, Dict[str, str]]:
    """(enabled, persist, ENI_GUEST_* variables) from the ``eni_guest`` key of the config."""
    section = cfg.get("eni_guest") or {}
    if not isinstance(section, dict):
        raise ValueError(f"eni_guest: must be a mapping, not {type(section).__name__}")
    env = {}
    for key, value in sorted(section.items()):
        if key in MODULE_KEYS:
            continue
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValueError(f"eni_guest: {key!r} is not a setting name")
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float, str)):
            text = str(value)
        else:
            raise ValueError(f"eni_guest: {key} must be a string, number or boolean")
        if any(c in text for c in "\n\r\0"):
            raise ValueError(f"eni_guest: {key} must be one line")
        env["ENI_GUEST_" + key.upper()] = text
    return _flag(section, "enabled"), _flag(section, "persist"), env


def env_file_text(env: Dict[str, str]) -> str:
    """systemd EnvironmentFile syntax: KEY="value" with backslash escapes."""
    lines = ["# Written by cloud-init (eni_guest module) from user-data; do not edit."]
    for key, value in sorted(env.items()):
        quoted = value.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'{key}="{quoted}"')
    return "\n".join(lines) + "\n"


def write_env_file(path: str, env: Optional[Dict[str, str]]) -> bool:
    """Make ``path`` hold ``env`` (None or empty: remove it).  True if it changed.

    As root, in a directory a local user might have prepared: neither the file nor its
    directory is followed if it is a symbolic link (refused, naming the path), and the file
    is replaced whole (a fresh file renamed over it).  eni-guest's own files are written the
    same way (eni_guest/safe_write.py, which this module cannot import).
    """
    content = env_file_text(env) if env else None
    directory, name = os.path.split(path)
    dfd = _open_dir(directory, create=content is not None)
    if dfd is None:
        return False  # no directory, so no file
    try:
        current = _read_env_file(dfd, path)
        if current == content:
            return False
        if content is None:
            os.unlink(name, dir_fd=dfd)
            return True
        tmp = f".{name}.{secrets.token_hex(6)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600, dir_fd=dfd)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(content.encode())
                f.flush()
                os.fchmod(f.fileno(), 0o644)
                os.fsync(f.fileno())
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        return True
    finally:
        os.close(dfd)


def _refuse(path: str, why: str) -> RuntimeError:
    return RuntimeError(f"eni_guest: {path}: {why}: refused (written only by this module)")


def _open_dir(directory: str, create: bool) -> Optional[int]:
    """The env file's directory, opened without following a link (its parent is trusted)."""
    parent, name = os.path.split(directory)
    if create:
        os.makedirs(parent, mode=0o755, exist_ok=True)
    try:
        pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=pfd)
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        return os.open(name, flags, dir_fd=pfd)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            link = stat.S_ISLNK(os.lstat(name, dir_fd=pfd).st_mode)
            raise _refuse(directory, "is a symbolic link" if link else "not a directory") from None
        raise
    finally:
        os.close(pfd)


def _read_env_file(dfd: int, path: str) -> Optional[str]:
    """The file's content, None if there is none; never through a link, never a FIFO."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(os.path.basename(path), flags, dir_fd=dfd)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _refuse(path, "is a symbolic link") from None
        raise
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise _refuse(path, "not a regular file")
        return f.read(1024 * 1024).decode("utf-8", "replace")


def command() -> List[str]:
    """The installed eni-guest, else one on PATH."""
    if ENI_GUEST_COMMAND and os.access(ENI_GUEST_COMMAND[0], os.X_OK):
        return list(ENI_GUEST_COMMAND)
    found = shutil.which("eni-guest")
    if found:
        return [found]
    raise RuntimeError(f"eni-guest not found (not at {ENI_GUEST_COMMAND[0]}, not on PATH)")


def _restart_watch() -> None:
    """The watch daemon reads the environment file only when it starts."""
    if os.path.isdir("/run/systemd/system"):
        subprocess.run(
            ["systemctl", "--no-block", "try-restart", "eni-guest-watch.service"],
            check=False,
            capture_output=True,
        )


def handle(
    name: str, cfg: Dict[str, Any], cloud: Any, *legacy: Any, args: Any = None, **_: Any
) -> None:
    """cloud-init entry point (both calling conventions, see the module docstring).

    Six parameters on purpose: cloud-init 23.2+ passes ``log=`` to five-parameter functions,
    22.x passes (log, args) positionally; both land in ``legacy`` and ``**_``.
    """
    enabled, persist, env = settings(cfg)
    if not enabled:
        LOG.info("%s: disabled by user-data (eni_guest: enabled: false)", name)
        write_env_file(ENV_FILE, None)
        return
    if write_env_file(ENV_FILE, env if persist else None):
        _restart_watch()
    argv = command() + ["apply"]
    LOG.debug("%s: running %s with %s", name, " ".join(argv), sorted(env))
    cp = subprocess.run(
        argv,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    for line in cp.stderr.splitlines():
        LOG.info("%s", line)
    if cp.returncode != 0:
        tail = cp.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{' '.join(argv)} failed with exit code {cp.returncode}: {tail[0]}")

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

import logging
import os
import re
import shutil
import subprocess
import tempfile
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
    """Make ``path`` hold ``env`` (None or empty: remove it).  True if it changed."""
    content = env_file_text(env) if env else None
    try:
        with open(path) as f:
            current: Optional[str] = f.read()
    except FileNotFoundError:
        current = None
    if current == content:
        return False
    if content is None:
        os.unlink(path)
        return True
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".cloud-init.env.", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(content)
            os.fchmod(f.fileno(), 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


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

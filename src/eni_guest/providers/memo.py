"""What metadata reads keep of what cannot change: in memory, and for the boot in one file.

The metadata service is rate limited per ENI, and it is read on every boot, hot-plug, unplug,
timer tick and watch cycle.  Most of what a complete read fetches cannot change while the VM
runs and the ENI stays attached, so it is kept and only what can change is asked for again:

* the session token (IMDSv2), until half its TTL has passed (a 401 gets a new one anyway);
* the primary ENI's MAC (`mac`): fixed for the life of the instance;
* each ENI's keys that are fixed while it is attached (AWS: `device-number`, `network-card`,
  `interface-id`, `subnet-ipv4-cidr-block`), by MAC.  The ENI's key listing, its IPs, IPv6
  addresses, prefixes and Elastic IPs are read every time.

An ENI's keys are kept only while its NIC is the one they were read with: the same MAC on the
same ifindex.  A detach and re-attach (which gives the ENI a new device number, so a new
table) creates a new NIC with a new ifindex, and what was kept for the old one is dropped
unread (`bind`).  An ENI with no NIC yet keeps nothing; so does one that does not look settled
(device-number 0 or no IPs: right after an attach, `drop`), and one the MAC listing no longer
lists (`only`).  Nothing is written after a read that failed, and the watch daemon forgets
everything when a link comes or goes or a read fails.

One boot's runs share what they kept: the units udev and systemd start (boot, hot-plug,
unplug), `apply`, `show` and the watch daemon each start from one file beside the run lock
(`/run/eni-guest.lock` -> `/run/eni-guest.metadata`, mode 0600: it holds the token), and a
run that read something new writes it back (`load`, `save`):

    {"boot_id": "...", "metadata_url": "", "provider": "aws",
     "token": {"roots": [...], "root": "http://169.254.169.254", "token": "...", "until": 812.5},
     "instance": {"<url of mac>": "0e:..:01"},
     "enis": {"0e:..:02": {"ifindex": 3, "values": {"<url of device-number>": "1", ...}}}}

The file is input like any other: it is used only if it is a regular file of root's (or of
the user running eni-guest) that nobody else may write, for this boot (`boot_id`), this
`metadata_url` and this provider, with exactly these fields and types; `until` is on the
boot's monotonic clock.  Anything else is ignored and everything read again.  Written with
safe_write (no symbolic link followed, atomic rename), and only when it changed; failing to
write it (not root, /run read-only) only costs requests next time.  A dry run reads it and
writes nothing.
"""

from __future__ import annotations

import _thread  # threading's C core: its Lock, without threading's import (~0.6 ms)
import json
import time
from pathlib import Path

from ..log import log

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Optional, Sequence

    from ..config import Config
    from ..state import Link


_lock = _thread.allocate_lock()
_on = False
_tokens: dict[tuple[str, ...], tuple[str, str, float]] = {}  # roots -> root, token, until
_values: dict[str, str] = {}  # URL -> body of a key that cannot change
_macs: dict[str, set[str]] = {}  # MAC -> the URLs kept for it
_bound: dict[str, int] = {}  # MAC -> ifindex of the NIC its keys were read with

FIELDS = ("boot_id", "metadata_url", "provider", "token", "instance", "enis")
MAX_FILE = 512 * 1024  # bytes read of the file: 15 ENIs' keys are a few kilobytes
MAX_TTL = 6 * 3600  # seconds: IMDSv2's longest token; a kept `until` further away is refused


def enable() -> None:
    global _on
    _on = True


def forget() -> None:
    """Drop everything kept (a link came or went, a read failed, the configuration changed)."""
    with _lock:
        _tokens.clear()
        _values.clear()
        _macs.clear()
        _bound.clear()


def token(roots: tuple[str, ...]) -> Optional[tuple[str, str]]:
    """(the endpoint that answered, its token; "" when it has no token mode), or None."""
    with _lock:
        kept = _tokens.get(roots)
    if kept is None or time.monotonic() >= kept[2]:
        return None
    return kept[0], kept[1]


def keep_token(roots: tuple[str, ...], root: str, value: str, ttl: int) -> None:
    if _on:
        with _lock:
            _tokens[roots] = (root, value, time.monotonic() + ttl / 2)


def value(url: str) -> Optional[str]:
    if not _on:
        return None
    with _lock:
        return _values.get(url)


def keep(url: str, body: str, mac: str = "") -> None:
    """Keep the body of a key that cannot change (for this ENI's MAC, when it is one's)."""
    if _on:
        with _lock:
            _values[url] = body
            if mac:
                _macs.setdefault(mac.lower(), set()).add(url)


def only(macs: set[str]) -> None:
    """Forget the keys of every ENI the MAC listing no longer lists."""
    wanted = {m.lower() for m in macs}
    with _lock:
        for mac in [m for m in _macs if m not in wanted]:
            _drop(mac)


def drop(mac: str) -> None:
    """Forget one ENI's keys: it does not look settled yet (right after an attach AWS lists
    device-number 0 and no IPs for a few seconds), so what was read may still change."""
    with _lock:
        _drop(mac.lower())


def _drop(mac: str) -> None:
    for url in _macs.pop(mac, set()):
        _values.pop(url, None)
    _bound.pop(mac, None)


# ---------------------------------------------------------------- shared by one boot's runs


def path_for(config: Config) -> Optional[Path]:
    """The boot's file: beside the run lock (None: no lock file, nothing shared)."""
    lock = Path(config.lock_file)
    return lock.with_suffix(".metadata") if lock.name else None


def bind(links: Sequence[Link]) -> None:
    """Drop what was kept for an ENI whose NIC is gone, not there yet, or is another one
    (another ifindex): only the NIC a key was read with vouches for it."""
    index = _ifindex(links)
    with _lock:
        for mac in [m for m in _macs if m not in index or _bound.get(m, index[m]) != index[m]]:
            _drop(mac)


def _ifindex(links: Sequence[Link]) -> dict[str, int]:
    """MAC -> ifindex of the NIC holding it (a VLAN or bridge on the same MAC is not it)."""
    return {link.mac.lower(): link.index for link in links if link.mac and link.could_be_nic}


def load(config: Config, provider: str, links: Sequence[Link]) -> None:
    """Turn the memo on and add what this boot's earlier runs kept that still holds: the
    token if it is still valid, the instance's keys, and each ENI's keys whose NIC has the
    ifindex they were read with (`links`: the kernel's now)."""
    from .boot_cache import boot_id, read_json

    global _on
    _on = True
    bind(links)
    path, boot = path_for(config), boot_id()
    if path is None or boot is None:
        return
    data = read_json(path, MAX_FILE)
    if data is None:
        return
    problem = _problem(data, config, provider, boot)
    if problem is not None:
        log.debug("ignoring %s: %s", path, problem)
        return
    index = _ifindex(links)
    now = time.monotonic()
    with _lock:
        token = data["token"]
        if token is not None and now < token["until"] <= now + MAX_TTL:
            roots = tuple(token["roots"])
            _tokens.setdefault(roots, (token["root"], token["token"], token["until"]))
        for url, body in data["instance"].items():
            _values.setdefault(url, body)
        for mac, eni in data["enis"].items():
            ifindex = eni["ifindex"]
            if index.get(mac) != ifindex or _bound.get(mac, ifindex) != ifindex:
                continue  # another NIC now (detached and attached again), or none
            _bound[mac] = ifindex
            for url, body in eni["values"].items():
                _values.setdefault(url, body)
                _macs.setdefault(mac, set()).add(url)


def _problem(data: Any, config: Config, provider: str, boot: str) -> Optional[str]:
    """Why `data` is not this boot's memo for this configuration, or None."""
    if not isinstance(data, dict) or set(data) != set(FIELDS):
        return f"not an object with exactly {', '.join(FIELDS)}"
    if (data["boot_id"], data["metadata_url"], data["provider"]) != (
        boot,
        config.metadata_url,
        provider,
    ):
        return "written in another boot, for another metadata_url or another provider"
    token = data["token"]
    if token is not None and not (
        isinstance(token, dict)
        and set(token) == {"roots", "root", "token", "until"}
        and _strings(token["roots"])
        and isinstance(token["root"], str)
        and isinstance(token["token"], str)
        and isinstance(token["until"], (int, float))
    ):
        return "token: not an object with roots, root, token and until"
    if not _string_map(data["instance"]):
        return "instance: not an object of strings"
    enis = data["enis"]
    if not isinstance(enis, dict):
        return "enis: not an object"
    for mac, eni in enis.items():
        if not (
            isinstance(eni, dict)
            and set(eni) == {"ifindex", "values"}
            and type(eni["ifindex"]) is int
            and eni["ifindex"] > 0
            and _string_map(eni["values"])
        ):
            return f"enis: {mac!r} is not an object with an ifindex and values"
    return None


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _string_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def save(config: Config, provider: str, links: Sequence[Link]) -> bool:
    """After a complete read: write what is kept for the boot's later runs (only the ENIs
    with a NIC, bound to its ifindex); True when the file changed."""
    from .boot_cache import boot_id

    path, boot = path_for(config), boot_id()
    if not _on or path is None or boot is None:
        return False
    index = _ifindex(links)
    with _lock:
        enis: dict[str, Any] = {}
        for mac, urls in _macs.items():
            ifindex = _bound.get(mac, index.get(mac))
            if ifindex is None or index.get(mac) != ifindex:
                continue  # no NIC (yet): nothing to bind its keys to
            _bound[mac] = ifindex
            values = {u: _values[u] for u in urls if u in _values}
            enis[mac] = {"ifindex": ifindex, "values": values}
        if not enis:
            return False  # no ENI with a NIC (a VM always has its primary): nothing to share
        per_eni = set().union(*_macs.values())
        instance = {u: b for u, b in _values.items() if u not in per_eni}
        token = None
        for roots, (root, value, until) in _tokens.items():
            token = {"roots": list(roots), "root": root, "token": value, "until": until}
    data = dict(
        boot_id=boot,
        metadata_url=config.metadata_url,
        provider=provider,
        token=token,
        instance=instance,
        enis=enis,
    )
    return _write(path, data)


def forget_departed(
    config: Config, links: Optional[Sequence[Link]], left: Optional[Link] = None
) -> bool:
    """Drop from the boot's file the ENIs whose NIC is no longer there as it was (`links`:
    the kernel's now, None: all still there) and the one whose NIC just left (`left`).  Run
    by every unplug and by the watch daemon when a link leaves: a NIC that comes back (even
    one a namespace move gave its old ifindex again) is then read whole.  True when it
    changed."""
    from .boot_cache import read_json

    path = path_for(config)
    if path is None:
        return False
    data = read_json(path, MAX_FILE)
    if not isinstance(data, dict) or not isinstance(data.get("enis"), dict):
        return False
    enis = data["enis"]
    present = _ifindex(links) if links is not None else None
    gone = left.mac.lower() if left is not None else None
    kept = {
        m: e
        for m, e in enis.items()
        if m != gone
        and isinstance(e, dict)
        and (present is None or present.get(m) == e.get("ifindex"))
    }
    if kept == enis:
        return False
    data["enis"] = kept
    return _write(path, data)


def _write(path: Path, data: dict[str, Any]) -> bool:
    """Write the boot's file (mode 0600: it holds the token) if its content changed; a
    failure (not root, /run read-only, a planted link) only costs requests next time."""
    from ..errors import ConfigError
    from ..safe_write import write_if_changed

    try:
        return write_if_changed(path, json.dumps(data, sort_keys=True) + "\n", 0o600)
    except (OSError, ConfigError) as e:
        log.debug("cannot keep the metadata read in %s: %s", path, e)
        return False

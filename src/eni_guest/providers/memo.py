"""What a long-running process may keep between its metadata reads: the watch daemon's memo.

The metadata service is rate limited per ENI, and the daemon reads it every `watch_interval`.
Most of what a complete read fetches cannot change while the VM runs and the ENI stays
attached, so the daemon keeps it and asks only for what can change:

* the session token (IMDSv2), until half its TTL has passed (a 401 gets a new one anyway);
* the primary ENI's MAC (`mac`): fixed for the life of the instance;
* each ENI's keys that are fixed while it is attached (AWS: `device-number`, `network-card`,
  `interface-id`, `subnet-ipv4-cidr-block`), by MAC.  The ENI's key listing, its IPs, IPv6
  addresses, prefixes and Elastic IPs are read every time.

The daemon forgets it all whenever a link appears or leaves (a detach and re-attach gives an
ENI a new device number) and whenever a read fails; an ENI missing from the MAC listing is
forgotten at once, and so is one that does not look settled yet (device-number 0 or no IPs:
right after an attach).  One-shot runs (apply, hotplug, show) keep nothing: the memo is off
until the daemon turns it on (`enable`).
"""

from __future__ import annotations

import threading
import time
from typing import Optional

_lock = threading.Lock()
_on = False
_tokens: dict[tuple[str, ...], tuple[str, str, float]] = {}  # roots -> root, token, until
_values: dict[str, str] = {}  # URL -> body of a key that cannot change
_macs: dict[str, set[str]] = {}  # MAC -> the URLs kept for it


def enable() -> None:
    global _on
    _on = True


def forget() -> None:
    """Drop everything kept (a link came or went, a read failed, the configuration changed)."""
    with _lock:
        _tokens.clear()
        _values.clear()
        _macs.clear()


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
            for url in _macs.pop(mac):
                _values.pop(url, None)


def drop(mac: str) -> None:
    """Forget one ENI's keys: it does not look settled yet (right after an attach AWS lists
    device-number 0 and no IPs for a few seconds), so what was read may still change."""
    with _lock:
        for url in _macs.pop(mac.lower(), set()):
            _values.pop(url, None)

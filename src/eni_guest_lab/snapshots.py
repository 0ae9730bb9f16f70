"""What is configured inside a simulated VM, read with ``ip -j``: for assertions.

Functions of a namespace name, so they work for every guest of a SimVM (and for its vpc).
:func:`snapshot` is the whole state the agent could change, comparable with ``==``: a test
takes one before and one after a run that must change nothing.
"""

from __future__ import annotations

import json
import time
from typing import Any, Optional

from .shell import ip_json


def guest_links(ns: str) -> list[dict[str, Any]]:
    """``ip -j link show``."""
    return ip_json(ns, ["link", "show"])


def guest_rules(ns: str, family: int = 4) -> list[dict[str, Any]]:
    """``ip -j rule show``, for ``family`` 4 or 6."""
    return ip_json(ns, [f"-{family}", "rule", "show"])


def guest_routes(ns: str, table: str = "main", family: int = 4) -> list[dict[str, Any]]:
    """``ip -j route show table <table>`` (``table="all"`` for every table)."""
    return ip_json(ns, [f"-{family}", "route", "show", "table", str(table)])


def guest_addrs(ns: str, ifname: str, family: Optional[int] = None) -> list[dict[str, Any]]:
    """The ``addr_info`` entries of one interface."""
    args = ([f"-{family}"] if family else []) + ["addr", "show", "dev", ifname]
    links = ip_json(ns, args)
    return [a for link in links for a in link.get("addr_info", [])]


def guest_ips(ns: str, ifname: str, family: Optional[int] = None) -> set[str]:
    """``{"10.0.1.10/24", ...}`` on one interface: the short form for assertions."""
    return {f"{a['local']}/{a['prefixlen']}" for a in guest_addrs(ns, ifname, family)}


def _clean(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cleaned = [{k: v for k, v in e.items() if k != "expires"} for e in entries]
    return sorted(cleaned, key=lambda d: json.dumps(d, sort_keys=True))


def _dad_done(ns: str, timeout: float = 5.0) -> None:
    """Wait until no IPv6 address in ``ns`` is tentative: a link that came up moments ago
    gets its link-local routes only when DAD ends, which would make two snapshots taken
    around it differ without anyone acting (seen on a loaded machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = ip_json(ns, ["-6", "addr", "show", "tentative"])
        # only links that are up and have a carrier run DAD: an address on a link that is
        # down stays tentative until it comes up, and waiting for it would never end
        if not any(
            link.get("addr_info") and {"UP", "LOWER_UP"} <= set(link.get("flags", ()))
            for link in busy
        ):
            return
        time.sleep(0.05)


def snapshot(ns: str) -> dict[str, Any]:
    """Everything the agent could change in the guest, comparable with ``==``.

    Counters, lifetimes and DAD state are left out: they change without anyone acting; and
    it is taken once IPv6 DAD has ended (`_dad_done`).
    """
    _dad_done(ns)
    keep_link = ("ifname", "address", "flags", "mtu", "group", "master", "link_type")
    links = sorted(
        ({k: link[k] for k in keep_link if k in link} for link in ip_json(ns, ["link"])),
        key=lambda d: d["ifname"],
    )
    volatile_addr = {"valid_life_time", "preferred_life_time", "tentative", "optimistic"}
    addrs = {
        link["ifname"]: sorted(
            (
                {k: v for k, v in a.items() if k not in volatile_addr}
                for a in link.get("addr_info", [])
            ),
            key=lambda d: json.dumps(d, sort_keys=True),
        )
        for link in ip_json(ns, ["addr", "show"])
    }
    return {
        "links": links,
        "addrs": addrs,
        "rules4": _clean(ip_json(ns, ["-4", "rule", "show"])),
        "rules6": _clean(ip_json(ns, ["-6", "rule", "show"])),
        "routes4": _clean(ip_json(ns, ["-4", "route", "show", "table", "all"])),
        "routes6": _clean(ip_json(ns, ["-6", "route", "show", "table", "all"])),
    }

"""The rendered metadata tree, and what every cloud's renderer shares.

Rendering (render.py) turns a scenario into a flat tree ``{path: leaf text | directory
listing}``. It is a pure function of the scenario, the current time and the first-seen time of
each MAC, so the listing rules (what is listed, what answers 404, how a just-attached ENI looks)
can be unit-tested without a server. This module holds the tree's shape, the ``lag`` clock, the
listings derived from leaves, the ``paths`` overrides, and where each cloud puts the router.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from typing import Any, Optional, Union

from .scenario import Eni, Scenario

#: A rendered tree: keys are paths relative to the server root without leading or trailing
#: ``/``. A ``str`` value is a leaf body; a ``list`` value is a directory listing whose entries
#: name sub-directories with a trailing ``/``.
Tree = dict[str, Union[str, list[str]]]

META = "latest/meta-data"
MACS_DIR = f"{META}/network/interfaces/macs"
TOKEN_PATH = "latest/api/token"
JD_META = "metadata/latest"
OPENSTACK_NETWORK_DATA = "openstack/latest/network_data.json"

#: Keys of the scenario that only some clouds publish; AWS's tree never shows them.
CLOUD_ONLY_KEYS = frozenset({"gateway", "netmask", "ipv6-gateway"})

#: Keys a just-attached ENI does not have yet (AWS fills them in when the attachment settles).
LAG_HIDDEN_KEYS = frozenset({"local-ipv4s", "ipv6s"})


def update_first_seen(
    previous: Mapping[str, float], macs: Iterable[str], now: float
) -> dict[str, float]:
    """Carry first-seen times over a reload.

    A MAC present before keeps its time; a new MAC gets ``now``; a MAC no longer present is
    dropped, so if it comes back later it is "attached" again and its lag starts over.
    """
    return {mac.lower(): previous.get(mac.lower(), now) for mac in macs}


def is_lagging(eni: Eni, now: float, first_seen: Optional[Mapping[str, float]]) -> bool:
    """Whether ``eni`` should still look just-attached. Without ``first_seen`` no lag applies."""
    if eni.lag <= 0 or first_seen is None:
        return False
    return now - first_seen.get(eni.mac.lower(), now) < eni.lag


def with_listings(leaves: Mapping[str, str]) -> Tree:
    """Derive a listing for every directory from the leaves, in insertion order."""
    directories: set[str] = set()
    for key in leaves:
        parts = key.split("/")
        directories.update("/".join(parts[:index]) for index in range(len(parts)))
    listings: dict[str, dict[str, None]] = {}
    for key in leaves:
        parts = key.split("/")
        for index in range(len(parts)):
            parent = "/".join(parts[:index])
            child = "/".join(parts[: index + 1])
            name = parts[index] + ("/" if child in directories else "")
            listings.setdefault(parent, {})[name] = None
    tree: Tree = {directory: list(entries) for directory, entries in listings.items()}
    # A raw override on a directory path replaces its listing (malformed-listing tests).
    tree.update(leaves)
    return tree


def ipv4_gateway(provider: str, eni: Mapping[str, Any]) -> Optional[str]:
    """The IPv4 router of an ENI's subnet as the simulated cloud publishes it.

    Shared with the lab's simulated VPC, which puts the subnet's router at this address: an
    agent that guessed ``.1`` on Alibaba (where the vSwitch gateway is ``.253`` in a /24) would
    then find no router, as on the real cloud. ``eni`` is a scenario ENI (a dict or ``values``).
    """
    if eni.get("gateway"):
        return str(eni["gateway"])
    cidr = eni.get("subnet-ipv4-cidr-block")
    if not cidr:
        return None
    net = ipaddress.IPv4Network(str(cidr), strict=False)
    if provider == "alibaba" and net.num_addresses >= 8:
        return str(net.broadcast_address - 2)
    return str(net.network_address + 1)


def ipv6_gateway(eni: Mapping[str, Any], cidr: Optional[str] = None) -> Optional[str]:
    """The IPv6 router of ``cidr`` (default: the ENI's first IPv6 subnet): ``ipv6-gateway`` if
    the scenario gives one inside it, else the subnet's first host (``::1``)."""
    cidrs = eni.get("subnet-ipv6-cidr-blocks") or []
    cidrs = [cidrs] if isinstance(cidrs, str) else list(cidrs)
    cidr = cidr or (cidrs[0] if cidrs else None)
    given = eni.get("ipv6-gateway")
    if cidr is None:
        return str(given) if given else None
    net = ipaddress.IPv6Network(str(cidr), strict=False)
    if given and ipaddress.IPv6Address(str(given)) in net:
        return str(given)
    return str(net.network_address + 1)


def eni_netmask(eni: Eni) -> Optional[str]:
    """The ENI's IPv4 netmask: ``netmask`` if the scenario gives one, else its subnet's."""
    mask = eni.values.get("netmask")
    if isinstance(mask, str):
        return mask
    cidr = eni.values.get("subnet-ipv4-cidr-block")
    return str(ipaddress.IPv4Network(str(cidr)).netmask) if cidr else None


def eni_text(eni: Eni, key: str) -> str:
    """One value of the ENI as text (a list joined with commas; absent: empty)."""
    value = eni.values.get(key, "")
    return value if isinstance(value, str) else ",".join(value)


def eni_items(eni: Eni, key: str) -> list[str]:
    """One value of the ENI as a list (a single string is one item; absent: empty)."""
    value = eni.values.get(key, [])
    return [value] if isinstance(value, str) else list(value)


def finish(leaves: dict[str, str], scenario: Scenario, json_listings: bool = False) -> Tree:
    """Apply the scenario's raw ``paths`` overrides and derive the directory listings."""
    for path, value in scenario.paths.items():
        if value is None:
            prefix = path + "/"
            for key in [k for k in leaves if k == path or k.startswith(prefix)]:
                del leaves[key]
    overrides = {path: value for path, value in scenario.paths.items() if value is not None}
    leaves.update(overrides)
    tree = with_listings(leaves)
    if json_listings:  # JD Cloud answers a directory with a JSON array of its entries
        tree = {
            k: json.dumps(v) if isinstance(v, list) and k not in overrides else v
            for k, v in tree.items()
        }
    for path, value in scenario.paths.items():
        if value is None:
            tree.pop(path, None)
    return tree


def body_for(tree: Mapping[str, Union[str, list[str]]], path: str) -> Optional[str]:
    """The response body for a request path, or ``None`` for 404.

    Directories answer with and without the trailing ``/``; a query string must already be
    stripped.
    """
    value = tree.get(path.strip("/"))
    if value is None:
        return None
    return value if isinstance(value, str) else "\n".join(value)

"""The `[[eni]]` tables of the configuration file: one ENI's additions and overrides, parsed.

Checked here for syntax only (a MAC or ENI id, addresses, networks in CIDR form, an MTU in
68..65535): whether an added IP lies in its ENI's subnet, or whether an MTU suits an ENI that
has IPv6 (at least 1280), can only be known once metadata is read, so overlay.py merges the
values into what was read and validate.py holds them to the same rules as metadata.
Errors name the table as `eni[N]`, N counting from 1 as in the file.
"""

from __future__ import annotations

from .errors import ConfigError
from .record import fields, record
from .syntax import address, eni_ref, network

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Optional

MTU_MIN, MTU_MAX = 68, 65535  # IPv4's minimum (RFC 791) and the largest the kernel takes
MTU_MIN_IPV6 = 1280  # RFC 8200: a link carrying IPv6 must take at least this


@record(frozen=True)
class EniOverlay:
    """One `[[eni]]` table of the configuration file: what to add to or change on one ENI.

    Values are syntax-checked, normalised strings (addresses as `ipaddress` prints them), not
    yet validated against the ENI: `overlay.merge` puts them into the ENI's merged record so
    validation judges them like metadata, and `where` ("config FILE: eni[2]") lets its
    errors name the file and the table.
    """

    match: str  # a MAC (lower case) or an ENI id, as metadata lists it
    add_ipv4s: tuple[str, ...] = ()
    add_ipv6s: tuple[str, ...] = ()
    ipv4_subnet: Optional[str] = None
    ipv4_gateway: Optional[str] = None
    ipv6_subnet: Optional[str] = None
    ipv6_gateway: Optional[str] = None
    mtu: Optional[int] = None  # the ENI's link MTU, over metadata's and the global `mtu`
    where: str = ""

    def matches(self, mac: Optional[str], eni_id: Optional[str]) -> bool:
        return self.match in (mac, eni_id)


# The keys of an [[eni]] table: EniOverlay's fields but `where`, which says where it was read.
OVERLAY_KEYS = tuple(f.name for f in fields(EniOverlay) if f.name != "where")


def coerce_overlays(value: Any, source: str) -> tuple[EniOverlay, ...]:
    """The [[eni]] tables; errors name the table as eni[N], N counting from 1 as in the file."""
    if source.startswith("environment"):
        raise ConfigError(f"{source}: eni: [[eni]] tables can only be given in the config file")
    if not isinstance(value, (list, tuple)) or not all(isinstance(t, dict) for t in value):
        raise ConfigError(f"{source}: eni = {value!r}: must be [[eni]] tables")
    overlays: list[EniOverlay] = []
    for n, table in enumerate(value, 1):
        overlay = _overlay(f"{source}: eni[{n}]", table)
        for m, other in enumerate(overlays, 1):
            if other.match == overlay.match:
                raise ConfigError(
                    f"{overlay.where}.match = {table['match']!r}: eni[{m}] names the same ENI"
                )
        overlays.append(overlay)
    return tuple(overlays)


def _overlay(where: str, table: dict[str, Any]) -> EniOverlay:
    """One [[eni]] table, syntax-checked; `where` ("config FILE: eni[2]") starts every error."""
    for key in table:
        if key not in OVERLAY_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(OVERLAY_KEYS)})")

    def bad(key: str, val: Any, why: str) -> ConfigError:
        return ConfigError(f"{where}.{key} = {val!r}: {why}")

    match_text = table.get("match")
    if match_text is None:
        raise ConfigError(f"{where}.match: missing (the ENI's MAC or id)")
    if not isinstance(match_text, str):
        raise bad("match", match_text, "must be a string (the ENI's MAC or id)")
    match, why = eni_ref(match_text)
    if match is None:
        raise bad("match", match_text, why)
    values: dict[str, Any] = {}
    for key, version in (("add_ipv4s", 4), ("add_ipv6s", 6)):
        items = table.get(key, [])
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise bad(key, items, "must be a list of strings")
        addrs: list[str] = []
        for item in items:
            addr = address(item, version)
            if addr is None:
                raise bad(key, items, f"{item!r} is not a unicast IPv{version} address")
            if addr not in addrs:
                addrs.append(addr)
        values[key] = tuple(addrs)
    for key, version in (("ipv4_subnet", 4), ("ipv6_subnet", 6)):
        if key in table:
            text = table[key]
            net, why = network(text, version) if isinstance(text, str) else (None, "")
            if net is None:
                raise bad(key, text, why or f"not an IPv{version} network in CIDR form")
            values[key] = net
    for key, version in (("ipv4_gateway", 4), ("ipv6_gateway", 6)):
        if key in table:
            text = table[key]
            gateway = address(text, version) if isinstance(text, str) else None
            if gateway is None:
                raise bad(key, text, f"not an IPv{version} address")
            values[key] = gateway
    if "mtu" in table:
        mtu = table["mtu"]
        if not isinstance(mtu, int) or isinstance(mtu, bool) or not MTU_MIN <= mtu <= MTU_MAX:
            raise bad("mtu", mtu, f"must be an integer in {MTU_MIN}..{MTU_MAX}")
        values["mtu"] = mtu
    return EniOverlay(match=match, where=where, **values)

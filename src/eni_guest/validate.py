"""Validation: is what metadata and the configuration say about each ENI safe to act on?

`build` turns the merged records (overlay.py) of the ENIs the scope manages (scope.py) into
the immutable model (model.Instance), or refuses with one line naming the key and the value:
metadata's key (`metadata network/interfaces/macs/0e:../local-ipv4s = '10.0.9.9': outside
the ENI's subnets 10.0.2.0/24`), or the config file's when the value came from there.  It
runs before the kernel is touched: a value that cannot be read for sure would end up as a
route.  Excluded and unsettled ENIs are not validated: eni-guest does not act on them.
"""

from __future__ import annotations

import _socket  # socket.py's C core (inet_pton), without socket.py's enums
import ipaddress
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from .config import MAX_DEVICE_NUMBER, MAX_NETWORK_CARDS, Config, is_eni_id, normalize_mac
from .config_eni import MTU_MAX, MTU_MIN, MTU_MIN_IPV6
from .errors import MetadataInvalid
from .model import Eni, Excluded, Instance, RawEni, RawInstance, Unsettled, assign_table_slots
from .overlay import Merged, lenient, merge
from .record import replace
from .reserved import cloud_reserves, reserved
from .scope import EXCLUDED, MANAGED, Scope, decide

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Optional

    from .model import IPAddress, IPNetwork


def _bad(raw: Merged, name: str, value: object, why: str) -> MetadataInvalid:
    origin = raw.origins.get((name, value)) if isinstance(value, str) else None
    if origin is not None:  # the value came from the config file: name its key
        err = MetadataInvalid(f"{origin} = {value!r}: {why}")
        err.from_config = True  # type: ignore[attr-defined]
        return err
    key = raw.source + raw.keys.get(name, name)
    return MetadataInvalid(f"metadata {key} = {value!r}: {why}")


def _int(raw: Merged, name: str, value: str, limit: int) -> int:
    text = value.strip().strip('"')
    if not (text.isascii() and text.isdigit()) or int(text) >= limit:
        raise _bad(raw, name, value, f"not an integer in 0..{limit - 1}")
    return int(text)


def _mtu(raw: Merged, has_ipv6: bool) -> Optional[int]:
    """The ENI's link MTU from its [[eni]] table or metadata: 68..65535, at least 1280 when
    the ENI has IPv6 addresses (RFC 8200); None when neither gives one."""
    if raw.mtu is None:
        return None
    text = raw.mtu.strip().strip('"')
    low = MTU_MIN_IPV6 if has_ipv6 else MTU_MIN
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= MTU_MAX:
        why = f"not an MTU in {low}..{MTU_MAX}" + (" (the ENI has IPv6)" if has_ipv6 else "")
        raise _bad(raw, "mtu", raw.mtu, why)
    return int(text)


def _parse(text: str, version: int) -> Optional[IPAddress]:
    """The address `text` names, or None.  IPv4 goes through the C library's inet_pton, which
    takes exactly what ipaddress takes (four decimal octets, no leading zero) at a fifth of
    its cost: a first apply of 15 ENIs x 50 IPs parses 750.  IPv6 stays ipaddress's (it also
    reads a zone index, which inet_pton refuses)."""
    try:
        if version == 4:
            return IPv4Address(_socket.inet_pton(_socket.AF_INET, text))
        return IPv6Address(text)
    except (OSError, ValueError):  # ValueError: not an address, a NUL, or not ASCII
        return None


def _unicast(addr: IPAddress) -> bool:
    """Not multicast, unspecified or loopback.  IPv4 as integer ranges (224.0.0.0/4, 0.0.0.0,
    127.0.0.0/8): ipaddress's properties build a network for each test."""
    if addr.version == 4:
        v = int(addr)
        return v >> 28 != 0xE and v != 0 and v >> 24 != 127
    return not (addr.is_multicast or addr.is_unspecified or addr.is_loopback)


def _addr(raw: Merged, name: str, value: str, version: int) -> IPAddress:
    addr = _parse(value.strip().strip('"'), version)
    if addr is None:
        raise _bad(raw, name, value, f"not an IPv{version} address")
    if not _unicast(addr):
        raise _bad(raw, name, value, "not a unicast address")
    return addr


def _net(raw: Merged, name: str, value: str, version: int) -> IPNetwork:
    try:
        net = ipaddress.ip_network(value.strip().strip('"'), strict=True)
    except ValueError:
        net = None
    if net is None or net.version != version:
        raise _bad(raw, name, value, f"not an IPv{version} network in CIDR form")
    if net.prefixlen == 0:
        raise _bad(raw, name, value, "a default route is not a subnet")
    return net


def _family(raw: Merged, version: int) -> tuple[tuple, tuple, Optional[IPAddress], tuple]:
    v = str(version)
    ips_name, nets_name, gw_name, pfx_name = (
        f"ipv{v}s",
        f"ipv{v}_subnets",
        f"ipv{v}_gateway",
        f"ipv{v}_prefixes",
    )
    ips: list = []
    # The integers, not the addresses: a list's `in` was quadratic (50 IPs, 1225
    # comparisons), and ipaddress hashes an address through its hex text.
    seen: set[int] = set()
    for text in getattr(raw, ips_name):
        addr = _addr(raw, ips_name, text, version)
        if int(addr) not in seen:
            seen.add(int(addr))
            ips.append(addr)
    nets = tuple(_net(raw, nets_name, t, version) for t in getattr(raw, nets_name))
    prefixes = tuple(_net(raw, pfx_name, t, version) for t in getattr(raw, pfx_name))
    gateway = None
    if ips:
        if not nets:
            raise _bad(raw, nets_name, "", f"ENI has IPv{v} addresses but no IPv{v} subnet")
        where = _join(raw, nets_name, nets)
        # Each IP's subnet, by the subnets' first and last addresses as integers.
        bounds = [(int(n.network_address), int(n.broadcast_address), n) for n in nets]
        homes = []
        for addr in ips:
            v = int(addr)
            home = next((n for first, last, n in bounds if first <= v <= last), None)
            if home is None:
                raise _bad(raw, ips_name, str(addr), f"outside the ENI's subnets {where}")
            homes.append(home)
        gw_text = getattr(raw, gw_name)
        if gw_text:
            gateway = _addr(raw, gw_name, gw_text, version)
            if not any(gateway in n for n in nets) and not gateway.is_link_local:
                raise _bad(raw, gw_name, gw_text, f"outside the ENI's subnets {where}")
        else:
            # The VPC router is the subnet's first host address on AWS (.1 in a /24).
            gateway = nets[0].network_address + 1
        for addr, home in zip(ips, homes):
            why = reserved(addr, home, gateway, raw.cloud_reserves)
            if why is not None:
                raise _bad(raw, ips_name, str(addr), why)
    for pfx in prefixes:
        if nets and not any(pfx.subnet_of(n) for n in nets):
            raise _bad(
                raw, pfx_name, str(pfx), f"outside the ENI's subnets {_join(raw, nets_name, nets)}"
            )
    return tuple(ips), nets, gateway, prefixes


def _join(raw: Merged, nets_name: str, nets: tuple) -> str:
    """The subnets for an error message, saying so when the config file overrode them."""
    text = ", ".join(str(n) for n in nets) or "(none)"
    origin = next((o for (name, _), o in raw.origins.items() if name == nets_name), None)
    return f"{text} (from {origin})" if origin else text


def _build_eni(raw: Merged, mac: str, primary: bool) -> Eni:
    eni_id = (raw.eni_id or "").strip().strip('"')
    if not is_eni_id(eni_id):
        raise _bad(raw, "eni_id", raw.eni_id, "not an interface id")
    card = 0
    if raw.network_card is not None:
        card = _int(raw, "network_card", raw.network_card, MAX_NETWORK_CARDS)
    device = 0
    if raw.device_number is not None:
        device = _int(raw, "device_number", raw.device_number, MAX_DEVICE_NUMBER)
    ipv4s, ipv4_nets, gw4, pfx4 = _family(raw, 4)
    ipv6s, ipv6_nets, gw6, pfx6 = _family(raw, 6)
    eips = []
    for public, private in raw.elastic_ips.items():
        pub = _addr(raw, "elastic_ips", public, 4)
        priv = _addr(raw, "elastic_ips", private, 4)
        if priv in ipv4s:
            # Shown, never configured: a mapping that lags an unassigned IP is left out rather
            # than blocking the routing of every other IP.
            eips.append((priv, pub))
    return Eni(
        mac=mac,
        eni_id=eni_id,
        device_number=device,
        network_card=card,
        primary=primary,
        ipv4s=ipv4s,  # type: ignore[arg-type]
        ipv4_subnets=ipv4_nets,  # type: ignore[arg-type]
        ipv4_gateway=gw4,  # type: ignore[arg-type]
        ipv6s=ipv6s,  # type: ignore[arg-type]
        ipv6_subnets=ipv6_nets,  # type: ignore[arg-type]
        ipv6_gateway=gw6,  # type: ignore[arg-type]
        ipv4_prefixes=pfx4,  # type: ignore[arg-type]
        ipv6_prefixes=pfx6,  # type: ignore[arg-type]
        elastic_ips=tuple(eips),
        excluded_ips=tuple(lenient(raw.left_alone)),
        ipv4s_lack_primary_ip=raw.ipv4s_lack_primary_ip,
        mtu=_mtu(raw, bool(ipv6s)),
    )


def _excluded(r: RawEni, mac: str, primary: bool, slot: Optional[int], reason: str) -> Excluded:
    """An excluded ENI, read leniently: only what protects it from removal."""
    if slot is None and r.has_device_numbers:
        try:
            card = 0 if r.network_card is None else _int(r, "", r.network_card, MAX_NETWORK_CARDS)
            device = _int(r, "", r.device_number or "", MAX_DEVICE_NUMBER)
            if device or card or primary:  # a secondary still reading 0 has no slot yet
                slot = card * MAX_DEVICE_NUMBER + device
        except MetadataInvalid:
            slot = None
    return Excluded(
        mac=mac,
        eni_id=(r.eni_id or "").strip().strip('"'),
        reason=reason,
        ips=tuple(lenient([*r.ipv4s, *r.ipv6s])),
        prefixes=tuple(
            p
            for p in lenient([*r.ipv4_prefixes, *r.ipv6_prefixes])
            if isinstance(p, (IPv4Network, IPv6Network))
        ),
        slot=slot,
    )


def _no_two_claim_the_same(enis: list[Eni], raws: dict[str, Merged]) -> None:
    """No IP or delegated prefix on two ENIs, no two ENIs in one slot (one table)."""
    owners: dict[object, Eni] = {}
    slots: dict[int, Eni] = {}
    for eni in enis:
        for ip in (*eni.ips, *eni.prefixes):
            other = owners.get(ip)
            if other is not None:
                r = raws[eni.mac]
                name = "ipv4s" if ip.version == 4 else "ipv6s"
                key = r.origins.get((name, str(ip))) or "metadata " + r.source + r.keys.get(
                    name, ""
                )
                raise MetadataInvalid(
                    f"{key} = {str(ip)!r}: also listed on {other.eni_id} ({other.mac})"
                )
            owners[ip] = eni
        other = slots.get(eni.slot)
        if other is not None:
            r = raws[eni.mac]
            key = r.source + r.keys.get("device_number", "device-number")
            raise MetadataInvalid(
                f"metadata {key} = {str(eni.device_number)!r}: network card {eni.network_card} "
                f"slot already used by {other.eni_id} ({other.mac})"
            )
        slots[eni.slot] = eni


def _with_table_slots(
    enis: list[Eni], hashed: list[str], primary_mac: str
) -> tuple[list[Eni], dict[str, int]]:
    """The ENIs with their MAC-derived table slots, where the cloud publishes no device number
    (`hashed`: every such listed ENI, excluded ones too, so excluding one never moves another
    ENI to a new table); and those slots by MAC."""
    table_slots: dict[str, int] = {}
    if hashed:
        taken = [e.slot for e in enis if e.mac not in hashed]
        table_slots = assign_table_slots(hashed, primary_mac, taken)
        enis = [
            replace(e, table_slot=table_slots[e.mac]) if e.mac in table_slots else e for e in enis
        ]
    return enis, table_slots


def _by_mac(merged: list[Merged], reserves: tuple[str, int, int]) -> dict[str, Merged]:
    """The ENIs by MAC, in listing order, each told what its cloud reserves; a MAC that is
    not one, or listed twice, is refused."""
    out: dict[str, Merged] = {}
    for r in merged:
        r.cloud_reserves = reserves
        mac = normalize_mac(r.mac)
        if mac is None:
            raise MetadataInvalid(f"metadata {r.source} = {r.mac!r}: not a MAC")
        if mac in out:
            raise MetadataInvalid(f"metadata {r.source}: MAC {mac} is listed twice")
        out[mac] = r
    return out


def _one_eni(r: Merged, mac: str, primary: bool) -> tuple[Optional[Eni], str]:
    """(the ENI, "") or (None, why metadata's values for it are refused).  A refusal of the
    primary ENI, or of a value the configuration supplied, is raised: the primary is what
    every other ENI's routing relies on, and a value the operator wrote is their mistake to
    fix before anything changes."""
    try:
        return _build_eni(r, mac, primary), ""
    except MetadataInvalid as e:
        if primary or getattr(e, "from_config", False):
            raise
        return None, str(e)


def _primary_is_complete(
    raw: RawInstance, primary_mac: str, raws: dict[str, Merged], unsettled: list[Unsettled]
) -> None:
    """The primary ENI must be listed and read in full: every other ENI relies on it."""
    if primary_mac not in raws:
        raise MetadataInvalid(
            f"metadata {raw.primary_mac_key} = {primary_mac!r}: not among the listed ENIs"
        )
    if primary_mac in {u.mac for u in unsettled}:
        reason = next(u.reason for u in unsettled if u.mac == primary_mac)
        raise MetadataInvalid(f"metadata: primary ENI {primary_mac} is incomplete ({reason})")


def build(raw: RawInstance, config: Config, scope: Optional[Scope]) -> Instance:
    """Validate everything, or raise MetadataInvalid naming the first bad key and value.

    Only the ENIs the scope manages are validated: excluded ones are kept apart, read
    leniently (`Instance.excluded`), unsettled ones too (`Instance.unsettled`).  A secondary
    ENI whose own metadata is refused is kept like an excluded one (`Instance.invalid`, the
    refusal as its reason) and the others are built (see `_one_eni`).
    """
    given = scope
    if scope is None:
        scope = decide(raw, config, ())  # no links: no NIC known, none excluded by name
    left = {e.mac: e for e in scope.enis if e.status != MANAGED}
    merged = merge(raw, config, {m for m, e in left.items() if e.status == EXCLUDED})
    primary_mac = normalize_mac(raw.primary_mac)
    if primary_mac is None:
        raise MetadataInvalid(f"metadata {raw.primary_mac_key} = {raw.primary_mac!r}: not a MAC")
    enis: list[Eni] = []
    unsettled: list[Unsettled] = []
    excluded_raws: list[tuple[str, RawEni, str]] = []
    invalid_raws: list[tuple[str, RawEni, str]] = []
    hashed: list[str] = []  # MACs of ENIs whose cloud publishes no device number
    raws = _by_mac(merged, cloud_reserves(raw.provider))
    for mac, r in raws.items():
        if not r.has_device_numbers:
            # excluded ENIs too: excluding one must never move another ENI to a new table
            hashed.append(mac)
        s = left.get(mac)
        if s is not None and s.status == EXCLUDED:
            excluded_raws.append((mac, r, s.reason))
        elif s is not None:
            unsettled.append(Unsettled(mac, s.reason))
        else:
            eni, refusal = _one_eni(r, mac, mac == primary_mac)
            if eni is not None:
                enis.append(eni)
            else:
                invalid_raws.append((mac, r, refusal))  # one bad ENI never blocks the others
    enis, table_slots = _with_table_slots(enis, hashed, primary_mac)
    invalid = [_excluded(r, mac, False, table_slots.get(mac), why) for mac, r, why in invalid_raws]
    excluded = [
        _excluded(r, mac, mac == primary_mac, table_slots.get(mac), why)
        for mac, r, why in excluded_raws
    ]
    _primary_is_complete(raw, primary_mac, raws, unsettled)
    _no_two_claim_the_same(enis, raws)
    return Instance(
        provider=raw.provider,
        instance_id=raw.instance_id,
        primary_mac=primary_mac,
        enis=tuple(sorted(enis, key=lambda e: e.slot)),
        unsettled=tuple(unsettled),
        excluded=tuple(excluded),
        excluded_ips=scope.excluded_ips,
        invalid=tuple(invalid),
        scope=given,  # without the run's scope, the planner decides one from the kernel
    )

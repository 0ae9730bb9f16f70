"""Validated, immutable description of the instance's ENIs, built from raw provider data.

Providers hand over strings exactly as the metadata service returned them (`RawInstance`).
`build_instance` is the one place that decides whether those strings are safe to act on: a
bad MAC, an address outside its subnet or an IP claimed by two ENIs stops the run with one
line naming the metadata key and the value, before the kernel is touched.  ENIs that are
listed but not settled yet (just attached: device-number 0 on a secondary, no IPs) are kept
apart, so the planner can configure the rest without removing anything.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Iterable, Optional, Union

from .config import MAX_DEVICE_NUMBER, MAX_NETWORK_CARDS, SLOTS
from .errors import MetadataInvalid

IPAddress = Union[IPv4Address, IPv6Address]
IPNetwork = Union[IPv4Network, IPv6Network]

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_ENI_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


# ---------------------------------------------------------------- raw data from providers


@dataclass
class RawEni:
    """One ENI as a provider read it: strings only, `None` where the service had no such key.

    `source` is the metadata path of the ENI (e.g. "network/interfaces/macs/0e:..:02/") and
    `keys` maps each field name to the key it came from, so errors can name both.
    """

    source: str
    mac: str
    eni_id: Optional[str] = None
    device_number: Optional[str] = None
    network_card: Optional[str] = None
    ipv4s: list[str] = field(default_factory=list)
    ipv4_subnets: list[str] = field(default_factory=list)
    ipv4_gateway: Optional[str] = None
    ipv6s: list[str] = field(default_factory=list)
    ipv6_subnets: list[str] = field(default_factory=list)
    ipv6_gateway: Optional[str] = None
    ipv4_prefixes: list[str] = field(default_factory=list)
    ipv6_prefixes: list[str] = field(default_factory=list)
    elastic_ips: dict[str, str] = field(default_factory=dict)  # public -> private
    keys: dict[str, str] = field(default_factory=dict)
    # device numbers make sense only where the cloud publishes them (AWS does)
    has_device_numbers: bool = True
    # Set by a provider that knows the ENI cannot be configured yet, and why (JD Cloud: its
    # NIC is not in the VM yet, so DHCP cannot tell its subnet); the model keeps it unsettled.
    unsettled: Optional[str] = None


@dataclass
class RawInstance:
    provider: str
    primary_mac: str
    primary_mac_key: str
    enis: list[RawEni]
    instance_id: str = ""


# ---------------------------------------------------------------- validated model


@dataclass(frozen=True)
class Eni:
    mac: str
    eni_id: str
    device_number: int
    network_card: int
    primary: bool
    ipv4s: tuple[IPv4Address, ...] = ()
    ipv4_subnets: tuple[IPv4Network, ...] = ()
    ipv4_gateway: Optional[IPv4Address] = None
    ipv6s: tuple[IPv6Address, ...] = ()
    ipv6_subnets: tuple[IPv6Network, ...] = ()
    ipv6_gateway: Optional[IPv6Address] = None
    ipv4_prefixes: tuple[IPv4Network, ...] = ()
    ipv6_prefixes: tuple[IPv6Network, ...] = ()
    elastic_ips: tuple[tuple[IPv4Address, IPv4Address], ...] = ()  # (private, public)
    # Set only for clouds without device numbers (see `assign_table_slots`); AWS leaves it None.
    table_slot: Optional[int] = None

    @property
    def slot(self) -> int:
        """Stable per-ENI index: survives reboots and re-attach to the same slot, never shared.

        Where the cloud publishes device numbers (AWS) it is network card x 64 + device number;
        elsewhere it is the MAC-derived `table_slot` chosen by `build_instance`.
        """
        if self.table_slot is not None:
            return self.table_slot
        return self.network_card * MAX_DEVICE_NUMBER + self.device_number

    @property
    def ips(self) -> tuple[IPAddress, ...]:
        return (*self.ipv4s, *self.ipv6s)

    @property
    def prefixes(self) -> tuple[IPNetwork, ...]:
        return (*self.ipv4_prefixes, *self.ipv6_prefixes)

    def elastic_ip(self, private: IPAddress) -> Optional[IPv4Address]:
        for priv, pub in self.elastic_ips:
            if priv == private:
                return pub
        return None


@dataclass(frozen=True)
class Unsettled:
    """An ENI the metadata lists but cannot be configured yet; nothing of it may be removed."""

    mac: str
    reason: str


@dataclass(frozen=True)
class Instance:
    provider: str
    instance_id: str
    primary_mac: str
    enis: tuple[Eni, ...]
    unsettled: tuple[Unsettled, ...] = ()
    # Why `--provider auto` chose this cloud (e.g. "DMI sys_vendor 'Alibaba Cloud'"), shown by
    # `eni-guest show`; None when the provider was named in the configuration.
    chosen_because: Optional[str] = None

    @property
    def complete(self) -> bool:
        """True when every listed ENI was read in full: only then may anything be removed."""
        return not self.unsettled

    def by_mac(self, mac: str) -> Optional[Eni]:
        for eni in self.enis:
            if eni.mac == mac:
                return eni
        return None


# ---------------------------------------------------------------- validation


class _Unsettled(Exception):
    pass


def _bad(raw: RawEni, name: str, value: object, why: str) -> MetadataInvalid:
    key = raw.source + raw.keys.get(name, name)
    return MetadataInvalid(f"metadata {key} = {value!r}: {why}")


def normalize_mac(value: str) -> Optional[str]:
    mac = value.strip().strip('"').lower().replace("-", ":")
    return mac if _MAC.match(mac) else None


def _int(raw: RawEni, name: str, value: str, limit: int) -> int:
    text = value.strip().strip('"')
    if not (text.isascii() and text.isdigit()) or int(text) >= limit:
        raise _bad(raw, name, value, f"not an integer in 0..{limit - 1}")
    return int(text)


def _addr(raw: RawEni, name: str, value: str, version: int) -> IPAddress:
    try:
        addr = ipaddress.ip_address(value.strip().strip('"'))
    except ValueError:
        addr = None
    if addr is None or addr.version != version:
        raise _bad(raw, name, value, f"not an IPv{version} address")
    if addr.is_multicast or addr.is_unspecified or addr.is_loopback:
        raise _bad(raw, name, value, "not a unicast address")
    return addr


def _net(raw: RawEni, name: str, value: str, version: int) -> IPNetwork:
    try:
        net = ipaddress.ip_network(value.strip().strip('"'), strict=True)
    except ValueError:
        net = None
    if net is None or net.version != version:
        raise _bad(raw, name, value, f"not an IPv{version} network in CIDR form")
    if net.prefixlen == 0:
        raise _bad(raw, name, value, "a default route is not a subnet")
    return net


def _family(raw: RawEni, version: int) -> tuple[tuple, tuple, Optional[IPAddress], tuple]:
    v = str(version)
    ips_name, nets_name, gw_name, pfx_name = (
        f"ipv{v}s",
        f"ipv{v}_subnets",
        f"ipv{v}_gateway",
        f"ipv{v}_prefixes",
    )
    ips: list = []
    for text in getattr(raw, ips_name):
        addr = _addr(raw, ips_name, text, version)
        if addr not in ips:
            ips.append(addr)
    nets = tuple(_net(raw, nets_name, t, version) for t in getattr(raw, nets_name))
    prefixes = tuple(_net(raw, pfx_name, t, version) for t in getattr(raw, pfx_name))
    gateway = None
    if ips:
        if not nets:
            raise _bad(raw, nets_name, "", f"ENI has IPv{v} addresses but no IPv{v} subnet")
        for addr in ips:
            if not any(addr in n for n in nets):
                raise _bad(raw, ips_name, str(addr), f"outside the ENI's subnets {_join(nets)}")
        gw_text = getattr(raw, gw_name)
        if gw_text:
            gateway = _addr(raw, gw_name, gw_text, version)
            if not any(gateway in n for n in nets) and not gateway.is_link_local:
                raise _bad(raw, gw_name, gw_text, f"outside the ENI's subnets {_join(nets)}")
        else:
            # The VPC router is the subnet's first host address on AWS (.1 in a /24).
            gateway = nets[0].network_address + 1
    for pfx in prefixes:
        if nets and not any(pfx.subnet_of(n) for n in nets):
            raise _bad(raw, pfx_name, str(pfx), f"outside the ENI's subnets {_join(nets)}")
    return tuple(ips), nets, gateway, prefixes


def _join(nets: tuple) -> str:
    return ", ".join(str(n) for n in nets) or "(none)"


def _build_eni(raw: RawEni, mac: str, primary: bool) -> Eni:
    if raw.unsettled:
        raise _Unsettled(raw.unsettled)
    if raw.eni_id is None or not raw.eni_id.strip().strip('"'):
        raise _Unsettled("no interface id yet")
    eni_id = raw.eni_id.strip().strip('"')
    if not _ENI_ID.match(eni_id):
        raise _bad(raw, "eni_id", raw.eni_id, "not an interface id")
    card = 0
    if raw.network_card is not None:
        card = _int(raw, "network_card", raw.network_card, MAX_NETWORK_CARDS)
    if raw.device_number is None:
        if raw.has_device_numbers:
            raise _Unsettled("no device number yet")
        device = 0
    else:
        device = _int(raw, "device_number", raw.device_number, MAX_DEVICE_NUMBER)
        if device == 0 and card == 0 and not primary:
            # Right after a hot attach AWS reads 0 until the attachment propagates.
            raise _Unsettled("device-number reads 0 on a secondary ENI: attachment still settling")
    ipv4s, ipv4_nets, gw4, pfx4 = _family(raw, 4)
    ipv6s, ipv6_nets, gw6, pfx6 = _family(raw, 6)
    if not ipv4s and not ipv6s:
        raise _Unsettled("no private IP listed yet")
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
    )


def home_slot(mac: str) -> int:
    """The table slot an ENI without a device number asks for: 1 + sha256(MAC) mod 2047."""
    digest = hashlib.sha256(mac.encode("ascii")).hexdigest()
    return 1 + int(digest, 16) % (SLOTS - 1)


def assign_table_slots(
    macs: Iterable[str], primary_mac: str, taken: Iterable[int] = ()
) -> dict[str, int]:
    """Give each ENI of a cloud without device numbers a table slot that survives everything.

    Alibaba, Tencent, OpenStack and static descriptions publish no attachment index, and list
    ENIs in no guaranteed order, so the slot (hence the routing table and rule priorities) is
    derived from the one thing that stays with an ENI across detach, re-attach and reboot: its
    MAC.  The primary ENI always gets slot 0.  Every other ENI asks for its `home_slot`,
    1 + (SHA-256 of the lower-case MAC, as an integer) mod 2047, i.e. a slot in 1..2047
    (config.SLOTS is 2048).  SHA-256 rather than Python's `hash()`, which is salted per process.
    When two ENIs ask for the same slot, the ENI with the lower MAC keeps it and the other takes
    the next free slot upwards (wrapping from 2047 to 1, never 0): ENIs are placed in ascending
    MAC order, so the result depends only on the set of MACs, never on listing order or history.
    Every listed ENI takes part, settled or not, so an ENI whose IPs appear a few seconds after
    its MAC does not displace another one when it settles.  `taken` holds slots already used by
    ENIs with device numbers (none today: a provider either has them or not); they are skipped.
    """
    free = SLOTS - 1
    used = {0, *taken}
    slots: dict[str, int] = {}
    for mac in sorted(set(macs)):
        if mac == primary_mac:
            slots[mac] = 0
            continue
        slot = home_slot(mac)
        for _ in range(free):
            if slot not in used:
                break
            slot = slot % free + 1
        else:
            raise MetadataInvalid(f"metadata: more ENIs than the {free} table slots")
        used.add(slot)
        slots[mac] = slot
    return slots


def build_instance(raw: RawInstance) -> Instance:
    """Validate everything, or raise MetadataInvalid naming the first bad key and value."""
    primary_mac = normalize_mac(raw.primary_mac)
    if primary_mac is None:
        raise MetadataInvalid(f"metadata {raw.primary_mac_key} = {raw.primary_mac!r}: not a MAC")
    enis: list[Eni] = []
    unsettled: list[Unsettled] = []
    seen_macs: set[str] = set()
    raws: dict[str, RawEni] = {}
    hashed: list[str] = []  # MACs of ENIs whose cloud publishes no device number
    for r in raw.enis:
        mac = normalize_mac(r.mac)
        if mac is None:
            raise MetadataInvalid(f"metadata {r.source} = {r.mac!r}: not a MAC")
        if mac in seen_macs:
            raise MetadataInvalid(f"metadata {r.source}: MAC {mac} is listed twice")
        seen_macs.add(mac)
        raws[mac] = r
        if not r.has_device_numbers:
            hashed.append(mac)
        try:
            enis.append(_build_eni(r, mac, mac == primary_mac))
        except _Unsettled as e:
            unsettled.append(Unsettled(mac, str(e)))
    if hashed:
        taken = [e.slot for e in enis if e.mac not in hashed]
        table_slots = assign_table_slots(hashed, primary_mac, taken)
        enis = [
            replace(e, table_slot=table_slots[e.mac]) if e.mac in table_slots else e for e in enis
        ]
    if primary_mac not in seen_macs:
        raise MetadataInvalid(
            f"metadata {raw.primary_mac_key} = {primary_mac!r}: not among the listed ENIs"
        )
    if primary_mac in {u.mac for u in unsettled}:
        reason = next(u.reason for u in unsettled if u.mac == primary_mac)
        raise MetadataInvalid(f"metadata: primary ENI {primary_mac} is incomplete ({reason})")
    owners: dict[object, Eni] = {}
    slots: dict[int, Eni] = {}
    for eni in enis:
        for ip in (*eni.ips, *eni.prefixes):
            other = owners.get(ip)
            if other is not None:
                r = raws[eni.mac]
                key = r.source + r.keys.get("ipv4s" if ip.version == 4 else "ipv6s", "")
                raise MetadataInvalid(
                    f"metadata {key} = {str(ip)!r}: also listed on {other.eni_id} ({other.mac})"
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
    return Instance(
        provider=raw.provider,
        instance_id=raw.instance_id,
        primary_mac=primary_mac,
        enis=tuple(sorted(enis, key=lambda e: e.slot)),
        unsettled=tuple(unsettled),
    )

"""Validated, immutable description of the instance's ENIs, built from raw provider data.

Providers hand over strings exactly as the metadata service returned them (`RawInstance`).
`build_instance` is the one place that decides whether those strings are safe to act on: a
bad MAC, an address outside its subnet or an IP claimed by two ENIs stops the run with one
line naming the metadata key and the value, before the kernel is touched.  ENIs that are
listed but not settled yet (just attached: device-number 0 on a secondary, no IPs) are kept
apart, so the planner can configure the rest without removing anything.

Local configuration (README "Overlay configuration") is merged into the raw data by
`apply_overlay` *before* `build_instance`, so an IP added by hand or an overridden subnet or
gateway is validated exactly like metadata; only the error names the config key instead.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import logging
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Iterable, Optional, Union

from .config import (
    ENI_ID,
    MAX_DEVICE_NUMBER,
    MAX_NETWORK_CARDS,
    SLOTS,
    Config,
    EniOverlay,
    normalize_mac,
)
from .errors import MetadataInvalid

__all__ = [
    "Eni",
    "Excluded",
    "Instance",
    "RawEni",
    "RawInstance",
    "Unsettled",
    "apply_overlay",
    "assign_table_slots",
    "build_instance",
    "home_slot",
    "normalize_mac",
]

log = logging.getLogger("eni_guest")

IPAddress = Union[IPv4Address, IPv6Address]
IPNetwork = Union[IPv4Network, IPv6Network]


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
    # Why local configuration excludes this ENI (set by `apply_overlay` for exclude_enis, by
    # JD Cloud for a NIC whose name matches exclude_interfaces, which it then does not probe):
    # the model then neither validates nor configures it, and the planner removes nothing of it.
    excluded: Optional[str] = None
    # The ENI's IPs and prefixes that exclude_ips removed (`apply_overlay`), for `show`.
    left_alone: list[str] = field(default_factory=list)
    # True when ipv4s no longer starts with the first IPv4 metadata lists (the address the
    # primary ENI's DHCP client holds): exclude_ips took it, or metadata lists no IPv4 and
    # add_ipv4s supplied them.  The planner must then not take ipv4s[0] for the DHCP address.
    ipv4s_lack_primary_ip: bool = False
    # (field, value) -> the config key that supplied the value (`apply_overlay`), so that an
    # invalid added IP or overridden gateway is blamed on the config file, not on metadata.
    origins: dict[tuple[str, str], str] = field(default_factory=dict)


@dataclass
class RawInstance:
    provider: str
    primary_mac: str
    primary_mac_key: str
    enis: list[RawEni]
    instance_id: str = ""
    # exclude_ips of the configuration (`apply_overlay`): networks whose addresses and rules
    # are left alone even where metadata no longer lists them.
    excluded_ips: list[str] = field(default_factory=list)


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
    # IPs and prefixes metadata lists for this ENI but exclude_ips leaves alone: not in the
    # tuples above, so nothing is configured for them; kept to be shown.
    excluded_ips: tuple[Union[IPAddress, IPNetwork], ...] = ()
    # ipv4s does not start with the ENI's primary IP (it is excluded, or metadata lists no
    # IPv4 and they were all added by the config): ipv4s[0] is then not the primary ENI's
    # DHCP address but a secondary IP the agent adds like any other.
    ipv4s_lack_primary_ip: bool = False

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
class Excluded:
    """An ENI metadata lists that the configuration excludes: left alone, neither configured
    nor stripped.  Only what the planner needs to protect it is kept, read leniently (it is
    not validated: eni-guest does not act on it): the MAC, the IPs and prefixes as metadata
    lists them (unparseable ones left out) and its table slot where that can be known."""

    mac: str
    eni_id: str  # as metadata lists it; "" when it lists none
    reason: str  # e.g. "exclude_enis 'eni-0abc'"
    ips: tuple[IPAddress, ...] = ()
    prefixes: tuple[IPNetwork, ...] = ()
    slot: Optional[int] = None


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
    # ENIs the configuration excludes (exclude_enis), and the networks of exclude_ips: the
    # planner configures none of them and removes nothing of theirs.
    excluded: tuple[Excluded, ...] = ()
    excluded_ips: tuple[IPNetwork, ...] = ()

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
    origin = raw.origins.get((name, value)) if isinstance(value, str) else None
    if origin is not None:  # the value came from the config file: name its key
        return MetadataInvalid(f"{origin} = {value!r}: {why}")
    key = raw.source + raw.keys.get(name, name)
    return MetadataInvalid(f"metadata {key} = {value!r}: {why}")


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
        where = _join(raw, nets_name, nets)
        for addr in ips:
            if not any(addr in n for n in nets):
                raise _bad(raw, ips_name, str(addr), f"outside the ENI's subnets {where}")
        gw_text = getattr(raw, gw_name)
        if gw_text:
            gateway = _addr(raw, gw_name, gw_text, version)
            if not any(gateway in n for n in nets) and not gateway.is_link_local:
                raise _bad(raw, gw_name, gw_text, f"outside the ENI's subnets {where}")
        else:
            # The VPC router is the subnet's first host address on AWS (.1 in a /24).
            gateway = nets[0].network_address + 1
    for pfx in prefixes:
        if nets and not any(pfx.subnet_of(n) for n in nets):
            raise _bad(
                raw, pfx_name, str(pfx), f"outside the ENI's subnets {_join(raw, nets_name, nets)}"
            )
    return tuple(ips), nets, gateway, prefixes


def _join(raw: RawEni, nets_name: str, nets: tuple) -> str:
    """The subnets for an error message, saying so when the config file overrode them."""
    text = ", ".join(str(n) for n in nets) or "(none)"
    origin = next((o for (name, _), o in raw.origins.items() if name == nets_name), None)
    return f"{text} (from {origin})" if origin else text


def _build_eni(raw: RawEni, mac: str, primary: bool) -> Eni:
    if raw.unsettled:
        raise _Unsettled(raw.unsettled)
    if raw.eni_id is None or not raw.eni_id.strip().strip('"'):
        raise _Unsettled("no interface id yet")
    eni_id = raw.eni_id.strip().strip('"')
    if not ENI_ID.match(eni_id):
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
    if not ipv4s and not ipv6s and not raw.left_alone:
        # (an ENI whose every IP is excluded is settled: there is just nothing to configure)
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
        excluded_ips=tuple(_lenient(raw.left_alone)),
        ipv4s_lack_primary_ip=raw.ipv4s_lack_primary_ip,
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


def _lenient(texts: Iterable[str]) -> list:
    """Addresses ("10.0.2.31") and networks ("10.0.2.64/28") of unvalidated texts; the
    unparseable ones are left out (used only to protect what is left alone, never to act)."""
    out = []
    for text in texts:
        text = text.strip().strip('"')
        try:
            out.append(ipaddress.ip_network(text) if "/" in text else ipaddress.ip_address(text))
        except ValueError:
            continue
    return out


def _excluded(r: RawEni, mac: str, primary: bool, slot: Optional[int]) -> Excluded:
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
        reason=r.excluded or "",
        ips=tuple(_lenient([*r.ipv4s, *r.ipv6s])),
        prefixes=tuple(
            p
            for p in _lenient([*r.ipv4_prefixes, *r.ipv6_prefixes])
            if isinstance(p, (IPv4Network, IPv6Network))
        ),
        slot=slot,
    )


def build_instance(raw: RawInstance) -> Instance:
    """Validate everything, or raise MetadataInvalid naming the first bad key and value.

    ENIs marked excluded (see `apply_overlay`) are not validated beyond their MAC: they are
    kept apart in `Instance.excluded` with what the planner needs to leave them alone.
    """
    primary_mac = normalize_mac(raw.primary_mac)
    if primary_mac is None:
        raise MetadataInvalid(f"metadata {raw.primary_mac_key} = {raw.primary_mac!r}: not a MAC")
    enis: list[Eni] = []
    unsettled: list[Unsettled] = []
    excluded_raws: list[tuple[str, RawEni]] = []
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
            # excluded ENIs too: excluding one must never move another ENI to a new table
            hashed.append(mac)
        if r.excluded is not None:
            excluded_raws.append((mac, r))
            continue
        try:
            enis.append(_build_eni(r, mac, mac == primary_mac))
        except _Unsettled as e:
            unsettled.append(Unsettled(mac, str(e)))
    table_slots: dict[str, int] = {}
    if hashed:
        taken = [e.slot for e in enis if e.mac not in hashed]
        table_slots = assign_table_slots(hashed, primary_mac, taken)
        enis = [
            replace(e, table_slot=table_slots[e.mac]) if e.mac in table_slots else e for e in enis
        ]
    excluded = [
        _excluded(r, mac, mac == primary_mac, table_slots.get(mac)) for mac, r in excluded_raws
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
    return Instance(
        provider=raw.provider,
        instance_id=raw.instance_id,
        primary_mac=primary_mac,
        enis=tuple(sorted(enis, key=lambda e: e.slot)),
        unsettled=tuple(unsettled),
        excluded=tuple(excluded),
        excluded_ips=tuple(ipaddress.ip_network(n) for n in raw.excluded_ips),
    )


# ---------------------------------------------------------------- local configuration


def apply_overlay(raw: RawInstance, config: Config) -> RawInstance:
    """Merge the configuration's overlay into what the provider read, before validation.

    Returns a copy; `raw` is not changed.  In this order:

    * `exclude_enis`: a listed ENI whose MAC or id is named is marked excluded (`build_instance`
      then keeps it apart, unvalidated: eni-guest does not act on it);
    * `[[eni]]` tables: the matched ENI's subnet and gateway are replaced, and its added IPs
      appended after the listed ones (so the first listed IP stays the primary one).  Every
      value goes through `build_instance` like metadata, and an invalid one is reported
      under its config key (`RawEni.origins`).  A table naming no listed ENI is a note, not an
      error: the ENI may just be detached.  Nothing is added to an ENI metadata lists with
      no IP yet: it is still settling (README "Safety rules") and must stay unsettled;
    * `exclude_ips`: addresses inside an excluded network, and delegated prefixes overlapping
      one, are taken off their ENI (noted in `left_alone`, shown by `show`); the networks
      are passed on so the planner leaves existing addresses and rules in them alone too.
    """
    if not (config.exclude_enis or config.exclude_ips or config.eni):
        return raw
    out = copy.deepcopy(raw)
    ids = [(r, normalize_mac(r.mac), (r.eni_id or "").strip().strip('"') or None) for r in out.enis]
    for r, mac, eni_id in ids:
        entry = config.excluded_eni(mac, eni_id)
        if entry is not None and r.excluded is None:
            r.excluded = f"exclude_enis {entry!r}"
    overlaid: dict[int, str] = {}  # id(RawEni) -> the [[eni]] applied to it
    for overlay in config.eni:
        hits = [(r, mac) for r, mac, eni_id in ids if overlay.matches(mac, eni_id)]
        if not hits:
            log.debug(
                "%s.match = %r: metadata lists no such ENI (detached?): nothing to overlay",
                overlay.where,
                overlay.match,
            )
        for r, mac in hits:
            if id(r) in overlaid:
                raise MetadataInvalid(
                    f"{overlay.where}.match = {overlay.match!r}: names ENI {mac} "
                    f"({r.eni_id}), as {overlaid[id(r)]}.match does"
                )
            overlaid[id(r)] = overlay.where
            if r.excluded is not None:
                log.debug(
                    "%s: ENI %s is excluded (%s): not overlaid", overlay.where, mac, r.excluded
                )
                continue
            _overlay_eni(r, overlay)
    out.excluded_ips = list(config.exclude_ips)
    nets = [ipaddress.ip_network(n) for n in config.exclude_ips]
    if nets:
        for r in out.enis:
            if r.excluded is None:
                _leave_alone(r, nets)
    return out


def _overlay_eni(r: RawEni, overlay: EniOverlay) -> None:
    """One [[eni]] table onto one listed ENI (see `apply_overlay`)."""
    for v in ("4", "6"):
        subnet = getattr(overlay, f"ipv{v}_subnet")
        gateway = getattr(overlay, f"ipv{v}_gateway")
        if subnet is not None:
            if gateway is None and not getattr(r, f"ipv{v}_gateway"):
                # A wider or narrower prefix does not move the router: keep the gateway the
                # listed subnet implies (the first host, as `_family` would have derived).
                listed = _lenient(getattr(r, f"ipv{v}_subnets")[:1])
                if listed and isinstance(listed[0], (IPv4Network, IPv6Network)):
                    implied = str(listed[0].network_address + 1)
                    setattr(r, f"ipv{v}_gateway", implied)
                    r.origins[(f"ipv{v}_gateway", implied)] = (
                        f"{overlay.where}.ipv{v}_gateway (unset: the router of the listed "
                        f"subnet {listed[0]})"
                    )
            setattr(r, f"ipv{v}_subnets", [subnet])
            r.origins[(f"ipv{v}_subnets", subnet)] = f"{overlay.where}.ipv{v}_subnet"
        if gateway is not None:
            setattr(r, f"ipv{v}_gateway", gateway)
            r.origins[(f"ipv{v}_gateway", gateway)] = f"{overlay.where}.ipv{v}_gateway"
        added = getattr(overlay, f"add_ipv{v}s")
        if not added:
            continue
        if not r.ipv4s and not r.ipv6s:
            log.debug(
                "%s: ENI %s lists no IP yet (settling): add_ipv%ss waits for it",
                overlay.where,
                r.mac,
                v,
            )
            continue
        ips: list[str] = getattr(r, f"ipv{v}s")
        if v == "4" and not ips:
            r.ipv4s_lack_primary_ip = True  # added IPs are never the DHCP client's
        listed = set(_lenient(ips))
        for text in added:
            if ipaddress.ip_address(text) not in listed:
                ips.append(text)
                r.origins[(f"ipv{v}s", text)] = f"{overlay.where}.add_ipv{v}s"


def _leave_alone(r: RawEni, nets: list) -> None:
    """Take the IPs inside `nets`, and the prefixes overlapping them, off the ENI."""

    def excluded(item: object) -> bool:
        if isinstance(item, (IPv4Network, IPv6Network)):
            return any(item.version == n.version and item.overlaps(n) for n in nets)
        return any(item in n for n in nets)

    for name in ("ipv4s", "ipv6s", "ipv4_prefixes", "ipv6_prefixes"):
        keep = []
        for i, text in enumerate(getattr(r, name)):
            parsed = _lenient([text])
            if parsed and excluded(parsed[0]):
                r.left_alone.append(str(parsed[0]))
                if name == "ipv4s" and i == 0:
                    r.ipv4s_lack_primary_ip = True
            else:
                keep.append(text)  # unparseable ones stay, to be refused by validation
        setattr(r, name, keep)

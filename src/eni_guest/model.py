"""The instance's ENIs: as a provider read them (`RawInstance`), and validated (`Instance`).

Providers hand over strings exactly as the metadata service returned them, and nothing else:
what eni-guest decides about them (managed, excluded, unsettled) is the scope's (scope.py),
what the configuration adds is merged by overlay.py, and whether the result is safe to act on
is decided by `build_instance` (validate.py): a bad MAC, an address outside its subnet or an
IP claimed by two ENIs stops the run with one line naming the key and the value, before the
kernel is touched.  The validated model is immutable.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from .config import MAX_DEVICE_NUMBER, SLOTS, Config, normalize_mac
from .errors import MetadataInvalid
from .record import field, record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Iterable, Optional, Union

    from .scope import Scope

__all__ = [
    "Eni",
    "Excluded",
    "Instance",
    "RawEni",
    "RawInstance",
    "Unsettled",
    "assign_table_slots",
    "build_instance",
    "home_slot",
    "normalize_mac",
]

if TYPE_CHECKING:  # only type checkers need them: annotations are never evaluated
    IPAddress = Union[IPv4Address, IPv6Address]
    IPNetwork = Union[IPv4Network, IPv6Network]


# ---------------------------------------------------------------- raw data from providers


@record
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
    # The cloud publishes no subnet or gateway for this ENI: the VPC's DHCP service on its NIC
    # tells them (JD Cloud), so it can be read in full only once its NIC is in the VM.
    subnet_from_dhcp: bool = False
    mtu: Optional[str] = None  # the link MTU the cloud publishes (OpenStack), as text


@record
class RawInstance:
    provider: str
    primary_mac: str
    primary_mac_key: str
    enis: list[RawEni]
    instance_id: str = ""


# ---------------------------------------------------------------- validated model


@record(frozen=True)
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
    # The link MTU for this ENI from its [[eni]] table or metadata (None: the global `mtu`,
    # or the driver's).  Not applied to the primary ENI, whose MTU is its DHCP client's.
    mtu: Optional[int] = None

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


@record(frozen=True)
class Unsettled:
    """An ENI the metadata lists but cannot be configured yet; nothing of it may be removed."""

    mac: str
    reason: str


@record(frozen=True)
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


@record(frozen=True)
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
    # Secondary ENIs whose metadata was refused (`reason`: the one-line error naming the key):
    # left exactly as they are, like excluded ones, while the others are configured.
    invalid: tuple[Excluded, ...] = ()
    # The scope the model was built with (scope.py), read by the planner and the settle
    # engine; None for a model built by hand, whose scope is then decided from it.
    scope: Optional[Scope] = field(default=None, compare=False, repr=False)

    @property
    def complete(self) -> bool:
        """True when every listed ENI was read in full: only then may anything be removed."""
        return not self.unsettled

    def by_mac(self, mac: str) -> Optional[Eni]:
        for eni in self.enis:
            if eni.mac == mac:
                return eni
        return None


def home_slot(mac: str) -> int:
    """The table slot an ENI without a device number asks for: 1 + sha256(MAC) mod 2047."""
    import hashlib  # only for clouds without device numbers (~10 ms to import OpenSSL's)

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


def build_instance(
    raw: RawInstance, config: Optional[Config] = None, scope: Optional[Scope] = None
) -> Instance:
    """Validate what was read, with the configuration's overlay, under the run's scope.

    Raises MetadataInvalid naming the first bad key (metadata's or the config file's) and
    value.  Without a scope it is decided from `raw` and `config` alone (no kernel links: no
    ENI is then excluded by its interface's name).  See validate.py.
    """
    from .validate import build

    return build(raw, config or Config(), scope)

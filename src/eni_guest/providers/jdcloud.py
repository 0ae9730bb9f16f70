"""JD Cloud instance metadata: HTTP -> RawInstance.  Formats: docs/metadata.md.

JD Cloud publishes, per ENI (`network/<n>/`, n from 1, the primary being 1), only its MAC,
its primary private IP, its id and its Elastic IP: directory listings are JSON arrays and
values JSON strings (`"10.0.128.6"`), both accepted bare too.  No netmask, no gateway, no
secondary IP.  So each ENI's subnet and gateway come from, in this order:

1. the static ENI file (config.static_file, see providers/static.py), matched by MAC or ENI
   id, which is also the only source of secondary IPs;
2. for the primary ENI, the kernel: its DHCP client's address and default route
   (`kernel_lease`, injected; dhcp_known.py);
3. a DHCP probe on that interface (`dhcp_probe`, injected: NIC -> (subnet CIDR, gateway);
   get_provider passes eni_guest.dhcp's, whose answer is kept for the boot: dhcp_known.py),
   asked only for ENIs that still lack one of them.

So the read is in two steps.  `read()` is HTTP only, and marks every ENI `subnet_from_dhcp`.
The run's scope (scope.py) then decides, from the kernel's links and the configuration,
which ENIs are managed: an excluded one (exclude_enis, or its NIC's name) is never probed,
one whose NIC is not in the VM yet is unsettled, and one whose [[eni]] table gives both
ipv4_subnet and ipv4_gateway needs no probe.  `complete()` probes the rest on their NIC.
Without a probe and without the static file, the read fails with a message saying what to
add: a guessed prefix or gateway would end up as routes in the kernel.

`network/<n>` is JD's index of the ENI on the instance, so the device number is n - 1 and
the table slot follows it as on AWS.  JD documents it as a "relative index"; should JD
renumber the other ENIs when one detaches, their tables would move on the next run (the
MAC-derived slots of model.assign_table_slots would then be the safer choice).
"""

from __future__ import annotations

import copy
from pathlib import Path

from ..config import Config
from ..errors import MetadataInvalid, MetadataUnavailable
from ..model import RawEni, RawInstance, normalize_mac
from ..record import replace
from ..scope import MANAGED
from ..state import Link
from .base import MetadataProvider
from .common import invalid, listing, unquote
from .http import NotFound
from .static import StaticEni, StaticFile, load_static

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Callable, Optional

    from ..scope import Scope

META = "/metadata/latest/"

if TYPE_CHECKING:  # only type checkers need them: annotations are never evaluated
    # The DHCP probe: an ENI's NIC -> (its subnet in CIDR form, its gateway), as the VPC's DHCP
    # service on that interface answers.  It must leave no client running and no lease behind,
    # wait no longer than the read's metadata deadline, and raise MetadataUnavailable when no
    # answer comes in time.
    DhcpProbe = Callable[[Link], "tuple[str, str]"]
    # The primary ENI's subnet and gateway as its DHCP client configured them in the kernel: its
    # NIC and primary IP -> (subnet CIDR, gateway), or None when the kernel does not show both.
    KernelLease = Callable[[Link, str], "Optional[tuple[str, str]]"]


class JdcloudProvider(MetadataProvider):
    name = "jdcloud"
    prefix = META

    def __init__(self, config: Config, dhcp_probe: Optional[DhcpProbe] = None) -> None:
        super().__init__(config)
        self.dhcp_probe = dhcp_probe
        self.kernel_lease: Optional[KernelLease] = None
        self._static: Optional[StaticFile] = None

    def _overlay(self) -> Optional[StaticFile]:
        """The static ENI file if there is one: it is optional on JD Cloud, but never ignored."""
        path = Path(self.config.static_file)
        return load_static(path, need_primary=False) if path.exists() else None

    def read(self) -> RawInstance:
        """Read every ENI; any failure other than a 404 on an optional key aborts the read."""
        overlay = self._overlay()
        entries = listing(self.service.get("network/"), META + "network/")
        for entry in entries:
            if not (entry.isascii() and entry.isdigit()) or int(entry) < 1:
                raise invalid(META + "network/", entry, "not an ENI number (1, 2, ...)")
        numbers = sorted({int(e) for e in entries})
        if 1 not in numbers:
            raise MetadataInvalid(
                f"metadata {META}network/ = {entries!r}: no 1/ (the primary ENI) listed"
            )
        enis = [self._read_eni(n, overlay) for n in numbers]
        self._static = overlay
        return RawInstance(
            provider=self.name,
            primary_mac=enis[0].mac,
            primary_mac_key=f"{META}network/1/mac",
            enis=enis,
        )

    def _read_eni(self, number: int, overlay: Optional[StaticFile]) -> RawEni:
        prefix = f"network/{number}/"
        source = META + prefix
        try:
            keys = set(listing(self.service.get(prefix), source))
            mac_text = self.service.get(prefix + "mac") if "mac" in keys else None
        except NotFound:
            mac_text = None
        if mac_text is None or not unquote(mac_text):
            # Without its MAC the ENI cannot be told apart: the read is incomplete.
            raise MetadataUnavailable(
                f"metadata service: {source} is listed but publishes no mac (yet)"
            )
        raw = RawEni(
            source=source,
            mac=unquote(mac_text),
            device_number=str(number - 1),
            subnet_from_dhcp=True,
            keys={
                "eni_id": "network-interface-id",
                "device_number": "",  # the directory number itself
                "ipv4s": "local-ipv4",
                "elastic_ips": "floating-ipv4",
            },
        )

        def value(key: str) -> Optional[str]:
            text = self.service.optional(prefix + key) if key in keys else None
            return unquote(text) if text is not None and unquote(text) else None

        raw.eni_id = value("network-interface-id")
        local = value("local-ipv4")
        raw.ipv4s = [local] if local else []
        floating = value("floating-ipv4")
        if floating and local:
            raw.elastic_ips[floating] = local

        mac = normalize_mac(raw.mac)
        if mac is None:
            raise invalid(source + "mac", mac_text, "not a MAC")
        match = overlay.match(mac, raw.eni_id) if overlay is not None and local else None
        if match is not None:
            self._apply(raw, match)
        return raw

    def complete(self, raw: RawInstance, scope: Scope) -> RawInstance:
        """The subnet and gateway of every managed ENI that still lacks one, by DHCP on its NIC
        (the scope has decided that it is managed and that its NIC is there)."""
        enis = []
        for r in raw.enis:
            mac = normalize_mac(r.mac)
            s = scope.eni(mac) if mac else None
            given = self.config.overlay_for(mac, unquote(r.eni_id or "") or None)
            if given and given.ipv4_subnet and given.ipv4_gateway:
                s = None  # the configuration gives both: no DHCP needed
            if s is not None and s.status == MANAGED and not (r.ipv4_subnets and r.ipv4_gateway):
                primary = mac == normalize_mac(raw.primary_mac)
                r = self._probe(copy.deepcopy(r), s.link, self._static, primary)
            enis.append(r)
        return replace(raw, enis=enis)

    @staticmethod
    def _apply(raw: RawEni, eni: StaticEni) -> None:
        """Fill in what the static file says about this ENI; its keys then name the file."""
        where = f"(from {eni.where.strip()}) "
        raw.ipv4s = raw.ipv4s + [ip for ip in eni.ipv4s if ip not in raw.ipv4s]
        if eni.subnet:
            raw.ipv4_subnets = [eni.subnet]
            raw.keys["ipv4_subnets"] = f"{where}subnet"
        if eni.gateway:
            raw.ipv4_gateway = eni.gateway
            raw.keys["ipv4_gateway"] = f"{where}gateway"
        if eni.ipv4s:
            raw.keys["ipv4s"] = f"local-ipv4 {where}ipv4s"
        if eni.ipv6s:
            raw.ipv6s = list(eni.ipv6s)
            raw.ipv6_subnets = [eni.ipv6_subnet] if eni.ipv6_subnet else []
            raw.ipv6_gateway = eni.ipv6_gateway
            raw.keys.update(
                ipv6s=f"{where}ipv6s",
                ipv6_subnets=f"{where}ipv6_subnet",
                ipv6_gateway=f"{where}ipv6_gateway",
            )
            if not eni.ipv6_gateway:
                raise MetadataInvalid(f"{eni.where}ipv6_gateway: missing (the ENI has ipv6s)")

    def _probe(
        self, raw: RawEni, link: Optional[Link], overlay: Optional[StaticFile], primary: bool
    ) -> RawEni:
        mac = normalize_mac(raw.mac)
        if primary and link is not None and raw.ipv4s and self.kernel_lease is not None:
            lease = self.kernel_lease(link, raw.ipv4s[0])  # its DHCP client's, in the kernel
            if lease is not None:
                return self._fill(
                    raw, lease, "(from the kernel) address", "(from the kernel) route"
                )
        if self.dhcp_probe is None or link is None:
            where = overlay.path if overlay is not None else self.config.static_file
            raise MetadataUnavailable(
                f"jdcloud: {raw.source} (mac {mac}) publishes no subnet prefix or gateway and "
                f"no DHCP probe is available: describe it in {where} "
                f'([[eni]] mac = "{mac}", subnet = "...", gateway = "...")'
            )
        return self._fill(raw, self.dhcp_probe(link), "(from DHCP) subnet", "(from DHCP) router")

    @staticmethod
    def _fill(raw: RawEni, answer: tuple[str, str], subnet_key: str, gateway_key: str) -> RawEni:
        """What the ENI still lacks, from a DHCP answer; its keys then say where it came from."""
        subnet, gateway = answer
        if not raw.ipv4_subnets:
            raw.ipv4_subnets = [subnet]
            raw.keys["ipv4_subnets"] = subnet_key
        if not raw.ipv4_gateway:
            raw.ipv4_gateway = gateway
            raw.keys["ipv4_gateway"] = gateway_key
        return raw

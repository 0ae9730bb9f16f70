"""AWS EC2 instance metadata (IMDSv2): HTTP -> RawInstance.  Formats: docs/metadata.md.

Requests per run are kept to what is needed (the service is rate limited per ENI): a token,
the primary MAC, the MAC listing, then per ENI its key listing and only the keys it lists.
"""

from __future__ import annotations

from ..model import RawEni, RawInstance
from . import memo
from .base import MetadataProvider
from .http import NotFound

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Optional

# Endpoints (IPv4, then IPv6) and IMDSv2 token rules: the "aws" entry of providers/registry.py.
META = "/latest/meta-data/"
MACS = "network/interfaces/macs/"

# model field -> metadata key(s), in the order they are tried
SCALARS = {
    "device_number": ("device-number",),
    "network_card": ("network-card", "network-card-index"),  # live spelling, documented one
    "eni_id": ("interface-id",),
}
LISTS = {
    "ipv4s": "local-ipv4s",
    "ipv4_subnets": "subnet-ipv4-cidr-block",
    "ipv6s": "ipv6s",
    "ipv6_subnets": "subnet-ipv6-cidr-blocks",
    "ipv4_prefixes": "ipv4-prefix",
    "ipv6_prefixes": "ipv6-prefix",
}
ASSOCIATIONS = "ipv4-associations"
# Keys that cannot change while the ENI stays attached: the watch daemon reads them once.
FIXED = frozenset({"device-number", "network-card", "network-card-index", "interface-id"})
# (A subnet's IPv6 CIDR can be added later, and its key then appears in the listing; once
# there, it cannot go while the ENI holds IPv6 addresses from it.)
FIXED_LISTS = frozenset({"subnet-ipv4-cidr-block", "subnet-ipv6-cidr-blocks"})


def lines(text: str) -> list[str]:
    return [s.strip() for s in text.splitlines() if s.strip()]


def listing(text: str) -> list[str]:
    """Directory listing: one entry a line, sub-directories with a trailing '/'."""
    return [s.rstrip("/") for s in lines(text)]


class AwsProvider(MetadataProvider):
    name = "aws"
    prefix = META

    def read(self) -> RawInstance:
        """Read every ENI; any failure other than a 404 on an optional key aborts the read."""
        primary = self.fixed("mac").strip()
        macs = listing(self.get(MACS))
        memo.only(set(macs))
        enis = [self._read_eni(mac) for mac in macs]
        for raw in enis:  # keep fixed keys only of ENIs that look settled (memo.drop)
            if not raw.ipv4s or (raw.device_number in (None, "0") and raw.mac != primary):
                memo.drop(raw.mac)
        return RawInstance(
            provider=self.name, primary_mac=primary, primary_mac_key=META + "mac", enis=enis
        )

    def _read_eni(self, mac: str) -> RawEni:
        prefix = f"{MACS}{mac}/"
        raw = RawEni(source=META + prefix, mac=mac)
        try:
            keys = set(listing(self.get(prefix)))
        except NotFound:
            return raw  # listed a moment ago, gone now: detaching; nothing to configure
        for name, candidates in SCALARS.items():
            for key in candidates:
                if key in keys:
                    value = self._key(prefix + key, mac, key in FIXED)
                    if value is not None:
                        setattr(raw, name, value.strip())
                        raw.keys[name] = key
                    break
        for name, key in LISTS.items():
            raw.keys[name] = key
            if key in keys:
                value = self._key(prefix + key, mac, key in FIXED_LISTS)
                if value is not None:
                    setattr(raw, name, lines(value))
        if ASSOCIATIONS in keys:
            raw.keys["elastic_ips"] = ASSOCIATIONS + "/"
            for public in listing(self.optional(prefix + ASSOCIATIONS + "/") or ""):
                private = self.optional(f"{prefix}{ASSOCIATIONS}/{public}")
                if private is not None:
                    raw.elastic_ips[public] = private.strip()
        return raw

    def _key(self, path: str, mac: str, fixed: bool) -> Optional[str]:
        return self.fixed_optional(path, mac) if fixed else self.optional(path)

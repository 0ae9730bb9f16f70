"""Alibaba Cloud ECS instance metadata: HTTP -> RawInstance.  Formats: docs/metadata.md.

Security-hardening mode works like IMDSv2: `PUT /latest/api/token` returns a token that every
GET carries.  An instance may enforce it (plain GETs are refused), so a token is always asked
for first; only a service that does not know the token call at all (404 or 405, older regions)
is read with plain GETs.  ENIs publish their own gateway (usually the .253 address of the
vSwitch, never assumed to be .1) and no device number, so table slots come from the MAC
(model.assign_table_slots).
"""

from __future__ import annotations

from ..model import RawEni
from .base import MacTreeProvider
from .common import invalid, missing, parse_list, prefix_length, subnet_of, unquote

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Optional


class AlibabaProvider(MacTreeProvider):
    name = "alibaba"

    def read_keys(self, raw: RawEni, directory: str, keys: set[str]) -> None:
        source = raw.source

        def value(key: str) -> Optional[str]:
            text = self.optional(directory + key) if key in keys else None
            return None if text is None or not unquote(text) else unquote(text)

        def values(key: str) -> list[str]:
            text = self.optional(directory + key) if key in keys else None
            return parse_list(text, source + key) if text is not None else []

        raw.eni_id = value("network-interface-id")
        raw.keys.update(
            eni_id="network-interface-id",
            ipv4s="private-ipv4s",
            ipv4_subnets="vswitch-cidr-block",
            ipv4_gateway="gateway",
            ipv6s="ipv6s",
            ipv6_subnets="vswitch-ipv6-cidr-block",
            ipv6_gateway="ipv6-gateway",
            ipv4_prefixes="ipv4-prefixes",
            ipv6_prefixes="ipv6-prefixes",
        )

        # IPv4: the ENI's primary private IP first, then the rest of private-ipv4s.
        primary_ip = value("primary-ip-address")
        ipv4s = values("private-ipv4s")
        if primary_ip:
            ipv4s = [primary_ip] + [ip for ip in ipv4s if ip != primary_ip]
        raw.ipv4s = ipv4s
        raw.ipv4_subnets = _ipv4_subnets(raw, value("vswitch-cidr-block"), value("netmask"))
        raw.ipv4_gateway = value("gateway")
        if ipv4s and not raw.ipv4_gateway:
            raise missing(
                source + "gateway", "the ENI has IPv4 addresses; a gateway is never guessed"
            )

        raw.ipv6s = values("ipv6s")
        raw.ipv6_subnets = [v for v in [value("vswitch-ipv6-cidr-block")] if v]
        raw.ipv6_gateway = value("ipv6-gateway")
        if raw.ipv6s and not raw.ipv6_gateway:
            raise missing(
                source + "ipv6-gateway", "the ENI has IPv6 addresses; a gateway is never guessed"
            )
        raw.ipv4_prefixes = values("ipv4-prefixes")
        raw.ipv6_prefixes = values("ipv6-prefixes")


def _ipv4_subnets(raw: RawEni, cidr: Optional[str], netmask: Optional[str]) -> list[str]:
    """The vSwitch's CIDR (checked against the netmask when both are published), or the
    primary IP under the netmask when only that is published."""
    source = raw.source
    if cidr:
        if netmask:
            length = prefix_length(netmask, 4)
            if length is None:
                raise invalid(source + "netmask", netmask, "not an IPv4 netmask")
            if "/" in cidr and cidr.rsplit("/", 1)[1].strip() != str(length):
                raise invalid(
                    source + "netmask", netmask, f"disagrees with vswitch-cidr-block {cidr}"
                )
        return [cidr]
    if netmask and raw.ipv4s:
        raw.keys["ipv4_subnets"] = "netmask"
        return [subnet_of(raw.ipv4s[0], source + "primary-ip-address", netmask, source + "netmask")]
    return []

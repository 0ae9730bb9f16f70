"""Tencent Cloud CVM instance metadata: HTTP -> RawInstance.  Formats: docs/metadata.md.

The documented name metadata.tencentyun.com resolves to 169.254.0.23; the address is the
default so that a boot-time run never waits for DNS.  Paths are case-sensitive and MACs are
listed in upper case: URLs use the listing's spelling, comparisons the lower-cased MAC.
Each private IP is a directory (`local-ipv4s/<ip>/`) holding its gateway and subnet mask;
all IPs of an ENI share its subnet, so only the ENI's primary IP's gateway and mask are read
(the service is rate limited) and the model checks that every other IP lies in that subnet.
Tencent publishes neither device numbers nor ENI ids: the table slot comes from the MAC
(model.assign_table_slots) and the lower-cased MAC stands in for the ENI id.
"""

from __future__ import annotations

from ..model import RawEni
from .base import MacTreeProvider
from .common import listing, missing, subnet_of, unquote


class TencentProvider(MacTreeProvider):
    name = "tencent"

    def read_keys(self, raw: RawEni, directory: str, keys: set[str]) -> None:
        raw.eni_id = raw.mac.strip().lower()
        raw.keys.update(
            eni_id="(mac)",
            ipv4s="local-ipv4s/",
            ipv4_subnets="local-ipv4s/<ip>/subnet-mask",
            ipv4_gateway="local-ipv4s/<ip>/gateway",
        )
        primary_ip = None
        if "primary-local-ipv4" in keys:
            text = self.optional(directory + "primary-local-ipv4")
            primary_ip = unquote(text) if text is not None and unquote(text) else None
        ips: list[str] = []
        if "local-ipv4s" in keys:
            text = self.optional(directory + "local-ipv4s/")
            ips = listing(text, raw.source + "local-ipv4s/") if text is not None else []
        if primary_ip:
            ips = [primary_ip] + [ip for ip in ips if ip != primary_ip]
        raw.ipv4s = ips
        if not ips:
            return  # no IP listed yet (just attached): the model keeps it unsettled
        anchor = f"{directory}local-ipv4s/{ips[0]}/"
        where = self.prefix + anchor  # the full key, for errors
        mask = self.optional(anchor + "subnet-mask")
        gateway = self.optional(anchor + "gateway")
        if mask is None or not unquote(mask):
            raise missing(where + "subnet-mask", "the ENI's subnet cannot be known")
        if gateway is None or not unquote(gateway):
            raise missing(where + "gateway", "a gateway is never guessed")
        raw.ipv4_subnets = [subnet_of(ips[0], where + "local-ipv4", mask, where + "subnet-mask")]
        raw.ipv4_gateway = unquote(gateway)
        raw.keys["ipv4_subnets"] = f"local-ipv4s/{ips[0]}/subnet-mask"
        raw.keys["ipv4_gateway"] = f"local-ipv4s/{ips[0]}/gateway"

"""AWS EC2 instance metadata (IMDSv2): HTTP -> RawInstance.  Formats: shared/METADATA.md.

Requests per run are kept to what is needed (the service is rate limited per ENI): a token,
the primary MAC, the MAC listing, then per ENI its key listing and only the keys it lists.
"""

from __future__ import annotations

from typing import Optional

from ..config import Config
from ..errors import MetadataDisabled, MetadataUnavailable
from ..model import RawEni, RawInstance
from .http import HttpClient, NotFound

ENDPOINTS = ("http://169.254.169.254", "http://[fd00:ec2::254]")
TOKEN_PATH = "/latest/api/token"
TOKEN_TTL = 300  # seconds: one run needs a few; a short TTL limits what a leaked token gives
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


def lines(text: str) -> list[str]:
    return [s.strip() for s in text.splitlines() if s.strip()]


def listing(text: str) -> list[str]:
    """Directory listing: one entry a line, sub-directories with a trailing '/'."""
    return [s.rstrip("/") for s in lines(text)]


class AwsProvider:
    name = "aws"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.endpoints = (config.metadata_url.rstrip("/"),) if config.metadata_url else ENDPOINTS
        self.http = HttpClient(
            config.metadata_timeout, config.metadata_deadline, config.metadata_retries
        )
        self.base: Optional[str] = None
        self.token: Optional[str] = None

    @property
    def requests_sent(self) -> int:
        return self.http.requests_sent

    def close(self) -> None:
        self.http.close()

    # ------------------------------------------------------------ IMDSv2 session

    def _new_token(self) -> None:
        errors = []
        for base in [self.base] if self.base else self.endpoints:
            url = base + TOKEN_PATH
            try:
                r = self.http.request(
                    "PUT", url, headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL)}
                )
            except MetadataUnavailable as e:
                errors.append(str(e))
                continue  # IPv4 endpoint unreachable: try the IPv6 one
            if r.status == 403:
                raise MetadataDisabled(
                    f"metadata service disabled: {url} answered 403 to the token request"
                )
            if r.status != 200 or not r.text.strip():
                raise MetadataUnavailable(f"metadata service: {url} answered HTTP {r.status}")
            self.base, self.token = base, r.text.strip()
            return
        raise MetadataUnavailable("; ".join(errors))

    def get(self, path: str) -> str:
        """GET a path under /latest/meta-data/; NotFound on 404; one re-token on 401."""
        if self.token is None:
            self._new_token()
        for attempt in (1, 2):
            url = f"{self.base}{META}{path}"
            r = self.http.request("GET", url, headers={"X-aws-ec2-metadata-token": self.token})
            if r.status == 200:
                return r.text
            if r.status == 404:
                raise NotFound(path)
            if r.status == 401 and attempt == 1:
                self._new_token()  # expired or revoked token: get a new one, retry once
                continue
            if r.status == 403:
                raise MetadataDisabled(f"metadata service disabled: {url} answered 403")
            raise MetadataUnavailable(f"metadata service: {url} answered HTTP {r.status}")
        raise AssertionError("unreachable")

    # ------------------------------------------------------------ reading

    def read(self) -> RawInstance:
        """Read every ENI; any failure other than a 404 on an optional key aborts the read."""
        primary = self.get("mac").strip()
        enis = [self._read_eni(mac) for mac in listing(self.get(MACS))]
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
                    value = self._optional(prefix + key)
                    if value is not None:
                        setattr(raw, name, value.strip())
                        raw.keys[name] = key
                    break
        for name, key in LISTS.items():
            raw.keys[name] = key
            if key in keys:
                value = self._optional(prefix + key)
                if value is not None:
                    setattr(raw, name, lines(value))
        if ASSOCIATIONS in keys:
            raw.keys["elastic_ips"] = ASSOCIATIONS + "/"
            for public in listing(self._optional(prefix + ASSOCIATIONS + "/") or ""):
                private = self._optional(f"{prefix}{ASSOCIATIONS}/{public}")
                if private is not None:
                    raw.elastic_ips[public] = private.strip()
        return raw

    def _optional(self, path: str) -> Optional[str]:
        try:
            return self.get(path)
        except NotFound:
            return None

"""What the providers of HTTP metadata services share, so that a cloud's module is its format.

MetadataProvider holds the plumbing: one MetadataService per run (one HTTP session, the
request count, the session tokens) on the cloud's default endpoints, or on `metadata_url`
when set, both taken from the cloud's entry in providers/registry.py.  A provider sets `name`
(its registry name) and `prefix` (the path its keys live under) and writes `read()`.

MacTreeProvider is the walk Alibaba's and Tencent's services share, EC2's layout: `mac` names
the primary ENI, `network/interfaces/macs/` lists one directory per ENI, and each directory
lists its keys, so only keys that exist are asked for (the service is rate limited).
"""

from __future__ import annotations

from ..config import Config
from ..model import RawEni, RawInstance
from .common import MetadataService, listing, unquote
from .http import NotFound
from .registry import cloud

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Optional

    from ..scope import Scope


class MetadataProvider:
    """The session, request count, `close` and GETs of a provider; subclasses write `read`."""

    name = ""
    prefix = ""  # the path every key lives under (AWS: /latest/meta-data/)

    def __init__(self, config: Config) -> None:
        entry = cloud(self.name)
        self.config = config
        roots = (config.metadata_url,) if config.metadata_url else entry.endpoints
        self.service = MetadataService(config, roots, self.prefix, entry.tokens)

    @property
    def requests_sent(self) -> int:
        return self.service.requests_sent

    def close(self) -> None:
        self.service.close()

    def get(self, path: str) -> str:
        """GET prefix + path (with a session token where the cloud has them); NotFound on 404."""
        return self.service.get(path)

    def optional(self, path: str) -> Optional[str]:
        """GET prefix + path; None on 404."""
        return self.service.optional(path)

    def fixed(self, path: str, mac: str = "") -> str:
        """GET prefix + path of a key that cannot change (for `mac`'s ENI while attached):
        asked once a boot (memo.py); NotFound on 404."""
        return self.service.fixed(path, mac)

    def fixed_optional(self, path: str, mac: str) -> Optional[str]:
        try:
            return self.fixed(path, mac)
        except NotFound:
            return None

    def read(self) -> RawInstance:
        raise NotImplementedError

    def complete(self, raw: RawInstance, scope: Scope) -> RawInstance:
        """The second step of a read that needs the run's scope (scope.py): JD Cloud asks DHCP
        on the managed ENIs' NICs for what its metadata lacks.  Most clouds have none."""
        return raw


class MacTreeProvider(MetadataProvider):
    """`mac`, then `network/interfaces/macs/<mac>/` per ENI; values may be JSON-quoted and
    listings JSON arrays.  Subclasses write `read_keys`: one ENI from its directory."""

    prefix = "/latest/meta-data/"
    macs = "network/interfaces/macs/"

    def read(self) -> RawInstance:
        """Read every ENI; any failure other than a 404 on an optional key aborts the read."""
        primary = unquote(self.get("mac"))
        macs = listing(self.get(self.macs), self.prefix + self.macs)
        return RawInstance(
            provider=self.name,
            primary_mac=primary,
            primary_mac_key=self.prefix + "mac",
            enis=[self._read_eni(mac) for mac in macs],
        )

    def _read_eni(self, mac: str) -> RawEni:
        # The MAC as the listing spells it: Tencent's paths are case-sensitive.
        directory = f"{self.macs}{mac}/"
        raw = RawEni(source=self.prefix + directory, mac=mac, has_device_numbers=False)
        try:
            keys = set(listing(self.get(directory), raw.source))
        except NotFound:
            return raw  # listed a moment ago, gone now: detaching; nothing to configure
        self.read_keys(raw, directory, keys)
        return raw

    def read_keys(self, raw: RawEni, directory: str, keys: set[str]) -> None:
        """Fill in `raw` from the ENI's `directory` (below `prefix`), which lists `keys`."""
        raise NotImplementedError

"""Metadata providers: one module per cloud, each turning its service's answers into RawInstance."""

from __future__ import annotations

import logging
from typing import Optional, Protocol

from ..config import Config
from ..errors import ConfigError
from ..model import RawInstance

log = logging.getLogger("eni_guest")


class Provider(Protocol):
    name: str

    def read(self) -> RawInstance: ...

    def close(self) -> None: ...

    @property
    def requests_sent(self) -> int: ...


PROVIDERS = ("aws", "alibaba", "tencent", "jdcloud", "openstack", "static", "auto")


def get_provider(config: Config) -> Provider:
    """The provider config names; "auto" detects the cloud (providers/detect.py) and keeps
    why on the provider (read it with `chosen_because`), so `eni-guest show` can say it."""
    name, reason = config.provider, None
    if name == "auto":
        from .detect import detect

        name, reason = detect(config)
        log.debug("provider %s chosen: %s", name, reason)  # `show` prints it, -v logs it
    provider = _make(name, config)
    provider.detected_by = reason  # type: ignore[attr-defined]
    return provider


def chosen_because(provider: Provider) -> Optional[str]:
    """Why "auto" chose this provider (e.g. "DMI sys_vendor 'Amazon EC2'"); None if forced."""
    return getattr(provider, "detected_by", None)


def _make(name: str, config: Config) -> Provider:
    # Lazy imports: a run loads only the cloud it talks to.
    if name == "aws":
        from .aws import AwsProvider

        return AwsProvider(config)
    if name == "alibaba":
        from .alibaba import AlibabaProvider

        return AlibabaProvider(config)
    if name == "tencent":
        from .tencent import TencentProvider

        return TencentProvider(config)
    if name == "jdcloud":
        from ..dhcp import make_probe
        from .jdcloud import JdcloudProvider

        # JD publishes no subnet or gateway: the VPC's DHCP service on each NIC tells them.
        return JdcloudProvider(config, dhcp_probe=make_probe(config))
    if name == "openstack":
        from .openstack import OpenstackProvider

        return OpenstackProvider(config)
    if name == "static":
        from .static import StaticProvider

        return StaticProvider(config)
    raise ConfigError(f"provider {name!r} is not known (known: {', '.join(PROVIDERS)})")

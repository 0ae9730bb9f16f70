"""Metadata providers: one module per cloud, each turning its service's answers into RawInstance."""

from __future__ import annotations

from typing import Protocol

from ..config import Config
from ..errors import ConfigError
from ..model import RawInstance


class Provider(Protocol):
    name: str

    def read(self) -> RawInstance: ...

    def close(self) -> None: ...

    @property
    def requests_sent(self) -> int: ...


PROVIDERS = ("aws",)


def get_provider(config: Config) -> Provider:
    if config.provider == "aws":
        from .aws import AwsProvider

        return AwsProvider(config)
    raise ConfigError(f"provider {config.provider!r} is not known (known: {', '.join(PROVIDERS)})")

"""Metadata providers: one module per cloud, each turning its service's answers into RawInstance.

Which clouds exist, and how each is built, detected and named, is providers/registry.py.
"""

from __future__ import annotations

from ..log import log
from .registry import AUTO, cloud

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Optional, Protocol

    from ..config import Config
    from ..model import RawInstance
    from ..scope import Scope

    # What every provider module's class offers (type checkers only: nothing checks it at
    # run time, and typing is not imported then).
    class Provider(Protocol):
        name: str

        def read(self) -> RawInstance: ...

        def complete(self, raw: RawInstance, scope: Scope) -> RawInstance: ...

        def close(self) -> None: ...

        @property
        def requests_sent(self) -> int: ...


def get_provider(config: Config) -> Provider:
    """The provider config names (or an alias of it); "auto" chooses the cloud (DMI, the answer
    kept earlier this boot, else the probes: providers/detect.py `choose`) and keeps why on the
    provider (read it with `chosen_because`), so `eni-guest show` can say it.  An unknown name
    is a ConfigError listing the known ones."""
    name, reason = config.provider, None
    if name == AUTO:
        name, reason = _choose_within_deadline(config)
        log.debug("provider %s chosen: %s", name, reason)  # `show` prints it, -v logs it
    provider = _make(name, config)
    provider.detected_by = reason  # type: ignore[attr-defined]
    return provider


def _choose_within_deadline(config: Config) -> tuple[str, str]:
    """Auto-detection, retried until ``metadata_deadline``: in a slow guest (a real VM under
    load, cloud-init's init stage) the probes' first 3 s window closed before their answers
    were read, and the whole boot apply failed (exit 3).  Each retry gets a longer window
    (up to MAX_WINDOW), and at least a second passes between tries."""
    import time

    from ..errors import MetadataUnavailable
    from .detect import MAX_WINDOW, TOTAL_TIMEOUT, choose

    deadline = time.monotonic() + config.metadata_deadline
    window = TOTAL_TIMEOUT
    while True:
        started = time.monotonic()
        try:
            return choose(config, window=window)
        except MetadataUnavailable:
            time.sleep(max(0.0, min(1.0 - (time.monotonic() - started), deadline - started)))
            left = deadline - time.monotonic()
            if left < TOTAL_TIMEOUT:
                raise
            window = min(window * 2, MAX_WINDOW, left)


def chosen_because(provider: Provider) -> Optional[str]:
    """Why "auto" chose this provider (e.g. "DMI sys_vendor 'Amazon EC2'", or "earlier this
    boot: metadata probe: ..." for an answer kept for the boot); None if forced."""
    return getattr(provider, "detected_by", None)


def _make(name: str, config: Config) -> Provider:
    """The provider of the cloud `name` (or an alias) names; ConfigError if none does."""
    return cloud(name).make(config)

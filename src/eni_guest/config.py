"""Settings: defaults, then /etc/eni-guest/eni-guest.toml, then ENI_GUEST_* variables, then options.

The same agent runs from udev, systemd, cloud-init and by hand; each of those sets options in a
different place, so every setting can come from any of the three, later ones winning.  An
unknown key or a value of the wrong type stops the run before anything is read or changed: a
typo in a table base must never lead to routes in the wrong table.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping, Optional

from .errors import ConfigError

DEFAULT_CONFIG_FILE = Path("/etc/eni-guest/eni-guest.toml")
ENV_PREFIX = "ENI_GUEST_"

# The layout reserves one table and one rule priority per ENI slot: network card x device number.
MAX_NETWORK_CARDS = 32
MAX_DEVICE_NUMBER = 64
SLOTS = MAX_NETWORK_CARDS * MAX_DEVICE_NUMBER  # 2048
MAX_U32 = 2**32 - 1
RESERVED_TABLES = range(252, 256)  # compat, default, main, local


@dataclass(frozen=True)
class Config:
    """Validated settings.  See README "Configuration" for what each one is for."""

    # "auto": DMI, then short probes of each metadata service (providers/detect.py)
    provider: str = "auto"
    metadata_url: str = ""  # empty: the provider's own endpoints (AWS: IPv4, then IPv6)
    metadata_timeout: float = 2.0  # seconds for one HTTP request
    metadata_deadline: float = 15.0  # seconds for the whole metadata read, retries included
    metadata_retries: int = 3  # further tries of one request after a timeout or 5xx
    table_base: int = 10000  # ENI slot s uses routing table table_base + s
    priority_base: int = 10000  # shared rule at priority_base, ENI slot s at priority_base + 1 + s
    protocol: int = 229  # rtnetlink protocol marking our routes, rules and addresses
    interface_group: int = 229  # interface group marking ENI links
    mtu: int = 0  # MTU for secondary ENIs; 0 leaves it to the driver
    ipv6: bool = True  # configure IPv6 addresses and routes of ENIs
    lock_file: str = "/run/eni-guest.lock"
    lock_timeout: float = 30.0  # seconds to wait for another run to finish
    static_file: str = "/etc/eni-guest/enis.toml"  # ENIs for provider "static", JD Cloud overlay
    hotplug_timeout: float = 60.0  # seconds `hotplug add` waits for metadata to list the NIC
    watch_interval: float = 60.0  # seconds between the watch daemon's full reconciles
    # write /run drop-ins keeping NetworkManager and systemd-networkd off secondary ENIs (distro.py)
    manage_distro_network: bool = True
    # where those /run drop-ins go; only "/" reloads the running managers (tests use a temp dir)
    distro_root: str = "/"

    def validate(self) -> Config:
        def need(ok: bool, key: str, value: Any, why: str) -> None:
            if not ok:
                raise ConfigError(f"config {key} = {value!r}: {why}")

        need(self.provider != "", "provider", self.provider, "must not be empty")
        need(self.metadata_timeout > 0, "metadata_timeout", self.metadata_timeout, "must be > 0")
        need(
            self.metadata_deadline >= self.metadata_timeout,
            "metadata_deadline",
            self.metadata_deadline,
            "must be >= metadata_timeout",
        )
        need(0 <= self.metadata_retries <= 10, "metadata_retries", self.metadata_retries, "0..10")
        need(
            self.metadata_url == "" or self.metadata_url.startswith(("http://", "https://")),
            "metadata_url",
            self.metadata_url,
            "must start with http:// or https://",
        )
        top = self.table_base + SLOTS - 1
        need(
            self.table_base >= 1 and top <= MAX_U32,
            "table_base",
            self.table_base,
            f"tables base..base+{SLOTS - 1} must fit in 1..{MAX_U32}",
        )
        need(
            not any(t in RESERVED_TABLES for t in (self.table_base, top))
            and not (self.table_base < RESERVED_TABLES.start and top >= RESERVED_TABLES.start),
            "table_base",
            self.table_base,
            f"tables base..base+{SLOTS - 1} must not include 252-255 (main, local, default)",
        )
        need(
            self.priority_base >= 1 and self.priority_base + SLOTS < 32766,
            "priority_base",
            self.priority_base,
            f"priorities base..base+{SLOTS} must lie between 1 and 32765 (before main)",
        )
        need(5 <= self.protocol <= 255, "protocol", self.protocol, "must be 5..255 (0-4: kernel)")
        need(
            1 <= self.interface_group <= 2**31 - 1,
            "interface_group",
            self.interface_group,
            "must be 1..2147483647 (0 is every link's default group)",
        )
        need(self.mtu == 0 or 68 <= self.mtu <= 65535, "mtu", self.mtu, "must be 0 or 68..65535")
        need(self.lock_timeout >= 0, "lock_timeout", self.lock_timeout, "must be >= 0")
        need(self.distro_root.startswith("/"), "distro_root", self.distro_root, "must be absolute")
        need(
            0 <= self.hotplug_timeout <= 3600,
            "hotplug_timeout",
            self.hotplug_timeout,
            "must be 0..3600 seconds",
        )
        need(
            0 < self.watch_interval <= 86400,
            "watch_interval",
            self.watch_interval,
            "must be > 0 and <= 86400 seconds",
        )
        return self


_FIELDS = {f.name: f for f in fields(Config)}
_TYPES = {name: type(getattr(Config(), name)) for name in _FIELDS}


def _coerce(key: str, value: Any, source: str) -> Any:
    """Turn a value from TOML or the environment into the field's type, or say what is wrong."""
    want = _TYPES[key]
    if isinstance(value, str) and want is not str:
        text = value.strip()
        try:
            if want is bool:
                if text.lower() in ("1", "true", "yes", "on"):
                    return True
                if text.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            return want(text)
        except ValueError:
            raise ConfigError(
                f"{source}: {key} = {value!r} is not a valid {want.__name__}"
            ) from None
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise ConfigError(
            f"{source}: {key} = {value!r} has type {type(value).__name__}, expected {want.__name__}"
        )
    return value


def _check_keys(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if key not in _FIELDS:
            known = ", ".join(sorted(_FIELDS))
            raise ConfigError(f"{source}: unknown setting {key!r} (known: {known})")
        out[key] = _coerce(key, value, source)
    return out


def read_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.9/3.10
        import tomli as tomllib
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: {e}") from None
    return data


def load(
    config_file: Optional[Path] = None,
    environ: Optional[Mapping[str, str]] = None,
    options: Optional[Mapping[str, Any]] = None,
) -> Config:
    """Build the effective Config; a missing default file is fine, a missing named file is not."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    if config_file is None:
        env_file = environ.get(ENV_PREFIX + "CONFIG")
        config_file = Path(env_file) if env_file else None
    if config_file is not None:
        values.update(_check_keys(read_toml(config_file), str(config_file)))
    elif DEFAULT_CONFIG_FILE.exists():
        values.update(_check_keys(read_toml(DEFAULT_CONFIG_FILE), str(DEFAULT_CONFIG_FILE)))
    env = {
        k[len(ENV_PREFIX) :].lower(): v
        for k, v in environ.items()
        if k.startswith(ENV_PREFIX)
        and k != ENV_PREFIX + "CONFIG"
        and not k.startswith(ENV_PREFIX + "SKIP_")
    }
    values.update(_check_keys(env, "environment ENI_GUEST_*"))
    given = {k: v for k, v in (options or {}).items() if v is not None}
    values.update(_check_keys(given, "option"))
    return replace(Config(), **values).validate()

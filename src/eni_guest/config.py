"""Settings: defaults, then /etc/eni-guest/eni-guest.toml, then ENI_GUEST_* variables, then options.

The same agent runs from udev, systemd, cloud-init and by hand; each of those sets options in a
different place, so every setting can come from any of the three, later ones winning.  An
unknown key or a value of the wrong type stops the run before anything is read or changed: a
typo in a table base must never lead to routes in the wrong table.

The overlay settings (`exclude_enis`, `exclude_interfaces`, `exclude_ips` and the `[[eni]]`
tables, README "Overlay configuration"; the tables are parsed in config_eni.py) are checked
for syntax only (a MAC, an address, a
network in CIDR form): whether an added IP lies in its ENI's subnet can only be known once
metadata is read, so overlay.py merges them into what was read and validate.py holds them to
the same rules as metadata.  The `[[business]]` tables are parsed by business.py.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from fnmatch import fnmatchcase
from pathlib import Path

from .business import Business, check_settings, coerce_businesses
from .config_eni import OVERLAY_KEYS as OVERLAY_KEYS  # (re-exported)
from .config_eni import EniOverlay as EniOverlay
from .config_eni import coerce_overlays
from .errors import ConfigError
from .record import fields, record, replace
from .route_config import StaticRoute, coerce_routes
from .syntax import eni_ref, fits_ifname, network, shown, url_problem
from .syntax import is_eni_id as is_eni_id  # (re-exported: the agent imports these from config)
from .syntax import is_mac as is_mac
from .syntax import normalize_mac as normalize_mac

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping, Optional

DEFAULT_CONFIG_FILE = Path("/etc/eni-guest/eni-guest.toml")
ENV_PREFIX = "ENI_GUEST_"

# The layout reserves one table and one rule priority per ENI slot: network card x device number.
MAX_NETWORK_CARDS = 32
MAX_DEVICE_NUMBER = 64
SLOTS = MAX_NETWORK_CARDS * MAX_DEVICE_NUMBER  # 2048
MAX_U32 = 2**32 - 1
RESERVED_TABLES = range(252, 256)  # compat, default, main, local


@record(frozen=True)
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
    # Prometheus text file written by `apply` and `watch` (textfile.py); "" writes none
    metrics_file: str = ""
    # write /run drop-ins keeping NetworkManager and systemd-networkd off secondary ENIs (distro.py)
    manage_distro_network: bool = True
    # where those /run drop-ins go; only "/" reloads the running managers (tests use a temp dir)
    distro_root: str = "/"
    # Overlay (README "Overlay configuration"): what eni-guest must leave alone, by ENI (MAC or
    # id), by interface name (fnmatch patterns) and by IP (networks, e.g. a CNI's pod IPs)...
    exclude_enis: tuple[str, ...] = ()
    exclude_interfaces: tuple[str, ...] = ()
    exclude_ips: tuple[str, ...] = ()  # normalised networks ("10.0.2.50/32")
    # Floating IPs (floating.py): VIPs another program (keepalived) adds and removes on an
    # ENI's link; eni-guest never adds or removes them (any unmarked address's rule follows it).
    floating_ips: tuple[str, ...] = ()  # normalised networks ("10.0.2.100/32")
    # ...and the [[eni]] tables: IPs to add to an ENI, its subnet or gateway to override.
    eni: tuple[EniOverlay, ...] = ()
    route: tuple[StaticRoute, ...] = ()  # [[route]]: routes via an ENI (route_config.py)
    business: tuple[Business, ...] = ()  # [[business]] tables (business.py), in file order

    def excluded_eni(self, mac: Optional[str], eni_id: Optional[str]) -> Optional[str]:
        """The `exclude_enis` entry naming this ENI (by MAC or by id), or None."""
        return next((e for e in self.exclude_enis if e in (mac, eni_id)), None)

    def excluded_interface(self, ifname: str) -> Optional[str]:
        """The `exclude_interfaces` pattern this interface name matches, or None."""
        return next((p for p in self.exclude_interfaces if fnmatchcase(ifname, p)), None)

    def overlay_for(self, mac: Optional[str], eni_id: Optional[str]) -> Optional[EniOverlay]:
        """The `[[eni]]` table naming this ENI (by MAC or by id), or None."""
        return next((o for o in self.eni if o.matches(mac, eni_id)), None)

    def validate(self) -> Config:
        """This Config if every setting is in range (see _CHECKS), else ConfigError."""
        for key, ok, why in _CHECKS:
            value = getattr(self, key)
            if not ok(value, self):
                why = why or (url_problem(value) if key == "metadata_url" else "") or "invalid"
                raise ConfigError(f"config {key} = {shown(value)}: {why}")
        # Adding an IP and excluding it would be two contradicting orders for one address.
        excluded = [ipaddress.ip_network(n) for n in self.exclude_ips]
        for text in self.floating_ips:
            net = ipaddress.ip_network(text)
            same = [n for n in excluded if n.version == net.version]
            clash = next((n for n in same if n.overlaps(net)), None)
            if clash is not None:
                raise ConfigError(
                    f"config floating_ips {text!r}: overlaps exclude_ips {str(clash)!r}; an IP "
                    "is either routed while present or left alone"
                )
        for overlay in self.eni:
            for key in ("add_ipv4s", "add_ipv6s"):
                for text in getattr(overlay, key):
                    addr = ipaddress.ip_address(text)
                    net = next((n for n in excluded if addr in n), None)
                    if net is not None:
                        raise ConfigError(
                            f"{overlay.where}.{key} = {text!r}: also excluded by "
                            f"exclude_ips {str(net)!r}; an IP is either added or left alone"
                        )
        check_settings(self.business, self)
        return self


def _tables_fit(base: int, _: Config) -> bool:
    return base >= 1 and base + SLOTS - 1 <= MAX_U32


def _tables_miss_reserved(base: int, _: Config) -> bool:
    top, reserved = base + SLOTS - 1, RESERVED_TABLES
    return base not in reserved and top not in reserved and not base < reserved.start <= top


# What each setting must satisfy, in the order checked: (setting, check(value, config), what
# the error says).
_CHECKS: tuple[tuple[str, Callable[[Any, Config], bool], str], ...] = (
    ("provider", lambda v, c: v != "", "must not be empty"),
    ("metadata_timeout", lambda v, c: v > 0, "must be > 0"),
    ("metadata_deadline", lambda v, c: v >= c.metadata_timeout, "must be >= metadata_timeout"),
    ("metadata_retries", lambda v, c: 0 <= v <= 10, "0..10"),
    ("metadata_url", lambda v, c: v == "" or url_problem(v) is None, ""),
    ("table_base", _tables_fit, f"tables base..base+{SLOTS - 1} must fit in 1..{MAX_U32}"),
    (
        "table_base",
        _tables_miss_reserved,
        f"tables base..base+{SLOTS - 1} must not include 252-255 (main, local, default)",
    ),
    (
        "priority_base",
        lambda v, c: v >= 1 and v + SLOTS < 32766,
        f"priorities base..base+{SLOTS} must lie between 1 and 32765 (before main)",
    ),
    ("protocol", lambda v, c: 5 <= v <= 255, "must be 5..255 (0-4: kernel)"),
    (
        "interface_group",
        lambda v, c: 1 <= v <= 2**31 - 1,
        "must be 1..2147483647 (0 is every link's default group)",
    ),
    ("mtu", lambda v, c: v == 0 or 68 <= v <= 65535, "must be 0 or 68..65535"),
    ("lock_timeout", lambda v, c: v >= 0, "must be >= 0"),
    ("distro_root", lambda v, c: v.startswith("/"), "must be absolute"),
    ("hotplug_timeout", lambda v, c: 0 <= v <= 3600, "must be 0..3600 seconds"),
    ("watch_interval", lambda v, c: 0 < v <= 86400, "must be > 0 and <= 86400 seconds"),
    (
        "metrics_file",
        lambda v, c: v == "" or (v.startswith("/") and v.endswith(".prom") and "\n" not in v),
        'must be "" or an absolute path ending in .prom (node_exporter reads only those)',
    ),
)


_FIELDS = {f.name: f for f in fields(Config)}
_TYPES = {name: type(getattr(Config(), name)) for name in _FIELDS}


def _string_list(key: str, value: Any, source: str) -> list[str]:
    """A TOML list of strings, or an environment variable's comma-separated string."""
    if isinstance(value, str) and source.startswith("environment"):
        return [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{source}: {key} = {value!r}: must be a list of strings")
    return list(value)


def _coerce_list(key: str, value: Any, source: str) -> tuple[str, ...]:
    """exclude_enis, exclude_interfaces, exclude_ips, floating_ips: checked and normalised,
    one per entry."""
    out: list[str] = []
    for item in _string_list(key, value, source):
        if key == "exclude_enis":
            norm, why = eni_ref(item)
        elif key in ("exclude_ips", "floating_ips"):
            norm, why = network(item)
        else:
            ok = item.strip() != "" and fits_ifname(item)
            norm, why = (item, "") if ok else (None, "not an interface name pattern")
        if norm is None:
            raise ConfigError(f"{source}: {key} = {value!r}: {item!r} is {why}")
        if norm not in out:
            out.append(norm)
    return tuple(out)


def _coerce(key: str, value: Any, source: str) -> Any:
    """Turn a value from TOML or the environment into the field's type, or say what is wrong."""
    if key in ("eni", "route", "business"):  # tables: config_eni, route_config, business
        return {"eni": coerce_overlays, "route": coerce_routes, "business": coerce_businesses}[key](
            value, source
        )
    want = _TYPES[key]
    if want is tuple:
        return _coerce_list(key, value, source)
    if isinstance(value, str) and want is not str:
        text = value.strip()
        try:
            if want is bool:
                if text.lower() in ("1", "true", "yes", "on"):
                    return True
                if text.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            out = want(text)
        except (ValueError, OverflowError):
            raise ConfigError(
                f"{source}: {key} = {shown(value)} is not a valid {want.__name__}"
            ) from None
        return _finite(key, out, value, source)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"{source}: {key} = {shown(value)}: too large") from None
    if want is float and isinstance(value, float):
        return _finite(key, value, value, source)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise ConfigError(
            f"{source}: {key} = {shown(value)} has type {type(value).__name__}, "
            f"expected {want.__name__}"
        )
    return value


def _finite(key: str, number: Any, value: Any, source: str) -> Any:
    """A float setting is a number of seconds: never inf or nan."""
    if isinstance(number, float) and (number != number or abs(number) == float("inf")):  # nan, inf
        raise ConfigError(f"{source}: {key} = {shown(value)}: must be a finite number")
    return number


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
        raise ConfigError(f"config file {path}: {str(e)[:120]}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: not UTF-8 text") from None
    except RecursionError:
        raise ConfigError(f"config file {path}: nested too deeply") from None
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
        values.update(_check_keys(read_toml(config_file), f"config {config_file}"))
    elif DEFAULT_CONFIG_FILE.exists():
        values.update(_check_keys(read_toml(DEFAULT_CONFIG_FILE), f"config {DEFAULT_CONFIG_FILE}"))
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

"""ENIs described in a local TOML file: for on-premises hosts and clouds without metadata.

The same file also fills in what a cloud does not publish (JD Cloud: subnets, gateways and
secondary IPs), matched by MAC or ENI id; see `load_static`.  The file is the metadata here,
so its problems are metadata errors (exit 3, nothing changed) naming the file and the key:

    primary_mac = "52:54:00:12:34:01"

    [[eni]]
    mac = "52:54:00:12:34:01"
    id = "eth0-uplink"                  # optional; default: the MAC
    ipv4s = ["10.1.0.10", "10.1.0.11"]  # the ENI's primary address first
    subnet = "10.1.0.0/24"
    gateway = "10.1.0.254"
    ipv6s = ["2001:db8:1::10"]          # optional, with ipv6_subnet and ipv6_gateway
    ipv6_subnet = "2001:db8:1::/64"
    ipv6_gateway = "2001:db8:1::1"
    device_number = 0                   # optional: all ENIs or none; the primary is 0

Without device numbers, table slots come from the MAC (model.assign_table_slots), so the order
of the [[eni]] tables does not matter and editing one ENI never moves another to a new table.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..config import MAX_DEVICE_NUMBER, Config
from ..errors import MetadataInvalid, MetadataUnavailable
from ..model import RawEni, RawInstance, normalize_mac
from ..record import field, record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Optional

TOP_KEYS = ("primary_mac", "eni")
STRING_KEYS = ("mac", "id", "subnet", "gateway", "ipv6_subnet", "ipv6_gateway")
LIST_KEYS = ("ipv4s", "ipv6s")
ENI_KEYS = (*STRING_KEYS, *LIST_KEYS, "device_number")


@record
class StaticEni:
    """One [[eni]] table, type-checked; values stay strings for the model to validate."""

    where: str  # "<file> [[eni]] #<n> ", the prefix of every error about this table
    mac: str  # normalized
    eni_id: Optional[str] = None
    ipv4s: list[str] = field(default_factory=list)
    subnet: Optional[str] = None
    gateway: Optional[str] = None
    ipv6s: list[str] = field(default_factory=list)
    ipv6_subnet: Optional[str] = None
    ipv6_gateway: Optional[str] = None
    device_number: Optional[int] = None


@record
class StaticFile:
    path: str
    primary_mac: Optional[str]
    enis: list[StaticEni]

    def match(self, mac: str, eni_id: Optional[str] = None) -> Optional[StaticEni]:
        """The table describing an ENI, by MAC (normalized) or by ENI id."""
        for eni in self.enis:
            if eni.mac == mac or (eni_id is not None and eni.eni_id == eni_id):
                return eni
        return None


def _bad(where: str, key: str, value: object, why: str) -> MetadataInvalid:
    return MetadataInvalid(f"{where}{key} = {value!r}: {why}")


def _read(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.9/3.10
        import tomli as tomllib
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise MetadataUnavailable(f"static ENI file {path}: not found") from None
    except OSError as e:
        raise MetadataUnavailable(f"static ENI file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise MetadataInvalid(f"static ENI file {path}: {str(e)[:120]}") from None
    except UnicodeDecodeError:
        raise MetadataInvalid(f"static ENI file {path}: not UTF-8 text") from None
    except RecursionError:
        raise MetadataInvalid(f"static ENI file {path}: nested too deeply") from None


def load_static(path: Path, need_primary: bool = True) -> StaticFile:
    """Read and type-check the file.  `need_primary` is False when it only overlays a cloud."""
    data = _read(path)
    for key in data:
        if key not in TOP_KEYS:
            raise MetadataInvalid(
                f"static ENI file {path}: unknown key {key!r} (known: {', '.join(TOP_KEYS)})"
            )
    primary = data.get("primary_mac")
    primary_mac = None
    if primary is not None or need_primary:
        primary_mac = normalize_mac(primary) if isinstance(primary, str) else None
        if primary_mac is None:
            raise _bad(f"{path}: ", "primary_mac", primary, "not a MAC (required)")
    tables = data.get("eni", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise _bad(f"{path}: ", "eni", tables, "must be [[eni]] tables")
    enis = [_eni(f"{path} [[eni]] #{n} ", table) for n, table in enumerate(tables, 1)]
    seen: dict[str, StaticEni] = {}
    for eni in enis:
        for ident in (eni.mac, eni.eni_id):
            if ident is not None and ident in seen:
                raise _bad(
                    eni.where,
                    "mac" if ident == eni.mac else "id",
                    ident,
                    f"also described by {seen[ident].where.strip()}",
                )
            if ident is not None:
                seen[ident] = eni
    numbered = [e for e in enis if e.device_number is not None]
    if numbered and len(numbered) != len(enis):
        lacking = next(e for e in enis if e.device_number is None)
        raise MetadataInvalid(
            f"{lacking.where}device_number: missing (give it for every [[eni]] or for none)"
        )
    return StaticFile(str(path), primary_mac, enis)


def _eni(where: str, table: dict[str, Any]) -> StaticEni:
    for key in table:
        if key not in ENI_KEYS:
            raise MetadataInvalid(f"{where}unknown key {key!r} (known: {', '.join(ENI_KEYS)})")
    for key in STRING_KEYS:
        if key in table and not isinstance(table[key], str):
            raise _bad(where, key, table[key], "must be a string")
    for key in LIST_KEYS:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _bad(where, key, value, "must be a list of strings")
    mac_text = table.get("mac")
    mac = normalize_mac(mac_text) if mac_text is not None else None
    if mac is None:
        raise _bad(where, "mac", mac_text, "not a MAC (required)")
    device = table.get("device_number")
    if device is not None and (
        isinstance(device, bool)
        or not isinstance(device, int)
        or not 0 <= device < MAX_DEVICE_NUMBER
    ):
        raise _bad(where, "device_number", device, f"not an integer in 0..{MAX_DEVICE_NUMBER - 1}")
    return StaticEni(
        where=where,
        mac=mac,
        eni_id=table.get("id"),
        ipv4s=list(table.get("ipv4s", [])),
        subnet=table.get("subnet"),
        gateway=table.get("gateway"),
        ipv6s=list(table.get("ipv6s", [])),
        ipv6_subnet=table.get("ipv6_subnet"),
        ipv6_gateway=table.get("ipv6_gateway"),
        device_number=device,
    )


def to_raw(eni: StaticEni) -> RawEni:
    """RawEni for the model; errors about values then name the file, the table and the key."""
    if eni.ipv4s and not eni.gateway:
        raise MetadataInvalid(f"{eni.where}gateway: missing (the ENI has ipv4s)")
    if eni.ipv6s and not eni.ipv6_gateway:
        raise MetadataInvalid(f"{eni.where}ipv6_gateway: missing (the ENI has ipv6s)")
    return RawEni(
        source=eni.where,
        mac=eni.mac,
        eni_id=eni.eni_id or eni.mac,
        device_number=None if eni.device_number is None else str(eni.device_number),
        ipv4s=list(eni.ipv4s),
        ipv4_subnets=[eni.subnet] if eni.subnet else [],
        ipv4_gateway=eni.gateway,
        ipv6s=list(eni.ipv6s),
        ipv6_subnets=[eni.ipv6_subnet] if eni.ipv6_subnet else [],
        ipv6_gateway=eni.ipv6_gateway,
        keys={
            "eni_id": "id",
            "device_number": "device_number",
            "ipv4s": "ipv4s",
            "ipv4_subnets": "subnet",
            "ipv4_gateway": "gateway",
            "ipv6s": "ipv6s",
            "ipv6_subnets": "ipv6_subnet",
            "ipv6_gateway": "ipv6_gateway",
        },
        has_device_numbers=eni.device_number is not None,
    )


class StaticProvider:
    name = "static"

    def __init__(self, config: Config) -> None:
        self.path = Path(config.static_file)

    @property
    def requests_sent(self) -> int:
        return 0  # a local file: no metadata service is asked

    def close(self) -> None:
        pass

    def complete(self, raw: RawInstance, scope: object) -> RawInstance:
        return raw  # a file says all it has to say in `read`

    def read(self) -> RawInstance:
        static = load_static(self.path, need_primary=True)
        assert static.primary_mac is not None  # need_primary
        for eni in static.enis:
            if not eni.ipv4s and not eni.ipv6s:
                raise MetadataInvalid(f"{eni.where}ipv4s: missing (an ENI needs an address)")
            if eni.device_number is not None and (eni.device_number == 0) != (
                eni.mac == static.primary_mac
            ):
                raise _bad(
                    eni.where,
                    "device_number",
                    eni.device_number,
                    "the primary ENI, and only it, is 0",
                )
        return RawInstance(
            provider=self.name,
            primary_mac=static.primary_mac,
            primary_mac_key=f"{static.path}: primary_mac",
            enis=[to_raw(eni) for eni in static.enis],
        )

"""Checks of scenario values: each names the offending key in its error.

A typo in a test scenario would otherwise silently test the wrong thing, so every value the
simulator reads goes through one of these; ``where`` is the key's place in the file
(``enis[2].local-ipv4s[0]``), so a broken scenario points straight at the line to fix.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Mapping
from typing import Any, Callable

from eni_guest.config import normalize_mac


def is_any(value: str) -> bool:
    return True


def is_ipv4(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def is_ipv6(value: str) -> bool:
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True


def is_net4(value: str) -> bool:
    try:
        ipaddress.IPv4Network(value, strict=True)
    except ValueError:
        return False
    return True


def is_net6(value: str) -> bool:
    try:
        ipaddress.IPv6Network(value, strict=True)
    except ValueError:
        return False
    return True


def is_netmask(value: str) -> bool:
    if not is_ipv4(value):
        return False
    try:
        ipaddress.IPv4Network(f"0.0.0.0/{value}")
    except ValueError:
        return False
    return True


Check = tuple[str, Callable[[str], bool]]
TEXT: Check = ("a string", is_any)
IPV4: Check = ("an IPv4 address", is_ipv4)
IPV6: Check = ("an IPv6 address", is_ipv6)
NET4: Check = ("an IPv4 network such as 10.0.1.0/24", is_net4)
NET6: Check = ("an IPv6 network such as 2001:db8::/64", is_net6)
NETMASK: Check = ("an IPv4 netmask such as 255.255.255.0", is_netmask)


def mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def check_keys(mapping: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    known = sorted(allowed)
    for key in mapping:
        if key not in known:
            raise ValueError(f"{where}: unknown key {key!r} (known keys: {', '.join(known)})")


def string(value: Any, where: str, check: Check = TEXT) -> str:
    what, predicate = check
    if not isinstance(value, str) or not predicate(value):
        raise ValueError(f"{where}: expected {what}, got {value!r}")
    return value


def string_list(value: Any, where: str, check: Check = TEXT) -> list[str]:
    # A bare string is accepted for one value: it is what people write for a single SG.
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list of strings, got {value!r}")
    return [string(item, f"{where}[{index}]", check) for index, item in enumerate(value)]


def number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    if value < 0:
        raise ValueError(f"{where}: must not be negative, got {value!r}")
    return float(value)


def count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where}: expected a non-negative integer, got {value!r}")
    return value


def is_mac(value: str) -> bool:
    """A MAC in any case (Tencent lists upper case), by the agent's one MAC syntax."""
    return normalize_mac(value) == value.lower()


def mac(value: Any, where: str) -> str:
    return string(value, where, ("a MAC address such as 0e:00:00:00:00:01", is_mac))


def globs(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list of glob patterns, got {value!r}")
    return tuple(string(item, f"{where}[{index}]") for index, item in enumerate(value))

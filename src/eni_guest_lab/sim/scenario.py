"""Scenario files of the metadata simulator: what they may say, and loading them strictly.

A scenario is a JSON description of one instance's ENIs plus "control" knobs for fault
injection. Loading validates it strictly (an unknown or mistyped key is a ``ValueError`` naming
the key, see values.py) because a typo in a test scenario would otherwise silently test the
wrong thing; the ``paths`` section is the one deliberate escape hatch for malformed metadata.

One ENI list, every cloud. The ENIs are written once, in AWS's vocabulary (``mac``,
``device-number``, ``interface-id``, ``local-ipv4s`` with the ENI's primary IP first,
``subnet-ipv4-cidr-block``, ``ipv6s``, ``subnet-ipv6-cidr-blocks``, ``ipv4-prefix``,
``ipv4-associations`` {public: private}, ``lag``...), and ``provider`` picks the format the
simulator serves (render.py has each cloud's), so one test scenario exercises every cloud's
parser with the same facts.

Per-ENI keys only some clouds publish (all optional; AWS never serves them):
``gateway`` (IPv4; default: the subnet's first host, ``.1``, except Alibaba, whose vSwitch
gateway is the third-last address, ``.253`` in a /24), ``netmask`` (default: the subnet's),
``ipv6-gateway`` (default: the IPv6 subnet's ``::1``).

``control`` (delay, fail, fail_paths, disabled, redirect_paths, oversize_paths, reset_stats,
imdsv2, expire_tokens_before) works the same for every provider; ``lag`` hides an ENI's IPs
(and on AWS reads ``device-number`` 0) for that many seconds after it first appears.
``paths`` maps a metadata path to a raw body (or ``null`` for a 404), served as is.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from typing import Any, Optional, Union

from eni_guest.providers import registry

from . import values as v

#: Every format a scenario can ask for; "static" is rendered to a file, never served.
# Every format the simulator serves: one per cloud of the agent's registry.
PROVIDERS = tuple(c.sim_format for c in registry.CLOUDS if c.sim_format)
#: Where each cloud's metadata service answers (the simulator's default listen addresses).
METADATA_ADDRESSES: dict[str, tuple[str, ...]] = {
    "aws": ("169.254.169.254", "fd00:ec2::254"),
    "alibaba": ("100.100.100.200",),
    "tencent": ("169.254.0.23",),
    "jdcloud": ("169.254.169.254",),
    "openstack": ("169.254.169.254",),
    "static": (),
}

_DEFAULT_OWNER_ID = "111122223333"
_DEFAULT_VPC_ID = "vpc-0123456789abcdef0"
_DEFAULT_SUBNET_ID = "subnet-0123456789abcdef0"
_DEFAULT_SECURITY_GROUP = "sg-0123456789abcdef0"

#: Single-valued ENI keys and what their value must look like.
_ENI_SCALARS: dict[str, v.Check] = {
    "gateway": v.IPV4,
    "interface-id": v.TEXT,
    "ipv6-gateway": v.IPV6,
    "local-hostname": v.TEXT,
    "netmask": v.NETMASK,
    "owner-id": v.TEXT,
    "public-hostname": v.TEXT,
    "subnet-id": v.TEXT,
    "subnet-ipv4-cidr-block": v.NET4,
    "vpc-id": v.TEXT,
    "vpc-ipv4-cidr-block": v.NET4,
}

#: Multi-valued ENI keys (served one value a line) and what each value must look like.
_ENI_LISTS: dict[str, v.Check] = {
    "ipv4-prefix": v.NET4,
    "ipv6-prefix": v.NET6,
    "ipv6s": v.IPV6,
    "local-ipv4s": v.IPV4,
    "security-group-ids": v.TEXT,
    "security-groups": v.TEXT,
    "subnet-ipv6-cidr-blocks": v.NET6,
    "vpc-ipv4-cidr-blocks": v.NET4,
    "vpc-ipv6-cidr-blocks": v.NET6,
}

_ENI_SPECIAL = ("mac", "device-number", "network-card", "ipv4-associations", "lag", "mtu")
_ENI_KEYS = frozenset(_ENI_SPECIAL) | frozenset(_ENI_SCALARS) | frozenset(_ENI_LISTS)

_TOP_KEYS = frozenset(
    {
        "provider",
        "primary_mac",
        "instance_id",
        "instance_type",
        "region",
        "availability_zone",
        "enis",
        "paths",
        "control",
    }
)

_FAIL_ACTIONS = ("reset", "hang")


@dataclass(frozen=True)
class Control:
    """Fault-injection knobs; re-read with the scenario file so tests can flip them live."""

    imdsv2: str = "required"
    disabled: bool = False
    delay: float = 0.0
    fail: Union[None, int, str] = None
    fail_paths: tuple[str, ...] = ()
    expire_tokens_before: float = 0.0
    redirect_paths: tuple[str, ...] = ()
    oversize_paths: tuple[str, ...] = ()
    #: Opaque: the server resets its request counters whenever this value changes on reload.
    reset_stats: Any = None


@dataclass(frozen=True)
class Eni:
    """One validated ENI. ``values`` holds every other key, defaults filled in."""

    mac: str
    device_number: int
    network_card: Optional[int] = None
    lag: float = 0.0
    #: Elastic IPs as ``(public, private)`` pairs, in file order.
    ipv4_associations: tuple[tuple[str, str], ...] = ()
    values: dict[str, Union[str, list[str]]] = field(default_factory=dict)
    #: The link MTU OpenStack's network_data.json publishes (links[].mtu); other clouds none.
    mtu: int = 1500


@dataclass(frozen=True)
class Scenario:
    """A validated scenario file."""

    primary_mac: str
    enis: tuple[Eni, ...]
    instance_id: str = "i-0123456789abcdef0"
    instance_type: str = "m5.large"
    region: str = "us-east-1"
    availability_zone: str = "us-east-1a"
    provider: str = "aws"
    #: Raw overrides: normalised path -> body, or ``None`` to force a 404.
    paths: dict[str, Optional[str]] = field(default_factory=dict)
    control: Control = field(default_factory=Control)


def _parse_eni(raw: Any, where: str) -> Eni:
    data = v.mapping(raw, where)
    v.check_keys(data, _ENI_KEYS, where)
    if "mac" not in data:
        raise ValueError(f"{where}.mac: missing")
    if "device-number" not in data:
        raise ValueError(f"{where}.device-number: missing")
    mac = v.mac(data["mac"], f"{where}.mac")
    device_number = v.count(data["device-number"], f"{where}.device-number")
    network_card = None
    if "network-card" in data:
        network_card = v.count(data["network-card"], f"{where}.network-card")
    lag = v.number(data.get("lag", 0), f"{where}.lag")
    mtu = v.count(data.get("mtu", 1500), f"{where}.mtu")

    associations: list[tuple[str, str]] = []
    raw_assoc = v.mapping(data.get("ipv4-associations", {}), f"{where}.ipv4-associations")
    for public, private in raw_assoc.items():
        key = f"{where}.ipv4-associations"
        v.string(public, f"{key} key", v.IPV4)
        v.string(private, f"{key}[{public!r}]", v.IPV4)
        associations.append((public, private))

    values: dict[str, Union[str, list[str]]] = {
        "interface-id": "eni-" + mac.replace(":", "").lower().rjust(17, "0"),
        "owner-id": _DEFAULT_OWNER_ID,
        "subnet-id": _DEFAULT_SUBNET_ID,
        "vpc-id": _DEFAULT_VPC_ID,
        "security-group-ids": [_DEFAULT_SECURITY_GROUP],
    }
    for key, check in _ENI_SCALARS.items():
        if key in data:
            values[key] = v.string(data[key], f"{where}.{key}", check)
    for key, check in _ENI_LISTS.items():
        if key in data:
            values[key] = v.string_list(data[key], f"{where}.{key}", check)
    return Eni(
        mac=mac,
        device_number=device_number,
        network_card=network_card,
        lag=lag,
        ipv4_associations=tuple(associations),
        values=values,
        mtu=mtu,
    )


def _parse_control(raw: Any) -> Control:
    data = v.mapping(raw, "control")
    v.check_keys(data, [f.name for f in fields(Control)], "control")
    imdsv2 = data.get("imdsv2", "required")
    if imdsv2 not in ("required", "optional"):
        raise ValueError(f"control.imdsv2: expected 'required' or 'optional', got {imdsv2!r}")
    disabled = data.get("disabled", False)
    if not isinstance(disabled, bool):
        raise ValueError(f"control.disabled: expected true or false, got {disabled!r}")
    fail = data.get("fail")
    valid_status = isinstance(fail, int) and not isinstance(fail, bool) and 200 <= fail <= 599
    if fail is not None and not valid_status and fail not in _FAIL_ACTIONS:
        raise ValueError(
            f"control.fail: expected null, an HTTP status (200-599), 'reset' or 'hang', "
            f"got {fail!r}"
        )
    return Control(
        imdsv2=imdsv2,
        disabled=disabled,
        delay=v.number(data.get("delay", 0), "control.delay"),
        fail=fail,
        fail_paths=v.globs(data.get("fail_paths", []), "control.fail_paths"),
        expire_tokens_before=v.number(
            data.get("expire_tokens_before", 0), "control.expire_tokens_before"
        ),
        redirect_paths=v.globs(data.get("redirect_paths", []), "control.redirect_paths"),
        oversize_paths=v.globs(data.get("oversize_paths", []), "control.oversize_paths"),
        reset_stats=data.get("reset_stats"),
    )


def _parse_paths(raw: Any) -> dict[str, Optional[str]]:
    data = v.mapping(raw, "paths")
    paths: dict[str, Optional[str]] = {}
    for key, value in data.items():
        where = f"paths[{key!r}]"
        normalised = key.strip("/")
        if not normalised:
            raise ValueError(f"{where}: the server root cannot be overridden")
        if isinstance(value, list):
            value = "\n".join(v.string_list(value, where))
        elif value is not None and not isinstance(value, str):
            raise ValueError(
                f"{where}: expected a string, a list of strings or null, got {value!r}"
            )
        paths[normalised] = value
    return paths


def _check_jd_numbers(enis: tuple[Eni, ...], primary_mac: str) -> None:
    """JD Cloud serves ENI n at ``network/<n>/`` with n = device-number + 1, the primary at 1:
    two ENIs with one number, or a primary elsewhere, cannot be rendered faithfully."""
    seen: dict[int, int] = {}
    for index, eni in enumerate(enis):
        if eni.device_number in seen:
            raise ValueError(
                f"enis[{index}].device-number: {eni.device_number} is also enis"
                f"[{seen[eni.device_number]}]'s (jdcloud numbers ENIs network/1/, 2/, ...)"
            )
        seen[eni.device_number] = index
        if (eni.device_number == 0) != (eni.mac == primary_mac):
            raise ValueError(
                f"enis[{index}].device-number: jdcloud serves the primary ENI, and only it, "
                "as network/1/ (device-number 0)"
            )


def parse_scenario(data: Any) -> Scenario:
    """Validate decoded JSON and return a :class:`Scenario`; ``ValueError`` names the bad key."""
    top = v.mapping(data, "scenario")
    v.check_keys(top, _TOP_KEYS, "scenario")
    provider = top.get("provider", "aws")
    if provider not in PROVIDERS:
        raise ValueError(f"provider: expected one of {', '.join(PROVIDERS)}, got {provider!r}")
    if "enis" not in top:
        raise ValueError("enis: missing")
    raw_enis = top["enis"]
    if not isinstance(raw_enis, list):
        raise ValueError(f"enis: expected a list, got {type(raw_enis).__name__}")
    enis = tuple(_parse_eni(item, f"enis[{index}]") for index, item in enumerate(raw_enis))
    seen: set[str] = set()
    for index, eni in enumerate(enis):
        if eni.mac.lower() in seen:
            raise ValueError(f"enis[{index}].mac: duplicate MAC {eni.mac}")
        seen.add(eni.mac.lower())

    if "primary_mac" in top:
        primary_mac = v.mac(top["primary_mac"], "primary_mac")
        if enis and primary_mac not in {eni.mac for eni in enis}:
            raise ValueError(
                f"primary_mac: {primary_mac} is not the mac of any ENI "
                "(use 'paths' for a deliberately inconsistent value)"
            )
    elif enis:
        # The primary is the ENI in slot 0; fall back to the first one listed.
        primary_mac = next((e.mac for e in enis if e.device_number == 0), enis[0].mac)
    else:
        raise ValueError("primary_mac: required when 'enis' is empty")
    if provider == "jdcloud":
        _check_jd_numbers(enis, primary_mac)

    optional_text = {
        name: v.string(top[name], name)
        for name in ("instance_id", "instance_type", "region", "availability_zone")
        if name in top
    }
    return Scenario(
        primary_mac=primary_mac,
        enis=enis,
        provider=provider,
        paths=_parse_paths(top.get("paths", {})),
        control=_parse_control(top.get("control", {})),
        **optional_text,
    )


def load_scenario(path: Union[str, os.PathLike[str]]) -> Scenario:
    """Read and validate a scenario file.

    Raises ``OSError`` when the file cannot be read and ``ValueError`` (prefixed with the file
    name) when it is not valid JSON or not a valid scenario.
    """
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        return parse_scenario(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{os.fspath(path)}: invalid JSON: {exc}") from exc
    except ValueError as exc:
        raise ValueError(f"{os.fspath(path)}: {exc}") from exc

"""Scenario files for the metadata simulator: loading, validation and rendering.

A scenario is a JSON description of one instance's ENIs plus "control" knobs for fault
injection. Loading validates it strictly (an unknown or mistyped key is a ``ValueError`` naming
the key) because a typo in a test scenario would otherwise silently test the wrong thing; the
``paths`` section is the one deliberate escape hatch for malformed metadata.

One ENI list, every cloud. The ENIs are written once, in AWS's vocabulary (``mac``,
``device-number``, ``interface-id``, ``local-ipv4s`` with the ENI's primary IP first,
``subnet-ipv4-cidr-block``, ``ipv6s``, ``subnet-ipv6-cidr-blocks``, ``ipv4-prefix``,
``ipv4-associations`` {public: private}, ``lag``...), and ``provider`` picks the format the
simulator serves, so one test scenario exercises every cloud's parser with the same facts:

=========== ==================== ==========================================================
provider    served on            format
=========== ==================== ==========================================================
aws         169.254.169.254,     IMDSv2 tokens (``X-aws-ec2-metadata-token``), one value a
            [fd00:ec2::254]      line, ``/latest/meta-data/network/interfaces/macs/<mac>/``
alibaba     100.100.100.200      hardened-mode tokens (``X-aliyun-ecs-metadata-token``),
                                 ``private-ipv4s`` as a JSON array, ``primary-ip-address``,
                                 ``netmask``, ``gateway``, ``vswitch-cidr-block`` per ENI
tencent     169.254.0.23         no tokens, MACs in UPPER case in listings and paths,
                                 ``local-ipv4s/<ip>/`` holding ``gateway``, ``subnet-mask``
jdcloud     169.254.169.254      no tokens, ``/metadata/latest/network/<n>/`` (n =
                                 device-number + 1, the primary is 1), JSON-array listings,
                                 JSON-quoted values, only MAC and primary IP per ENI
openstack   169.254.169.254      no tokens, ``/openstack/latest/network_data.json``: links in
                                 device-number order (the primary first), one network per IP
static      (nothing served)     ``render_static`` writes the TOML file of provider "static"
=========== ==================== ==========================================================

Per-ENI keys only some clouds publish (all optional; AWS never serves them):
``gateway`` (IPv4; default: the subnet's first host, ``.1``, except Alibaba, whose vSwitch
gateway is the third-last address, ``.253`` in a /24), ``netmask`` (default: the subnet's),
``ipv6-gateway`` (default: the IPv6 subnet's ``::1``). ``ipv4_gateway``/``ipv6_gateway`` are
the functions the testbed uses too, so the simulated VPC puts its router where metadata says.
What a cloud does not publish is simply not served: Tencent and JD Cloud serve no IPv6, JD
Cloud no secondary IPs (those come from the agent's local file, see ``render_static``).

Token rules follow each cloud: AWS and Alibaba issue tokens on ``PUT /latest/api/token`` with
their own TTL header only (an Alibaba token call carrying the AWS header is a 400, and vice
versa), enforce them on GETs when ``control.imdsv2`` is "required" (401), and refuse token
calls carrying ``X-Forwarded-For``; the other clouds have no token call (a PUT is a 405) and
ignore token headers. ``control`` (delay, fail, fail_paths, disabled, redirect_paths,
oversize_paths, reset_stats) works the same for every provider; ``lag`` hides an ENI's IPs (and
on AWS reads ``device-number`` 0) for that many seconds after it first appears.

Rendering turns a scenario into a flat tree ``{path: leaf text | directory listing}`` and is a
pure function of the scenario, the current time and the first-seen time of each MAC, so the
listing rules (what is listed, what answers 404, how a just-attached ENI looks) can be
unit-tested without a server.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Optional, Union

#: A rendered tree: keys are paths relative to the server root without leading or trailing
#: ``/``. A ``str`` value is a leaf body; a ``list`` value is a directory listing whose entries
#: name sub-directories with a trailing ``/``.
Tree = dict[str, Union[str, list[str]]]

META = "latest/meta-data"
MACS_DIR = f"{META}/network/interfaces/macs"
TOKEN_PATH = "latest/api/token"
JD_META = "metadata/latest"
OPENSTACK_NETWORK_DATA = "openstack/latest/network_data.json"

#: Every format a scenario can ask for; "static" is rendered to a file, never served.
PROVIDERS = ("aws", "alibaba", "tencent", "jdcloud", "openstack", "static")
#: Where each cloud's metadata service answers (the simulator's default listen addresses).
METADATA_ADDRESSES: dict[str, tuple[str, ...]] = {
    "aws": ("169.254.169.254", "fd00:ec2::254"),
    "alibaba": ("100.100.100.200",),
    "tencent": ("169.254.0.23",),
    "jdcloud": ("169.254.169.254",),
    "openstack": ("169.254.169.254",),
    "static": (),
}
#: Keys of the scenario that only some clouds publish; AWS's tree never shows them.
CLOUD_ONLY_KEYS = frozenset({"gateway", "netmask", "ipv6-gateway"})

#: Keys a just-attached ENI does not have yet (AWS fills them in when the attachment settles).
LAG_HIDDEN_KEYS = frozenset({"local-ipv4s", "ipv6s"})

_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")

_DEFAULT_OWNER_ID = "111122223333"
_DEFAULT_VPC_ID = "vpc-0123456789abcdef0"
_DEFAULT_SUBNET_ID = "subnet-0123456789abcdef0"
_DEFAULT_SECURITY_GROUP = "sg-0123456789abcdef0"


def _is_any(value: str) -> bool:
    return True


def _is_ipv4(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def _is_ipv6(value: str) -> bool:
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True


def _is_net4(value: str) -> bool:
    try:
        ipaddress.IPv4Network(value, strict=True)
    except ValueError:
        return False
    return True


def _is_net6(value: str) -> bool:
    try:
        ipaddress.IPv6Network(value, strict=True)
    except ValueError:
        return False
    return True


def _is_netmask(value: str) -> bool:
    if not _is_ipv4(value):
        return False
    try:
        ipaddress.IPv4Network(f"0.0.0.0/{value}")
    except ValueError:
        return False
    return True


_Check = tuple[str, Callable[[str], bool]]
_TEXT: _Check = ("a string", _is_any)
_IPV4: _Check = ("an IPv4 address", _is_ipv4)
_IPV6: _Check = ("an IPv6 address", _is_ipv6)
_NET4: _Check = ("an IPv4 network such as 10.0.1.0/24", _is_net4)
_NET6: _Check = ("an IPv6 network such as 2001:db8::/64", _is_net6)
_NETMASK: _Check = ("an IPv4 netmask such as 255.255.255.0", _is_netmask)

#: Single-valued ENI keys and what their value must look like.
_ENI_SCALARS: dict[str, _Check] = {
    "gateway": _IPV4,
    "interface-id": _TEXT,
    "ipv6-gateway": _IPV6,
    "local-hostname": _TEXT,
    "netmask": _NETMASK,
    "owner-id": _TEXT,
    "public-hostname": _TEXT,
    "subnet-id": _TEXT,
    "subnet-ipv4-cidr-block": _NET4,
    "vpc-id": _TEXT,
    "vpc-ipv4-cidr-block": _NET4,
}

#: Multi-valued ENI keys (served one value a line) and what each value must look like.
_ENI_LISTS: dict[str, _Check] = {
    "ipv4-prefix": _NET4,
    "ipv6-prefix": _NET6,
    "ipv6s": _IPV6,
    "local-ipv4s": _IPV4,
    "security-group-ids": _TEXT,
    "security-groups": _TEXT,
    "subnet-ipv6-cidr-blocks": _NET6,
    "vpc-ipv4-cidr-blocks": _NET4,
    "vpc-ipv6-cidr-blocks": _NET6,
}

_ENI_SPECIAL = ("mac", "device-number", "network-card", "ipv4-associations", "lag")
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


# --------------------------------------------------------------------------------------------
# Validation helpers: each names the offending key in its error, so a broken test scenario
# points straight at the line to fix.


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def _check_keys(mapping: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    known = sorted(allowed)
    for key in mapping:
        if key not in known:
            raise ValueError(f"{where}: unknown key {key!r} (known keys: {', '.join(known)})")


def _string(value: Any, where: str, check: _Check = _TEXT) -> str:
    what, predicate = check
    if not isinstance(value, str) or not predicate(value):
        raise ValueError(f"{where}: expected {what}, got {value!r}")
    return value


def _string_list(value: Any, where: str, check: _Check = _TEXT) -> list[str]:
    # A bare string is accepted for one value: it is what people write for a single SG.
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list of strings, got {value!r}")
    return [_string(item, f"{where}[{index}]", check) for index, item in enumerate(value)]


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    if value < 0:
        raise ValueError(f"{where}: must not be negative, got {value!r}")
    return float(value)


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where}: expected a non-negative integer, got {value!r}")
    return value


def _is_mac(value: str) -> bool:
    return _MAC_RE.match(value) is not None


def _mac(value: Any, where: str) -> str:
    return _string(value, where, ("a MAC address such as 0e:00:00:00:00:01", _is_mac))


def _parse_eni(raw: Any, where: str) -> Eni:
    data = _mapping(raw, where)
    _check_keys(data, _ENI_KEYS, where)
    if "mac" not in data:
        raise ValueError(f"{where}.mac: missing")
    if "device-number" not in data:
        raise ValueError(f"{where}.device-number: missing")
    mac = _mac(data["mac"], f"{where}.mac")
    device_number = _count(data["device-number"], f"{where}.device-number")
    network_card = None
    if "network-card" in data:
        network_card = _count(data["network-card"], f"{where}.network-card")
    lag = _number(data.get("lag", 0), f"{where}.lag")

    associations: list[tuple[str, str]] = []
    raw_assoc = _mapping(data.get("ipv4-associations", {}), f"{where}.ipv4-associations")
    for public, private in raw_assoc.items():
        key = f"{where}.ipv4-associations"
        _string(public, f"{key} key", _IPV4)
        _string(private, f"{key}[{public!r}]", _IPV4)
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
            values[key] = _string(data[key], f"{where}.{key}", check)
    for key, check in _ENI_LISTS.items():
        if key in data:
            values[key] = _string_list(data[key], f"{where}.{key}", check)
    return Eni(
        mac=mac,
        device_number=device_number,
        network_card=network_card,
        lag=lag,
        ipv4_associations=tuple(associations),
        values=values,
    )


def _globs(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list of glob patterns, got {value!r}")
    return tuple(_string(item, f"{where}[{index}]") for index, item in enumerate(value))


def _parse_control(raw: Any) -> Control:
    data = _mapping(raw, "control")
    _check_keys(data, [f.name for f in fields(Control)], "control")
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
        delay=_number(data.get("delay", 0), "control.delay"),
        fail=fail,
        fail_paths=_globs(data.get("fail_paths", []), "control.fail_paths"),
        expire_tokens_before=_number(
            data.get("expire_tokens_before", 0), "control.expire_tokens_before"
        ),
        redirect_paths=_globs(data.get("redirect_paths", []), "control.redirect_paths"),
        oversize_paths=_globs(data.get("oversize_paths", []), "control.oversize_paths"),
        reset_stats=data.get("reset_stats"),
    )


def _parse_paths(raw: Any) -> dict[str, Optional[str]]:
    data = _mapping(raw, "paths")
    paths: dict[str, Optional[str]] = {}
    for key, value in data.items():
        where = f"paths[{key!r}]"
        normalised = key.strip("/")
        if not normalised:
            raise ValueError(f"{where}: the server root cannot be overridden")
        if isinstance(value, list):
            value = "\n".join(_string_list(value, where))
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
    top = _mapping(data, "scenario")
    _check_keys(top, _TOP_KEYS, "scenario")
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
        primary_mac = _mac(top["primary_mac"], "primary_mac")
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
        name: _string(top[name], name)
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


# --------------------------------------------------------------------------------------------
# Rendering


def update_first_seen(
    previous: Mapping[str, float], macs: Iterable[str], now: float
) -> dict[str, float]:
    """Carry first-seen times over a reload.

    A MAC present before keeps its time; a new MAC gets ``now``; a MAC no longer present is
    dropped, so if it comes back later it is "attached" again and its lag starts over.
    """
    return {mac.lower(): previous.get(mac.lower(), now) for mac in macs}


def is_lagging(eni: Eni, now: float, first_seen: Optional[Mapping[str, float]]) -> bool:
    """Whether ``eni`` should still look just-attached. Without ``first_seen`` no lag applies."""
    if eni.lag <= 0 or first_seen is None:
        return False
    return now - first_seen.get(eni.mac.lower(), now) < eni.lag


def _eni_leaves(eni: Eni, lagging: bool) -> list[tuple[str, str]]:
    items: dict[str, str] = {
        # A hot-attached ENI reads device-number 0 until the attachment propagates.
        "device-number": "0" if lagging else str(eni.device_number),
        "mac": eni.mac,
    }
    if eni.network_card is not None:
        items["network-card"] = str(eni.network_card)
    for key, value in eni.values.items():
        if (lagging and key in LAG_HIDDEN_KEYS) or key in CLOUD_ONLY_KEYS:
            continue
        if isinstance(value, list):
            if not value:
                continue  # AWS answers 404 rather than an empty body
            value = "\n".join(value)
        items[key] = value
    if eni.ipv4_associations:
        items["public-ipv4s"] = "\n".join(public for public, _ in eni.ipv4_associations)
        for public, private in eni.ipv4_associations:
            items[f"ipv4-associations/{public}"] = private
    # AWS lists keys alphabetically; sort on the first component only, so association
    # entries keep file order (stable sort).
    return sorted(items.items(), key=lambda item: item[0].split("/", 1)[0])


def _with_listings(leaves: Mapping[str, str]) -> Tree:
    """Derive a listing for every directory from the leaves, in insertion order."""
    directories: set[str] = set()
    for key in leaves:
        parts = key.split("/")
        directories.update("/".join(parts[:index]) for index in range(len(parts)))
    listings: dict[str, dict[str, None]] = {}
    for key in leaves:
        parts = key.split("/")
        for index in range(len(parts)):
            parent = "/".join(parts[:index])
            child = "/".join(parts[: index + 1])
            name = parts[index] + ("/" if child in directories else "")
            listings.setdefault(parent, {})[name] = None
    tree: Tree = {directory: list(entries) for directory, entries in listings.items()}
    # A raw override on a directory path replaces its listing (malformed-listing tests).
    tree.update(leaves)
    return tree


def ipv4_gateway(provider: str, eni: Mapping[str, Any]) -> Optional[str]:
    """The IPv4 router of an ENI's subnet as the simulated cloud publishes it.

    Shared with the testbed, which puts the router of the simulated VPC at this address: an
    agent that guessed ``.1`` on Alibaba (where the vSwitch gateway is ``.253`` in a /24) would
    then find no router, as on the real cloud. ``eni`` is a scenario ENI (a dict or ``values``).
    """
    if eni.get("gateway"):
        return str(eni["gateway"])
    cidr = eni.get("subnet-ipv4-cidr-block")
    if not cidr:
        return None
    net = ipaddress.IPv4Network(str(cidr), strict=False)
    if provider == "alibaba" and net.num_addresses >= 8:
        return str(net.broadcast_address - 2)
    return str(net.network_address + 1)


def ipv6_gateway(eni: Mapping[str, Any], cidr: Optional[str] = None) -> Optional[str]:
    """The IPv6 router of ``cidr`` (default: the ENI's first IPv6 subnet): ``ipv6-gateway`` if
    the scenario gives one inside it, else the subnet's first host (``::1``)."""
    cidrs = eni.get("subnet-ipv6-cidr-blocks") or []
    cidrs = [cidrs] if isinstance(cidrs, str) else list(cidrs)
    cidr = cidr or (cidrs[0] if cidrs else None)
    given = eni.get("ipv6-gateway")
    if cidr is None:
        return str(given) if given else None
    net = ipaddress.IPv6Network(str(cidr), strict=False)
    if given and ipaddress.IPv6Address(str(given)) in net:
        return str(given)
    return str(net.network_address + 1)


def _netmask(eni: Eni) -> Optional[str]:
    mask = eni.values.get("netmask")
    if isinstance(mask, str):
        return mask
    cidr = eni.values.get("subnet-ipv4-cidr-block")
    return str(ipaddress.IPv4Network(str(cidr)).netmask) if cidr else None


def _text(eni: Eni, key: str) -> str:
    value = eni.values.get(key, "")
    return value if isinstance(value, str) else ",".join(value)


def _items(eni: Eni, key: str) -> list[str]:
    value = eni.values.get(key, [])
    return [value] if isinstance(value, str) else list(value)


def _finish(leaves: dict[str, str], scenario: Scenario, json_listings: bool = False) -> Tree:
    """Apply the scenario's raw ``paths`` overrides and derive the directory listings."""
    for path, value in scenario.paths.items():
        if value is None:
            prefix = path + "/"
            for key in [k for k in leaves if k == path or k.startswith(prefix)]:
                del leaves[key]
    overrides = {path: value for path, value in scenario.paths.items() if value is not None}
    leaves.update(overrides)
    tree = _with_listings(leaves)
    if json_listings:  # JD Cloud answers a directory with a JSON array of its entries
        tree = {
            k: json.dumps(v) if isinstance(v, list) and k not in overrides else v
            for k, v in tree.items()
        }
    for path, value in scenario.paths.items():
        if value is None:
            tree.pop(path, None)
    return tree


def render(
    scenario: Scenario, now: float = 0.0, first_seen: Optional[Mapping[str, float]] = None
) -> Tree:
    """Render ``scenario`` to the tree of metadata paths of its ``provider``.

    ``now`` and ``first_seen`` (MAC -> time, same clock) decide which ENIs are still inside
    their ``lag``; with ``first_seen=None`` every ENI is rendered settled. A "static" scenario
    has no metadata service: ``ValueError`` (use :func:`render_static`).
    """
    renderers: dict[str, Callable[..., Tree]] = {
        "aws": _render_aws,
        "alibaba": _render_alibaba,
        "tencent": _render_tencent,
        "jdcloud": _render_jdcloud,
        "openstack": _render_openstack,
    }
    if scenario.provider not in renderers:
        raise ValueError(
            f"provider {scenario.provider!r} has no metadata service to simulate "
            "(the agent reads a file: see render_static)"
        )
    return renderers[scenario.provider](scenario, now, first_seen)


def _render_aws(scenario: Scenario, now: float, first_seen: Optional[Mapping[str, float]]) -> Tree:
    leaves: dict[str, str] = {
        f"{META}/instance-id": scenario.instance_id,
        f"{META}/instance-type": scenario.instance_type,
    }
    primary = next((eni for eni in scenario.enis if eni.mac == scenario.primary_mac), None)
    if primary is not None:
        primary_ipv4s = primary.values.get("local-ipv4s")
        if primary_ipv4s:
            leaves[f"{META}/local-ipv4"] = primary_ipv4s[0]
    leaves[f"{META}/mac"] = scenario.primary_mac
    for eni in scenario.enis:
        lagging = is_lagging(eni, now, first_seen)
        for key, text in _eni_leaves(eni, lagging):
            leaves[f"{MACS_DIR}/{eni.mac}/{key}"] = text
    leaves[f"{META}/placement/availability-zone"] = scenario.availability_zone
    leaves[f"{META}/placement/region"] = scenario.region
    return _finish(leaves, scenario)


def _render_alibaba(
    scenario: Scenario, now: float, first_seen: Optional[Mapping[str, float]]
) -> Tree:
    leaves: dict[str, str] = {
        f"{META}/instance-id": scenario.instance_id,
        f"{META}/instance/instance-type": scenario.instance_type,
        f"{META}/region-id": scenario.region,
        f"{META}/zone-id": scenario.availability_zone,
        f"{META}/network-type": "vpc",
        f"{META}/mac": scenario.primary_mac.lower(),
    }
    for eni in scenario.enis:
        lagging = is_lagging(eni, now, first_seen)
        items = {
            "network-interface-id": _text(eni, "interface-id"),
            "vpc-id": _text(eni, "vpc-id"),
            "vswitch-id": _text(eni, "subnet-id"),
        }
        cidr = eni.values.get("subnet-ipv4-cidr-block")
        if cidr:
            items["vswitch-cidr-block"] = str(cidr)
        mask, gateway = _netmask(eni), ipv4_gateway("alibaba", eni.values)
        if mask:
            items["netmask"] = mask
        if gateway:
            items["gateway"] = gateway
        if eni.values.get("vpc-ipv4-cidr-block"):
            items["vpc-cidr-block"] = _text(eni, "vpc-ipv4-cidr-block")
        ips = [] if lagging else _items(eni, "local-ipv4s")
        if ips:
            items["primary-ip-address"] = ips[0]
            items["private-ipv4s"] = json.dumps(ips, separators=(",", ":"))
            if eni.mac == scenario.primary_mac:
                leaves[f"{META}/private-ipv4"] = ips[0]
        ipv6s = [] if lagging else _items(eni, "ipv6s")
        if ipv6s:  # documented without quotes: [2408:4005:3ab::e4e]
            items["ipv6s"] = "[" + ",".join(ipv6s) + "]"
        cidrs6 = _items(eni, "subnet-ipv6-cidr-blocks")
        if cidrs6:
            items["vswitch-ipv6-cidr-block"] = cidrs6[0]
            items["ipv6-gateway"] = ipv6_gateway(eni.values) or ""
        prefixes = _items(eni, "ipv4-prefix")
        if prefixes and not lagging:
            items["ipv4-prefixes"] = json.dumps(prefixes, separators=(",", ":"))
        for key in sorted(items):
            leaves[f"{MACS_DIR}/{eni.mac}/{key}"] = items[key]
    return _finish(leaves, scenario)


def _render_tencent(
    scenario: Scenario, now: float, first_seen: Optional[Mapping[str, float]]
) -> Tree:
    leaves: dict[str, str] = {
        f"{META}/instance-id": scenario.instance_id,
        f"{META}/instance/instance-type": scenario.instance_type,
        f"{META}/placement/region": scenario.region,
        f"{META}/placement/zone": scenario.availability_zone,
        f"{META}/mac": scenario.primary_mac.upper(),
    }
    for eni in scenario.enis:
        lagging = is_lagging(eni, now, first_seen)
        mac = eni.mac.upper()  # listed, and only found, in upper case
        d = f"{MACS_DIR}/{mac}"
        leaves[f"{d}/mac"] = mac
        leaves[f"{d}/vpc-id"] = _text(eni, "vpc-id")
        leaves[f"{d}/subnet-id"] = _text(eni, "subnet-id")
        ips = [] if lagging else _items(eni, "local-ipv4s")
        public = {private: pub for pub, private in eni.ipv4_associations}
        if ips:
            leaves[f"{d}/primary-local-ipv4"] = ips[0]
            if eni.mac == scenario.primary_mac:
                leaves[f"{META}/local-ipv4"] = ips[0]
        if any(ip in public for ip in ips):
            leaves[f"{d}/public-ipv4s"] = "\n".join(public[ip] for ip in ips if ip in public)
        mask, gateway = _netmask(eni), ipv4_gateway("tencent", eni.values)
        for ip in ips:
            e = f"{d}/local-ipv4s/{ip}"
            leaves[f"{e}/local-ipv4"] = ip
            if gateway:
                leaves[f"{e}/gateway"] = gateway
            if mask:
                leaves[f"{e}/subnet-mask"] = mask
            if ip in public:
                leaves[f"{e}/public-ipv4"] = public[ip]
                leaves[f"{e}/public-ipv4-mode"] = "NAT"
    return _finish(leaves, scenario)


def _render_jdcloud(
    scenario: Scenario, now: float, first_seen: Optional[Mapping[str, float]]
) -> Tree:
    def q(value: str) -> str:
        return json.dumps(value)

    leaves: dict[str, str] = {
        f"{JD_META}/instance-id": q(scenario.instance_id),
        f"{JD_META}/instance-type": q(scenario.instance_type),
        f"{JD_META}/placement/region": q(scenario.region),
        f"{JD_META}/placement/availability-zone": q(scenario.availability_zone),
        f"{JD_META}/attributes/hostname": q(scenario.instance_id),
    }
    for eni in sorted(scenario.enis, key=lambda e: e.device_number):
        d = f"{JD_META}/network/{eni.device_number + 1}"
        ips = [] if is_lagging(eni, now, first_seen) else _items(eni, "local-ipv4s")
        items = {
            "mac": q(eni.mac.lower()),
            "network-interface-id": q(_text(eni, "interface-id")),
            "subnet-id": q(_text(eni, "subnet-id")),
            "security-group-ids": json.dumps(_items(eni, "security-group-ids")),
        }
        if ips:  # JD publishes the ENI's primary IP only
            items["local-ipv4"] = q(ips[0])
            for public, private in eni.ipv4_associations:
                if private == ips[0]:
                    items["floating-ipv4"] = q(public)
        for key in sorted(items):
            leaves[f"{d}/{key}"] = items[key]
    return _finish(leaves, scenario, json_listings=True)


def _render_openstack(
    scenario: Scenario, now: float, first_seen: Optional[Mapping[str, float]]
) -> Tree:
    links: list[dict[str, Any]] = []
    networks: list[dict[str, Any]] = []
    # Nova lists the ports in attach order and the boot port (the primary) first.
    ordered = sorted(scenario.enis, key=lambda e: (e.mac != scenario.primary_mac, e.device_number))
    for eni in ordered:
        link_id = _text(eni, "interface-id")
        links.append(
            {
                "id": link_id,
                "vif_id": link_id,
                "type": "ovs",
                "mtu": 1500,
                "ethernet_mac_address": eni.mac.lower(),
            }
        )
        if is_lagging(eni, now, first_seen):
            continue
        mask, gateway = _netmask(eni), ipv4_gateway("openstack", eni.values)
        for ip in _items(eni, "local-ipv4s"):
            net: dict[str, Any] = {
                "id": f"network{len(networks)}",
                "link": link_id,
                "type": "ipv4",
                "ip_address": ip,
                "routes": [],
                "network_id": _text(eni, "subnet-id"),
                "services": [],
            }
            if mask:
                net["netmask"] = mask
            if gateway:
                route = {"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": gateway}
                net["routes"].append(route)
            networks.append(net)
        cidrs6 = _items(eni, "subnet-ipv6-cidr-blocks")
        for ip in _items(eni, "ipv6s"):
            cidr = next(
                (c for c in cidrs6 if ipaddress.IPv6Address(ip) in ipaddress.IPv6Network(c)),
                cidrs6[0] if cidrs6 else None,
            )
            net = {
                "id": f"network{len(networks)}",
                "link": link_id,
                "type": "ipv6",
                "ip_address": ip,
                "routes": [],
                "network_id": _text(eni, "subnet-id"),
                "services": [],
            }
            if cidr:
                net["netmask"] = str(ipaddress.IPv6Network(cidr).netmask)
                gw6 = ipv6_gateway(eni.values, cidr)
                net["routes"].append({"network": "::", "netmask": "::", "gateway": gw6})
            networks.append(net)
    doc = {
        "links": links,
        "networks": networks,
        "services": [{"type": "dns", "address": "10.0.0.2"}],
    }
    meta = {
        "uuid": scenario.instance_id,
        "name": scenario.instance_id,
        "hostname": scenario.instance_id,
        "availability_zone": scenario.availability_zone,
    }
    leaves = {
        OPENSTACK_NETWORK_DATA: json.dumps(doc, indent=2),
        "openstack/latest/meta_data.json": json.dumps(meta, indent=2),
    }
    return _finish(leaves, scenario)


def render_static(scenario: Scenario, *, overlay: bool = False, subnets: bool = True) -> str:
    """The scenario as the TOML file the agent's "static" provider reads (providers/static.py).

    With ``overlay`` it is the local file a JD Cloud instance needs next to its metadata: no
    ``primary_mac``, and per ENI the MAC and every private IP (JD publishes only the first);
    ``subnets=False`` then leaves out subnet and gateway, so they must come from DHCP.
    """

    def s(value: str) -> str:
        return json.dumps(value)  # a JSON string is a TOML basic string

    def a(values: Iterable[str]) -> str:
        return "[" + ", ".join(s(v) for v in values) + "]"

    provider = "jdcloud" if overlay else "static"
    out = [f"# rendered from a scenario by eni_guest_lab.sim.render_static ({provider})"]
    if not overlay:
        out.append(f"primary_mac = {s(scenario.primary_mac.lower())}")
    for eni in sorted(scenario.enis, key=lambda e: e.device_number):
        out += ["", "[[eni]]", f"mac = {s(eni.mac.lower())}"]
        if not overlay:
            out.append(f"id = {s(_text(eni, 'interface-id'))}")
        ips = _items(eni, "local-ipv4s")
        if ips:
            out.append(f"ipv4s = {a(ips)}")
        cidr, gateway = eni.values.get("subnet-ipv4-cidr-block"), ipv4_gateway(provider, eni.values)
        if subnets and cidr:
            out.append(f"subnet = {s(str(cidr))}")
        if subnets and gateway and ips:
            out.append(f"gateway = {s(gateway)}")
        ipv6s, cidrs6 = _items(eni, "ipv6s"), _items(eni, "subnet-ipv6-cidr-blocks")
        if ipv6s and not overlay:
            out.append(f"ipv6s = {a(ipv6s)}")
            if cidrs6:
                out.append(f"ipv6_subnet = {s(cidrs6[0])}")
                out.append(f"ipv6_gateway = {s(ipv6_gateway(eni.values) or '')}")
    return "\n".join(out) + "\n"


def body_for(tree: Mapping[str, Union[str, list[str]]], path: str) -> Optional[str]:
    """The response body for a request path, or ``None`` for 404.

    Directories answer with and without the trailing ``/``; a query string must already be
    stripped.
    """
    value = tree.get(path.strip("/"))
    if value is None:
        return None
    return value if isinstance(value, str) else "\n".join(value)

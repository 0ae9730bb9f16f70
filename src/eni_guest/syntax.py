"""The syntax of the values eni-guest reads: MACs, ENI ids, addresses, networks, URLs.

Pure checks with no knowledge of settings or metadata, shared by the configuration (config.py),
validation and the providers; and how an error message shows a value (`shown`): cut to a
readable length, a URL's credentials never.
"""

from __future__ import annotations

import ipaddress
import re

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Optional

# The one MAC syntax of the agent: lower case, colon-separated (see `normalize_mac`).
MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# What an ENI id may look like on any cloud (eni-0abc..., port-..., an OpenStack port UUID):
# printable, no spaces, so it can be logged and matched as is.
ENI_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
# Something meant as a MAC ("0e:11:22", "0E-11-...") rather than an id: held to MAC syntax, so
# a mistyped MAC is an error instead of an ENI id that never matches.
_MAC_LIKE = re.compile(r"^[0-9A-Fa-f]{1,2}([:-][0-9A-Fa-f]{1,2})+$")
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
# Characters the kernel refuses in interface names (dev_valid_name): a pattern holding one
# could never match, so it is a mistake.
NOT_IN_IFNAME = re.compile(r"[\s/:]")


def shown(value: Any, limit: int = 80) -> str:
    """A value as an error message shows it: its repr, cut to a readable length, and a URL's
    credentials never (they are refused, and a refusal must not print them)."""
    if isinstance(value, str) and "@" in value and "://" in value:
        scheme, rest = value.split("://", 1)
        value = f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + "...'" + f" ({len(text)} chars)"


def url_problem(url: str) -> Optional[str]:
    """Why `url` cannot be a metadata service's base URL, or None: http(s), a host that can be
    one (labels of 1-63 characters, 253 in all, or an IP literal), a port in 1..65535, no
    credentials (a metadata service takes none, and they would end up in logs)."""
    from urllib.parse import urlsplit

    if not url.startswith(("http://", "https://")):
        return "must start with http:// or https://"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        return f"not a URL ({str(e)[:60]})"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials (a name or password before the host)"
    host = parts.hostname or ""
    if not host:
        return "has no host"
    if port is not None and not 1 <= port <= 65535:
        return "port must be 1..65535"
    if parts.query or parts.fragment:
        return "must not have a query or fragment"
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        return "host is not a valid host name or IP address"
    return None


def normalize_mac(value: str) -> Optional[str]:
    """Lower-case, colon-separated MAC, or None; quotes and dashes (some clouds) are accepted."""
    mac = value.strip().strip('"').lower().replace("-", ":")
    return mac if MAC.match(mac) else None


def address(text: str, version: int) -> Optional[str]:
    """The address in canonical form if `text` is a unicast IPv`version` address, else None."""
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if addr.version != version or addr.is_multicast or addr.is_unspecified or addr.is_loopback:
        return None
    return str(addr)


def network(text: str, version: Optional[int] = None) -> tuple[Optional[str], str]:
    """(canonical network, "") or (None, why); a bare address is a /32 (/128)."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            return None, "not an IP address or network in CIDR form"
        return None, f"not a network: host bits are set (the network would be {loose})"
    if version is not None and net.version != version:
        return None, f"not an IPv{version} network in CIDR form"
    if net.prefixlen == 0:
        return None, f"too wide: it covers every IPv{net.version} address"
    return str(net), ""


def eni_ref(text: str) -> tuple[Optional[str], str]:
    """(a normalised MAC or an ENI id, "") or (None, why)."""
    mac = normalize_mac(text)
    if mac is not None:
        return mac, ""
    if _MAC_LIKE.match(text.strip()):
        return None, "not a MAC (6 hexadecimal pairs, e.g. 0e:11:22:33:44:55)"
    if not ENI_ID.match(text.strip()):
        return None, "not a MAC or an ENI id"
    return text.strip(), ""

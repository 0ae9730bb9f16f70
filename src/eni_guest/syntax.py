"""The syntax of the values eni-guest reads: MACs, ENI ids, addresses, networks, URLs.

Pure checks with no knowledge of settings or metadata, shared by the configuration (config.py),
validation and the providers; and how an error message shows a value (`shown`): cut to a
readable length, a URL's credentials never.
"""

from __future__ import annotations

import ipaddress

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Optional

# Checked character by character, not with `re`: compiling the patterns was ~0.6 ms of every
# start, and these are all plain character classes.
_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_HEX = frozenset("0123456789abcdefABCDEF")
_LOWER_HEX = frozenset("0123456789abcdef")
_ID_CHARS = _ALNUM | frozenset("._:-")
_LABEL_CHARS = _ALNUM | frozenset("-")


def is_mac(text: str) -> bool:
    """The one MAC syntax of the agent: six lower-case hexadecimal pairs, colon-separated
    (see `normalize_mac`)."""
    return len(text) == 17 and all(
        c == ":" if i % 3 == 2 else c in _LOWER_HEX for i, c in enumerate(text)
    )


def is_eni_id(text: str) -> bool:
    """What an ENI id may look like on any cloud (eni-0abc..., port-..., an OpenStack port
    UUID): 1-128 letters, digits, '.', '_', ':' or '-', the first a letter or digit; printable,
    no spaces, so it can be logged and matched as is."""
    return 0 < len(text) <= 128 and text[0] in _ALNUM and all(c in _ID_CHARS for c in text)


def _mac_like(text: str) -> bool:
    """Meant as a MAC ("0e:11:22", "0E-11-...") rather than an id: two or more groups of one
    or two hexadecimal digits, split by ':' or '-'.  Held to MAC syntax, so a mistyped MAC is
    an error instead of an ENI id that never matches."""
    groups = text.replace("-", ":").split(":")
    return len(groups) > 1 and all(0 < len(g) < 3 and all(c in _HEX for c in g) for g in groups)


def _host_label(label: str) -> bool:
    """One label of a host name: 1-63 letters, digits or '-', not starting or ending with '-'."""
    return (
        0 < len(label) < 64
        and label[0] != "-"
        and label[-1] != "-"
        and all(c in _LABEL_CHARS for c in label)
    )


def fits_ifname(pattern: str) -> bool:
    """No character the kernel refuses in interface names (dev_valid_name: whitespace, '/',
    ':'): an interface name pattern holding one could never match, so it is a mistake."""
    return not any(c.isspace() or c in "/:" for c in pattern)


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
    if len(host) > 253 or not all(_host_label(label) for label in labels):
        return "host is not a valid host name or IP address"
    return None


def normalize_mac(value: str) -> Optional[str]:
    """Lower-case, colon-separated MAC, or None; quotes and dashes (some clouds) are accepted."""
    mac = value.strip().strip('"').lower().replace("-", ":")
    return mac if is_mac(mac) else None


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
    if _mac_like(text.strip()):
        return None, "not a MAC (6 hexadecimal pairs, e.g. 0e:11:22:33:44:55)"
    if not is_eni_id(text.strip()):
        return None, "not a MAC or an ENI id"
    return text.strip(), ""

"""Parsing and HTTP helpers shared by the providers.

Each metadata service spells the same things differently (a JSON array on one line, one value
a line, JSON-quoted strings, a netmask instead of a prefix length), and real services differ
from their documentation in small ways.  Parsing is lenient about spelling and strict about
meaning: whatever cannot be read for sure stops the run with one line naming the metadata key
and the value, because a guess would end up as routes in the kernel.
"""

from __future__ import annotations

import ipaddress
import json
import re

from ..errors import MetadataDisabled, MetadataInvalid, MetadataUnavailable
from ..record import record
from . import memo
from .http import HttpClient, NotFound

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Optional, Sequence

    from ..config import Config


def invalid(key: str, value: object, why: str) -> MetadataInvalid:
    """The one-line error every provider raises for a value it refuses (same form as model)."""
    return MetadataInvalid(f"metadata {key} = {value!r}: {why}")


def missing(key: str, why: str) -> MetadataInvalid:
    """A key the ENI needs but the service did not publish (404 or empty)."""
    return MetadataInvalid(f"metadata {key}: missing ({why})")


def unquote(text: str) -> str:
    """A scalar as the service sent it, bare or JSON-quoted (JD Cloud documents "10.0.128.6")."""
    value = text.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            decoded = json.loads(value)
        except ValueError:
            decoded = None
        value = decoded.strip() if isinstance(decoded, str) else value[1:-1].strip()
    return value


def parse_list(text: str, key: str) -> list[str]:
    """A multi-valued leaf: a JSON array, or values one a line (or separated by commas/spaces).

    Alibaba documents `private-ipv4s` as `["192.168.0.10","192.168.0.11"]` but `ipv6s` as
    `[2408:...:e4e]` without quotes, and older services answer one value a line; all are
    accepted.  Something that starts like a JSON array but is not one (cut short, quotes out of
    place) is refused rather than split into plausible-looking pieces.
    """
    body = text.strip()
    if not body:
        return []
    if body.startswith("["):
        if not body.endswith("]"):
            raise invalid(key, text, "not a JSON array (no closing ']')")
        try:
            decoded = json.loads(body)
        except ValueError:
            inner = body[1:-1]
            if '"' in inner or "[" in inner or "]" in inner:
                raise invalid(key, text, "not a valid JSON array") from None
            items = inner.split(",")  # the unquoted form: [2408:...:e4e, 2408:...:e4f]
        else:
            if not isinstance(decoded, list) or not all(isinstance(v, str) for v in decoded):
                raise invalid(key, text, "not a JSON array of strings")
            items = decoded
    else:
        items = re.split(r"[\s,]+", body)
    return [v for v in (unquote(item) for item in items) if v]


def listing(text: str, key: str) -> list[str]:
    """Directory listing, one entry a line or a JSON array (JD Cloud), without trailing '/'."""
    return [entry.rstrip("/") for entry in parse_list(text, key) if entry.rstrip("/")]


def prefix_length(mask: str, version: int) -> Optional[int]:
    """Prefix length of a netmask (`255.255.192.0`, `ffff:ffff::`) or a bare length (`18`)."""
    text = unquote(mask).lstrip("/")
    bits = 32 if version == 4 else 128
    if text.isascii() and text.isdigit():
        length = int(text)
        return length if length <= bits else None
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if addr.version != version:
        return None
    value = int(addr)
    length = bin(value).count("1")
    contiguous = ((1 << length) - 1) << (bits - length)
    return length if value == contiguous else None


def subnet_of(ip: str, ip_key: str, mask: str, mask_key: str) -> str:
    """The subnet (CIDR) holding `ip` under `mask`: how netmask-only clouds describe a subnet."""
    try:
        addr = ipaddress.ip_address(unquote(ip))
    except ValueError:
        raise invalid(ip_key, ip, "not an IP address") from None
    length = prefix_length(mask, addr.version)
    if length is None or length == 0:
        raise invalid(mask_key, mask, f"not an IPv{addr.version} netmask")
    return str(ipaddress.ip_interface(f"{addr}/{length}").network)


@record(frozen=True)
class TokenRules:
    """An IMDSv2-style session (AWS; Alibaba's hardened mode): PUT `path` with a TTL header
    returns a token that every GET carries; a 401 means it expired (one new token, one retry).
    """

    path: str
    ttl_header: str
    token_header: str
    ttl: int = 300  # seconds: a run needs a few; a short TTL limits what a leaked token gives
    # True: a service answering 404/405 to the token call has no token mode (plain GETs)
    optional: bool = False


class MetadataService:
    """GETs below the base URL of a metadata service, with session tokens where it has them.

    Only a 404 means "no such key" (NotFound); every other failure raises MetadataUnavailable,
    so a half-read never looks like "this ENI has no secondary IPs".  `roots` are the service's
    URLs without a path; with several (AWS: IPv4, then IPv6) the first that answers the token
    call is used for the whole run.  `prefix` is the path every key lives under.
    """

    def __init__(
        self,
        config: Config,
        roots: Sequence[str],
        prefix: str = "",
        tokens: Optional[TokenRules] = None,
    ) -> None:
        self.roots = tuple(r.rstrip("/") for r in roots)
        self.prefix = prefix
        self.tokens = tokens
        self.root: Optional[str] = None if tokens else self.roots[0]
        self.token: Optional[str] = None
        self.http = HttpClient(
            config.metadata_timeout, config.metadata_deadline, config.metadata_retries
        )

    @property
    def requests_sent(self) -> int:
        return self.http.requests_sent

    def close(self) -> None:
        self.http.close()

    def _new_token(self, rules: TokenRules) -> None:
        errors = []
        for root in [self.root] if self.root else self.roots:
            url = root + rules.path
            try:
                r = self.http.request("PUT", url, headers={rules.ttl_header: str(rules.ttl)})
            except MetadataUnavailable as e:
                errors.append(str(e))
                continue  # this endpoint is unreachable: try the next one
            if r.status == 200 and r.text.strip():
                self.root, self.token = root, r.text.strip()
                memo.keep_token(self.roots, root, self.token, rules.ttl)
                return
            if r.status in (404, 405) and rules.optional:
                self.root, self.token = root, None  # no token mode here: plain GETs
                memo.keep_token(self.roots, root, "", rules.ttl)
                return
            if r.status == 403:
                raise MetadataDisabled(
                    f"metadata service disabled: {url} answered 403 to the token request"
                )
            raise MetadataUnavailable(f"metadata service: {url} answered HTTP {r.status}")
        raise MetadataUnavailable("; ".join(errors))

    def _ensure_root(self) -> None:
        if self.root is None and self.tokens is not None:
            kept = memo.token(self.roots)  # an earlier read's, still valid (memo.py)
            if kept is not None:
                self.root, self.token = kept[0], kept[1] or None
            else:
                self._new_token(self.tokens)

    def get(self, path: str) -> str:
        """GET prefix + path: the body, NotFound on 404; a 401 gets one new token, one retry."""
        self._ensure_root()
        for attempt in (1, 2):
            url = f"{self.root}{self.prefix}{path}"
            headers = {self.tokens.token_header: self.token} if self.tokens and self.token else None
            r = self.http.request("GET", url, headers=headers)
            if r.status == 200:
                return r.text
            if r.status == 404:
                raise NotFound(f"metadata service: {url} answered 404 (not published)")
            if r.status == 401 and self.tokens and self.token and attempt == 1:
                self._new_token(self.tokens)  # expired or revoked token
                continue
            if r.status == 403:
                raise MetadataDisabled(f"metadata service disabled: {url} answered 403")
            raise MetadataUnavailable(f"metadata service: {url} answered HTTP {r.status}")
        raise AssertionError("unreachable")

    def optional(self, path: str) -> Optional[str]:
        try:
            return self.get(path)
        except NotFound:
            return None

    def fixed(self, path: str, mac: str = "") -> str:
        """GET a key that cannot change while the instance runs (for `mac`'s ENI while it
        stays attached): asked once a boot while the memo is on (memo.py), else every time."""
        self._ensure_root()
        url = f"{self.root}{self.prefix}{path}"
        kept = memo.value(url)
        if kept is not None:
            return kept
        body = self.get(path)
        memo.keep(url, body, mac)
        return body

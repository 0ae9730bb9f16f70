"""The configuration's overlay on what metadata lists (README "Overlay configuration").

Per ENI, the `[[eni]]` tables replace its subnet and gateway and append IPs after the listed
ones (so the first listed IP stays the primary one), and `exclude_ips` takes the IPs inside
its networks (and the delegated prefixes overlapping them) off the ENI: they are left alone.

The result is a `Merged` record per ENI: the ENI as metadata and configuration together
describe it, with the config key each value came from (`origins`), so that validation
(validate.py) holds an added IP or an overridden gateway to exactly the rules of metadata and
names the file's key when it refuses one.  What the provider read is never changed.  Which
ENIs are overlaid at all is the scope's decision (scope.py): excluded ones are not.
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Network, IPv6Network

from .config import Config, EniOverlay, normalize_mac
from .errors import MetadataInvalid
from .log import log
from .model import RawEni, RawInstance
from .record import field, fields, record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Iterable


@record
class Merged(RawEni):
    """One ENI as metadata and the configuration describe it together (see the module)."""

    # (field, value) -> the config key that supplied the value, for error messages
    origins: dict[tuple[str, str], str] = field(default_factory=dict)
    # the ENI's IPs and prefixes that exclude_ips took off, for `show`
    left_alone: list[str] = field(default_factory=list)
    # True when ipv4s no longer starts with the first IPv4 metadata lists (the address the
    # primary ENI's DHCP client holds): exclude_ips took it, or metadata lists no IPv4 and
    # add_ipv4s supplied them.  The planner must then not take ipv4s[0] for the DHCP address.
    ipv4s_lack_primary_ip: bool = False
    # (cloud, first, last): addresses of every subnet the cloud keeps (set by validation)
    cloud_reserves: tuple[str, int, int] = ("", 0, 0)


def _copy(r: RawEni) -> Merged:
    """A copy the overlay may change: RawEni's lists and dicts copied (they hold only
    strings, so one level is the whole copy: copy.deepcopy walked every string of them)."""
    return Merged(**{f.name: _copy_value(getattr(r, f.name)) for f in fields(RawEni)})


def _copy_value(value: object) -> object:
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return value


def merge(raw: RawInstance, config: Config, excluded: set[str]) -> list[Merged]:
    """A `Merged` record for every ENI of `raw`, in its order; ENIs whose MAC is in
    `excluded` are copied as read.  A `[[eni]]` table naming two listed ENIs, or naming one
    another table names, is refused; one naming no listed ENI is a note (it may just be
    detached).  Nothing is added to an ENI that lists no IP yet: it is still settling."""
    out = [_copy(r) for r in raw.enis]
    ids = [(r, normalize_mac(r.mac), (r.eni_id or "").strip().strip('"') or None) for r in out]
    overlaid: dict[int, str] = {}  # id(Merged) -> the [[eni]] applied to it
    for overlay in config.eni:
        hits = [(r, mac) for r, mac, eni_id in ids if overlay.matches(mac, eni_id)]
        if not hits:
            log.debug(
                "%s.match = %r: metadata lists no such ENI (detached?): nothing to overlay",
                overlay.where,
                overlay.match,
            )
        for r, mac in hits:
            if id(r) in overlaid:
                raise MetadataInvalid(
                    f"{overlay.where}.match = {overlay.match!r}: names ENI {mac} "
                    f"({r.eni_id}), as {overlaid[id(r)]}.match does"
                )
            overlaid[id(r)] = overlay.where
            if mac in excluded:
                log.debug("%s: ENI %s is excluded: not overlaid", overlay.where, mac)
                continue
            _overlay_eni(r, overlay)
    nets = [ipaddress.ip_network(n) for n in config.exclude_ips]
    if nets:
        for r, mac, _ in ids:
            if mac not in excluded:
                _leave_alone(r, nets)
    return out


def lenient(texts: Iterable[str]) -> list:
    """Addresses ("10.0.2.31") and networks ("10.0.2.64/28") of unvalidated texts; the
    unparseable ones are left out (used only to protect what is left alone, never to act)."""
    out = []
    for text in texts:
        text = text.strip().strip('"')
        try:
            out.append(ipaddress.ip_network(text) if "/" in text else ipaddress.ip_address(text))
        except ValueError:
            continue
    return out


def _overlay_eni(r: Merged, overlay: EniOverlay) -> None:
    """One [[eni]] table onto one listed ENI (see `apply_overlay`)."""
    if overlay.mtu is not None:
        r.mtu = str(overlay.mtu)
        r.origins[("mtu", r.mtu)] = f"{overlay.where}.mtu"
    for v in ("4", "6"):
        subnet = getattr(overlay, f"ipv{v}_subnet")
        gateway = getattr(overlay, f"ipv{v}_gateway")
        if subnet is not None:
            if gateway is None and not getattr(r, f"ipv{v}_gateway"):
                # A wider or narrower prefix does not move the router: keep the gateway the
                # listed subnet implies (the first host, as `_family` would have derived).
                listed = lenient(getattr(r, f"ipv{v}_subnets")[:1])
                if listed and isinstance(listed[0], (IPv4Network, IPv6Network)):
                    implied = str(listed[0].network_address + 1)
                    setattr(r, f"ipv{v}_gateway", implied)
                    r.origins[(f"ipv{v}_gateway", implied)] = (
                        f"{overlay.where}.ipv{v}_gateway (unset: the router of the listed "
                        f"subnet {listed[0]})"
                    )
            setattr(r, f"ipv{v}_subnets", [subnet])
            r.origins[(f"ipv{v}_subnets", subnet)] = f"{overlay.where}.ipv{v}_subnet"
        if gateway is not None:
            setattr(r, f"ipv{v}_gateway", gateway)
            r.origins[(f"ipv{v}_gateway", gateway)] = f"{overlay.where}.ipv{v}_gateway"
        added = getattr(overlay, f"add_ipv{v}s")
        if not added:
            continue
        if not r.ipv4s and not r.ipv6s:
            log.debug(
                "%s: ENI %s lists no IP yet (settling): add_ipv%ss waits for it",
                overlay.where,
                r.mac,
                v,
            )
            continue
        ips: list[str] = getattr(r, f"ipv{v}s")
        if v == "4" and not ips:
            r.ipv4s_lack_primary_ip = True  # added IPs are never the DHCP client's
        listed = set(lenient(ips))
        for text in added:
            if ipaddress.ip_address(text) not in listed:
                ips.append(text)
                r.origins[(f"ipv{v}s", text)] = f"{overlay.where}.add_ipv{v}s"


def _leave_alone(r: Merged, nets: list) -> None:
    """Take the IPs inside `nets`, and the prefixes overlapping them, off the ENI."""

    def excluded(item: object) -> bool:
        if isinstance(item, (IPv4Network, IPv6Network)):
            return any(item.version == n.version and item.overlaps(n) for n in nets)
        return any(item in n for n in nets)

    for name in ("ipv4s", "ipv6s", "ipv4_prefixes", "ipv6_prefixes"):
        keep = []
        for i, text in enumerate(getattr(r, name)):
            parsed = lenient([text])
            if parsed and excluded(parsed[0]):
                r.left_alone.append(str(parsed[0]))
                if name == "ipv4s" and i == 0:
                    r.ipv4s_lack_primary_ip = True
            else:
                keep.append(text)  # unparseable ones stay, to be refused by validation
        setattr(r, name, keep)

"""What eni-guest manages, and what it leaves alone: one decision per ENI, link and IP.

Every part of the agent needs the same answers, and they must never disagree: the planner
(what to configure, what it must not remove), the settle engine behind `hotplug add` and the
watch daemon (is this NIC an ENI to configure, one to wait for, or one to ignore), the
NetworkManager/networkd drop-ins (which NICs the distro must keep off) and `show` (why an ENI
is not configured).  So they are decided here, once per run, from the validated metadata
(model.Instance, which already holds the configuration's overlay), the configuration and the
kernel's links, and everyone reads the result.

Per ENI metadata lists, one status with its reason:

  managed    eni-guest configures it; `link` is its NIC, or None with `link_note` saying why
             not now (no interface with its MAC yet, enslaved to a bond, several candidates):
             nothing of it is then removed either;
  excluded   the configuration says to leave it alone (`exclude_enis`, or its NIC's name
             matches `exclude_interfaces`): neither configured nor removed;
  unsettled  listed but not readable in full yet (just attached): not configured, and while
             any ENI is unsettled nothing at all is removed (the read is incomplete).

Per link: a link whose name matches `exclude_interfaces` is left alone even when it is no
ENI (a CNI bridge's veth, say).  Per IP: the networks of `exclude_ips`.
"""

from __future__ import annotations

from ipaddress import ip_network

from .config import Config, normalize_mac
from .model import Instance, RawEni, RawInstance
from .record import record
from .state import Link, nics_with_mac

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Iterable, Optional, Union

    from .model import IPNetwork

MANAGED, EXCLUDED, UNSETTLED = "managed", "excluded", "unsettled"
UNLISTED = "unlisted"  # a MAC metadata does not list at all


@record(frozen=True)
class EniScope:
    mac: str
    status: str  # MANAGED | EXCLUDED | UNSETTLED
    reason: str = ""  # why excluded or unsettled
    link: Optional[Link] = None  # the NIC to configure (managed ENIs) or to show (excluded)
    link_note: str = ""  # why a managed ENI has no usable NIC now
    nics: tuple[Link, ...] = ()  # every link that could be its NIC


@record(frozen=True)
class Scope:
    enis: tuple[EniScope, ...] = ()
    links_left_alone: tuple[tuple[int, str], ...] = ()  # (ifindex, exclude_interfaces pattern)
    excluded_ips: tuple[IPNetwork, ...] = ()

    def eni(self, mac: str) -> Optional[EniScope]:
        return next((e for e in self.enis if e.mac == mac), None)

    def status(self, mac: str) -> tuple[str, str]:
        """(MANAGED | EXCLUDED | UNSETTLED | UNLISTED, why) for a MAC."""
        e = self.eni(mac)
        return (UNLISTED, "") if e is None else (e.status, e.reason)

    def left_alone(self, index: int) -> bool:
        """A link whose state, addresses and routes eni-guest must not touch."""
        if any(i == index for i, _ in self.links_left_alone):
            return True
        return any(
            e.status != MANAGED or e.link is None for e in self.enis if index in _indexes(e.nics)
        )

    def keep_off_macs(self, primary_mac: str) -> list[str]:
        """The NICs NetworkManager and networkd must leave alone: every secondary ENI eni-guest
        manages or waits for (a just-attached NIC is exactly what they would grab), not the
        excluded ones (whoever manages them, often the distro itself, must keep them)."""
        return [e.mac for e in self.enis if e.status != EXCLUDED and e.mac != primary_mac]

    def excluded_macs(self) -> list[str]:
        """The ENIs left to whoever manages them (often the distro): excluded by id or name."""
        return [e.mac for e in self.enis if e.status == EXCLUDED]


def _indexes(links: Iterable[Link]) -> set[int]:
    return {link.index for link in links}


def _name_excluded(nics: tuple[Link, ...], config: Config) -> Optional[tuple[Link, str]]:
    for link in nics:
        pattern = config.excluded_interface(link.name)
        if pattern is not None:
            return link, f"interface {link.name} matches exclude_interfaces {pattern!r}"
    return None


def _managed(mac: str, eni_id: str, nics: tuple[Link, ...], config: Config) -> EniScope:
    """A validated ENI: managed on its one usable NIC, or without one (and why)."""
    by_name = _name_excluded(nics, config)
    if by_name is not None and len(nics) == 1:
        return EniScope(mac, EXCLUDED, by_name[1], link=by_name[0], nics=nics)
    if len(nics) == 1 and not nics[0].master:
        return EniScope(mac, MANAGED, link=nics[0], nics=nics)
    if not nics:
        note = f"{eni_id} ({mac}): no interface with this MAC yet"
    elif len(nics) == 1:
        note = f"{eni_id} ({mac}): {nics[0].name} is enslaved to another interface; left alone"
    else:
        names = ", ".join(link.name for link in nics)
        note = f"{eni_id} ({mac}): several interfaces carry this MAC ({names})"
    return EniScope(mac, MANAGED, link_note=note, nics=nics)


def of_instance(instance: Instance, config: Config, links: Iterable[Link]) -> Scope:
    """The scope of a model built without one (by hand, in tests): its ENIs' statuses as the
    model holds them, their NICs and the links left alone as `links` say."""
    links = tuple(links)
    out: list[EniScope] = []
    for eni in instance.enis:
        out.append(_managed(eni.mac, eni.eni_id, tuple(nics_with_mac(links, eni.mac)), config))
    for x in instance.excluded:
        nics = tuple(nics_with_mac(links, x.mac))
        out.append(
            EniScope(x.mac, EXCLUDED, x.reason, link=nics[0] if len(nics) == 1 else None, nics=nics)
        )
    for u in instance.unsettled:
        nics = tuple(nics_with_mac(links, u.mac))
        by_name = _name_excluded(nics, config)
        if by_name is not None:  # left alone by name: nothing to wait for either
            out.append(EniScope(u.mac, EXCLUDED, by_name[1], link=by_name[0], nics=nics))
        else:
            out.append(EniScope(u.mac, UNSETTLED, u.reason, nics=nics))
    return Scope(tuple(out), _alone(config, links), instance.excluded_ips)


def _alone(config: Config, links: tuple[Link, ...]) -> tuple[tuple[int, str], ...]:
    return tuple(
        (link.index, pattern)
        for link in links
        if (pattern := config.excluded_interface(link.name)) is not None
    )


def of(subject: Union[Instance, Scope], config: Optional[Config] = None) -> Scope:
    """A scope as is, the one an instance was built with, or (a model built by hand) its
    statuses without looking at links: the settle engine judges one MAC, whose link it has
    already judged by name."""
    if isinstance(subject, Scope):
        return subject
    if subject.scope is not None:
        return subject.scope
    return of_instance(subject, config or Config(), ())


# ---------------------------------------------------------------- from what was read


def decide(raw: RawInstance, config: Config, links: Iterable[Link]) -> Scope:
    """The scope of one run, from what metadata listed (before validation: what is left
    alone is not validated), the configuration and the kernel's links.

    ENIs whose MAC is not a MAC are left out: validation refuses them with the key.
    """
    links = tuple(links)
    primary = normalize_mac(raw.primary_mac)
    out: list[EniScope] = []
    for r in raw.enis:
        mac = normalize_mac(r.mac)
        if mac is None:
            continue
        out.append(_read_eni(r, mac, mac == primary, config, tuple(nics_with_mac(links, mac))))
    nets = tuple(ip_network(n) for n in config.exclude_ips)
    return Scope(tuple(out), _alone(config, links), nets)


def _read_eni(
    r: RawEni, mac: str, primary: bool, config: Config, nics: tuple[Link, ...]
) -> EniScope:
    eni_id = _text(r.eni_id)
    entry = config.excluded_eni(mac, eni_id or None)
    if entry is not None:
        return EniScope(mac, EXCLUDED, f"exclude_enis {entry!r}", nics=nics, link=_one(nics))
    by_name = _name_excluded(nics, config)
    if by_name is not None and len(nics) == 1:
        return EniScope(mac, EXCLUDED, by_name[1], link=by_name[0], nics=nics)
    why = _not_settled(r, primary)
    if why is None and _needs_its_nic(r, mac, eni_id, config):
        why = _nic_missing(mac, nics)
    if why is not None:
        return EniScope(mac, UNSETTLED, why, nics=nics)
    return _managed(mac, eni_id, nics, config)


def _one(nics: tuple[Link, ...]) -> Optional[Link]:
    return nics[0] if len(nics) == 1 else None


def _text(value: Optional[str]) -> str:
    return (value or "").strip().strip('"')


def _number(value: Optional[str]) -> Optional[int]:
    text = _text(value)
    return int(text) if text.isascii() and text.isdigit() else None


def _not_settled(r: RawEni, primary: bool) -> Optional[str]:
    """Why metadata does not describe this ENI in full yet (just attached), or None.

    Right after a hot attach AWS lists the MAC before its interface id, reads device-number 0
    until the attachment propagates, and lists the IPs last.  A value that is there but
    malformed is not "settling": validation refuses it, naming the key.
    """
    if not _text(r.eni_id):
        return "no interface id yet"
    card = _number(r.network_card) if r.network_card is not None else 0
    if r.device_number is None and r.has_device_numbers:
        return "no device number yet"
    device = _number(r.device_number) if r.device_number is not None else None
    if device == 0 and card == 0 and not primary and r.has_device_numbers:
        return "device-number reads 0 on a secondary ENI: attachment still settling"
    if not r.ipv4s and not r.ipv6s:
        return "no private IP listed yet"
    return None


def _needs_its_nic(r: RawEni, mac: str, eni_id: str, config: Config) -> bool:
    """True for an ENI whose subnet and gateway only its NIC can tell (JD Cloud: DHCP)."""
    if not r.subnet_from_dhcp or (r.ipv4_subnets and r.ipv4_gateway):
        return False
    given = config.overlay_for(mac, eni_id or None)
    return not (given and given.ipv4_subnet and given.ipv4_gateway)


def _nic_missing(mac: str, nics: tuple[Link, ...]) -> Optional[str]:
    """Why the NIC a DHCP probe needs is not usable now, or None when it is."""
    if not nics:
        return f"dhcp: no network interface has MAC {mac} (not attached yet)"
    if len(nics) > 1:
        names = ", ".join(link.name for link in nics)
        return f"dhcp: MAC {mac} is on several interfaces ({names})"
    if nics[0].master:
        return f"dhcp: {nics[0].name} ({mac}) is enslaved to another link"
    return None

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

from dataclasses import dataclass
from typing import Iterable, Optional, Union

from .config import Config
from .model import Instance, IPNetwork
from .state import Link, nics_with_mac

MANAGED, EXCLUDED, UNSETTLED = "managed", "excluded", "unsettled"
UNLISTED = "unlisted"  # a MAC metadata does not list at all


@dataclass(frozen=True)
class EniScope:
    mac: str
    status: str  # MANAGED | EXCLUDED | UNSETTLED
    reason: str = ""  # why excluded or unsettled
    link: Optional[Link] = None  # the NIC to configure (managed ENIs) or to show (excluded)
    link_note: str = ""  # why a managed ENI has no usable NIC now
    nics: tuple[Link, ...] = ()  # every link that could be its NIC


@dataclass(frozen=True)
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


def decide(instance: Instance, config: Config, links: Iterable[Link]) -> Scope:
    """The scope of one run: every listed ENI's status, the links and IPs left alone."""
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
    alone = tuple(
        (link.index, pattern)
        for link in links
        if (pattern := config.excluded_interface(link.name)) is not None
    )
    return Scope(tuple(out), alone, instance.excluded_ips)


def of(subject: Union[Instance, Scope], config: Optional[Config] = None) -> Scope:
    """A scope as is, or the scope of an instance without looking at links (the settle engine
    judges one MAC, whose link it already has judged by name)."""
    if isinstance(subject, Scope):
        return subject
    return decide(subject, config or Config(), ())

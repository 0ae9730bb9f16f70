"""Addresses other programs put on ENI links, and floating IPs (keepalived, a HaVip agent).

An address someone else adds on an ENI's link (no eni-guest mark, docs/routing.md "Marks"),
inside one of that ENI's subnets, is one the VPC routes to that ENI: keepalived's VIP, a
HaVip agent's, an administrator's `ip addr add`.  Until it has its `from IP lookup <ENI
table>` rule its replies leave through the primary's table and the VPC's source check drops
them, so the rule follows the address, not metadata.  Always, with no setting:

* such an address gets the ENI's per-IP rule (priority_base + 1 + slot, the ENI's table)
  while it is there, whether metadata lists it or not, and loses it when it goes.  The watch
  daemon follows address events and reconciles at once (watch_floating.py); `eni-guest
  apply` finds it in the kernel.  Not when exclude_ips covers it, nor when metadata lists it
  on another ENI of this VM (metadata decides where it belongs), nor outside the subnets;
* the address itself is never removed: only marked addresses are eni-guest's (plan.py).

The networks of the `floating_ips` setting say which addresses are VIPs that move between
VMs.  For them, in addition, the address is never added by eni-guest either, and never
removed even when it carries eni-guest's marks (an earlier run added it): keepalived decides
where it is.  A VIP that metadata still lists on the old master (metadata lags) is then not
put back there, and its rule needs the address.

Pure: desired state in, desired state out; plan.py calls `want` once per configured ENI.
"""

from __future__ import annotations

from functools import lru_cache
from ipaddress import ip_network

from .changes import RuleChange
from .config import Config
from .desired import Desired, host, priority_of, table_of
from .model import Eni
from .state import Addr, Link

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Callable, Iterable, Sequence

    from .model import IPAddress, IPNetwork


@lru_cache(maxsize=8)
def networks(floating_ips: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """The `floating_ips` setting as networks (validated by config.py)."""
    return tuple(ip_network(n) for n in floating_ips)


def is_floating(ip: IPAddress, config: Config) -> bool:
    return any(ip in n for n in networks(config.floating_ips))


def _keep_vips_to_keepalived(
    d: Desired, eni: Eni, link: Link, on_link: Sequence[Addr], config: Config
) -> None:
    """floating_ips: listed VIPs lose their address (never ours to add) and keep their rule
    only while the address is on the link."""
    table, prio = table_of(eni, config), priority_of(eni, config)
    here = {a.ip for a in on_link}
    for key in [k for k in d.addrs if k[0] == link.index and is_floating(k[1], config)]:
        del d.addrs[key]  # keepalived's to add and remove
    for ip in eni.ips:
        if is_floating(ip, config) and ip not in here:
            d.rules.pop(RuleChange("add", ip.version, prio, table, host(ip)).key(), None)


def want(
    d: Desired,
    eni: Eni,
    link: Link,
    on_link: Sequence[Addr],
    config: Config,
    elsewhere: Callable[[IPAddress], bool],
    excluded: Iterable[IPNetwork] = (),
) -> list[str]:
    """Adjust what one configured ENI wants for others' addresses on its link; returns notes.

    `on_link`: the addresses the kernel holds on the ENI's link;
    `elsewhere(ip)`: whether metadata lists the address on another of this VM's ENIs (asked
    only for an address on the link that metadata does not list there);
    `excluded`: the networks of exclude_ips.  Unlisted addresses on the link inside the ENI's
    subnets that are not eni-guest's (or are floating IPs) get the ENI's rule.
    """
    if config.floating_ips:
        _keep_vips_to_keepalived(d, eni, link, on_link, config)
    table, prio = table_of(eni, config), priority_of(eni, config)
    excluded = tuple(excluded)
    tables = {(fam, t) for fam, t, _ in d.routes}
    notes = []
    listed = set(eni.ips)  # (a tuple's `in`: 50 comparisons an address, 15 ENIs a plan)
    for a in on_link:
        if a.ip in listed or any(a.ip in n for n in eni.prefixes):
            continue  # metadata's: want_eni gave it its rule
        floating = is_floating(a.ip, config)
        if a.marked(config.protocol) and not floating:
            continue  # ours and unlisted: it is removed, and no rule
        fam = a.ip.version
        subnets = eni.ipv4_subnets if fam == 4 else eni.ipv6_subnets
        if not any(a.ip in n for n in subnets) or (fam, table) not in tables:
            continue  # not in its subnet, or the ENI has no table for the family
        if any(a.ip in n for n in excluded):
            continue  # exclude_ips: left alone, rule and all
        what = "floating IP" if floating else "address (not eni-guest's)"
        if elsewhere(a.ip):
            notes.append(f"{what} {a.ip} on {link.name}: metadata lists it on another ENI")
            continue
        rule = RuleChange("add", fam, prio, table, host(a.ip), eni=eni.mac)
        d.rules.setdefault(rule.key(), rule)
        notes.append(f"{what} {a.ip} on {link.name}: routed through table {table}")
    return notes

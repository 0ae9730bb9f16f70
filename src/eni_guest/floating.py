"""Floating IPs: addresses that another program moves between VMs (keepalived, a HaVip agent).

A VRRP pair keeps a virtual IP (VIP) on whichever VM is master: keepalived adds the address to
an ENI's link when it becomes master and deletes it when it steps down, and a notify script
asks the cloud to route the IP to that ENI.  Metadata follows later (seconds, on some clouds
a minute).  Until the VIP has its `from VIP lookup <ENI table>` rule its replies leave through
the primary's table and the VPC's source check drops them, so the rule must follow the
address, not metadata.

The networks of the `floating_ips` setting say which addresses are such VIPs.  For them:

* an address inside them on a configured ENI's link, inside that ENI's subnet, gets the ENI's
  per-IP rule (priority_base + 1 + slot, the ENI's table) while it is there, whether metadata
  lists it or not, and loses it when it goes.  The watch daemon follows address events and
  reconciles at once (watch_floating.py); `eni-guest apply` finds it in the kernel;
* the address itself is never added and never removed by eni-guest, whether metadata lists it
  or not, marked or not: keepalived decides where it is.  A VIP that metadata still lists on
  the old master (metadata lags) is not put back there.

An IP that metadata lists on another ENI of this VM is left to metadata.  Pure: desired state in,
desired state out; plan.py calls `want` once per configured ENI.
"""

from __future__ import annotations

from functools import lru_cache
from ipaddress import ip_network
from typing import Iterable

from .changes import RuleChange
from .config import Config
from .desired import Desired, host, priority_of, table_of
from .model import Eni, IPAddress, IPNetwork
from .state import KernelState, Link


@lru_cache(maxsize=8)
def networks(floating_ips: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """The `floating_ips` setting as networks (validated by config.py)."""
    return tuple(ip_network(n) for n in floating_ips)


def is_floating(ip: IPAddress, config: Config) -> bool:
    return any(ip in n for n in networks(config.floating_ips))


def want(
    d: Desired,
    eni: Eni,
    link: Link,
    state: KernelState,
    config: Config,
    listed_elsewhere: Iterable[IPAddress],
) -> list[str]:
    """Adjust what one configured ENI wants for the floating IPs; returns notes.

    Listed floating IPs lose their address (never ours to add) and keep their rule only while
    the address is on the link; unlisted floating addresses on the link inside the ENI's
    subnet get the ENI's rule.
    """
    if not config.floating_ips:
        return []
    table, prio = table_of(eni, config), priority_of(eni, config)
    here = {a.ip for a in state.addrs if a.index == link.index}
    notes = []
    for key in [k for k in d.addrs if k[0] == link.index and is_floating(k[1], config)]:
        del d.addrs[key]  # keepalived's to add and remove
    for ip in eni.ips:
        if is_floating(ip, config) and ip not in here:
            d.rules.pop(RuleChange("add", ip.version, prio, table, host(ip)).key(), None)
    elsewhere = set(listed_elsewhere)
    tables = {(fam, t) for fam, t, _ in d.routes}
    for a in state.addrs:
        if a.index != link.index or a.ip in eni.ips or not is_floating(a.ip, config):
            continue
        fam = a.ip.version
        subnets = eni.ipv4_subnets if fam == 4 else eni.ipv6_subnets
        if not any(a.ip in n for n in subnets) or (fam, table) not in tables:
            continue  # not in its subnet, or the ENI has no table for the family
        if a.ip in elsewhere:
            notes.append(f"floating IP {a.ip} on {link.name}: metadata lists it on another ENI")
            continue
        rule = RuleChange("add", fam, prio, table, host(a.ip), eni=eni.mac)
        d.rules.setdefault(rule.key(), rule)
        notes.append(f"floating IP {a.ip} on {link.name}: routed through table {table}")
    return notes

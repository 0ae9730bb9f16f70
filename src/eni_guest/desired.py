"""What the configured ENIs want in the kernel: the planner's step 1 (plan.py).

Per ENI slot s (docs/routing.md, "The layout"): the ENI's link in our interface group (a
secondary one up, with its MTU: `link_mtu`), its IPs as host addresses (with our metric), table
`table_base + s` with its subnet routes and a default route via its gateway, a
`from IP lookup table` rule per IP and delegated prefix at `priority_base + 1 + s`, and the
shared `lookup main suppress_ifgroup` rule at `priority_base`.  Each object is the add that
would create it, keyed the way the kernel tells objects apart.
"""

from __future__ import annotations

from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network

from .changes import ALL_ENIS, MAIN_TABLE, AddrChange, LinkChange, RouteChange, RuleChange
from .config import Config
from .config_eni import MTU_MIN_IPV6
from .model import Eni
from .record import field, record
from .state import Link, Rule, addr_metric

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from .model import IPAddress, IPNetwork

DEFAULT4 = IPv4Network("0.0.0.0/0")
DEFAULT6 = IPv6Network("::/0")


@lru_cache(maxsize=8192)
def host(ip: IPAddress) -> IPNetwork:
    """The host network of an address (10.0.1.20/32): what a per-IP rule matches.  Built
    from the integer (~6 us) rather than from text (~25 us), and kept: a plan asks for 1500
    of them, and a first apply plans twice (apply, then verify)."""
    if ip.version == 4:
        return IPv4Network((int(ip), 32))
    return IPv6Network((int(ip), 128))


def table_of(eni: Eni, config: Config) -> int:
    return config.table_base + eni.slot


def priority_of(eni: Eni, config: Config) -> int:
    return config.priority_base + 1 + eni.slot


@record
class Desired:
    """What the configured ENIs want, one mapping per object kind (key -> the add)."""

    links: list[LinkChange] = field(default_factory=list)
    addrs: dict[tuple[int, IPAddress], AddrChange] = field(default_factory=dict)
    routes: dict[tuple[int, int, IPNetwork], RouteChange] = field(default_factory=dict)
    rules: dict[Rule, RuleChange] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def want_link(d: Desired, eni: Eni, link: Link, config: Config) -> None:
    mac = eni.mac
    if eni.primary:
        # Only the group: never its state, MTU or DHCP address.
        if eni.mtu is not None and link.mtu != eni.mtu:
            d.warnings.append(
                f"primary ENI {link.name} has MTU {link.mtu}, its metadata or [[eni]] table "
                f"says {eni.mtu}: left alone, the primary's MTU is its DHCP client's (set it "
                "in the distro's network configuration)"
            )
        if link.group == 0:
            d.links.append(LinkChange(link.index, link.name, group=config.interface_group, eni=mac))
        elif link.group != config.interface_group:
            d.warnings.append(
                f"primary ENI {link.name} is in interface group {link.group}, set by something "
                f"else; left alone, so main-table routes via {link.name} still win for ENI "
                f"addresses: move it to group 0 or set interface_group = {link.group}"
            )
        return
    mtu = link_mtu(d, eni, link, config)
    change = LinkChange(
        link.index,
        link.name,
        group=config.interface_group if link.group != config.interface_group else None,
        up=True if not link.up else None,
        mtu=mtu if mtu and link.mtu != mtu else None,
        eni=mac,
    )
    if (change.group, change.up, change.mtu) != (None, None, None):
        d.links.append(change)


def link_mtu(d: Desired, eni: Eni, link: Link, config: Config) -> int:
    """A secondary ENI's MTU: its [[eni]] table's or metadata's (validated: at least 1280 with
    IPv6), else the global `mtu`; 0 leaves it to the driver.  A global `mtu` below 1280 is
    not set on an ENI with IPv6 addresses (IPv6 needs 1280): a warning says so."""
    if eni.mtu is not None:
        return eni.mtu
    if config.mtu and config.mtu < MTU_MIN_IPV6 and config.ipv6 and eni.ipv6s:
        d.warnings.append(
            f"mtu = {config.mtu} is not set on {link.name} ({eni.eni_id}): it has IPv6 "
            f"addresses, and IPv6 needs an MTU of at least {MTU_MIN_IPV6}"
        )
        return 0
    return config.mtu


def want_eni(d: Desired, eni: Eni, link: Link, config: Config) -> None:
    """Everything one configured ENI wants: its link, addresses, table and rules."""
    table, prio, mac = table_of(eni, config), priority_of(eni, config), eni.mac
    metric = addr_metric(config.protocol)
    want_link(d, eni, link, config)
    for fam in (4, 6) if config.ipv6 else (4,):
        ips = [ip for ip in eni.ips if ip.version == fam]
        prefixes = [p for p in eni.prefixes if p.version == fam]
        if not ips and not prefixes:
            continue
        for i, ip in enumerate(ips):
            if eni.primary and fam == 4 and i == 0 and not eni.ipv4s_lack_primary_ip:
                continue  # the primary IP belongs to the DHCP client
            d.addrs[(link.index, ip)] = AddrChange(
                "add", link.index, link.name, ip, ip.max_prefixlen, eni=mac, metric=metric
            )
        subnets = eni.ipv4_subnets if fam == 4 else eni.ipv6_subnets
        gateway = eni.ipv4_gateway if fam == 4 else eni.ipv6_gateway
        for net in subnets:
            d.routes[(fam, table, net)] = RouteChange(
                "add", table, net, link.index, link.name, eni=mac
            )
        if gateway is not None:
            default = DEFAULT4 if fam == 4 else DEFAULT6
            d.routes[(fam, table, default)] = RouteChange(
                "add", table, default, link.index, link.name, gateway, eni=mac
            )
        for src in [host(ip) for ip in ips] + prefixes:
            rule = RuleChange("add", fam, prio, table, src, eni=mac)
            d.rules[rule.key()] = rule
        shared = RuleChange(
            "add", fam, config.priority_base, MAIN_TABLE, None, config.interface_group, ALL_ENIS
        )
        d.rules.setdefault(shared.key(), shared)

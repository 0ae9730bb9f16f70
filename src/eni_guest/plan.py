"""The planner: (instance model, config, kernel state) -> ordered list of changes.  Pure.

Layout (see README "How it routes"), per ENI slot s, table T = table_base + s:
  * table T: the ENI's subnet routes on its link, and a default route via its gateway;
  * rule `lookup main suppress_ifgroup G` at priority_base (one per family): main-table
    routes win unless they leave through an ENI link (all ENI links are in group G), so
    Docker/CNI bridges, VPNs and the administrator's routes stay reachable from every source;
  * rule `from IP lookup T` at priority_base + 1 + s for every IP (and delegated prefix)
    of the ENI: everything else from that IP leaves through the ENI that owns it.
ENI addresses are host addresses (/32, /128) without a prefix route, so the main table never
learns a second route to a VPC subnet and a DHCP renewal on the primary cannot take them along.

Safety rules enforced here: only what carries our marks is changed or removed; nothing is
removed unless the metadata read was complete; adds come before deletes, so an IP moving
between ENIs never loses its route; the primary ENI's link and DHCP address are left alone.

What the configuration excludes (README "Overlay configuration") is "left alone": neither
configured nor removed.  Excluded ENIs and links whose name matches `exclude_interfaces` are
handled like a listed ENI whose NIC cannot be used (nothing of them removed: addresses on
their link, routes of their table, rules from their IPs or into their table, the link's
group); addresses and rules of ours inside an `exclude_ips` network stay too, even when
metadata no longer lists the IP: the operator said eni-guest must not manage them, and
deleting them would be exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Optional, Union

from .config import Config
from .model import Eni, Excluded, Instance, IPAddress, IPNetwork
from .state import KernelState, Link, Rule

MAIN_TABLE = 254
ALL_ENIS = "*"  # the `eni` tag of changes every ENI depends on
DEFAULT4 = IPv4Network("0.0.0.0/0")
DEFAULT6 = IPv6Network("::/0")


def _fam(x: Union[IPAddress, IPNetwork]) -> int:
    return x.version


def _host(ip: IPAddress) -> IPNetwork:
    return ip_network(f"{ip}/{ip.max_prefixlen}")


@dataclass(frozen=True)
class LinkChange:
    index: int
    ifname: str
    group: Optional[int] = None
    up: Optional[bool] = None
    mtu: Optional[int] = None
    eni: str = ""  # MAC of the ENI this change is for ("" for shared items)
    op: str = "set"

    def describe(self) -> str:
        parts = [f"link set dev {self.ifname}"]
        if self.up is not None:
            parts.append("up" if self.up else "down")
        if self.group is not None:
            parts.append(f"group {self.group}")
        if self.mtu is not None:
            parts.append(f"mtu {self.mtu}")
        return " ".join(parts)


@dataclass(frozen=True)
class AddrChange:
    op: str  # "add" | "del"
    index: int
    ifname: str
    ip: IPAddress
    prefixlen: int
    eni: str = ""

    def describe(self) -> str:
        extra = " noprefixroute" if self.op == "add" else ""
        if self.op == "add" and self.ip.version == 6:
            extra += " nodad"
        return f"addr {self.op} {self.ip}/{self.prefixlen} dev {self.ifname}{extra}"


@dataclass(frozen=True)
class RouteChange:
    op: str  # "add" (none of ours at this table+destination) | "replace" (ours differs) | "del"
    table: int
    dst: IPNetwork
    oif: int
    ifname: str
    gateway: Optional[IPAddress] = None
    eni: str = ""

    @property
    def family(self) -> int:
        return self.dst.version

    def describe(self) -> str:
        # `ip` syntax (also valid in `ip -batch`): the family follows from the addresses
        dst = "default" if self.dst.prefixlen == 0 else str(self.dst)
        via = f" via {self.gateway}" if self.gateway is not None else ""
        scope = " onlink" if self.gateway is not None else " scope link"
        return f"route {self.op} {dst}{via} dev {self.ifname}{scope} table {self.table}"


@dataclass(frozen=True)
class RuleChange:
    op: str  # "add" | "del"
    family: int
    priority: int
    table: int
    src: Optional[IPNetwork] = None
    suppress_ifgroup: Optional[int] = None
    eni: str = ""

    def describe(self) -> str:
        if self.src is not None:
            host = self.src.prefixlen == self.src.max_prefixlen
            frm = f"from {self.src.network_address if host else self.src}"
        else:
            frm = "from all" if self.family == 4 else "from ::/0"
        table = "main" if self.table == MAIN_TABLE else str(self.table)
        sup = f" suppress_ifgroup {self.suppress_ifgroup}" if self.suppress_ifgroup else ""
        return f"rule {self.op} {frm} lookup {table}{sup} priority {self.priority}"

    def key(self) -> Rule:
        return Rule(self.family, self.priority, self.table, self.src, self.suppress_ifgroup)


Change = Union[LinkChange, AddrChange, RouteChange, RuleChange]


@dataclass(frozen=True)
class EniPlan:
    """Where one ENI lives in the kernel; `link` is None until its NIC shows up."""

    eni: Eni
    link: Optional[Link]
    table: int
    priority: int
    # Why the ENI is left alone although metadata lists it and its link is here (the link's
    # name matches exclude_interfaces); None when it is configured.
    excluded: Optional[str] = None


@dataclass(frozen=True)
class ExcludedPlan:
    """An ENI the configuration excludes and where it is in the kernel (for `show`)."""

    excluded: Excluded
    link: Optional[Link]
    table: Optional[int]  # None when its slot cannot be known (e.g. no device number yet)


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    enis: tuple[EniPlan, ...]
    notes: tuple[str, ...] = ()  # why something was not done (unsettled ENIs, missing NICs)
    removals_withheld: bool = False
    warnings: tuple[str, ...] = ()  # problems an operator must fix: logged on every run
    excluded: tuple[ExcludedPlan, ...] = ()  # ENIs excluded by the configuration

    def in_sync(self, mac: str) -> bool:
        """No change pending for this ENI, nor for what every ENI relies on (the shared rule)."""
        return not any(c.eni in (mac, ALL_ENIS) for c in self.changes)


def table_of(eni: Eni, config: Config) -> int:
    return config.table_base + eni.slot


def priority_of(eni: Eni, config: Config) -> int:
    return config.priority_base + 1 + eni.slot


def match_links(instance: Instance, state: KernelState) -> tuple[dict[str, Link], list[str]]:
    """ENI MAC -> its kernel link, by MAC only (names and order mean nothing to clouds)."""
    notes: list[str] = []
    by_mac: dict[str, list[Link]] = {}
    for link in state.links:
        if link.could_be_nic:
            by_mac.setdefault(link.mac, []).append(link)
    found: dict[str, Link] = {}
    for eni in instance.enis:
        links = by_mac.get(eni.mac, [])
        if len(links) == 1:
            if links[0].master:
                notes.append(
                    f"{eni.eni_id} ({eni.mac}): {links[0].name} is enslaved to another "
                    "interface; left alone"
                )
                continue
            found[eni.mac] = links[0]
        elif not links:
            notes.append(f"{eni.eni_id} ({eni.mac}): no interface with this MAC yet")
        else:
            names = ", ".join(link.name for link in links)
            notes.append(f"{eni.eni_id} ({eni.mac}): several interfaces carry this MAC ({names})")
    return found, notes


@dataclass
class _Desired:
    links: list[LinkChange] = field(default_factory=list)
    addrs: dict[tuple[int, IPAddress], AddrChange] = field(default_factory=dict)
    routes: dict[tuple[int, int, IPNetwork], RouteChange] = field(default_factory=dict)
    rules: dict[Rule, RuleChange] = field(default_factory=dict)
    # things that belong to listed ENIs we could not configure now: never removed
    keep_rules_from: set[IPNetwork] = field(default_factory=set)
    keep_tables: set[int] = field(default_factory=set)
    keep_links: set[int] = field(default_factory=set)
    # ...and to what the configuration excludes: rules into these tables, routes through
    # these links, addresses and rules inside these networks
    keep_rule_tables: set[int] = field(default_factory=set)
    keep_oifs: set[int] = field(default_factory=set)
    keep_nets: tuple[IPNetwork, ...] = ()
    warnings: list[str] = field(default_factory=list)

    def keeps_rule(self, r: Rule) -> bool:
        if r.src is not None and (
            r.src in self.keep_rules_from
            or any(r.src.version == n.version and r.src.overlaps(n) for n in self.keep_nets)
        ):
            return True
        return r.table in self.keep_rule_tables


def _want_eni(d: _Desired, eni: Eni, link: Link, config: Config) -> None:
    table, prio, mac = table_of(eni, config), priority_of(eni, config), eni.mac
    families = (4, 6) if config.ipv6 else (4,)
    if eni.primary:
        # Only the group: never its state, MTU or DHCP address.
        if link.group == 0:
            d.links.append(LinkChange(link.index, link.name, group=config.interface_group, eni=mac))
        elif link.group != config.interface_group:
            d.warnings.append(
                f"primary ENI {link.name} is in interface group {link.group}, set by something "
                f"else; left alone, so main-table routes via {link.name} still win for ENI "
                f"addresses: move it to group 0 or set interface_group = {link.group}"
            )
    else:
        change = LinkChange(
            link.index,
            link.name,
            group=config.interface_group if link.group != config.interface_group else None,
            up=True if not link.up else None,
            mtu=config.mtu if config.mtu and link.mtu != config.mtu else None,
            eni=mac,
        )
        if (change.group, change.up, change.mtu) != (None, None, None):
            d.links.append(change)
    for fam in families:
        ips = [ip for ip in eni.ips if ip.version == fam]
        prefixes = [p for p in eni.prefixes if p.version == fam]
        if not ips and not prefixes:
            continue
        for i, ip in enumerate(ips):
            if eni.primary and fam == 4 and i == 0 and not eni.ipv4s_lack_primary_ip:
                continue  # the primary IP belongs to the DHCP client
            d.addrs[(link.index, ip)] = AddrChange(
                "add", link.index, link.name, ip, ip.max_prefixlen, eni=mac
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
        for src in [_host(ip) for ip in ips] + prefixes:
            rule = RuleChange("add", fam, prio, table, src, eni=mac)
            d.rules[rule.key()] = rule
        shared = RuleChange(
            "add", fam, config.priority_base, MAIN_TABLE, None, config.interface_group, ALL_ENIS
        )
        d.rules.setdefault(shared.key(), shared)


def _leave_excluded_alone(
    d: _Desired, instance: Instance, config: Config, state: KernelState, notes: list[str]
) -> list[ExcludedPlan]:
    """Protect what the configuration excludes from removal; nothing of it is configured."""
    d.keep_nets = instance.excluded_ips
    out = []
    for x in instance.excluded:
        table = None if x.slot is None else config.table_base + x.slot
        own = state.nics_with_mac(x.mac)
        d.keep_links.update(link.index for link in own)
        d.keep_oifs.update(link.index for link in own)
        d.keep_rules_from.update(_host(ip) for ip in x.ips)
        d.keep_rules_from.update(x.prefixes)
        if table is not None:
            d.keep_tables.add(table)
            d.keep_rule_tables.add(table)
        out.append(ExcludedPlan(x, own[0] if len(own) == 1 else None, table))
        notes.append(f"{x.eni_id or x.mac} ({x.mac}): excluded by {x.reason}: left alone")
    for link in state.links:
        if config.excluded_interface(link.name) is not None:
            d.keep_links.add(link.index)
            d.keep_oifs.add(link.index)
    # a table a left-alone link has routes in keeps the rules that lead into it
    d.keep_rule_tables.update(r.table for r in state.routes if r.oif in d.keep_oifs)
    # and a rule that stays keeps the routes of the table it leads into (an ENI whose every
    # IP is excluded has none it wants, but the excluded IPs' traffic still goes there)
    d.keep_tables.update(r.table for r in state.rules if r.src is not None and d.keeps_rule(r))
    return out


def _primary_left_alone(
    instance: Instance, config: Config, state: KernelState, eni_plans: list[EniPlan]
) -> Optional[str]:
    """A warning when the primary ENI is excluded while its link is not in our group.

    The shared rule suppresses main-table routes through ENI links only, so a primary link
    outside the group keeps its main-table default route winning for every other ENI's
    addresses: their replies leave through the primary and the VPC drops them.
    """
    why = next((x.reason for x in instance.excluded if x.mac == instance.primary_mac), None)
    why = why or next(
        (ep.excluded for ep in eni_plans if ep.eni.primary and ep.excluded is not None), None
    )
    if why is None or not any(ep.excluded is None and ep.link for ep in eni_plans):
        return None
    link = next(iter(state.nics_with_mac(instance.primary_mac)), None)
    if link is None or link.group == config.interface_group:
        return None
    return (
        f"the primary ENI ({link.name}) is excluded ({why}) and not in interface group "
        f"{config.interface_group}: main-table routes via {link.name} still win for the other "
        f"ENIs' addresses; run `ip link set {link.name} group {config.interface_group}` "
        "or stop excluding it"
    )


def plan(instance: Instance, config: Config, state: KernelState) -> Plan:
    """Compute the changes that make the kernel match `instance`; touches nothing."""
    links, notes = match_links(instance, state)
    d = _Desired()
    excluded = _leave_excluded_alone(d, instance, config, state, notes)
    eni_plans = []
    for eni in instance.enis:
        link = links.get(eni.mac)
        why = None
        if link is not None and (pattern := config.excluded_interface(link.name)) is not None:
            why = f"interface {link.name} matches exclude_interfaces {pattern!r}"
            notes.append(f"{eni.eni_id} ({eni.mac}): {why}: left alone")
        eni_plans.append(
            EniPlan(eni, link, table_of(eni, config), priority_of(eni, config), excluded=why)
        )
        if link is not None and why is None:
            _want_eni(d, eni, link, config)
        else:
            d.keep_rules_from.update(_host(ip) for ip in eni.ips)
            d.keep_rules_from.update(eni.prefixes)
            d.keep_tables.add(table_of(eni, config))
            # a NIC carrying its MAC that we could not use (enslaved, ambiguous): keep its state
            d.keep_links.update(x.index for x in state.nics_with_mac(eni.mac))
            if why is not None:
                d.keep_rule_tables.add(table_of(eni, config))
    warning = _primary_left_alone(instance, config, state, eni_plans)
    if warning is not None:
        d.warnings.append(warning)
    for u in instance.unsettled:
        notes.append(f"ENI {u.mac} not configured yet: {u.reason}")

    present = {(a.index, a.ip) for a in state.addrs}
    routes_now = {(r.family, r.table, r.dst): r for r in state.routes}
    rules_now = set(state.rules)

    adds: list[Change] = list(d.links)
    adds += [c for k, c in d.addrs.items() if k not in present]
    route_adds = []
    for key, c in d.routes.items():
        cur = routes_now.get(key)
        if cur is None:
            route_adds.append(c)
        elif (cur.oif, cur.gateway) != (c.oif, c.gateway):
            # ours, but the gateway or the ENI's link changed: swap it in one step
            route_adds.append(replace(c, op="replace"))
    # subnet routes before default routes: the gateway is then reachable the moment it appears
    adds += sorted(route_adds, key=lambda c: c.dst.prefixlen == 0)
    # the shared main rule (lowest priority number) before the per-IP rules it must precede
    adds += sorted((c for k, c in d.rules.items() if k not in rules_now), key=lambda c: c.priority)

    removes: list[Change] = []
    withheld = not instance.complete
    if withheld:
        notes.append("metadata lists ENIs that are not settled: nothing will be removed this run")
    else:
        link_mac = {link.index: link.mac for link in state.links}
        eni_macs = {e.mac for e in instance.enis}
        kept_families = set()
        # highest priority number first: the per-IP rules, then the shared rule they rely on
        for r in sorted(rules_now - set(d.rules), key=lambda r: -r.priority):
            if d.keeps_rule(r):
                kept_families.add(r.family)
                continue
            if r.suppress_ifgroup is not None and r.family in kept_families:
                continue  # a per-IP rule that stays needs the shared rule before it
            removes.append(
                RuleChange(
                    "del",
                    r.family,
                    r.priority,
                    r.table,
                    r.src,
                    r.suppress_ifgroup,
                    eni=_eni_of_table(r.table, instance, config),
                )
            )
        for key, r in routes_now.items():
            if key in d.routes or r.table in d.keep_tables or r.oif in d.keep_oifs:
                continue
            link = state.link(r.oif)
            removes.append(
                RouteChange(
                    "del",
                    r.table,
                    r.dst,
                    r.oif,
                    link.name if link else str(r.oif),
                    r.gateway,
                    eni=_eni_of_table(r.table, instance, config),
                )
            )
        for a in state.addrs:
            if (
                a.proto == config.protocol
                and (a.index, a.ip) not in d.addrs
                and a.index not in d.keep_links
                and not any(a.ip in n for n in d.keep_nets)
            ):
                link = state.link(a.index)
                mac = link_mac.get(a.index, "")
                removes.append(
                    AddrChange(
                        "del",
                        a.index,
                        link.name if link else str(a.index),
                        a.ip,
                        a.prefixlen,
                        eni=mac if mac in eni_macs else "",
                    )
                )
        matched = {link.index for link in links.values()}
        for link in state.links:
            if (
                link.group == config.interface_group
                and link.index not in matched
                and link.index not in d.keep_links
            ):
                # An ENI link that metadata no longer lists (detaching, or moved away).
                removes.append(LinkChange(link.index, link.name, group=0))
    if not state.addr_proto_supported:
        notes.append(
            "this kernel does not record address protocols (needs Linux >= 6.3): addresses "
            "unassigned in metadata are left on their interface"
        )
    return Plan(
        tuple(adds + removes),
        tuple(eni_plans),
        tuple(notes),
        withheld,
        tuple(d.warnings),
        tuple(excluded),
    )


def _eni_of_table(table: int, instance: Instance, config: Config) -> str:
    for eni in instance.enis:
        if table_of(eni, config) == table:
            return eni.mac
    return ""


def plan_unplug(state: KernelState, config: Config) -> Plan:
    """What to clean up after an interface left, from the kernel alone.  Pure.

    Detach must work while metadata is down (an ENI is often detached *because* something is
    broken), so this needs no instance: when a link goes, the kernel deletes its addresses and
    every route through it, which leaves our per-IP rules pointing at an empty table.  Those
    rules are deleted here, and any route of ours whose interface no longer exists (normally
    none: the kernel flushed them).  Nothing else: the shared rule stays (the primary ENI is
    still there), and a table counts as still owned while a route of ours in it leaves through
    a present link, or while one of its rules' source IPs is still assigned to a present link
    (an ENI whose IPv4 routes vanished because someone set it down is not unplugged).
    Deleting a rule whose table is empty never changes a routing decision (the lookup falls
    through to the next rule), so this is safe even when it guesses wrong; the next full
    reconcile puts back whatever metadata still wants.
    """
    present = {link.index for link in state.links}
    local = {_host(a.ip) for a in state.addrs if a.index in present}
    owned = {r.table for r in state.routes if r.oif in present}
    owned |= {r.table for r in state.rules if r.src is not None and r.src in local}
    changes: list[Change] = []
    notes: list[str] = []
    for r in sorted(state.rules, key=lambda r: (-r.priority, r.family, str(r.src))):
        if r.suppress_ifgroup is not None or r.table == MAIN_TABLE or r.table in owned:
            continue
        changes.append(RuleChange("del", r.family, r.priority, r.table, r.src, r.suppress_ifgroup))
    for r in state.routes:
        if r.oif not in present:
            changes.append(RouteChange("del", r.table, r.dst, r.oif, str(r.oif), r.gateway))
    if not changes:
        notes.append("nothing of a departed interface is left in the kernel")
    return Plan(tuple(changes), (), tuple(notes))

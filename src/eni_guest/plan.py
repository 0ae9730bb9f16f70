"""The planner: (instance model, config, kernel state) -> ordered list of changes.  Pure.

Layout (docs/routing.md; README "How it routes"), per ENI slot s, table T = table_base + s:
  * table T: the ENI's subnet routes on its link, and a default route via its gateway;
  * rule `lookup main suppress_ifgroup G` at priority_base (one per family): main-table
    routes win unless they leave through an ENI link (all ENI links are in group G), so
    Docker/CNI bridges, VPNs and the administrator's routes stay reachable from every source;
  * rule `from IP lookup T` at priority_base + 1 + s for every IP (and delegated prefix)
    of the ENI: everything else from that IP leaves through the ENI that owns it.
ENI addresses are host addresses (/32, /128) without a prefix route, so the main table never
learns a second route to a VPC subnet and a DHCP renewal on the primary cannot take them along.

`plan()` is three steps, the same for each object kind (links, addresses, routes, rules):
  1. build what is desired (`_want_eni`, per configured ENI);
  2. diff each kind: desired against current (what carries our marks in the kernel), where a
     current object nobody wants is removed unless `Protected` says it stays;
  3. order: every add before any removal (an IP moving between ENIs never loses its route),
     links, addresses, subnet routes, default routes, the shared rule, per-IP rules; then
     removals in the reverse order.

Safety rules enforced here: only what carries our marks is changed or removed; nothing is
removed unless the metadata read was complete; the primary ENI's link and DHCP address are
left alone; what the scope leaves alone (scope.py: excluded ENIs, IPs and interfaces, ENIs
whose NIC cannot be used now) is in `Protected` and is neither configured nor removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Optional

from .changes import (
    ALL_ENIS,
    MAIN_TABLE,
    AddrChange,
    Change,
    LinkChange,
    RouteChange,
    RuleChange,
)
from .config import Config
from .model import Eni, Excluded, Instance, IPAddress, IPNetwork
from .scope import EXCLUDED, MANAGED, EniScope, Scope, of_instance
from .state import Addr, KernelState, Link, Route, Rule

__all__ = [
    "ALL_ENIS",
    "MAIN_TABLE",
    "AddrChange",
    "Change",
    "EniPlan",
    "ExcludedPlan",
    "LinkChange",
    "Plan",
    "Protected",
    "RouteChange",
    "RuleChange",
    "plan",
    "plan_unplug",
    "priority_of",
    "table_of",
]

DEFAULT4 = IPv4Network("0.0.0.0/0")
DEFAULT6 = IPv6Network("::/0")


def _host(ip: IPAddress) -> IPNetwork:
    return ip_network(f"{ip}/{ip.max_prefixlen}")


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


# ---------------------------------------------------------------- 1. what is desired


@dataclass
class _Desired:
    """What the configured ENIs want, one mapping per object kind (key -> the add)."""

    links: list[LinkChange] = field(default_factory=list)
    addrs: dict[tuple[int, IPAddress], AddrChange] = field(default_factory=dict)
    routes: dict[tuple[int, int, IPNetwork], RouteChange] = field(default_factory=dict)
    rules: dict[Rule, RuleChange] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _want_link(d: _Desired, eni: Eni, link: Link, config: Config) -> None:
    mac = eni.mac
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
        return
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


def _want_eni(d: _Desired, eni: Eni, link: Link, config: Config) -> None:
    """Everything one configured ENI wants: its link, addresses, table and rules."""
    table, prio, mac = table_of(eni, config), priority_of(eni, config), eni.mac
    _want_link(d, eni, link, config)
    for fam in (4, 6) if config.ipv6 else (4,):
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


# ---------------------------------------------------------------- what must stay


@dataclass(frozen=True)
class Protected:
    """What stays in the kernel although no configured ENI wants it: the one "left alone" rule
    of the planner, a method per object kind.

    It belongs to ENIs that are listed but cannot be configured now (no NIC yet, enslaved,
    ambiguous), to what the configuration excludes (ENIs, interfaces, IP networks), and to
    excluded IPs' traffic.  Removing any of it would be managing what eni-guest was told, or
    cannot yet prove, it must not manage.
    """

    links: frozenset[int] = frozenset()  # link state and group, addresses on, routes through
    tables: frozenset[int] = frozenset()  # routes in these tables
    rule_tables: frozenset[int] = frozenset()  # rules leading into these tables
    rule_sources: frozenset[IPNetwork] = frozenset()  # rules from exactly these sources
    nets: tuple[IPNetwork, ...] = ()  # addresses and rule sources inside these networks

    def link(self, link: Link) -> bool:
        return link.index in self.links

    def addr(self, a: Addr) -> bool:
        return a.index in self.links or any(a.ip in n for n in self.nets)

    def route(self, r: Route) -> bool:
        return r.table in self.tables or r.oif in self.links

    def rule(self, r: Rule) -> bool:
        if r.src is not None and (
            r.src in self.rule_sources
            or any(r.src.version == n.version and r.src.overlaps(n) for n in self.nets)
        ):
            return True
        return r.table in self.rule_tables


@dataclass
class _Protecting:
    """The sets `Protected` is built from, while they are collected."""

    links: set[int] = field(default_factory=set)
    tables: set[int] = field(default_factory=set)
    rule_tables: set[int] = field(default_factory=set)
    rule_sources: set[IPNetwork] = field(default_factory=set)

    def ips(self, ips: tuple, prefixes: tuple) -> None:
        self.rule_sources.update(_host(ip) for ip in ips)
        self.rule_sources.update(prefixes)

    def done(self, nets: tuple[IPNetwork, ...]) -> Protected:
        return Protected(
            frozenset(self.links),
            frozenset(self.tables),
            frozenset(self.rule_tables),
            frozenset(self.rule_sources),
            nets,
        )


def _leave_excluded_alone(
    p: _Protecting, instance: Instance, config: Config, scope: Scope, notes: list[str]
) -> list[ExcludedPlan]:
    """Protect what the configuration excludes from removal; nothing of it is configured."""
    out = []
    for x in instance.excluded:
        table = None if x.slot is None else config.table_base + x.slot
        s = scope.eni(x.mac)
        own = s.nics if s is not None else ()
        p.links.update(link.index for link in own)
        p.ips(x.ips, x.prefixes)
        if table is not None:
            p.tables.add(table)
            p.rule_tables.add(table)
        out.append(ExcludedPlan(x, own[0] if len(own) == 1 else None, table))
        notes.append(f"{x.eni_id or x.mac} ({x.mac}): excluded by {x.reason}: left alone")
    p.links.update(index for index, _ in scope.links_left_alone)
    return out


def _finish_protection(p: _Protecting, instance: Instance, state: KernelState) -> Protected:
    """Close the protection over what the kernel links together."""
    # a table a left-alone link has routes in keeps the rules that lead into it
    p.rule_tables.update(r.table for r in state.routes if r.oif in p.links)
    first = p.done(instance.excluded_ips)
    # and a rule that stays keeps the routes of the table it leads into (an ENI whose every
    # IP is excluded has none it wants, but the excluded IPs' traffic still goes there)
    p.tables.update(r.table for r in state.rules if r.src is not None and first.rule(r))
    return p.done(instance.excluded_ips)


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


# ---------------------------------------------------------------- 2. diff each kind


@dataclass(frozen=True)
class _Diff:
    """Changes for one object kind: the adds (or in-place sets) and the removals."""

    adds: list[Change]
    removes: list[Change]


def _diff_links(
    d: _Desired, matched: set[int], state: KernelState, config: Config, protected: Protected
) -> _Diff:
    # Desired link changes are computed against the current link already (`_want_link`).
    removes: list[Change] = [
        # An ENI link that metadata no longer lists (detaching, or moved away).
        LinkChange(link.index, link.name, group=0)
        for link in state.links
        if link.group == config.interface_group
        and link.index not in matched
        and not protected.link(link)
    ]
    return _Diff(list(d.links), removes)


def _diff_addrs(
    d: _Desired, state: KernelState, config: Config, protected: Protected, eni_macs: set[str]
) -> _Diff:
    present = {(a.index, a.ip) for a in state.addrs}  # ours or not: never add twice
    adds: list[Change] = [c for k, c in d.addrs.items() if k not in present]
    removes: list[Change] = []
    for a in state.addrs:
        if a.proto != config.protocol or (a.index, a.ip) in d.addrs or protected.addr(a):
            continue
        link = state.link(a.index)
        mac = link.mac if link else ""
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
    return _Diff(adds, removes)


def _diff_routes(d: _Desired, state: KernelState, protected: Protected, eni_of) -> _Diff:
    current = {(r.family, r.table, r.dst): r for r in state.routes}
    adds: list[Change] = []
    for key, c in d.routes.items():
        cur = current.get(key)
        if cur is None:
            adds.append(c)
        elif (cur.oif, cur.gateway) != (c.oif, c.gateway):
            # ours, but the gateway or the ENI's link changed: swap it in one step
            adds.append(replace(c, op="replace"))
    # subnet routes before default routes: the gateway is then reachable the moment it appears
    adds.sort(key=lambda c: c.dst.prefixlen == 0)
    removes: list[Change] = []
    for key, r in current.items():
        if key in d.routes or protected.route(r):
            continue
        link = state.link(r.oif)
        name = link.name if link else str(r.oif)
        removes.append(
            RouteChange("del", r.table, r.dst, r.oif, name, r.gateway, eni=eni_of(r.table))
        )
    return _Diff(adds, removes)


def _diff_rules(d: _Desired, state: KernelState, protected: Protected, eni_of) -> _Diff:
    current = set(state.rules)
    # the shared main rule (lowest priority number) before the per-IP rules it must precede
    adds: list[Change] = sorted(
        (c for k, c in d.rules.items() if k not in current), key=lambda c: c.priority
    )
    removes: list[Change] = []
    kept_families = set()
    # highest priority number first: the per-IP rules, then the shared rule they rely on
    for r in sorted(current - set(d.rules), key=lambda r: -r.priority):
        if protected.rule(r):
            kept_families.add(r.family)
            continue
        if r.suppress_ifgroup is not None and r.family in kept_families:
            continue  # a per-IP rule that stays needs the shared rule before it
        removes.append(
            RuleChange(
                "del", r.family, r.priority, r.table, r.src, r.suppress_ifgroup, eni_of(r.table)
            )
        )
    return _Diff(adds, removes)


# ---------------------------------------------------------------- 3. the plan


def plan(
    instance: Instance, config: Config, state: KernelState, scope: Optional[Scope] = None
) -> Plan:
    """Compute the changes that make the kernel match `instance`; touches nothing.

    `scope` is what the run decided to manage and leave alone (scope.py): the one the model
    was built with, or, for a model built by hand, one decided from it and `state`'s links.
    """
    scope = scope or instance.scope or of_instance(instance, config, state.links)
    notes: list[str] = []
    d = _Desired()
    p = _Protecting()
    excluded = _leave_excluded_alone(p, instance, config, scope, notes)
    eni_plans = []
    matched: set[int] = set()
    for eni in instance.enis:
        s = scope.eni(eni.mac) or EniScope(eni.mac, MANAGED)
        link = state.link(s.link.index) if s.link is not None else None
        why = s.reason if s.status == EXCLUDED else None
        if s.link_note:
            notes.append(s.link_note)
        if why is not None:
            notes.append(f"{eni.eni_id} ({eni.mac}): {why}: left alone")
        eni_plans.append(
            EniPlan(eni, link, table_of(eni, config), priority_of(eni, config), excluded=why)
        )
        if link is not None and why is None:
            matched.add(link.index)
            _want_eni(d, eni, link, config)
            continue
        # listed, but its NIC cannot be used (missing, enslaved, ambiguous, excluded by name)
        p.ips(eni.ips, eni.prefixes)
        p.tables.add(table_of(eni, config))
        p.links.update(x.index for x in s.nics)
        if why is not None:
            p.rule_tables.add(table_of(eni, config))
    warning = _primary_left_alone(instance, config, state, eni_plans)
    if warning is not None:
        d.warnings.append(warning)
    for u in instance.unsettled:
        notes.append(f"ENI {u.mac} not configured yet: {u.reason}")
    protected = _finish_protection(p, instance, state)

    def eni_of(table: int) -> str:
        return next((e.mac for e in instance.enis if table_of(e, config) == table), "")

    diffs = [
        _diff_links(d, matched, state, config, protected),
        _diff_addrs(d, state, config, protected, {e.mac for e in instance.enis}),
        _diff_routes(d, state, protected, eni_of),
        _diff_rules(d, state, protected, eni_of),
    ]
    adds = [c for diff in diffs for c in diff.adds]
    withheld = not instance.complete
    removes: list[Change] = []
    if withheld:
        notes.append("metadata lists ENIs that are not settled: nothing will be removed this run")
    else:
        # rules before the routes they lead to, addresses, then the link's group last
        removes = [c for diff in reversed(diffs) for c in diff.removes]
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

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
  1. build what is desired (desired.py, per configured ENI) and what must stay although
     nobody wants it (protect.py, from the run's scope);
  2. diff each kind (diff.py): desired against current (what carries our marks in the
     kernel), where a current object nobody wants is removed unless `Protected` says it stays;
  3. order: every add before any removal (an IP moving between ENIs never loses its route),
     links, addresses, subnet routes, default routes, the shared rule, per-IP rules; then
     removals in the reverse order.

Someone else's rules that take an ENI IP's traffic before eni-guest's are found by
capture.py (`Plan.captures`) and never changed.

Safety rules enforced here: only what carries our marks is changed or removed (an address:
our protocol, or our metric where the kernel reports no protocol, `state.Addr.marked`);
nothing is removed unless the metadata read was complete; the primary ENI's link and DHCP
address are left alone; what the scope leaves alone (scope.py: excluded ENIs, IPs and
interfaces, ENIs whose NIC cannot be used now) is in `Protected` and is neither configured
nor removed.
"""

from __future__ import annotations

from functools import partial

from . import floating
from .business_plan import BusinessPlan, tag_of_table, want_businesses
from .capture import Capture, captures
from .changes import (
    ALL_ENIS,
    MAIN_TABLE,
    AddrChange,
    LinkChange,
    RouteChange,
    RuleChange,
    rule_change,
)
from .config import Config
from .desired import DEFAULT4, DEFAULT6, Desired, host, priority_of, table_of, want_eni
from .diff import diff_addrs, diff_links, diff_routes, diff_rules, unmarked_addrs
from .mirror import Mirror, want_mirrors
from .model import Eni, Excluded, Instance
from .protect import Protected, Protecting, finish_protection, leave_excluded_alone
from .record import record
from .scope import EXCLUDED, MANAGED, EniScope, Scope, of_instance
from .state import KernelState, Link, addr_metric
from .static_routes import want_static_routes

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Optional

    from .changes import Change
    from .model import IPAddress
    from .state import Addr

__all__ = [
    "ALL_ENIS",
    "DEFAULT4",
    "DEFAULT6",
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


@record(frozen=True)
class EniPlan:
    """Where one ENI lives in the kernel; `link` is None until its NIC shows up."""

    eni: Eni
    link: Optional[Link]
    table: int
    priority: int
    # Why the ENI is left alone although metadata lists it and its link is here (the link's
    # name matches exclude_interfaces); None when it is configured.
    excluded: Optional[str] = None


@record(frozen=True)
class ExcludedPlan:
    """An ENI the configuration excludes and where it is in the kernel (for `show`)."""

    excluded: Excluded
    link: Optional[Link]
    table: Optional[int]  # None when its slot cannot be known (e.g. no device number yet)
    invalid: bool = False  # not excluded: its metadata was refused (`excluded.reason` says why)


@record(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    enis: tuple[EniPlan, ...]
    notes: tuple[str, ...] = ()  # why something was not done (unsettled ENIs, missing NICs)
    removals_withheld: bool = False
    warnings: tuple[str, ...] = ()  # problems an operator must fix: logged on every run
    excluded: tuple[ExcludedPlan, ...] = ()  # ENIs excluded by the configuration
    # Foreign rules taking ENI IPs' traffic before ours (capture.py): reported, never changed
    captures: tuple[Capture, ...] = ()
    # Main-table routes through an ENI that its table holds a copy of (mirror.py)
    mirrors: tuple[Mirror, ...] = ()
    businesses: tuple[BusinessPlan, ...] = ()  # the [[business]] tables (business_plan.py)

    def in_sync(self, mac: str) -> bool:
        """No change pending for this ENI, nor for what every ENI relies on (the shared rule)."""
        return not any(c.eni in (mac, ALL_ENIS) for c in self.changes)

    def captured(self, mac: str) -> list[str]:
        """Why this ENI's IPs do not follow it although in sync: '10.0.1.20: captured by...'."""
        return [f"{ip}: {c.reason}" for c in self.captures for m, ip in c.ips if m == mac]


def _place_enis(
    instance: Instance,
    config: Config,
    state: KernelState,
    scope: Scope,
    d: Desired,
    p: Protecting,
    notes: list[str],
) -> tuple[list[EniPlan], set[int]]:
    """Each listed ENI on its NIC: what a configured one wants goes into `d`; everything of
    one whose NIC cannot be used now (missing, enslaved, ambiguous, excluded by name) into
    `p`.  Returns the ENIs' places and the links now matched to an ENI."""
    eni_plans = []
    matched: set[int] = set()
    on_link: dict[int, list[Addr]] = {}  # the kernel's addresses by link, for floating.want
    for a in state.addrs:
        on_link.setdefault(a.index, []).append(a)
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
            want_eni(d, eni, link, config)
            elsewhere = partial(_listed_elsewhere, instance, eni.mac)
            here = on_link.get(link.index, [])
            notes += floating.want(d, eni, link, here, config, elsewhere, instance.excluded_ips)
            continue
        p.ips(eni.ips, eni.prefixes)
        p.tables.add(table_of(eni, config))
        p.links.update(x.index for x in s.nics)
        if why is not None:
            p.rule_tables.add(table_of(eni, config))
    return eni_plans, matched


def _listed_elsewhere(instance: Instance, mac: str, ip: IPAddress) -> bool:
    """Whether metadata lists `ip` on one of this VM's ENIs other than `mac` (excluded and
    refused ones included: still this VM's), as an IP or inside a delegated prefix.  Asked
    only for an address on an ENI's link that metadata does not list there (floating.want)."""
    others = (*instance.enis, *instance.excluded, *instance.invalid)
    return any(ip in e.ips or any(ip in n for n in e.prefixes) for e in others if e.mac != mac)


def plan(
    instance: Instance, config: Config, state: KernelState, scope: Optional[Scope] = None
) -> Plan:
    """Compute the changes that make the kernel match `instance`; touches nothing.

    `scope` is what the run decided to manage and leave alone (scope.py): the one the model
    was built with, or, for a model built by hand, one decided from it and `state`'s links.
    """
    scope = scope or instance.scope or of_instance(instance, config, state.links)
    notes: list[str] = []
    d, p = Desired(), Protecting()
    excluded = [ExcludedPlan(*x) for x in leave_excluded_alone(p, instance, config, scope, notes)]
    eni_plans, matched = _place_enis(instance, config, state, scope, d, p, notes)
    configured = {ep.link.index: (ep.eni, ep.link, ep.table) for ep in eni_plans if ep.link}
    configured = {i: configured[i] for i in matched}
    want_static_routes(d, state, config, configured)  # [[route]] entries
    mirrors = want_mirrors(d, state, config, configured)
    businesses = want_businesses(d, instance, config, eni_plans)
    warning = _primary_left_alone(instance, config, state, eni_plans)
    if warning is not None:
        d.warnings.append(warning)
    notes += [f"ENI {u.mac} not configured yet: {u.reason}" for u in instance.unsettled]
    protected = finish_protection(p, instance, state, floating.networks(config.floating_ips))

    def eni_of(table: int) -> str:
        mac = next((e.mac for e in instance.enis if table_of(e, config) == table), "")
        return mac or tag_of_table(config, table)

    diffs = [
        diff_links(d, matched, state, config, protected),
        diff_addrs(d, state, config, protected, {e.mac for e in instance.enis}),
        diff_routes(d, state, protected, eni_of),
        diff_rules(d, state, protected, eni_of),
    ]
    adds = [c for diff in diffs for c in diff.adds]
    # removals only after a complete read: rules before the routes they lead to, addresses,
    # then the link's group last
    removes = [c for diff in reversed(diffs) for c in diff.removes] if instance.complete else []
    if not instance.complete:
        notes.append("metadata lists ENIs that are not settled: nothing will be removed this run")
    notes += _address_mark_notes(d, state, config)
    return Plan(
        tuple(adds + removes),
        tuple(eni_plans),
        tuple(notes),
        not instance.complete,
        tuple(d.warnings),
        tuple(excluded),
        captures(eni_plans, state.foreign_rules),
        tuple(mirrors),
        businesses,
    )


def _address_mark_notes(d: Desired, state: KernelState, config: Config) -> list[str]:
    """What the address marks mean on this kernel, and the listed addresses without them."""
    notes = []
    if state.addr_proto_supported is False:
        notes.append(
            "this kernel keeps no address protocols: eni-guest's addresses are recognised by "
            f"their metric {addr_metric(config.protocol)} (host addresses without a protocol)"
        )
    unmarked = unmarked_addrs(d, state, config) if state.addr_proto_supported is None else []
    if unmarked:
        # No protocol anywhere (no kernel that keeps them), no metric of ours anywhere.
        notes.append(
            "no address carries a protocol or eni-guest's metric: this kernel keeps neither "
            "(before Linux 4.18), or someone else or an eni-guest without address metrics "
            "added them; "
            f"{len(unmarked)} listed address(es) without a mark are used as they are and "
            "never removed: " + ", ".join(unmarked)
        )
    return notes


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
    local = {host(a.ip) for a in state.addrs if a.index in present}
    owned = {r.table for r in state.routes if r.oif in present}
    owned |= {r.table for r in state.rules if r.src is not None and r.src in local}
    changes: list[Change] = []
    notes: list[str] = []
    for r in sorted(state.rules, key=lambda r: (-r.priority, r.family, str(r.src))):
        if r.suppress_ifgroup is not None or r.table == MAIN_TABLE or r.table in owned:
            continue
        changes.append(rule_change("del", r))
    for r in state.routes:
        if r.oif not in present:
            changes.append(
                RouteChange("del", r.table, r.dst, r.oif, str(r.oif), r.gateway, prefsrc=r.prefsrc)
            )
    if not changes:
        notes.append("nothing of a departed interface is left in the kernel")
    return Plan(tuple(changes), (), tuple(notes))

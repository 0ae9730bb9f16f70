"""What must stay in the kernel although no configured ENI wants it: the planner's one
"left alone" rule (plan.py), a method per object kind.

It is everything of ENIs that are listed but cannot be configured now, of what the
configuration excludes (ENIs, interfaces by name, IP networks), and of excluded IPs'
traffic, as the run's scope (scope.py) decided them.  Removing any of it would be managing
what eni-guest was told, or cannot yet prove, it must not manage.
"""

from __future__ import annotations

from .config import Config
from .desired import host
from .model import Excluded, Instance
from .record import field, record
from .scope import Scope
from .state import Addr, KernelState, Link, Route, Rule

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Optional

    from .model import IPNetwork


@record(frozen=True)
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
    addr_nets: tuple[IPNetwork, ...] = ()  # addresses only: floating IPs (floating.py)

    def link(self, link: Link) -> bool:
        return link.index in self.links

    def addr(self, a: Addr) -> bool:
        return (
            a.index in self.links
            or any(a.ip in n for n in self.nets)
            or any(a.ip in n for n in self.addr_nets)
        )

    def route(self, r: Route) -> bool:
        return r.table in self.tables or r.oif in self.links

    def rule(self, r: Rule) -> bool:
        # (each `and` first asks whether there is anything to look in: a plan asks this for
        # each of 750 rules, and a look-up hashes the source network even in an empty set)
        if r.src is not None and (
            (self.rule_sources and r.src in self.rule_sources)
            or (
                self.nets
                and any(r.src.overlaps(n) for n in self.nets if n.version == r.src.version)
            )
        ):
            return True
        return r.table in self.rule_tables


@record
class Protecting:
    """The sets `Protected` is built from, while they are collected."""

    links: set[int] = field(default_factory=set)
    tables: set[int] = field(default_factory=set)
    rule_tables: set[int] = field(default_factory=set)
    rule_sources: set[IPNetwork] = field(default_factory=set)

    def ips(self, ips: tuple, prefixes: tuple) -> None:
        self.rule_sources.update(host(ip) for ip in ips)
        self.rule_sources.update(prefixes)

    def done(self, nets: tuple[IPNetwork, ...], addr_nets: tuple[IPNetwork, ...] = ()) -> Protected:
        return Protected(
            frozenset(self.links),
            frozenset(self.tables),
            frozenset(self.rule_tables),
            frozenset(self.rule_sources),
            nets,
            addr_nets,
        )


def leave_excluded_alone(
    p: Protecting, instance: Instance, config: Config, scope: Scope, notes: list[str]
) -> list[tuple[Excluded, Optional[Link], Optional[int]]]:
    """Protect what the configuration excludes, and ENIs whose metadata was refused, from
    removal; nothing of them is configured."""
    out = []
    for x in (*instance.excluded, *instance.invalid):
        table = None if x.slot is None else config.table_base + x.slot
        s = scope.eni(x.mac)
        own = s.nics if s is not None else ()
        p.links.update(link.index for link in own)
        p.ips(x.ips, x.prefixes)
        if table is not None:
            p.tables.add(table)
            p.rule_tables.add(table)
        out.append((x, own[0] if len(own) == 1 else None, table))
        if x in instance.invalid:
            notes.append(f"{x.eni_id or x.mac} ({x.mac}): left as it is: {x.reason}")
        else:
            notes.append(f"{x.eni_id or x.mac} ({x.mac}): excluded by {x.reason}: left alone")
    p.links.update(index for index, _ in scope.links_left_alone)
    return out


def finish_protection(
    p: Protecting,
    instance: Instance,
    state: KernelState,
    floating: tuple[IPNetwork, ...] = (),
) -> Protected:
    """Close the protection over what the kernel links together; the addresses inside
    `floating` (floating_ips) are never removed."""
    # a table a left-alone link has routes in keeps the rules that lead into it
    p.rule_tables.update(r.table for r in state.routes if r.oif in p.links)
    first = p.done(instance.excluded_ips)
    # and a rule that stays keeps the routes of the table it leads into (an ENI whose every
    # IP is excluded has none it wants, but the excluded IPs' traffic still goes there)
    p.tables.update(r.table for r in state.rules if r.src is not None and first.rule(r))
    return p.done(instance.excluded_ips, floating)

"""The planner's step 2 (plan.py): for each object kind, desired against current.

Current is what carries eni-guest's marks in the kernel (route and rule protocol, priority
and table ranges, address protocol or metric, interface group): nothing else is ever
changed.  What is desired and missing is added (a route of ours that differs is replaced in
one step); what is ours and no longer desired is removed, unless `Protected` says it stays.
"""

from __future__ import annotations

from .changes import AddrChange, LinkChange, RouteChange, rule_change
from .config import Config
from .desired import Desired
from .protect import Protected
from .record import record, replace
from .state import KernelState

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:  # only type checkers need it: annotations are never evaluated
    from typing import Callable, TypeVar

    from .changes import Change

    EniOf = Callable[[int], str]  # table -> the MAC of the ENI it belongs to ("" for none)
    K = TypeVar("K")
    C = TypeVar("C")


@record(frozen=True)
class Diff:
    """Changes for one object kind: the adds (or in-place sets) and the removals."""

    adds: list[Change]
    removes: list[Change]


def _in_order(desired: dict[K, C], missing: set[K], wanted: int) -> list[C]:
    """The desired objects whose keys are `missing`, in the order they were wanted; all of
    them without a look-up when all are missing (a first boot), none when none is."""
    if len(missing) == wanted:
        return list(desired.values())
    return [c for k, c in desired.items() if k in missing] if missing else []


def diff_links(
    d: Desired, matched: set[int], state: KernelState, config: Config, protected: Protected
) -> Diff:
    # Desired link changes are computed against the current link already (`_want_link`).
    removes: list[Change] = [
        # An ENI link that metadata no longer lists (detaching, or moved away).
        LinkChange(link.index, link.name, group=0)
        for link in state.links
        if link.group == config.interface_group
        and link.index not in matched
        and not protected.link(link)
    ]
    return Diff(list(d.links), removes)


def diff_addrs(
    d: Desired, state: KernelState, config: Config, protected: Protected, eni_macs: set[str]
) -> Diff:
    current = {(a.index, a.ip): a for a in state.addrs}  # ours or not: never add twice
    # By set differences, as diff_rules (ipaddress hashes an address through its hex text).
    have, wanted = set(current), set(d.addrs)
    adds: list[Change] = _in_order(d.addrs, wanted - have, len(wanted))
    removes: list[Change] = []
    extra = have - wanted  # the others on the links too: DHCP's, the loopback's, ...
    if len(current) == len(state.addrs):
        unwanted = [current[k] for k in extra]
    else:  # an IP twice on one link, with two prefix lengths: each is looked at
        unwanted = [a for a in state.addrs if (a.index, a.ip) in extra]
    for a in sorted(unwanted, key=lambda a: (a.index, a.ip.version, int(a.ip), a.prefixlen)):
        if not a.marked(config.protocol) or protected.addr(a):
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
    return Diff(adds, removes)


def unmarked_addrs(d: Desired, state: KernelState, config: Config) -> list[str]:
    """Addresses metadata lists that are on their link without our marks, as "ip dev".

    They are used as they are and never removed: someone else added them, an eni-guest
    without the metric did on a kernel that keeps no address protocols, or the kernel keeps
    neither mark (Linux before 4.18).
    """
    return [
        f"{a.ip} dev {d.addrs[(a.index, a.ip)].ifname}"
        for a in state.addrs
        if (a.index, a.ip) in d.addrs and not a.marked(config.protocol)
    ]


def diff_routes(d: Desired, state: KernelState, protected: Protected, eni_of: EniOf) -> Diff:
    # The kernel tells routes of one table apart by destination and metric: a mirror (metric
    # mirror.mirror_metric) and a route of the ENI's own at one destination are two routes.
    current = {(r.family, r.table, r.dst, r.metric): r for r in state.routes}
    adds: list[Change] = []
    for key, c in d.routes.items():
        cur = current.get((*key, c.metric))
        if cur is None:
            adds.append(c)
        elif (cur.oif, cur.gateway, cur.prefsrc) != (c.oif, c.gateway, c.prefsrc):
            # ours, but the gateway, the ENI's link or a business's IP changed: one step
            adds.append(replace(c, op="replace"))
    # subnet routes before default routes: the gateway is then reachable the moment it appears
    adds.sort(key=lambda c: c.dst.prefixlen == 0)
    removes: list[Change] = []
    for (fam, table, dst, metric), r in current.items():
        want = d.routes.get((fam, table, dst))
        if (want is not None and want.metric == metric) or protected.route(r):
            continue
        link = state.link(r.oif)
        name = link.name if link else str(r.oif)
        removes.append(
            RouteChange(
                "del",
                r.table,
                r.dst,
                r.oif,
                name,
                r.gateway,
                eni_of(r.table),
                r.metric,
                prefsrc=r.prefsrc,
            )
        )
    return Diff(adds, removes)


def diff_rules(d: Desired, state: KernelState, protected: Protected, eni_of: EniOf) -> Diff:
    # Set differences: a set made from a dict, and a difference of two sets, reuse the hashes
    # they hold, where a look-up hashes the rule's ten fields again (750 rules a plan).
    current, wanted = set(state.rules), set(d.rules)
    # the shared main rule (lowest priority number) before the per-IP rules it must precede
    adds: list[Change] = sorted(
        _in_order(d.rules, wanted - current, len(wanted)), key=lambda c: c.priority
    )
    removes: list[Change] = []
    kept_families = set()
    # highest priority number first: the per-IP rules, then the shared rule they rely on
    for r in sorted(current - wanted, key=lambda r: -r.priority):
        if protected.rule(r):
            kept_families.add(r.family)
            continue
        if r.suppress_ifgroup is not None and r.family in kept_families:
            continue  # a per-IP rule that stays needs the shared rule before it
        removes.append(rule_change("del", r, eni_of(r.table)))
    return Diff(adds, removes)


def not_taken(applied: list[Change], state: KernelState) -> list[Change]:
    """The applied changes the kernel does not show now (`state`: read after applying).

    An add whose object is missing, a removal whose object is still there, a replaced route
    or a link set that reads otherwise.  A change on a link that has since left is not
    counted: the link took its addresses and routes with it, and its unplug clean-up follows.
    Objects are told apart as the diffs above tell them apart.
    """
    links = {link.index: link for link in state.links}
    addrs = {(a.index, a.ip) for a in state.addrs}
    rules = set(state.rules)
    routes = {(r.family, r.table, r.dst, r.metric): r for r in state.routes}
    missing: list[Change] = []
    for c in applied:
        if isinstance(c, LinkChange):
            link = links.get(c.index)
            taken = link is None or c.holds_on(link)
        elif isinstance(c, AddrChange):
            taken = c.index not in links or ((c.index, c.ip) in addrs) == (c.op == "add")
        elif isinstance(c, RouteChange):
            cur = routes.get((c.family, c.table, c.dst, c.metric))
            if c.op == "del":
                taken = cur is None
            else:
                taken = c.oif not in links or (
                    cur is not None
                    and (cur.oif, cur.gateway, cur.prefsrc) == (c.oif, c.gateway, c.prefsrc)
                )
        else:
            taken = (c.key() in rules) == (c.op == "add")  # type: ignore[union-attr]
        if not taken:
            missing.append(c)
    return missing

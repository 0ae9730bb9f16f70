"""What the configured businesses want in the kernel (business.py parses them): a planner step.

Business number n (in file order, from 0) has, in a band of its own (docs/routing.md,
"Businesses"):
  * rules at priority `priority_base + SLOTS + 1 + n`, after every ENI's per-IP rules and
    before main's 32766: `[to DST] [fwmark M/MASK] [uidrange A-B] [ipproto P] [dport X-Y]
    lookup T`, one per combination of its selectors;
  * table T = `table_base + SLOTS + n`: the carrying ENI's subnet routes and default route,
    each with `src IP`, the business's IP (given, or the ENI's first IP of the family).
A socket bound to any ENI IP is decided by its per-IP rule first, so it keeps leaving through
its own ENI (the VPC's source check); traffic that has no ENI source yet (an unbound socket's
first route lookup, forwarded traffic) reaches the business's rule, and the route's `src`
gives an unbound socket the business's IP, whose own per-IP rule then agrees on the ENI.

A business whose ENI is not attached (not listed, not settled, no NIC yet, left alone) gets
nothing, and says why (`BusinessPlan.waiting`).  Its IP not being the named ENI's is a
configuration error (`check`, exit 2) raised before the kernel is read.
"""

from __future__ import annotations

from ipaddress import ip_address

from .business import MAX_BUSINESSES, Business, describe
from .changes import RouteChange, RuleChange
from .config import SLOTS, Config
from .desired import DEFAULT4, DEFAULT6, Desired
from .errors import ConfigError
from .model import Eni, Instance
from .record import record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Optional

    from .model import IPAddress
    from .plan import EniPlan, Plan


def priority_band(config: Config) -> range:
    """The rule priorities reserved for businesses: after the last ENI slot's."""
    start = config.priority_base + SLOTS + 1
    return range(start, start + MAX_BUSINESSES)


def table_band(config: Config) -> range:
    """The routing tables reserved for businesses: after the last ENI slot's."""
    start = config.table_base + SLOTS
    return range(start, start + MAX_BUSINESSES)


def tag(b: Business) -> str:
    """The `eni` tag of a business's changes: which business is out of sync."""
    return f"business {b.name}"


def tag_of_table(config: Config, table: int) -> str:
    """The tag of whichever business owns `table` now ("" for none)."""
    band = table_band(config)
    n = table - band.start
    return tag(config.business[n]) if table in band and n < len(config.business) else ""


@record(frozen=True)
class BusinessPlan:
    """Where one business lives, or why it waits (for `show`)."""

    business: Business
    priority: int
    table: int
    eni: Optional[Eni] = None
    ifname: Optional[str] = None
    sources: tuple[IPAddress, ...] = ()  # the `src` of its routes, one per family it routes
    waiting: Optional[str] = None  # why nothing is configured for it; None when it is
    notes: tuple[str, ...] = ()


def carrier(b: Business, instance: Instance) -> Optional[Eni]:
    """The listed, validated ENI that carries `b`: the named one, or the one with its IP."""
    if b.eni is not None:
        return next((e for e in instance.enis if b.eni in (e.mac, e.eni_id)), None)
    ip = ip_address(b.ip) if b.ip is not None else None
    return next((e for e in instance.enis if ip in e.ips), None)


def check(instance: Instance, config: Config) -> None:
    """Refuse (ConfigError, exit 2) a business whose IP metadata lists on no named ENI."""
    for b in config.business:
        eni = carrier(b, instance)
        if b.eni is None or b.ip is None or eni is None:
            continue
        if ip_address(b.ip) not in eni.ips:
            ips = ", ".join(map(str, eni.ips)) or "none"
            raise ConfigError(
                f"{b.where}.ip = {b.ip!r}: not an IP of ENI {eni.eni_id} ({eni.mac}) in "
                f"metadata (its IPs: {ips}); give ip alone to follow the IP to any ENI"
            )


def _why_waiting(b: Business, instance: Instance, eni: Optional[Eni], links: dict) -> str:
    if eni is None:
        ip = ip_address(b.ip) if b.ip is not None else None
        for x in instance.excluded:
            if b.eni in (x.mac, x.eni_id) or (b.eni is None and ip in x.ips):
                return f"ENI {x.eni_id or x.mac} is excluded"
        if b.eni is None:
            return f"no attached ENI lists {b.ip}"
        return f"ENI {b.eni} is not attached (or not settled) yet"
    ep = links.get(eni.mac)
    if ep is None or ep.link is None:
        return f"ENI {eni.eni_id} ({eni.mac}) has no interface here yet"
    return f"ENI {eni.eni_id} ({eni.mac}) is left alone: {ep.excluded}"


def want_businesses(
    d: Desired, instance: Instance, config: Config, eni_plans: list[EniPlan]
) -> tuple[BusinessPlan, ...]:
    """Add every configured business's rules and routes to `d`; their places for `show`."""
    places = {ep.eni.mac: ep for ep in eni_plans}
    out = []
    prio, tables = priority_band(config), table_band(config)
    for n, b in enumerate(config.business):
        eni = carrier(b, instance)
        ep = places.get(eni.mac) if eni is not None else None
        if eni is None or ep is None or ep.link is None or ep.excluded is not None:
            why = _why_waiting(b, instance, eni, places)
            out.append(BusinessPlan(b, prio[n], tables[n], eni, waiting=why))
            continue
        sources, notes = _want_one(d, b, eni, ep, prio[n], tables[n], config)
        out.append(BusinessPlan(b, prio[n], tables[n], eni, ep.link.name, sources, None, notes))
    return tuple(out)


def _want_one(
    d: Desired, b: Business, eni: Eni, ep: EniPlan, prio: int, table: int, config: Config
) -> tuple[tuple[IPAddress, ...], tuple[str, ...]]:
    """One business's rules and table, per family it routes and its ENI has an IP of."""
    link, mac = ep.link, tag(b)
    assert link is not None
    sources, notes = [], []
    for fam in b.families():
        if fam == 6 and not config.ipv6:
            continue
        ips = eni.ipv4s if fam == 4 else eni.ipv6s
        src = ip_address(b.ip) if b.ip is not None else (ips[0] if ips else None)
        gateway = eni.ipv4_gateway if fam == 4 else eni.ipv6_gateway
        if src is None or gateway is None:
            if b.ip is not None or b.destinations:  # asked for this family, not a default
                notes.append(f"ENI {eni.eni_id} has no IPv{fam} address or gateway: no routes")
            continue
        sources.append(src)
        for net in eni.ipv4_subnets if fam == 4 else eni.ipv6_subnets:
            d.routes[(fam, table, net)] = RouteChange(
                "add", table, net, link.index, link.name, eni=mac, prefsrc=src
            )
        default = DEFAULT4 if fam == 4 else DEFAULT6
        d.routes[(fam, table, default)] = RouteChange(
            "add", table, default, link.index, link.name, gateway, eni=mac, prefsrc=src
        )
        for dst, mark, uids, proto, ports in b.selectors(fam):
            rule = RuleChange(
                "add", fam, prio, table, None, None, mac, dst, mark, uids, proto, ports
            )
            d.rules[rule.key()] = rule
    return tuple(sources), tuple(notes)


def rows(plan: Plan) -> list[dict]:
    """One row per business for `show --json`: where it lives, whether it is in sync."""
    out = []
    for bp in plan.businesses:
        b = bp.business
        pending = any(c.eni == tag(b) for c in plan.changes)
        eni_ok = bp.eni is not None and plan.in_sync(bp.eni.mac)
        out.append(
            {
                "name": b.name,
                "eni": b.eni,
                "ip": b.ip,
                "interface": bp.ifname,
                "eni_id": bp.eni.eni_id if bp.eni else None,
                "sources": [str(s) for s in bp.sources],
                "priority": bp.priority,
                "table": bp.table,
                "traffic": [describe(s) for f in b.families() for s in b.selectors(f)],
                "in_sync": None if bp.waiting else (eni_ok and not pending),
                "waiting": bp.waiting,
                "notes": list(bp.notes),
            }
        )
    return out


def lines(plan: Plan) -> list[str]:
    """`show`'s lines for the businesses: 'business partner: eth2 src 10.0.2.31 ... yes'."""
    out = []
    for r in rows(plan):
        traffic = "; ".join(r["traffic"])
        if r["waiting"]:
            out.append(f"business {r['name']}: waiting: {r['waiting']} (nothing configured)")
            continue
        sync = "in sync" if r["in_sync"] else "not in sync"
        src = ", ".join(r["sources"]) or "-"
        out.append(
            f"business {r['name']}: {r['interface']} ({r['eni_id']}) src {src} table {r['table']} "
            f"priority {r['priority']}, {sync}: {traffic}"
        )
        out += [f"business {r['name']}: note: {n}" for n in r["notes"]]
    return out

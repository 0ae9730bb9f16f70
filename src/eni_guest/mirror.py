"""Administrators' main-table routes through an ENI, copied into that ENI's table.

The shared rule (`lookup main suppress_ifgroup 229`) rejects every main-table route that
leaves through an ENI link, so that the per-IP rules send each ENI address's traffic out of
its own ENI.  That also rejects a route an administrator, netplan or a DHCP option added on
purpose: `10.50.0.0/16 via 10.0.2.5 dev eth2` (traffic chained through an inspection
appliance) would be bypassed by eth2's own addresses, which would go to eth2's default
gateway instead (cloud-init's issue 5249 is this bug in another agent).

So each such route is mirrored into the table of the ENI it leaves through: the same
destination, gateway and link, with eni-guest's route protocol (229) and the metric
`mirror_metric` (229 too), which is how a mirror is told from the ENI's own routes (metric 0)
in the kernel alone.  It follows its original: it changes when the original's gateway
changes, and it goes when the original goes (or its ENI stops being configured).  Traffic
from *other* ENIs' addresses to the same destination is not affected: their tables do not
hold the route, so it leaves through their own ENI as before.

Not mirrored (docs/routing.md, "Administrators' routes through an ENI"):
  * default routes: the primary's DHCP default route, and a second default route a stray
    DHCP client put on a secondary (trap 4) must not win for that ENI's addresses;
  * a destination the ENI's table already holds a route of its own for (its subnets: the
    primary's connected route, an RA prefix route);
  * IPv6 link-local and multicast destinations (every link has `fe80::/64` in main);
  * routes of a family the ENI has no address in (no rule would ever lead to them);
  * multipath routes (no single link) and routes of other types (blackhole, ...).
Of several main-table routes to one destination through one link, the one with the lowest
metric is mirrored (the one `main` itself would use).  Its preferred source (`src`) is not
copied: the rule that leads into the table has chosen the source already.  A route of
someone else's that sits in the ENI's table itself at the same destination wins over the
mirror, which has the higher metric.
"""

from __future__ import annotations

from ipaddress import IPv6Network

from .changes import RouteChange
from .config import Config
from .desired import Desired
from .model import Eni
from .record import record
from .state import KernelState, Link, Route

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Mapping

LINK_LOCAL6 = IPv6Network("fe80::/10")
MULTICAST6 = IPv6Network("ff00::/8")


def mirror_metric(protocol: int) -> int:
    """The metric of eni-guest's copies of main-table routes: its protocol number, 229.

    eni-guest's own routes have metric 0 (the kernel's default), so a route of protocol 229
    in an ENI table is a mirror exactly when it has this metric.
    """
    return protocol


@record(frozen=True)
class Mirror:
    """One main-table route honoured for an ENI's addresses by a copy in its table."""

    mac: str  # the ENI whose table holds the copy
    table: int
    route: Route  # the original, in main
    ifname: str

    def describe(self) -> str:
        """As `ip route` shows the original: '10.50.0.0/16 via 10.0.2.5 dev eth2'."""
        via = f" via {self.route.gateway}" if self.route.gateway is not None else ""
        return f"{self.route.dst}{via} dev {self.ifname}"


def mirrorable(route: Route) -> bool:
    """Whether a main-table route's destination is one to mirror at all (see above)."""
    if route.dst.prefixlen == 0:
        return False
    v6 = route.family == 6
    return not (v6 and (route.dst.overlaps(LINK_LOCAL6) or route.dst.overlaps(MULTICAST6)))


def want_mirrors(
    d: Desired,
    state: KernelState,
    config: Config,
    configured: Mapping[int, tuple[Eni, Link, int]],
) -> list[Mirror]:
    """Add to `d` the copy of every main-table route through a configured ENI's link.

    `configured` maps the link index of each ENI configured this run to (ENI, link, table);
    call after every ENI's own routes are in `d`, so their destinations are known.
    """
    best: dict[tuple[int, int, object], Route] = {}
    for main in state.main_routes:
        r = main.route
        placed = configured.get(r.oif)
        if placed is None or not mirrorable(r) or (r.family == 6 and not config.ipv6):
            continue
        eni, _link, table = placed
        if not any(ip.version == r.family for ip in (*eni.ips, *eni.prefixes)):
            continue
        if (r.family, table, r.dst) in d.routes:
            continue  # the ENI's own route to that destination
        key = (r.family, table, r.dst)
        if key not in best or r.metric < best[key].metric:
            best[key] = r
    mirrors = []
    metric = mirror_metric(config.protocol)
    for (_fam, table, dst), r in best.items():
        eni, link, _table = configured[r.oif]
        d.routes[(r.family, table, dst)] = RouteChange(
            "add", table, dst, link.index, link.name, r.gateway, eni=eni.mac, metric=metric
        )
        mirrors.append(Mirror(eni.mac, table, r, link.name))
    return mirrors

"""The configuration's `[[route]]` entries as routes in the ENI's table (and, if asked, main).

route_config.py reads and syntax-checks them.  Here each one is placed once the ENI is known:
`TO via VIA dev ethX onlink` in the ENI's table, protocol 229 and metric 0 like the ENI's own
routes, and with `main = true` the same route in `main`.  `onlink` because the ENI's
addresses are host addresses: without it the kernel would refuse the gateway (no route to
it), which is why the usual `ip route add TO via VIA dev ethX` fails on a secondary ENI.

What is not written, with a warning on every run naming the `[[route]]` table:
  * `via` outside every subnet of the ENI (of that family): the VPC would not deliver to it;
  * `to` that the ENI's table already routes (its subnet): that route is the ENI's own;
  * `main = true` while someone else's route in `main` has that destination: never overwritten
    (the ENI's table still gets it).
An entry whose ENI is not attached (or not configured this run) is simply not written yet.
Like every route of eni-guest's, it is removed once no entry asks for it: the one in `main`
too (a main-table route of protocol 229 is only ever one of these, kernel.read_state).
"""

from __future__ import annotations

from .changes import MAIN_TABLE, RouteChange
from .config import Config
from .desired import Desired
from .model import Eni
from .state import KernelState, Link

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Mapping


def want_static_routes(
    d: Desired,
    state: KernelState,
    config: Config,
    configured: Mapping[int, tuple[Eni, Link, int]],
) -> None:
    """Add to `d` the routes of the `[[route]]` entries whose ENI is configured this run
    (`configured`: link index -> (ENI, link, table)); call after the ENIs' own routes."""
    by_ref = {}
    for eni, link, table in configured.values():
        by_ref[eni.mac] = by_ref[eni.eni_id] = (eni, link, table)
    foreign_main = {m.route.dst for m in state.main_routes if m.route.metric == 0}
    for entry in config.route:
        placed = by_ref.get(entry.eni)
        if placed is None:
            continue
        eni, link, table = placed
        dst, via = entry.dst, entry.gateway
        subnets = eni.ipv4_subnets if dst.version == 4 else eni.ipv6_subnets
        what = f"{entry.where} ({entry.to} via {entry.via}, {eni.eni_id})"
        if not any(via in net for net in subnets):
            shown = ", ".join(str(n) for n in subnets) or "none"
            d.warnings.append(f"{what}: via is outside the ENI's subnets ({shown}): not written")
            continue
        if (dst.version, table, dst) in d.routes:
            d.warnings.append(f"{what}: table {table} already routes {dst}: not written")
            continue
        for t in (table, MAIN_TABLE) if entry.main else (table,):
            if t == MAIN_TABLE and dst in foreign_main:
                d.warnings.append(
                    f"{what}: main already holds someone else's route to {dst}: left as it is, "
                    f"written in table {table} only"
                )
                continue
            d.routes[(dst.version, t, dst)] = RouteChange(
                "add", t, dst, link.index, link.name, via, eni=eni.mac
            )

"""The `[[route]]` tables of the configuration: routes through an ENI that eni-guest writes.

An administrator who wants `192.0.2.0/24 via 10.0.2.5 dev eth1` cannot write it the usual way
on a secondary ENI: its addresses are host addresses without a prefix route (docs/routing.md,
"The layout"), so the kernel knows no route to 10.0.2.5 and refuses the route ("Nexthop has
invalid gateway").  `onlink` works (`ip route add 192.0.2.0/24 via 10.0.2.5 dev eth1 onlink`,
which eni-guest then mirrors into the ENI's table, mirror.py), but it is lost at the next
reboot, and the distro's network stack is kept off the secondary ENIs.  A `[[route]]` table
says it once, by ENI rather than by interface name:

    [[route]]
    to = "192.0.2.0/24"        # the destination, in CIDR form (not a default route)
    via = "10.0.2.5"           # the next hop, inside the ENI's subnet
    eni = "eni-0abc1234"       # the ENI, by id or MAC
    main = false               # also in main (for unbound sockets), default false

eni-guest writes it in the ENI's table (`dev ethX onlink`, protocol 229, metric 0 as its own
routes), and with `main = true` also in `main`, so that traffic without a bound source takes
it too.  It is removed when the table goes.  The syntax is checked here, with the rest of the
configuration (a bad value is exit 2, one line); whether `via` lies in the ENI's subnet can
only be known once metadata is read (static_routes.py: a warning, and the route is not
written).
"""

from __future__ import annotations

import ipaddress

from .errors import ConfigError
from .record import record
from .syntax import address, eni_ref, network

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any

ROUTE_KEYS = ("to", "via", "eni", "main")


@record(frozen=True)
class StaticRoute:
    """One `[[route]]` table, syntax-checked and normalised (addresses as `ipaddress` prints
    them); `where` ("config FILE: route[2]") lets later warnings name the table."""

    to: str
    via: str
    eni: str  # a MAC (lower case) or an ENI id
    main: bool = False
    where: str = ""

    @property
    def dst(self) -> Any:
        return ipaddress.ip_network(self.to)

    @property
    def gateway(self) -> Any:
        return ipaddress.ip_address(self.via)


def coerce_routes(value: Any, source: str) -> tuple[StaticRoute, ...]:
    """The [[route]] tables; errors name the table as route[N], N counting from 1."""
    if source.startswith("environment"):
        raise ConfigError(f"{source}: route: [[route]] tables can only be given in the config file")
    if not isinstance(value, (list, tuple)) or not all(isinstance(t, dict) for t in value):
        raise ConfigError(f"{source}: route = {value!r}: must be [[route]] tables")
    routes: list[StaticRoute] = []
    for n, table in enumerate(value, 1):
        route = _route(f"{source}: route[{n}]", table)
        for m, other in enumerate(routes, 1):
            if (other.eni, other.to) == (route.eni, route.to):
                raise ConfigError(
                    f"{route.where}.to = {route.to!r}: route[{m}] already routes it via this ENI"
                )
        routes.append(route)
    return tuple(routes)


def _route(where: str, table: dict[str, Any]) -> StaticRoute:
    """One [[route]] table, syntax-checked; `where` starts every error."""
    for key in table:
        if key not in ROUTE_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(ROUTE_KEYS)})")
    for key in ("to", "via", "eni"):
        if key not in table:
            raise ConfigError(f"{where}.{key}: missing")
        if not isinstance(table[key], str):
            raise ConfigError(f"{where}.{key} = {table[key]!r}: must be a string")
    to, why = network(table["to"])
    if to is None:
        raise ConfigError(f"{where}.to = {table['to']!r}: {why}")
    version = ipaddress.ip_network(to).version
    via = address(table["via"], version)
    if via is None:
        raise ConfigError(f"{where}.via = {table['via']!r}: not a unicast IPv{version} address")
    eni, why = eni_ref(table["eni"])
    if eni is None:
        raise ConfigError(f"{where}.eni = {table['eni']!r}: {why}")
    main = table.get("main", False)
    if not isinstance(main, bool):
        raise ConfigError(f"{where}.main = {main!r}: must be true or false")
    return StaticRoute(to, via, eni, main, where)

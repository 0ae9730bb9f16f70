"""`[[route]]` entries: parsed and syntax-checked (route_config.py), then written in the ENI's
table with onlink and, with `main = true`, in main (static_routes.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from test_plan import BOOT_STATE, C6, ETH1, ETH2, MAC3, B, P, converged, ip, net, of, vm

from eni_guest.config import Config, load
from eni_guest.errors import EXIT_USAGE, ConfigError
from eni_guest.plan import RouteChange, plan
from eni_guest.route_config import StaticRoute
from eni_guest.state import MainRoute, Route

C_ID = C6.eni_id
GOOD = f"""
[[route]]
to = "192.0.2.0/24"
via = "10.0.2.5"
eni = "{C_ID}"

[[route]]
to = "198.51.100.0/24"
via = "10.0.1.5"
eni = "0E:00:00:00:00:02"
main = true
"""


def load_text(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "eni-guest.toml"
    path.write_text(text)
    return load(path, environ={})


def test_route_tables_are_read_and_normalised(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, GOOD)
    assert [(r.to, r.via, r.eni, r.main) for r in cfg.route] == [
        ("192.0.2.0/24", "10.0.2.5", C_ID, False),
        ("198.51.100.0/24", "10.0.1.5", "0e:00:00:00:00:02", True),
    ]
    assert cfg.route[0].where.endswith("route[1]")


@pytest.mark.parametrize(
    "table, says",
    [
        ('to = "192.0.2.1/24"\nvia = "10.0.2.5"\neni = "eni-1"', "host bits are set"),
        ('to = "0.0.0.0/0"\nvia = "10.0.2.5"\neni = "eni-1"', "too wide"),
        ('to = "192.0.2.0/24"\nvia = "2001:db8::1"\neni = "eni-1"', "not a unicast IPv4"),
        ('to = "192.0.2.0/24"\nvia = "10.0.2.5"\neni = "0e:00:00:00:00"', "not a MAC"),
        ('to = "192.0.2.0/24"\nvia = "10.0.2.5"', "route[1].eni: missing"),
        ('to = "192.0.2.0/24"\nvia = "10.0.2.5"\neni = "eni-1"\nmain = "yes"', "true or false"),
        ('to = "192.0.2.0/24"\nvia = "10.0.2.5"\neni = "eni-1"\ndev = "eth1"', "unknown key"),
        ('to = 5\nvia = "10.0.2.5"\neni = "eni-1"', "must be a string"),
    ],
)
def test_bad_route_tables_are_one_line_exit_2(tmp_path: Path, table: str, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_text(tmp_path, f"[[route]]\n{table}\n")
    assert says in str(e.value) and "\n" not in str(e.value)
    assert e.value.exit_code == EXIT_USAGE == 2


def test_the_same_destination_twice_through_one_eni_is_refused(tmp_path: Path) -> None:
    one = '[[route]]\nto = "192.0.2.0/24"\nvia = "10.0.2.5"\neni = "eni-1"\n'
    with pytest.raises(ConfigError, match=r"route\[2\].*route\[1\] already routes it"):
        load_text(tmp_path, one + one)
    with pytest.raises(ConfigError, match="only be given in the config file"):
        load(None, environ={"ENI_GUEST_ROUTE": "x"})


def entry(to: str, via: str, eni: str, main: bool = False) -> StaticRoute:
    return StaticRoute(to, via, eni, main, "config test: route[1]")


def test_route_goes_into_the_enis_table_with_onlink_and_into_main_when_asked() -> None:
    cfg = Config(
        route=(
            entry("192.0.2.0/24", "10.0.2.5", C_ID),
            entry("198.51.100.0/24", "10.0.1.5", B.mac, main=True),
        )
    )
    state = converged(vm(P, B, C6), Config(), BOOT_STATE)
    p = plan(vm(P, B, C6), cfg, state)
    assert [c.describe() for c in of(p, RouteChange)] == [
        "route add 192.0.2.0/24 via 10.0.2.5 dev eth2 onlink table 10002",
        "route add 198.51.100.0/24 via 10.0.1.5 dev eth1 onlink table 10001",
        "route add 198.51.100.0/24 via 10.0.1.5 dev eth1 onlink table 254",
    ]
    assert not p.in_sync(MAC3) and not p.warnings
    # as the kernel read gives it back: the one in main is ours too (protocol 229)
    after = converged(vm(P, B, C6), cfg, state)
    assert Route(4, 254, net("198.51.100.0/24"), ETH1.index, ip("10.0.1.5")) in after.routes
    assert plan(vm(P, B, C6), cfg, after).changes == ()
    # the entries go: so do their routes, main's included
    gone = plan(vm(P, B, C6), Config(), after)
    assert sorted((c.op, c.table) for c in of(gone, RouteChange)) == [
        ("del", 254),
        ("del", 10001),
        ("del", 10002),
    ]


def test_what_is_not_written_is_warned_about() -> None:
    cfg = Config(
        route=(
            entry("192.0.2.0/24", "10.0.3.5", C_ID),  # outside 10.0.2.0/24
            entry("10.0.2.0/24", "10.0.2.5", C_ID),  # the ENI's own subnet
            entry("2001:db8:9::/48", "2001:db8:1::5", B.mac),  # B has no IPv6 subnet
            entry("203.0.113.0/24", "10.0.2.5", "eni-not-attached"),  # silently waits
            entry("198.51.100.0/24", "10.0.2.5", MAC3, main=True),  # main has one already
        )
    )
    theirs = MainRoute(Route(4, 254, net("198.51.100.0/24"), ETH2.index, ip("10.0.2.9")), 4)
    state = replace(converged(vm(P, B, C6), Config(), BOOT_STATE), main_routes=(theirs,))
    p = plan(vm(P, B, C6), cfg, state)
    assert len(p.warnings) == 4
    assert "via is outside the ENI's subnets (10.0.2.0/24): not written" in p.warnings[0]
    assert "table 10002 already routes 10.0.2.0/24" in p.warnings[1]
    assert "outside the ENI's subnets (none)" in p.warnings[2]
    assert "main already holds someone else's route" in p.warnings[3]
    # the ENI's table still gets the last one; main's route is left alone and not mirrored
    # over it (our own route at that destination wins)
    assert [c.describe() for c in of(p, RouteChange)] == [
        "route add 198.51.100.0/24 via 10.0.2.5 dev eth2 onlink table 10002"
    ]

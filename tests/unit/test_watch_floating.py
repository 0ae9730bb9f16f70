"""Which address events make the watch daemon follow others' addresses on ENI links at once
(watch_floating.py)."""

from __future__ import annotations

from ipaddress import ip_address

from eni_guest.config import Config
from eni_guest.kernel import Added, Gone
from eni_guest.state import Addr, Link
from eni_guest.watch_floating import came_or_went

CFG = Config(floating_ips=("10.0.2.100/32",))
ENI = Link(3, "eth1", "0e:00:00:00:00:02", 229, True, 1500)
OTHER = Link(4, "docker0", "02:42:ac:11:00:01", 0, True, 1500, kind="bridge")
LINKS = {3: ENI, 4: OTHER}


def addr(ip: str, index: int = 3, proto: object = None) -> Addr:
    return Addr(index, ip_address(ip), 32, proto)  # type: ignore[arg-type]


def test_a_floating_address_on_an_eni_link_coming_or_going_counts() -> None:
    assert came_or_went([Added(addr("10.0.2.100"))], CFG, LINKS) is not None
    assert came_or_went([Gone(addr("10.0.2.100"), None)], CFG, LINKS) is not None


def test_any_address_not_ours_on_an_eni_link_counts_with_no_setting() -> None:
    # floating_ips or not: the planner decides (subnet, exclude_ips, listed elsewhere)
    assert came_or_went([Added(addr("10.0.2.99"))], CFG, LINKS) is not None
    assert came_or_went([Added(addr("10.0.2.100"))], Config(), LINKS) is not None
    assert came_or_went([Gone(addr("10.0.2.77"), None)], Config(), LINKS) is not None


def test_other_addresses_and_links_do_not() -> None:
    assert came_or_went([Added(addr("fe80::1"))], CFG, LINKS) is None  # comes with the link
    assert came_or_went([Added(addr("10.0.2.100", 4))], CFG, LINKS) is None  # not an ENI
    assert came_or_went([Added(addr("10.0.2.100", 9))], CFG, LINKS) is None  # link gone
    assert came_or_went([Added(addr("10.0.2.100", proto=229))], CFG, LINKS) is None  # ours
    assert came_or_went([Gone(addr("10.0.2.100", proto=229), 229)], Config(), LINKS) is None

"""The scope: one decision per ENI, link and IP, that the planner, the settle engine, the
distro drop-ins and `show` all read."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_address, ip_network

import pytest

from eni_guest import scope, settle
from eni_guest.config import Config
from eni_guest.model import Eni, Excluded, Instance, Unsettled
from eni_guest.state import Link

MAC0, MAC1, MAC2, MAC3 = (f"0e:00:00:00:00:0{i}" for i in range(4))
ETH0 = Link(2, "eth0", MAC0, 0, True, 1500)
ETH1 = Link(3, "eth1", MAC1, 0, False, 1500)
ETH2 = Link(4, "eth2", MAC2, 0, False, 1500)
CNI = Link(9, "cni0", "0e:00:00:00:00:99", 0, True, 1500)


def eni(mac: str, device: int) -> Eni:
    return Eni(
        mac,
        f"eni-{device}",
        device,
        0,
        device == 0,
        (ip_address(f"10.0.1.{10 + device}"),),
        (ip_network("10.0.1.0/24"),),
    )


VM = Instance(
    "aws",
    "i-1",
    MAC0,
    (eni(MAC0, 0), eni(MAC1, 1)),
    unsettled=(Unsettled(MAC3, "device-number reads 0"),),
    excluded=(Excluded(MAC2, "eni-2", "exclude_enis 'eni-2'"),),
)

# (config, links) -> {mac: (status, reason or link note, index of the link to configure)}
CASES = [
    (
        Config(),
        (ETH0, ETH1, ETH2),
        {
            MAC0: ("managed", "", 2),
            MAC1: ("managed", "", 3),
            MAC2: ("excluded", "exclude_enis 'eni-2'", None),
            MAC3: ("unsettled", "device-number reads 0", None),
        },
    ),
    (
        Config(exclude_interfaces=("eth1",)),
        (ETH0, ETH1),
        {MAC1: ("excluded", "interface eth1 matches exclude_interfaces 'eth1'", None)},
    ),
    (Config(), (ETH0,), {MAC1: ("managed", "eni-1 (0e:00:00:00:00:01): no interface", None)}),
    (
        Config(),
        (ETH0, replace(ETH1, master=7)),
        {MAC1: ("managed", "eth1 is enslaved to another interface", None)},
    ),
    (
        Config(),
        (ETH0, ETH1, replace(ETH1, index=5, name="eth9")),
        {MAC1: ("managed", "several interfaces carry this MAC (eth1, eth9)", None)},
    ),
    (  # a VLAN on the ENI's MAC is not a second candidate
        Config(),
        (ETH0, ETH1, replace(ETH1, index=5, name="eth1.7", kind="vlan")),
        {MAC1: ("managed", "", 3)},
    ),
    (  # a NIC excluded by name is not waited for either
        Config(exclude_interfaces=("eth3",)),
        (ETH0, Link(6, "eth3", MAC3, 0, False, 1500)),
        {MAC3: ("excluded", "interface eth3 matches exclude_interfaces 'eth3'", None)},
    ),
]


@pytest.mark.parametrize("config,links,expected", CASES)
def test_decide(config: Config, links: tuple[Link, ...], expected: dict) -> None:
    s = scope.of_instance(VM, config, links)
    for mac, (status, words, index) in expected.items():
        e = s.eni(mac)
        assert e is not None and e.status == status
        assert words in (e.reason or e.link_note)
        if status == "managed":
            assert (e.link.index if e.link else None) == index


def test_links_left_alone_by_name_even_when_no_eni() -> None:
    s = scope.of_instance(VM, Config(exclude_interfaces=("cni*",)), (ETH0, ETH1, CNI))
    assert s.links_left_alone == ((9, "cni*"),)
    assert s.left_alone(9) and not s.left_alone(3)


def test_the_distro_keeps_off_managed_and_unsettled_secondaries_only() -> None:
    s = scope.of_instance(VM, Config(exclude_interfaces=("eth1",)), (ETH0, ETH1, ETH2))
    assert s.keep_off_macs(MAC0) == [MAC3]  # eth1 excluded by name, eni-2 by id, eth0 primary
    assert scope.of_instance(VM, Config(), (ETH0, ETH1)).keep_off_macs(MAC0) == [MAC1, MAC3]


def test_the_settle_engine_reads_the_same_decision() -> None:
    s = scope.of_instance(VM, Config(), (ETH0, ETH1, ETH2))
    assert settle.classify(s, MAC1) == (settle.SETTLED, "")
    assert settle.classify(s, MAC2) == (settle.EXCLUDED, "exclude_enis 'eni-2'")
    assert settle.classify(s, MAC3) == (settle.UNSETTLED, "device-number reads 0")
    assert settle.classify(s, "0e:00:00:00:00:77") == (settle.UNLISTED, "")

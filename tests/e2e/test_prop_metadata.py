"""Property 9 of docs/routing.md: a failed or partial metadata read changes nothing at all.

In every case below metadata has *also* changed in a way that would remove IPs (10.0.1.21 and
10.0.2.31 are no longer listed), so an agent that took a failed read for "fewer IPs" would
visibly remove them. After each failing run the test proves the setup was meaningful: with the
fault cleared, a dry run does plan those removals.

A defect in one secondary ENI's own metadata is not a failed read of the others: that ENI is
left exactly as it is (property 9 holds for it) while the others follow metadata, removals
included, and the run still ends with exit 3 naming the key (`PER_ENI`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from e2e_support import (
    SECOND_MAC,
    THIRD_MAC,
    apply_json,
    eni_of,
    forget_kept_metadata,
    three_eni,
    wait_no_tentative,
)

from eni_guest_lab.testbed import FAR_V4, Probe, SimVM

pytestmark = pytest.mark.e2e

Factory = Callable[..., SimVM]
MACS = "latest/meta-data/network/interfaces/macs"

# name -> (control, paths, env, text expected in the one stderr line)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, str], str]] = {
    "http-500-everywhere": ({"fail": 500}, {}, {}, "500"),
    "connection-reset": ({"fail": "reset"}, {}, {}, "metadata"),
    "500-on-local-ipv4s": ({"fail": 500, "fail_paths": ["*/local-ipv4s"]}, {}, {}, "local-ipv4s"),
    "503-on-one-enis-ipv6s": (
        {"fail": 503, "fail_paths": [f"*{THIRD_MAC}/ipv6s"]},
        {},
        {},
        "ipv6s",
    ),
    "service-disabled": ({"disabled": True}, {}, {}, "disabled"),
    "slower-than-timeout": (
        {"delay": 1.5},
        {},
        {"ENI_GUEST_METADATA_TIMEOUT": "0.3", "ENI_GUEST_METADATA_DEADLINE": "1"},
        "metadata",
    ),
    "primary-mac-not-listed": (
        {},
        {"latest/meta-data/mac": "0e:00:00:00:00:ff"},
        {},
        "0e:00:00:00:00:ff",
    ),
    "same-ip-on-two-enis": (
        {},
        {f"{MACS}/{SECOND_MAC}/local-ipv4s": "10.0.1.20\n10.0.1.10"},
        {},
        "10.0.1.10",
    ),
}


def _fewer_ips(scenario: dict[str, Any]) -> dict[str, Any]:
    eni_of(scenario, SECOND_MAC)["local-ipv4s"] = ["10.0.1.20"]
    eni_of(scenario, THIRD_MAC)["local-ipv4s"] = ["10.0.2.30"]
    return scenario


@pytest.fixture(scope="module")
def applied_vm() -> Iterator[SimVM]:
    vm = SimVM(three_eni(), docker=False)
    try:
        vm.start()
        apply_json(vm)
        wait_no_tentative(vm, [vm.guest_ns])  # snapshots must not see the kernel's own DAD
        yield vm
    finally:
        vm.close()


# name -> (the bad ENI, its interface and the address that must stay; the paths; the text
# expected in the last stderr line; the other ENI's address that metadata unassigned)
PER_ENI: dict[str, tuple[str, str, str, dict[str, str], str, tuple[str, str]]] = {
    "ip-outside-its-subnet": (
        SECOND_MAC,
        "eth1",
        "10.0.1.21/32",
        {f"{MACS}/{SECOND_MAC}/local-ipv4s": "10.0.1.20\n10.9.9.9"},
        "10.9.9.9",
        ("eth2", "10.0.2.31/32"),
    ),
    "bad-subnet": (
        THIRD_MAC,
        "eth2",
        "10.0.2.31/32",
        {f"{MACS}/{THIRD_MAC}/subnet-ipv4-cidr-block": "10.0.2.0/33"},
        "/33",
        ("eth1", "10.0.1.21/32"),
    ),
}


@pytest.mark.parametrize("case", list(PER_ENI))
def test_a_defect_in_one_enis_metadata_leaves_it_alone_and_the_others_follow(
    simvm: Factory, case: str
) -> None:
    mac, ifname, kept, paths, expected, (other_if, other_gone) = PER_ENI[case]
    vm = simvm(three_eni(), docker=False)
    apply_json(vm)
    bad = _fewer_ips(three_eni())
    bad["paths"] = paths
    vm.update_scenario(bad)
    forget_kept_metadata(vm)  # a read of every key (a subnet is kept once read)
    cp = vm.agent("apply")
    assert cp.returncode == 3, cp.stderr
    last = cp.stderr.strip().splitlines()[-1]
    assert expected in last and mac in last, last
    assert kept in vm.guest_ips(ifname)  # the bad ENI: nothing removed on a refused read
    assert other_gone not in vm.guest_ips(other_if)  # the other: follows metadata


@pytest.mark.parametrize("case", list(CASES))
def test_property9_failed_read_changes_nothing(applied_vm: SimVM, case: str) -> None:
    vm = applied_vm
    control, paths, env, expected = CASES[case]
    before = vm.snapshot()
    good = three_eni()
    bad = _fewer_ips(three_eni())
    bad["control"].update(control)
    bad["paths"] = paths
    vm.update_scenario(bad)
    forget_kept_metadata(vm)  # a read of every key (`mac` is kept once read)
    try:
        t0 = time.monotonic()
        cp = vm.agent("apply", env=env)
        elapsed = time.monotonic() - t0
        assert cp.returncode == 3, cp.stderr
        lines = cp.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("eni-guest: "), cp.stderr
        assert expected in lines[0], lines[0]
        assert cp.stdout == ""
        assert elapsed < 10, f"gave up only after {elapsed:.1f} s"
        assert vm.snapshot() == before

        # With the fault gone, the same metadata would remove the two IPs: the test was live.
        vm.update_scenario(_fewer_ips(three_eni()))
        plan = json.loads(vm.agent("apply", "--dry-run", "--json").stdout)["changes"]
        assert "addr del 10.0.2.31/32 dev eth2" in plan
        assert "addr del 10.0.1.21/32 dev eth1" in plan
    finally:
        vm.update_scenario(good)
    assert vm.snapshot() == before
    assert vm.probe("10.0.2.31", FAR_V4, count=1) == Probe(True, "eth2", False)


def test_property9_just_attached_eni_withholds_removals_until_it_settles(
    simvm: Factory, scenario_3eni: dict[str, Any]
) -> None:
    """A hot-attached ENI first reads device-number 0 and no IPs (lag): the agent configures
    what it can, removes nothing while the listing is incomplete, and configures the new ENI
    once metadata settles."""
    vm = simvm(scenario_3eni, docker=False)
    apply_json(vm)
    table10000 = vm.guest_routes("10000", 4)
    scn = vm.scenario
    eni_of(scn, THIRD_MAC)["local-ipv4s"] = ["10.0.2.30", "10.0.2.32"]  # .31 removed, .32 new
    vm.update_scenario(scn)
    lag = 2.0
    vm.add_eni(
        {
            "mac": "0e:00:00:00:00:d4",
            "interface-id": "eni-0000000000000000d",
            "device-number": 3,
            "local-ipv4s": ["10.0.3.40"],
            "subnet-ipv4-cidr-block": "10.0.3.0/24",
            "lag": lag,
        },
        attach=True,
    )
    t0 = time.monotonic()
    settling = apply_json(vm)
    # Additions go ahead; the removal of 10.0.2.31 is withheld.
    assert settling["changes"] == [
        "addr add 10.0.2.32/32 dev eth2 metric 229 noprefixroute",
        "rule add from 10.0.2.32 lookup 10002 priority 10003",
    ]
    assert "10.0.2.31/32" in vm.guest_ips("eth2")
    assert vm.guest_ips("eth3") == set()
    assert vm.guest_routes("10000", 4) == table10000  # no collision on the primary's table
    shown = json.loads(vm.agent("show", "--json").stdout)
    assert [u["mac"] for u in shown["unsettled"]] == ["0e:00:00:00:00:d4"]
    assert vm.probe("10.0.2.32", FAR_V4, count=1) == Probe(True, "eth2", False)

    time.sleep(max(0.0, lag + 0.2 - (time.monotonic() - t0)))
    settled = apply_json(vm)
    assert "addr add 10.0.3.40/32 dev eth3 metric 229 noprefixroute" in settled["changes"]
    assert "addr del 10.0.2.31/32 dev eth2" in settled["changes"]
    assert "rule add from 10.0.3.40 lookup 10003 priority 10004" in settled["changes"]
    assert vm.probe("10.0.3.40", FAR_V4, count=1) == Probe(True, "eth3", False)
    assert vm.probe("10.0.3.40", "10.0.3.200", count=1) == Probe(True, "eth3", False)
    assert vm.guest_routes("10000", 4) == table10000
    assert apply_json(vm)["changes"] == []

"""One bad ENI never blocks the others (README "Safety rules").

A defect in one secondary ENI's metadata leaves that ENI exactly as it is (nothing added,
nothing removed for it), every other ENI is configured (removals included: the read is
otherwise complete), and the run ends with exit 3 naming the key and the value.
"""

from __future__ import annotations

import copy
from typing import Callable

import pytest
from e2e_support import SECOND_MAC, THIRD_MAC, agent_rules, apply_json, eni_of, three_eni

from eni_guest_lab.testbed import FAR_V4, SimVM

pytestmark = pytest.mark.e2e

Factory = Callable[..., SimVM]
KEY = f"macs/{THIRD_MAC}/local-ipv4s"


def leaves_through(vm: SimVM, src: str, ifname: str) -> None:
    p = vm.probe(src, FAR_V4)
    assert p.ok and p.exit_iface == ifname and not p.dropped_by_rpf, p


def refused(vm: SimVM) -> str:
    cp = vm.agent("apply")
    assert cp.returncode == 3, cp.stderr
    assert "Traceback" not in cp.stderr
    last = cp.stderr.strip().splitlines()[-1]
    assert KEY in last and "'10.0.9.9'" in last and "outside the ENI's subnets" in last, last
    return cp.stderr


def test_a_bad_eni_at_first_apply_is_left_unconfigured_and_the_others_work(
    simvm: Factory,
) -> None:
    scenario = three_eni()
    eni_of(scenario, THIRD_MAC)["local-ipv4s"] = ["10.0.2.30", "10.0.9.9"]
    vm = simvm(scenario, docker=False)
    refused(vm)
    leaves_through(vm, "10.0.1.21", "eth1")
    leaves_through(vm, "10.0.1.11", "eth0")
    assert not {"10.0.2.30/32", "10.0.9.9/32"} & vm.guest_ips("eth2")
    assert not [r for r in agent_rules(vm) if str(r.get("src", "")).startswith("10.0.2.")]


def test_a_bad_eni_keeps_what_it_had_while_the_others_follow_metadata(simvm: Factory) -> None:
    vm = simvm(three_eni(), docker=False)
    apply_json(vm)
    before = {r["src"] for r in agent_rules(vm) if str(r.get("src", "")).startswith("10.0.2.")}
    changed = copy.deepcopy(vm.scenario)
    eni_of(changed, THIRD_MAC)["local-ipv4s"] = ["10.0.2.30", "10.0.9.9"]  # .31 gone, bad IP
    eni_of(changed, SECOND_MAC)["local-ipv4s"] = ["10.0.1.20"]  # .21 unassigned
    vm.update_scenario(changed)

    refused(vm)
    # the second ENI follows metadata: its unassigned IP's address goes
    assert "10.0.1.21/32" not in vm.guest_ips("eth1")
    leaves_through(vm, "10.0.1.20", "eth1")
    # the bad ENI is left exactly as it was: .31 is not removed on a metadata the run refused
    assert {"10.0.2.30/32", "10.0.2.31/32"} <= vm.guest_ips("eth2")
    after = {r["src"] for r in agent_rules(vm) if str(r.get("src", "")).startswith("10.0.2.")}
    assert after == before
    leaves_through(vm, "10.0.2.30", "eth2")  # (the VPC itself no longer routes .31 here)

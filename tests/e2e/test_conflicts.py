"""What others put in the kernel that conflicts with eni-guest's routing is never overwritten.

A route someone else put inside eni-guest's table range: the planner only ever replaces routes
it can see are its own (protocol 229); a new route is added with NLM_F_EXCL, so an
administrator's route at the same destination makes the run fail loudly (exit 4, naming the
table) instead of being silently replaced.

A rule someone else put before eni-guest's that takes an ENI IP's traffic (capture.py): it is
reported by `show` (SYNC "captured") and by `apply` (one warning), and left exactly as it is.
"""

from __future__ import annotations

import json

from conftest import PRIMARY_MAC, SECOND_MAC

from eni_guest_lab import testbed


def test_foreign_route_at_our_destination_is_kept_and_reported(simvm, scenario_3eni) -> None:
    vm = simvm(scenario_3eni)
    eth1 = vm.ifname_of(SECOND_MAC)
    vm.guest(["ip", "link", "set", eth1, "up"])
    vm.guest(
        [
            "ip",
            "route",
            "add",
            "default",
            "via",
            "10.0.1.99",
            "dev",
            eth1,
            "onlink",
            "table",
            "10001",
            "proto",
            "static",
        ]
    )

    def foreign_default() -> list:
        routes = json.loads(vm.guest(["ip", "-j", "route", "show", "table", "10001"]).stdout)
        return [r for r in routes if r["dst"] == "default"]

    before = foreign_default()
    assert before and before[0]["gateway"] == "10.0.1.99"

    r = vm.agent("apply")

    assert r.returncode == 4
    err = r.stderr.strip().splitlines()[-1]
    assert "table 10001" in err and "did not create" in err
    # the administrator's route is exactly as it was
    assert foreign_default() == before
    # the stage that failed stopped the run: no per-IP rule sends traffic to a table we do
    # not control, and the primary keeps working through main
    rules = vm.guest(["ip", "rule", "show"]).stdout
    assert "lookup 10001" not in rules
    assert vm.probe("10.0.1.10", testbed.FAR_V4).exit_iface == vm.ifname_of(PRIMARY_MAC)

    # once the administrator removes it, the next run converges
    vm.guest(["ip", "route", "del", "default", "table", "10001"])
    assert vm.agent("apply").returncode == 0
    assert vm.probe("10.0.1.20", testbed.FAR_V4).exit_iface == eth1
    again = json.loads(vm.agent("apply", "--json").stdout)
    assert again["changes"] == []


def test_foreign_rule_capturing_an_eni_ip_is_reported_and_kept(simvm, scenario_3eni) -> None:
    vm = simvm(scenario_3eni)
    assert vm.agent("apply").returncode == 0
    capturing = ["from", "10.0.1.20", "lookup", "77", "priority", "100"]
    narrowed = ["from", "10.0.1.21", "fwmark", "0x1", "lookup", "78", "priority", "101"]
    for rule in (capturing, narrowed):
        vm.guest(["ip", "rule", "add", *rule])
    before = vm.guest(["ip", "rule", "show"]).stdout
    why = "captured by foreign rule 'from 10.0.1.20 lookup 77' at priority 100"

    rows = {r["mac"]: r for r in json.loads(vm.agent("show", "--json").stdout)["enis"]}
    assert rows[SECOND_MAC]["in_sync"] is False
    assert rows[SECOND_MAC]["captured"] == [f"10.0.1.20: {why}"]  # not .21: fwmark narrows it
    assert rows[PRIMARY_MAC]["in_sync"] is True
    shown = vm.agent("show")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    eth1 = vm.ifname_of(SECOND_MAC)
    assert next(line for line in lines if line.startswith(f"{eth1} ")).split()[5] == "captured"
    eni_id = rows[SECOND_MAC]["eni_id"]
    assert [line for line in lines if line.startswith("captured:")] == [
        f"captured: {eni_id} ({SECOND_MAC}): 10.0.1.20: {why}"
    ]

    r = vm.agent("apply")
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if "captured by" in line]
    assert len(warnings) == 1 and f"10.0.1.20: {why}, before eni-guest's rule" in warnings[0]
    assert "10.0.1.21" not in r.stderr
    # eni-guest changed neither rule, nor anything else
    assert vm.guest(["ip", "rule", "show"]).stdout == before
    assert json.loads(vm.agent("apply", "--json").stdout)["changes"] == []

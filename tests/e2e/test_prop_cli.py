"""The command line as an operator meets it on a simulated VM: `show`, `apply --dry-run`, what
`apply` prints, concurrent runs and the lock, and interface names that do not follow device
numbers (ENIs are matched by MAC only)."""

from __future__ import annotations

import fcntl
import json
import time
from typing import Any, Callable

import pytest
from e2e_support import (
    PRIMARY_MAC,
    SECOND_MAC,
    THIRD_MAC,
    apply_json,
    eni_of,
    start_agent,
)

from eni_guest_lab.testbed import FAR_V4, FAR_V6, Probe, SimVM

pytestmark = pytest.mark.e2e

Factory = Callable[..., SimVM]

ENI_IDS = {
    PRIMARY_MAC: "eni-0000000000000000a",
    SECOND_MAC: "eni-0000000000000000b",
    THIRD_MAC: "eni-0000000000000000c",
}


def _show(vm: SimVM) -> dict[str, Any]:
    cp = vm.agent("show", "--json")
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)


def _dry_run(vm: SimVM) -> list[str]:
    cp = vm.agent("apply", "--dry-run", "--json")
    assert cp.returncode == 0, cp.stderr
    out = json.loads(cp.stdout)
    assert out["dry_run"] is True
    return list(out["changes"])


def _change_of(line: str) -> str:
    """``eni-guest: <change> (eni-…)`` -> ``<change>``."""
    assert line.startswith("eni-guest: "), line
    text = line[len("eni-guest: ") :]
    return text.rsplit(" (eni-", 1)[0] if text.endswith(")") else text


def test_show_lists_every_eni_and_whether_it_is_in_sync(
    simvm: Factory, scenario_3eni: dict[str, Any]
) -> None:
    vm = simvm(scenario_3eni, docker=False)
    before = _show(vm)
    rows = {r["mac"]: r for r in before["enis"]}
    assert set(rows) == set(ENI_IDS)
    expected = {
        PRIMARY_MAC: ("eth0", 0, 10000, ["10.0.1.10", "10.0.1.11", "2001:db8:1::10"]),
        SECOND_MAC: ("eth1", 1, 10001, ["10.0.1.20", "10.0.1.21"]),
        THIRD_MAC: ("eth2", 2, 10002, ["10.0.2.30", "10.0.2.31", "2001:db8:2::30"]),
    }
    for mac, (ifname, device, table, ips) in expected.items():
        row = rows[mac]
        assert (row["interface"], row["eni_id"], row["device_number"], row["table"]) == (
            ifname,
            ENI_IDS[mac],
            device,
            table,
        )
        assert [i["ip"] for i in row["ips"]] == ips
        assert row["in_sync"] is False, row
    eips = {i["ip"]: i["elastic_ip"] for r in rows.values() for i in r["ips"]}
    assert eips.pop("10.0.1.11") == "203.0.113.5"
    assert set(eips.values()) == {None}
    assert rows[PRIMARY_MAC]["primary"] is True
    text = vm.agent("show").stdout
    assert "10.0.1.11 -> 203.0.113.5" in text

    apply_json(vm)
    assert [r["in_sync"] for r in _show(vm)["enis"]] == [True, True, True]

    scn = vm.scenario
    eni_of(scn, THIRD_MAC)["local-ipv4s"].append("10.0.2.32")
    vm.update_scenario(scn)
    assert {r["interface"]: r["in_sync"] for r in _show(vm)["enis"]} == {
        "eth0": True,
        "eth1": True,
        "eth2": False,
    }


def test_dry_run_changes_nothing_and_prints_the_plan(
    simvm: Factory, scenario_3eni: dict[str, Any]
) -> None:
    vm = simvm(scenario_3eni)
    before = vm.snapshot()
    cp = vm.agent("apply", "--dry-run")
    assert cp.returncode == 0, cp.stderr
    assert cp.stderr == ""
    assert vm.snapshot() == before
    plan = cp.stdout.splitlines()
    assert "addr add 10.0.1.20/32 dev eth1 metric 229 noprefixroute" in plan
    assert not vm.probe("10.0.1.20", FAR_V4, count=1)  # still unconfigured
    # The plan is exactly what apply then does.
    assert apply_json(vm)["changes"] == plan
    cp = vm.agent("apply", "--dry-run")
    assert cp.stdout == "# no changes: the kernel matches metadata\n"


def test_apply_logs_one_line_per_change_then_nothing(
    simvm: Factory, scenario_3eni: dict[str, Any]
) -> None:
    vm = simvm(scenario_3eni, docker=False)
    plan = _dry_run(vm)
    cp = vm.agent("apply")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == ""
    lines = cp.stderr.splitlines()
    # first the NetworkManager/networkd drop-ins for the secondary ENIs and networkd's
    # keep-foreign-rules-and-routes drop-in, then the kernel
    root = vm.distro_root()
    assert lines[:3] == [
        f"eni-guest: wrote {root}/run/NetworkManager/conf.d/90-eni-guest.conf",
        f"eni-guest: wrote {root}/run/systemd/network/05-eni-guest.network",
        f"eni-guest: wrote {root}/run/systemd/networkd.conf.d/60-eni-guest.conf",
    ]
    lines = lines[3:]
    assert [_change_of(line) for line in lines] == plan
    assert lines[plan.index("link set dev eth1 up group 229")].endswith(f"({ENI_IDS[SECOND_MAC]})")
    again = vm.agent("apply")
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")


def test_two_simultaneous_applies_are_serialised(
    simvm: Factory, scenario_3eni: dict[str, Any]
) -> None:
    vm = simvm(scenario_3eni, docker=False)
    plan = _dry_run(vm)
    procs = [start_agent(vm, "apply"), start_agent(vm, "apply")]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    done = [
        _change_of(line) for _, err in outs for line in err.splitlines() if " wrote " not in line
    ]
    # Every change made exactly once, by one run or the other, never twice or half.
    assert sorted(done) == sorted(plan)
    assert apply_json(vm)["changes"] == []
    for ip, dst, ifname in [
        ("10.0.1.11", FAR_V4, "eth0"),
        ("10.0.1.21", "10.0.1.200", "eth1"),
        ("2001:db8:2::30", FAR_V6, "eth2"),
    ]:
        assert vm.probe(ip, dst, count=1) == Probe(True, ifname, False)


def test_lock_held_by_another_run_exits_5_and_changes_nothing(
    simvm: Factory, scenario_3eni: dict[str, Any]
) -> None:
    vm = simvm(scenario_3eni, docker=False)
    before = vm.snapshot()
    requests = vm.metadata_stats().get("requests", 0)
    with open(vm.lock_file, "a+") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        t0 = time.monotonic()
        cp = vm.agent("apply", env={"ENI_GUEST_LOCK_TIMEOUT": "0.2"})
        elapsed = time.monotonic() - t0
    assert cp.returncode == 5, cp.stderr
    lines = cp.stderr.splitlines()
    assert len(lines) == 1 and "lock" in lines[0] and str(vm.lock_file) in lines[0], cp.stderr
    assert elapsed < 5
    assert vm.snapshot() == before
    assert vm.metadata_stats().get("requests", 0) == requests  # metadata not even read
    # Once the lock is free, the same command works.
    assert apply_json(vm, env={"ENI_GUEST_LOCK_TIMEOUT": "0.2"})["changes"]


@pytest.mark.parametrize(
    "names",
    [
        {PRIMARY_MAC: "eth0", SECOND_MAC: "ens7", THIRD_MAC: "eth1"},
        {PRIMARY_MAC: "ens5", SECOND_MAC: "eth2", THIRD_MAC: "eth0"},
    ],
    ids=["ens7-and-eth1", "secondary-called-eth0"],
)
def test_interface_names_that_do_not_follow_device_numbers(
    simvm: Factory, scenario_3eni: dict[str, Any], names: dict[str, str]
) -> None:
    vm = simvm(scenario_3eni, docker=False, ifnames=names)
    assert {mac: vm.ifname_of(mac) for mac in names} == names
    apply_json(vm)
    rows = {r["mac"]: r for r in _show(vm)["enis"]}
    tables = {PRIMARY_MAC: 10000, SECOND_MAC: 10001, THIRD_MAC: 10002}
    for mac, ifname in names.items():
        assert (rows[mac]["interface"], rows[mac]["table"], rows[mac]["in_sync"]) == (
            ifname,
            tables[mac],
            True,
        )
        devs = {r["dev"] for r in vm.guest_routes(str(tables[mac]), 4)}
        assert devs == {ifname}, (mac, devs)
    for ip, dst, mac in [
        ("10.0.1.11", FAR_V4, PRIMARY_MAC),
        ("10.0.1.20", FAR_V4, SECOND_MAC),
        ("10.0.1.21", "10.0.1.200", SECOND_MAC),
        ("10.0.2.30", FAR_V4, THIRD_MAC),
        ("10.0.2.31", "10.0.1.200", THIRD_MAC),
        ("2001:db8:2::30", FAR_V6, THIRD_MAC),
        ("2001:db8:1::10", FAR_V6, PRIMARY_MAC),
    ]:
        probe = vm.probe(ip, dst, count=1)
        assert probe == Probe(True, names[mac], False), probe.detail
    # Unbound traffic keeps leaving through the primary, whatever its name.
    assert vm.probe(None, FAR_V4, count=1) == Probe(True, names[PRIMARY_MAC], False)

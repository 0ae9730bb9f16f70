"""Properties 6, 7 and 8 of docs/routing.md across the life of a VM, and recovery from a crash.

Each test builds its own simulated VM (about half a second) and walks it through apply,
re-apply, metadata changes and ENI removal, checking after every step what a user would
notice: a dropped SSH session, a lost DHCP address, a vanished administrator's rule, an extra
change on a re-apply, traffic from a new IP that does not work.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
from typing import Any, Callable

import pytest
from e2e_support import (
    OURS,
    PRIMARY_MAC,
    PRIO_RANGE,
    SECOND_MAC,
    TABLE_RANGE,
    THIRD_MAC,
    addr_protocols,
    agent_rules,
    apply_json,
    eni_of,
    foreign_view,
    link,
    primary_state,
    start_agent,
    wait_no_tentative,
)

from eni_guest_lab.testbed import FAR_V4, FAR_V6, Probe, SimVM

pytestmark = pytest.mark.e2e

Factory = Callable[..., SimVM]


def _connections_alive(held: dict[str, Any]) -> list[str]:
    return [name for name, h in held.items() if not h.alive(timeout=5.0)]


# ------------------------------------------------------------------------------- property 6


def test_property6_primary_keeps_dhcp_address_default_route_and_connections(
    simvm: Factory, scenario_3eni: dict[str, Any]
) -> None:
    vm = simvm(scenario_3eni, docker=False)
    vm.start_tcp_server(FAR_V4, 2222)
    vm.start_tcp_server(FAR_V6, 2222)
    held = {
        "unbound v4": vm.hold_connection(None, FAR_V4, 2222),
        "from 10.0.1.10": vm.hold_connection("10.0.1.10", FAR_V4, 2222),
        "from 2001:db8:1::10": vm.hold_connection("2001:db8:1::10", FAR_V6, 2222),
    }
    initial = primary_state(vm)
    # As a DHCP client and RA left them, never marked as the agent's.
    assert ("10.0.1.10/24", None) in initial["addrs"]
    assert ("2001:db8:1::10/64", None) in initial["addrs"]
    assert [(r["gateway"], r["dev"], r["protocol"]) for r in initial["default4"]] == [
        ("10.0.1.1", "eth0", "dhcp")
    ]

    def metadata_change() -> None:
        scn = vm.scenario
        eni_of(scn, PRIMARY_MAC)["local-ipv4s"] = ["10.0.1.10", "10.0.1.12"]
        eni_of(scn, PRIMARY_MAC)["ipv4-associations"] = {"203.0.113.5": "10.0.1.12"}
        eni_of(scn, THIRD_MAC)["local-ipv4s"].append("10.0.2.32")
        vm.update_scenario(scn)

    steps: list[tuple[str, Callable[[], None]]] = [
        ("first apply", lambda: None),
        ("re-apply", lambda: None),
        ("metadata change", metadata_change),
        ("ENI detached", lambda: vm.detach(THIRD_MAC)),
        (
            "ENI gone from metadata, NIC still there",
            lambda: vm.update_scenario(
                {**vm.scenario, "enis": [e for e in vm.scenario["enis"] if e["mac"] != SECOND_MAC]}
            ),
        ),
    ]
    for name, step in steps:
        step()
        apply_json(vm)
        assert _connections_alive(held) == [], f"connections dropped after: {name}"
        assert primary_state(vm) == initial, f"primary changed after: {name}"
        assert link(vm, "eth0")["group"] == OURS
        probe = vm.tcp_check(None, FAR_V4, 2222)
        assert probe == Probe(True, "eth0", False), f"{name}: {probe.detail}"
    # The primary's secondary IPs did follow metadata all along.
    protos = addr_protocols(vm)
    assert ("eth0", "10.0.1.12/32") in protos and ("eth0", "10.0.1.11/32") not in protos
    assert vm.probe("10.0.1.12", FAR_V4, count=1) == Probe(True, "eth0", False)


# ------------------------------------------------------------------------------- property 7

_FOREIGN = [
    # rule and route of someone else's policy routing
    ["ip", "rule", "add", "to", "192.0.2.0/24", "lookup", "300", "priority", "500"],
    ["ip", "route", "add", "192.0.2.0/24", "via", "10.0.1.1", "dev", "eth0", "table", "300"],
    ["ip", "-6", "rule", "add", "to", "2001:db8:99::/64", "lookup", "300", "priority", "500"],
    ["ip", "-6", "route", "add", "2001:db8:99::/64", "via", "2001:db8:1::1", "table", "300"],
    # an administrator's route in main
    ["ip", "route", "add", "198.18.5.0/24", "via", "10.0.1.1", "dev", "eth0", "proto", "static"],
    # inside the agent's priority range and table range, but not the agent's protocol
    ["ip", "rule", "add", "from", "10.0.2.99", "lookup", "300", "priority", "10005", "proto"]
    + ["static"],
    ["ip", "-6", "rule", "add", "from", "2001:db8:2::99", "lookup", "300", "priority", "10003"]
    + ["proto", "static"],
    ["ip", "route", "add", "192.0.2.0/24", "via", "10.0.1.1", "dev", "eth0", "table", "10001"]
    + ["proto", "static"],
    ["ip", "-6", "route", "add", "2001:db8:99::/64", "via", "2001:db8:1::1", "dev", "eth0"]
    + ["table", "10002", "proto", "static"],
    # an address added by hand on a secondary ENI, and one on the primary
    ["ip", "addr", "add", "10.0.1.99/32", "dev", "eth1"],
    ["ip", "addr", "add", "10.0.1.98/32", "dev", "eth0"],
]


def test_property7_foreign_rules_routes_addresses_survive_everything(
    simvm: Factory, scenario_3eni: dict[str, Any]
) -> None:
    vm = simvm(scenario_3eni, docker=False)
    for cmd in _FOREIGN:
        vm.guest(cmd)
    foreign = foreign_view(vm)
    assert "eth1 10.0.1.99/32" in foreign["addrs"]
    assert any(r.get("priority") == 10005 for r in foreign["rules4"])
    assert any(r.get("table") == "10001" for r in foreign["routes4"])

    def remove_ips() -> None:
        scn = vm.scenario
        eni_of(scn, SECOND_MAC)["local-ipv4s"] = ["10.0.1.20"]
        eni_of(scn, THIRD_MAC)["local-ipv4s"] = ["10.0.2.30"]
        eni_of(scn, THIRD_MAC).pop("ipv6s")
        vm.update_scenario(scn)

    def remove_enis() -> None:
        vm.detach(THIRD_MAC)
        scn = vm.scenario
        scn["enis"] = [e for e in scn["enis"] if e["mac"] != SECOND_MAC]
        vm.update_scenario(scn)

    for name, step in [
        ("apply", lambda: None),
        ("metadata change removing IPs", remove_ips),
        ("ENIs removed from metadata", remove_enis),
    ]:
        step()
        result = apply_json(vm)
        assert result["changes"], f"{name}: the agent had work to do"
        assert foreign_view(vm) == foreign, f"a foreign object changed after: {name}"
    # The agent did clean up its own things on eth1, and only those.
    assert vm.guest_ips("eth1", 4) == {"10.0.1.99/32"}
    assert link(vm, "eth1")["group"] == "default"
    assert [r for r in agent_rules(vm) if r.get("src", "").startswith("10.0.1.2")] == []


def test_property7_agent_objects_recognisable_from_kernel_alone(
    simvm: Factory, scenario_3eni: dict[str, Any]
) -> None:
    vm = simvm(scenario_3eni)
    for cmd in _FOREIGN:
        vm.guest(cmd)
    vm.guest(["ip", "addr", "add", "198.51.100.9/32", "dev", "eth2"])  # outside its subnets
    foreign = foreign_view(vm)
    foreign_rules = foreign["rules4"] + foreign["rules6"]
    apply_json(vm)

    # Rules: anything not foreign carries the agent's protocol and a priority in its range.
    for fam in (4, 6):
        for rule in vm.guest_rules(fam):
            if rule in foreign_rules:
                continue
            assert rule.get("protocol") == OURS, rule
            assert rule["priority"] in PRIO_RANGE, rule
    # shared rule per family + one per private IP + one per hand-made address inside its
    # ENI's subnet (10.0.1.99 on eth1, 10.0.1.98 on eth0: floating.py); none for one outside
    srcs = sorted((r["src"], r["table"]) for r in agent_rules(vm) if r.get("src"))
    assert ("10.0.1.99", "10001") in srcs and ("10.0.1.98", "10000") in srcs, srcs
    assert "198.51.100.9" not in {src for src, _ in srcs}
    assert len(agent_rules(vm)) == 2 + 8 + 2

    # Routes in the agent's tables: the agent's protocol, unless foreign.
    ours_tables = set()
    for fam in (4, 6):
        for route in vm.guest_routes("all", fam):
            table = route.get("table", "main")
            if table.isdigit() and int(table) in TABLE_RANGE:
                if route.get("protocol") != OURS:
                    assert {k: v for k, v in route.items() if k != "expires"} in foreign[
                        f"routes{fam}"
                    ], route
                else:
                    ours_tables.add(int(table))
            else:
                assert route.get("protocol") != OURS, f"agent route outside its tables: {route}"
    assert ours_tables == {10000, 10001, 10002}

    # Addresses: those the agent added carry its protocol; DHCP's and the admin's do not.
    protos = addr_protocols(vm)
    added = {
        ("eth0", "10.0.1.11/32"),
        ("eth1", "10.0.1.20/32"),
        ("eth1", "10.0.1.21/32"),
        ("eth2", "10.0.2.30/32"),
        ("eth2", "10.0.2.31/32"),
        ("eth2", "2001:db8:2::30/128"),
    }
    assert {k for k, p in protos.items() if p == int(OURS)} == added
    for key in [("eth0", "10.0.1.10/24"), ("eth0", "2001:db8:1::10/64"), ("eth1", "10.0.1.99/32")]:
        assert protos[key] is None, key

    # Links: the ENIs, and only they, are in the agent's group.
    groups = {x["ifname"]: x["group"] for x in vm.guest_links()}
    assert {n for n, g in groups.items() if g == OURS} == {"eth0", "eth1", "eth2"}


# ------------------------------------------------------------------------------- property 8


def test_property8_second_apply_changes_nothing(
    simvm: Factory, scenario_3eni: dict[str, Any]
) -> None:
    vm = simvm(scenario_3eni, docker=False)
    first = apply_json(vm)
    assert first["netlink_requests"] >= len(first["changes"]) > 0
    wait_no_tentative(vm, [vm.guest_ns])  # the kernel's own IPv6 work on links just brought up
    after_first = vm.snapshot()
    second = apply_json(vm)
    assert second["changes"] == []
    assert second["netlink_requests"] == 0
    assert second["stderr"] == ""
    assert vm.snapshot() == after_first


def test_property8_metadata_change_applies_exactly_the_difference(
    simvm: Factory, scenario_3eni: dict[str, Any]
) -> None:
    vm = simvm(scenario_3eni, docker=False)
    apply_json(vm)
    scn = vm.scenario
    eni_of(scn, THIRD_MAC)["local-ipv4s"].append("10.0.2.32")
    eni_of(scn, THIRD_MAC)["ipv6s"].append("2001:db8:2::32")
    eni_of(scn, SECOND_MAC)["local-ipv4s"].remove("10.0.1.21")
    vm.update_scenario(scn)

    result = apply_json(vm)
    assert result["changes"] == [
        "addr add 10.0.2.32/32 dev eth2 metric 229 noprefixroute",
        "addr add 2001:db8:2::32/128 dev eth2 metric 229 noprefixroute nodad",
        "rule add from 10.0.2.32 lookup 10002 priority 10003",
        "rule add from 2001:db8:2::32 lookup 10002 priority 10003",
        "rule del from 10.0.1.21 lookup 10001 priority 10002",
        "addr del 10.0.1.21/32 dev eth1",
    ]
    # stderr: one line per change, naming the ENI.
    lines = result["stderr"].splitlines()
    assert len(lines) == 6
    assert (
        lines[0] == "eni-guest: addr add 10.0.2.32/32 dev eth2 metric 229 noprefixroute "
        "(eni-0000000000000000c)"
    )

    assert vm.probe("10.0.2.32", FAR_V4, count=1) == Probe(True, "eth2", False)
    assert vm.probe("2001:db8:2::32", FAR_V6, count=1) == Probe(True, "eth2", False)
    assert "10.0.1.21/32" not in vm.guest_ips("eth1")
    assert not any(r.get("src") == "10.0.1.21" for r in agent_rules(vm))
    gone = vm.probe("10.0.1.21", FAR_V4, count=1)
    assert not gone.ok and gone.exit_iface is None, gone.detail
    # The ENIs that did not change still work.
    assert vm.probe("10.0.1.20", "10.0.1.200", count=1) == Probe(True, "eth1", False)
    assert apply_json(vm)["changes"] == []


def test_property8_ip_moves_between_enis_of_one_subnet(
    simvm: Factory, scenario_3eni: dict[str, Any]
) -> None:
    """10.0.1.21 is reassigned from eth1 to the primary (same subnet): it follows at once."""
    vm = simvm(scenario_3eni, docker=False)
    apply_json(vm)
    assert vm.probe("10.0.1.21", FAR_V4, count=1) == Probe(True, "eth1", False)
    scn = vm.scenario
    eni_of(scn, SECOND_MAC)["local-ipv4s"].remove("10.0.1.21")
    eni_of(scn, PRIMARY_MAC)["local-ipv4s"].append("10.0.1.21")
    vm.update_scenario(scn)
    result = apply_json(vm)
    assert result["changes"] == [
        "addr add 10.0.1.21/32 dev eth0 metric 229 noprefixroute",
        "rule add from 10.0.1.21 lookup 10000 priority 10001",
        "rule del from 10.0.1.21 lookup 10001 priority 10002",
        "addr del 10.0.1.21/32 dev eth1",
    ]
    for dst in (FAR_V4, "10.0.1.200", "10.0.2.200"):
        probe = vm.probe("10.0.1.21", dst, count=1)
        assert probe == Probe(True, "eth0", False), probe.detail


# ------------------------------------------------------------------------------- crash


def _agent_object_deletions(vm: SimVM) -> list[list[str]]:
    """`ip` commands deleting everything that carries the agent's marks, found by them alone."""
    cmds: list[list[str]] = []
    for rule in agent_rules(vm):
        sel = ["from", rule["src"]] if rule["src"] != "all" else []
        cmds.append(["ip", f"-{rule['family']}", "rule", "del", "priority", str(rule["priority"])])
        cmds[-1] += sel + ["table", rule["table"]]
    for fam in (4, 6):
        for r in vm.guest_routes("all", fam):
            if r.get("protocol") == OURS:
                cmds.append(
                    [
                        "ip",
                        f"-{fam}",
                        "route",
                        "del",
                        r["dst"],
                        "dev",
                        r["dev"],
                        "table",
                        r["table"],
                    ]
                )
    for (dev, ip), proto in addr_protocols(vm).items():
        if proto == int(OURS):
            cmds.append(["ip", "addr", "del", ip, "dev", dev])
    return cmds


def _run_batch(vm: SimVM, cmds: list[list[str]]) -> None:
    """Run ``ip`` commands in one process per family (a batch line takes no options)."""
    for fam in ("-4", "-6"):
        lines = []
        for c in cmds:
            if c[1] in ("-4", "-6"):
                if c[1] == fam:
                    lines.append(c[2:])
            elif (fam == "-6") == any(":" in word for word in c if "/" in word):
                lines.append(c[1:])
        if lines:
            text = "".join(" ".join(words) + "\n" for words in lines)
            # -force: a deletion may find its object gone already (the kernel drops a link's
            # IPv4 routes with its last IPv4 address), which is fine for a simulated crash.
            cmd = ["ip", "-n", vm.guest_ns, "-force", fam, "-batch", "-"]
            subprocess.run(cmd, input=text, text=True, check=False, capture_output=True)


def _delete_some(vm: SimVM, rng: random.Random) -> list[str]:
    """Delete a random half of what the agent made, by hand: what a crash could leave."""
    cmds = _agent_object_deletions(vm)
    cmds.append(["ip", "link", "set", "eth2", "down"])
    cmds.append(["ip", "link", "set", "eth1", "group", "0"])
    chosen = rng.sample(cmds, len(cmds) // 2)
    # Link changes last: a link going down takes its routes (and IPv6 addresses) with it.
    _run_batch(vm, [c for c in chosen if c[1] != "link"])
    for cmd in chosen:
        if cmd[1] == "link":
            vm.guest(cmd)
    return [" ".join(c) for c in chosen]


@pytest.mark.parametrize("seed", [1, 2])
def test_crash_half_way_converges_on_next_apply(
    simvm: Factory, scenario_3eni: dict[str, Any], seed: int
) -> None:
    vm = simvm(scenario_3eni)
    apply_json(vm)
    wait_no_tentative(vm, [vm.guest_ns])
    reference = vm.snapshot()
    deleted = _delete_some(vm, random.Random(seed))
    assert vm.snapshot() != reference
    result = apply_json(vm)
    assert result["changes"], deleted
    wait_no_tentative(vm, [vm.guest_ns])  # a link set down and up again redoes IPv6 DAD
    assert vm.snapshot() == reference, deleted
    assert apply_json(vm)["changes"] == []
    for ip, dst, exit_iface in [
        ("10.0.1.11", FAR_V4, "eth0"),
        ("10.0.1.20", "10.0.1.200", "eth1"),
        ("10.0.2.31", FAR_V4, "eth2"),
        ("2001:db8:2::30", FAR_V6, "eth2"),
    ]:
        assert vm.probe(ip, dst, count=1) == Probe(True, exit_iface, False), (ip, deleted)


def test_show_after_crash_does_not_claim_in_sync(
    simvm: Factory, scenario_3eni: dict[str, Any]
) -> None:
    """After a crash that left out the shared rule, `show` must not report all ENIs in sync:
    without that rule an ENI address cannot reach the container (property 4)."""
    vm = simvm(scenario_3eni)
    apply_json(vm)
    vm.guest(["ip", "-4", "rule", "del", "priority", "10000"])
    plan = json.loads(vm.agent("apply", "--dry-run", "--json").stdout)["changes"]
    assert plan == ["rule add from all lookup main suppress_ifgroup 229 priority 10000"]
    shown = json.loads(vm.agent("show", "--json").stdout)
    assert not all(e["in_sync"] for e in shown["enis"]), shown["enis"]


def _wipe_agent_objects(vm: SimVM) -> None:
    _run_batch(vm, _agent_object_deletions(vm))
    assert agent_rules(vm) == []


def _big_scenario(enis: int = 12, ips: int = 40) -> dict[str, Any]:
    out = []
    for n in range(enis):
        out.append(
            {
                "mac": f"0e:be:00:00:00:{n:02x}",
                "interface-id": f"eni-big{n:08d}",
                "device-number": n,
                "local-ipv4s": [f"10.0.{n + 1}.{10 + i}" for i in range(ips)],
                "subnet-ipv4-cidr-block": f"10.0.{n + 1}.0/24",
            }
        )
    return {"provider": "aws", "primary_mac": out[0]["mac"], "enis": out}


def test_kill_minus_9_mid_apply_converges(simvm: Factory) -> None:
    """SIGKILL the agent while it writes a big change set; the next apply completes it."""
    vm = simvm(_big_scenario(), docker=False)
    plan = json.loads(vm.agent("apply", "--dry-run", "--json").stdout)
    full = apply_json(vm)
    assert len(full["changes"]) == len(plan["changes"])
    wait_no_tentative(vm, [vm.guest_ns])
    reference = vm.snapshot()
    n_rules = len(agent_rules(vm))

    partial_states = []
    for _ in range(3):
        _wipe_agent_objects(vm)
        proc = start_agent(vm, "apply")
        assert proc.stderr is not None
        # Changes are logged as each stage's batch is acknowledged: the first address line
        # means addresses are in and the rules are not yet (or only partly) there.
        for line in proc.stderr:
            if " addr add " in line:
                proc.send_signal(signal.SIGKILL)
                break
        proc.communicate()
        rules = len(agent_rules(vm))
        addrs = sum(1 for p in addr_protocols(vm).values() if p == int(OURS))
        if proc.returncode != 0 and addrs and rules < n_rules:
            partial_states.append((rules, addrs))
        result = apply_json(vm)
        assert vm.snapshot() == reference, (rules, addrs, result["changes"][:5])
        assert apply_json(vm)["changes"] == []
        if partial_states:
            break
    assert partial_states, "no kill landed in the middle of an apply"
    assert vm.probe("10.0.12.49", FAR_V4, count=1) == Probe(True, "eth11", False)

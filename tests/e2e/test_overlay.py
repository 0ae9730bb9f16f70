"""The overlay configuration (README "Overlay configuration") on the simulated VM, with packets.

Every test writes an eni-guest.toml of its own and passes it with ``--config``:

* an IP the cloud routes to an ENI but metadata does not publish (the simulator's ``paths``
  hides it, as JD Cloud hides every secondary IP) is added by ``[[eni]] add_ipv4s`` and its
  traffic leaves through that ENI; one outside the subnet is refused, exit 3, nothing changed;
* a subnet whose router is not where eni-guest would guess (``gateway`` in the scenario puts
  the vpc's router at .254; AWS metadata does not say so) works once ``ipv4_gateway`` says it,
  and ``ipv4_subnet`` widens the table's subnet route;
* ``exclude_ips``: no address, no rule; an address a CNI added for it stays, and so do ours
  once it is excluded, even after metadata stops listing it;
* ``exclude_interfaces`` and ``exclude_enis``: the NIC stays down and unconfigured, what was
  configured before stays, and taking it out of the exclusion configures it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from e2e_support import (
    THIRD_MAC,
    addr_protocols,
    agent_rules,
    apply_json,
    eni_of,
    link,
    three_eni,
    wait_no_tentative,
)

from eni_guest_lab.testbed import FAR_V4, SimVM

pytestmark = pytest.mark.e2e

Factory = Callable[..., SimVM]
THIRD_ID = "eni-0000000000000000c"  # eth2, 10.0.2.30 and .31 in 10.0.2.0/24, table 10002
MACS = "latest/meta-data/network/interfaces/macs"


@pytest.fixture
def toml(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Write an eni-guest.toml; returns the path to pass as ``--config``."""
    path = tmp_path / "eni-guest.toml"

    def write(text: str) -> str:
        path.write_text(text)
        return str(path)

    yield write


def rules_from(vm: SimVM, ip: str) -> list[dict[str, Any]]:
    return [r for r in agent_rules(vm) if r.get("src") == ip]


def table(vm: SimVM, number: int = 10002) -> list[str]:
    """``ip route show table N`` of the guest, one line per route (none: the table is empty)."""
    cp = vm.guest(["ip", "route", "show", "table", str(number)], check=False)
    if cp.returncode != 0:
        assert "does not exist" in cp.stderr, cp.stderr  # the kernel has no such table yet
        return []
    return [line.strip() for line in cp.stdout.splitlines() if line.strip()]


def probe_via(vm: SimVM, src: str, ifname: str) -> None:
    """Traffic from ``src`` to the internet leaves through ``ifname`` and is answered."""
    p = vm.probe(src, FAR_V4)
    assert p.ok and p.exit_iface == ifname and not p.dropped_by_rpf, p


def test_added_ip_routes_out_its_eni(simvm: Factory, toml: Callable[[str], str]) -> None:
    scenario = three_eni()
    # The VPC routes 10.0.2.32 to the third ENI (it is assigned), metadata does not list it.
    eni_of(scenario, THIRD_MAC)["local-ipv4s"] = ["10.0.2.30", "10.0.2.31", "10.0.2.32"]
    scenario["paths"] = {f"{MACS}/{THIRD_MAC}/local-ipv4s": "10.0.2.30\n10.0.2.31"}
    vm = simvm(scenario, docker=False)

    # Outside the subnet: refused before anything is touched, naming the config key.
    before = vm.snapshot()
    bad = toml(f'[[eni]]\nmatch = "{THIRD_ID}"\nadd_ipv4s = ["10.0.2.32", "10.0.9.32"]\n')
    cp = vm.agent("apply", "--config", bad)
    assert cp.returncode == 3, cp.stderr
    assert f"{bad}: eni[1].add_ipv4s = '10.0.9.32': outside the ENI's subnets" in cp.stderr
    assert vm.snapshot() == before

    config = toml(f'[[eni]]\nmatch = "{THIRD_ID}"\nadd_ipv4s = ["10.0.2.32"]\n')
    out = apply_json(vm, "--config", config)
    assert "addr add 10.0.2.32/32 dev eth2 metric 229 noprefixroute" in out["changes"]
    assert "10.0.2.32/32" in vm.guest_ips("eth2")
    assert [r["table"] for r in rules_from(vm, "10.0.2.32")] == ["10002"]
    wait_no_tentative(vm, [vm.guest_ns])
    probe_via(vm, "10.0.2.32", "eth2")
    probe_via(vm, "10.0.2.31", "eth2")
    assert apply_json(vm, "--config", config)["changes"] == []  # idempotent

    # Without the overlay the IP is not metadata's: it goes again.
    out = apply_json(vm)
    assert "addr del 10.0.2.32/32 dev eth2" in out["changes"]
    assert rules_from(vm, "10.0.2.32") == []


def test_overridden_gateway_and_prefix_are_in_the_table(
    simvm: Factory, toml: Callable[[str], str]
) -> None:
    scenario = three_eni()
    # The vpc's router of 10.0.2.0/24 sits at .254; AWS metadata publishes no gateway.
    eni_of(scenario, THIRD_MAC)["gateway"] = "10.0.2.254"
    vm = simvm(scenario, docker=False)
    apply_json(vm)
    assert "default via 10.0.2.1 dev eth2 proto 229 onlink" in table(vm)
    wait_no_tentative(vm, [vm.guest_ns])
    assert not vm.probe("10.0.2.30", FAR_V4)  # eni-guest's guess, .1, is nobody

    config = toml(
        f'[[eni]]\nmatch = "{THIRD_MAC}"\n'
        'ipv4_gateway = "10.0.2.254"\nipv4_subnet = "10.0.2.0/23"\n'
    )
    out = apply_json(vm, "--config", config)
    assert "route replace default via 10.0.2.254 dev eth2 onlink table 10002" in out["changes"]
    assert table(vm) == [
        "default via 10.0.2.254 dev eth2 proto 229 onlink",
        "10.0.2.0/23 dev eth2 proto 229 scope link",
    ]
    probe_via(vm, "10.0.2.30", "eth2")
    probe_via(vm, "10.0.2.31", "eth2")
    probe_via(vm, "10.0.1.20", "eth1")  # the other tables are as they were
    assert apply_json(vm, "--config", config)["changes"] == []


def test_excluded_ip_is_left_alone(simvm: Factory, toml: Callable[[str], str]) -> None:
    vm = simvm(three_eni(), docker=False)
    config = toml('exclude_ips = ["10.0.2.31"]\n')
    apply_json(vm, "--config", config)
    assert "10.0.2.31/32" not in vm.guest_ips("eth2")
    assert "10.0.2.30/32" in vm.guest_ips("eth2")
    assert rules_from(vm, "10.0.2.31") == []
    wait_no_tentative(vm, [vm.guest_ns])
    probe_via(vm, "10.0.2.30", "eth2")

    # A CNI takes the IP for a pod: its address and its rule, made by hand here.
    vm.guest(["ip", "addr", "add", "10.0.2.31/32", "dev", "eth2"])
    vm.guest(["ip", "rule", "add", "from", "10.0.2.31", "lookup", "100", "priority", "1536"])
    cni_rule = [r for r in vm.guest_rules() if r.get("src") == "10.0.2.31"]
    out = apply_json(vm, "--config", config)
    assert out["changes"] == []
    assert addr_protocols(vm)[("eth2", "10.0.2.31/32")] in (None, 0)  # the CNI's, untouched
    assert [r for r in vm.guest_rules() if r.get("src") == "10.0.2.31"] == cni_rule

    shown = json.loads(vm.agent("show", "--json", "--config", config, check=True).stdout)
    eth2 = next(r for r in shown["enis"] if r["interface"] == "eth2")
    assert {"ip": "10.0.2.31", "elastic_ip": None, "excluded": True} in eth2["ips"]
    assert shown["excluded_ips"] == ["10.0.2.31/32"]


def test_excluded_ip_of_ours_is_not_removed(simvm: Factory, toml: Callable[[str], str]) -> None:
    scenario = three_eni()
    vm = simvm(scenario, docker=False)
    apply_json(vm)  # 10.0.2.31 is ours now: address protocol 229 and a rule
    assert addr_protocols(vm)[("eth2", "10.0.2.31/32")] == 229
    # Metadata stops listing it (a CNI unassigned/reassigned it behind eni-guest's back)...
    eni_of(scenario, THIRD_MAC)["local-ipv4s"] = ["10.0.2.30"]
    vm.update_scenario(scenario)
    # The exclusion covers 10.0.2.30 too: the ENI is left with no IP of its own to route, yet
    # its table stays, because the left-alone rules of its IPs lead there.
    config = toml('exclude_ips = ["10.0.2.28/30"]\n')
    wait_no_tentative(vm, [vm.guest_ns])  # eth2 just came up: its link-local routes follow DAD
    before = vm.snapshot()
    # ...but it is excluded: left alone, not removed.
    assert apply_json(vm, "--config", config)["changes"] == []
    assert vm.snapshot() == before
    # Without the exclusion the same metadata removes it.
    out = apply_json(vm)
    assert "addr del 10.0.2.31/32 dev eth2" in out["changes"]
    assert rules_from(vm, "10.0.2.31") == []


def assert_unconfigured_eth2(vm: SimVM) -> None:
    eth2 = link(vm, "eth2")
    assert "UP" not in eth2["flags"] and eth2.get("group") in (None, "default", "0"), eth2
    assert not {"10.0.2.30/32", "10.0.2.31/32"} & vm.guest_ips("eth2")
    assert table(vm) == []
    assert rules_from(vm, "10.0.2.30") == [] and rules_from(vm, "10.0.2.31") == []


def test_excluded_interface_is_not_configured_until_it_is_no_longer_excluded(
    simvm: Factory, toml: Callable[[str], str]
) -> None:
    vm = simvm(three_eni(), docker=False)
    excluded = toml('exclude_interfaces = ["eth[2-9]"]\n')
    apply_json(vm, "--config", excluded)
    assert_unconfigured_eth2(vm)
    wait_no_tentative(vm, [vm.guest_ns])
    probe_via(vm, "10.0.1.20", "eth1")  # the others are configured as usual
    assert apply_json(vm, "--config", excluded)["changes"] == []
    shown = json.loads(vm.agent("show", "--json", "--config", excluded, check=True).stdout)
    row = next(r for r in shown["enis"] if r["mac"] == THIRD_MAC)
    assert row["excluded"] == "interface eth2 matches exclude_interfaces 'eth[2-9]'"

    out = apply_json(vm, "--config", toml("exclude_interfaces = []\n"))
    assert "link set dev eth2 up group 229" in out["changes"]
    assert {"10.0.2.30/32", "10.0.2.31/32"} <= vm.guest_ips("eth2")
    wait_no_tentative(vm, [vm.guest_ns])
    probe_via(vm, "10.0.2.30", "eth2")


def test_excluded_eni_is_left_alone_and_configured_once_no_longer_excluded(
    simvm: Factory, toml: Callable[[str], str]
) -> None:
    scenario = three_eni()
    vm = simvm(scenario, docker=False)
    excluded = toml(f'exclude_enis = ["{THIRD_ID}"]\n')
    apply_json(vm, "--config", excluded)
    assert_unconfigured_eth2(vm)
    shown = vm.agent("show", "--config", excluded, check=True).stdout
    assert f"excluded: {THIRD_ID} ({THIRD_MAC}): exclude_enis '{THIRD_ID}'" in shown

    apply_json(vm)  # no longer excluded: configured
    wait_no_tentative(vm, [vm.guest_ns])
    probe_via(vm, "10.0.2.31", "eth2")

    # Excluded again while metadata drops one of its IPs: nothing of it is removed.
    eni_of(scenario, THIRD_MAC)["local-ipv4s"] = ["10.0.2.30"]
    vm.update_scenario(scenario)
    before = vm.snapshot()
    assert apply_json(vm, "--config", excluded)["changes"] == []
    assert vm.snapshot() == before
    assert rules_from(vm, "10.0.2.31") != []

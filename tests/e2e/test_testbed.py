"""The testbed behaves like the cloud before any agent runs.

Every later end-to-end test trusts the simulated VM: that the primary works out of the box, that
secondary IPs are not configured yet, and above all that the vpc drops a packet leaving through
an ENI that does not own its source (the source/destination check). If that strictness were
missing, routing tests would pass on a broken agent; these tests prove it is there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest
from e2e_support import PRIMARY_MAC, SECOND_MAC, THIRD_MAC

from eni_guest_lab.testbed import (
    CONTAINER_V4,
    FAR_V4,
    FAR_V6,
    METADATA_V4,
    METADATA_V6,
    OTHER_SUBNET_V4,
    OTHER_SUBNET_V6,
    Probe,
    SimVM,
    cleanup_stale,
)

pytestmark = pytest.mark.e2e


Factory = Callable[..., SimVM]


def _netns_names() -> set[str]:
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True).stdout
    return {e["name"] for e in json.loads(out)} if out.strip() else set()


def _fetch_metadata(vm: SimVM, host: str, path: str) -> str:
    """IMDSv2 GET from inside the guest, with nothing but the standard library."""
    code = (
        "import sys, urllib.request as u\n"
        "base = 'http://' + sys.argv[1]\n"
        "r = u.Request(base + '/latest/api/token', method='PUT',\n"
        "              headers={'X-aws-ec2-metadata-token-ttl-seconds': '60'})\n"
        "tok = u.urlopen(r, timeout=5).read().decode()\n"
        "r = u.Request(base + sys.argv[2], headers={'X-aws-ec2-metadata-token': tok})\n"
        "print(u.urlopen(r, timeout=5).read().decode(), end='')\n"
    )
    return vm.guest([sys.executable, "-c", code, host, path]).stdout


def test_primary_works_through_eth0(simvm: Factory, scenario_3eni: dict[str, Any]) -> None:
    vm = simvm(scenario_3eni, metadata=False)
    assert vm.guest_ips("eth0", 4) == {"10.0.1.10/24"}
    assert "2001:db8:1::10/64" in vm.guest_ips("eth0", 6)
    defaults = [r for r in vm.guest_routes("main", 4) if r["dst"] == "default"]
    assert [(r["gateway"], r["dev"], r["protocol"]) for r in defaults] == [
        ("10.0.1.1", "eth0", "dhcp")
    ]
    for src, dst in [
        ("10.0.1.10", FAR_V4),
        ("10.0.1.10", OTHER_SUBNET_V4),
        ("10.0.1.10", "10.0.1.200"),  # neighbour in the subnet, reached on-link
        (None, FAR_V4),
        (None, METADATA_V4),
        ("2001:db8:1::10", FAR_V6),
        ("2001:db8:1::10", OTHER_SUBNET_V6),
        ("2001:db8:1::10", "2001:db8:1::200"),  # on-link: answered by proxy NDP
        (None, METADATA_V6),
    ]:
        probe = vm.probe(src, dst)
        assert probe == Probe(True, "eth0", False), probe.detail


def test_secondaries_are_left_to_the_agent(simvm: Factory, scenario_3eni: dict[str, Any]) -> None:
    vm = simvm(scenario_3eni, metadata=False, docker=False)
    assert not any(ip.startswith("10.0.1.11/") for ip in vm.guest_ips("eth0"))
    assert not vm.probe("10.0.1.11", FAR_V4)
    links = {link["ifname"]: link for link in vm.guest_links()}
    # Device numbers name the links, whatever the MAC order.
    assert links["eth0"]["address"] == PRIMARY_MAC
    assert links["eth1"]["address"] == SECOND_MAC
    assert links["eth2"]["address"] == THIRD_MAC
    for ifname in ("eth1", "eth2"):
        assert "UP" not in links[ifname]["flags"]
        assert vm.guest_ips(ifname) == set()


@pytest.mark.parametrize(
    ("ifname", "src", "gateway", "dst"),
    [
        ("eth1", "10.0.1.20", "10.0.1.1", FAR_V4),  # same subnet as the primary
        ("eth2", "10.0.2.30", "10.0.2.1", OTHER_SUBNET_V4),  # a subnet of its own
        ("eth2", "2001:db8:2::30", "2001:db8:2::1", FAR_V6),
    ],
)
def test_vpc_drops_a_source_on_the_wrong_eni(
    simvm: Factory, scenario_3eni: dict[str, Any], ifname: str, src: str, gateway: str, dst: str
) -> None:
    """The source/destination check: all later routing tests rely on this strictness."""
    vm = simvm(scenario_3eni, metadata=False, docker=False)
    plen = "128" if ":" in src else "32"
    fam = "-6" if ":" in src else "-4"
    vm.guest(["ip", "addr", "add", f"{src}/{plen}", "dev", ifname, "nodad"])
    vm.guest(["ip", "link", "set", ifname, "up"])

    wrong = vm.probe(src, dst)  # the main table sends it out of eth0
    assert wrong == Probe(False, "eth0", True), wrong.detail

    table = ["table", "100"]
    vm.guest(
        ["ip", fam, "route", "add", "default", "via", gateway, "dev", ifname, "onlink", *table]
    )
    vm.guest(["ip", fam, "rule", "add", "from", src, "lookup", "100", "priority", "100"])
    right = vm.probe(src, dst)
    assert right == Probe(True, ifname, False), right.detail
    # The primary is unaffected.
    assert vm.probe("2001:db8:1::10" if ":" in src else "10.0.1.10", dst)


def test_kernel_rp_filter_option_drops_too(simvm: Factory, scenario_3eni: dict[str, Any]) -> None:
    vm = simvm(scenario_3eni, metadata=False, docker=False, kernel_rp_filter=True)
    vm.guest(["ip", "addr", "add", "10.0.1.20/32", "dev", "eth1"])
    vm.guest(["ip", "link", "set", "eth1", "up"])
    assert not vm.probe("10.0.1.20", FAR_V4)
    assert vm.probe("10.0.1.10", FAR_V4)


def test_container_reaches_far_host_through_nat(
    simvm: Factory, scenario_3eni: dict[str, Any]
) -> None:
    vm = simvm(scenario_3eni, metadata=False)
    # 172.17.0.2 is routed nowhere in the vpc: only the masquerade makes this work.
    assert vm.probe(None, FAR_V4, via_container=True) == Probe(True, "eth0", False)
    local = vm.probe("10.0.1.10", CONTAINER_V4)  # host to container stays local
    assert local.ok and local.exit_iface is None


def test_tcp_and_held_connection(simvm: Factory, scenario_3eni: dict[str, Any]) -> None:
    vm = simvm(scenario_3eni, metadata=False, docker=False)
    vm.start_tcp_server(FAR_V4, 2222)
    check = vm.tcp_check("10.0.1.10", FAR_V4, 2222)
    assert check == Probe(True, "eth0", False), check.detail
    assert not vm.tcp_check("10.0.1.10", FAR_V4, 2223, timeout=1.0)  # nobody listens

    held = vm.hold_connection(None, FAR_V4, 2222)
    assert held.alive()
    vm.guest(["ip", "route", "add", "blackhole", f"{FAR_V4}/32"])
    assert not held.alive(timeout=1.0)
    vm.guest(["ip", "route", "del", "blackhole", f"{FAR_V4}/32"])
    assert held.alive(timeout=10.0)  # TCP retransmits: the same connection survives
    held.close()
    assert not held.alive()


def test_metadata_service(simvm: Factory, scenario_3eni: dict[str, Any]) -> None:
    vm = simvm(scenario_3eni)
    listing = _fetch_metadata(vm, METADATA_V4, "/latest/meta-data/network/interfaces/macs/")
    assert sorted(listing.split()) == sorted(f"{m}/" for m in (PRIMARY_MAC, SECOND_MAC, THIRD_MAC))
    assert _fetch_metadata(vm, f"[{METADATA_V6}]", "/latest/meta-data/mac").strip() == PRIMARY_MAC
    assert vm.metadata_stats(min_requests=4)["requests"] == 4

    scenario = vm.scenario
    scenario["enis"][0]["local-ipv4s"].append("10.0.1.12")
    vm.update_scenario(scenario)
    path = f"/latest/meta-data/network/interfaces/macs/{PRIMARY_MAC}/local-ipv4s"
    assert "10.0.1.12" in _fetch_metadata(vm, METADATA_V4, path).split()
    # The cloud routes what metadata lists.
    route = vm.vpc(["ip", "-j", "route", "get", "10.0.1.12"]).stdout
    assert json.loads(route)[0]["dev"] == vm.vpc_if_of(PRIMARY_MAC)


def test_hot_plug(simvm: Factory, scenario_3eni: dict[str, Any]) -> None:
    vm = simvm(
        scenario_3eni,
        metadata=False,
        docker=False,
        attached={PRIMARY_MAC},
        ifnames={SECOND_MAC: "ens6"},
    )
    assert {link["ifname"] for link in vm.guest_links()} == {"lo", "eth0"}
    assert vm.attach(SECOND_MAC) == "ens6"
    links = {link["ifname"]: link for link in vm.guest_links()}
    assert links["ens6"]["address"] == SECOND_MAC and "UP" not in links["ens6"]["flags"]

    vm.guest(["ip", "addr", "add", "10.0.1.20/32", "dev", "ens6"])
    vm.guest(["ip", "link", "set", "ens6", "up"])
    route = ["default", "via", "10.0.1.1", "dev", "ens6", "onlink", "table", "100"]
    vm.guest(["ip", "route", "add", *route])
    vm.guest(["ip", "rule", "add", "from", "10.0.1.20", "lookup", "100"])
    assert vm.probe("10.0.1.20", FAR_V4) == Probe(True, "ens6", False)

    vm.detach(SECOND_MAC)
    assert "ens6" not in {link["ifname"] for link in vm.guest_links()}
    assert SECOND_MAC not in [e["mac"] for e in vm.scenario["enis"]]
    assert "10.0.1.20" not in vm.vpc(["ip", "route"]).stdout

    vm.add_eni(
        {
            "mac": "0e:00:00:00:00:d4",
            "device-number": 3,
            "local-ipv4s": ["10.0.3.40"],
            "subnet-ipv4-cidr-block": "10.0.3.0/24",
        },
        attach=True,
    )
    assert vm.ifname_of("0e:00:00:00:00:d4") == "eth3"
    assert "eth3" in {link["ifname"] for link in vm.guest_links()}


def test_snapshot_is_stable(simvm: Factory, scenario_3eni: dict[str, Any]) -> None:
    vm = simvm(scenario_3eni, metadata=False)
    first = vm.snapshot()
    assert vm.probe("10.0.1.10", FAR_V4)
    assert vm.probe("2001:db8:1::10", FAR_V6)
    assert vm.snapshot() == first
    vm.guest(["ip", "addr", "add", "10.0.1.11/32", "dev", "eth0"])
    assert vm.snapshot() != first


def test_close_leaves_nothing(scenario_3eni: dict[str, Any]) -> None:
    vm = SimVM(scenario_3eni)
    try:
        vm.start()
        vm.start_tcp_server(FAR_V4, 2222)
        held = vm.hold_connection(None, FAR_V4, 2222)
        ours = {n for n in _netns_names() if n.startswith(vm.prefix)}
        assert ours == {vm.vpc_ns, vm.guest_ns, vm.container_ns}
        tmpdir = vm.tmpdir
        assert tmpdir is not None and tmpdir.is_dir()
    finally:
        vm.close()
    assert not {n for n in _netns_names() if n.startswith(vm.prefix)}
    assert not tmpdir.exists()
    assert held.proc.poll() is not None
    vm.close()  # idempotent


def test_cleanup_stale_removes_only_dead_runs() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert not os.path.exists(f"/proc/{dead.pid}")
    stale = f"egt{dead.pid:x}beef-vpc"
    alive = f"egt{os.getpid():x}beef-g"
    unrelated = f"egt{dead.pid:x}beef-other"  # not one of our roles
    stale_dir = Path(tempfile.gettempdir()) / f"egt{dead.pid:x}beef-abc123"
    made = []
    try:
        for name in (stale, alive, unrelated):
            subprocess.run(["ip", "netns", "add", name], check=True)
            made.append(name)
        stale_dir.mkdir()
        removed = cleanup_stale()
        names = _netns_names()
        assert stale in removed and stale not in names
        assert alive in names and unrelated in names
        assert not stale_dir.exists()
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        if stale_dir.exists():
            stale_dir.rmdir()

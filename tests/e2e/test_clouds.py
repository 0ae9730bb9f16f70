"""Every cloud end to end: the same simulated VM, each provider's metadata format.

For Alibaba Cloud, Tencent Cloud, JD Cloud (with dnsmasq as the VPC's DHCP service), OpenStack
and a static ENI file, the agent reads the simulator's (or the file's) version of one set of
ENIs and the docs/routing.md properties are checked with real packets: every IP leaves through its
own ENI, an ENI in the primary's subnet reaches its neighbours through itself, the Docker-like
container stays reachable and its NATed traffic keeps leaving through the primary, re-applying
changes nothing, and a malformed document changes nothing and says so in one line (exit 3).

One VM per provider (module-scoped), built and applied once; the tests that change metadata
put it back before they end.
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import PRIMARY_MAC as PRIMARY  # eth0
from e2e_support import SECOND_MAC as SECOND  # eth1, in the primary's subnet
from e2e_support import THIRD_MAC as THIRD  # eth2, a subnet of its own, dual-stack

from eni_guest.providers import detect
from eni_guest_lab import scenarios
from eni_guest_lab.json_schema import load_show_schema, problems
from eni_guest_lab.testbed import (
    CONTAINER_V4,
    FAR_V4,
    FAR_V6,
    OTHER_SUBNET_V4,
    SimVM,
    neighbour_of,
)

pytestmark = pytest.mark.e2e

CLOUDS = ("alibaba", "tencent", "jdcloud", "openstack", "static")
IPV6_CLOUDS = {"alibaba", "openstack", "static"}  # Tencent and JD Cloud publish no IPv6
# Where each document lives, and one broken value in it (the rest stays valid).
TENCENT_MASK = (
    f"latest/meta-data/network/interfaces/macs/{THIRD.upper()}/local-ipv4s/10.0.2.30/subnet-mask"
)
MALFORMED: dict[str, dict[str, str]] = {
    "alibaba": {
        f"latest/meta-data/network/interfaces/macs/{SECOND}/private-ipv4s": '["10.0.1.20",',
    },
    "tencent": {TENCENT_MASK: "255.0.255.0"},
    "jdcloud": {"metadata/latest/network/2/mac": '"0e:00:00:00:00"'},
    "openstack": {"openstack/latest/network_data.json": '{"links": [{"id": "eni-0'},
}
BROKEN_TOML = f'primary_mac = "{PRIMARY}"\n[[eni]]\nmac = "{PRIMARY}"\nipv4s = "10.0.1.10"\n'


def scenario(provider: str) -> dict[str, Any]:
    return scenarios.three_eni(provider)


def ips(provider: str) -> list[tuple[str, str]]:
    """(owner MAC, IP) of every private IP the agent must configure on this cloud."""
    out = []
    for eni in scenarios.three_eni()["enis"]:
        for ip in eni["local-ipv4s"] + (eni.get("ipv6s", []) if provider in IPV6_CLOUDS else []):
            out.append((eni["mac"], ip))
    return out


def _settle(vm: SimVM, timeout: float = 6.0) -> None:
    """Wait for IPv6 DAD on links that just came up (the testbed's start-up, not the agent)."""
    namespaces = [vm.guest_ns] + ([vm.container_ns] if vm.container_ns else [])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = "".join(
            subprocess.run(
                ["ip", "-n", ns, "-6", "addr", "show"], capture_output=True, text=True
            ).stdout
            for ns in namespaces
        )
        if "tentative" not in out:
            return
        time.sleep(0.1)


def _guest_pids(vm: SimVM) -> list[str]:
    return subprocess.run(
        ["ip", "netns", "pids", vm.guest_ns], capture_output=True, text=True
    ).stdout.split()


def _lease_files(where: Path) -> list[str]:
    return sorted(p.name for p in where.glob("*.lease*")) + sorted(
        p.name for p in where.glob("*.pid")
    )


class Cloud:
    """One provider's VM, with what was observed around its first `show` and `apply`."""

    def __init__(self, provider: str, vm: SimVM) -> None:
        self.provider = provider
        self.vm = vm
        # IPv6 DAD of the testbed's own links first: their link-local routes appear when it
        # ends, and a snapshot taken before that would differ from any later one.
        _settle(vm)
        self.before = vm.snapshot()
        self.show = vm.agent("show", "--json", timeout=60)
        self.after_show = vm.snapshot()
        self.pids_after_show = _guest_pids(vm)
        self.apply = vm.agent("apply", "--json", timeout=60)
        _settle(vm)


@pytest.fixture(scope="module", params=CLOUDS)
def cloud(request: pytest.FixtureRequest, e2e_environment: None) -> Iterator[Cloud]:
    provider = request.param
    vm = SimVM(scenario(provider), dhcp=provider == "jdcloud")
    try:
        vm.start()
        yield Cloud(provider, vm)
    finally:
        vm.close()


def test_first_apply_configures_every_eni(cloud: Cloud) -> None:
    assert cloud.apply.returncode == 0, cloud.apply.stderr
    changes = json.loads(cloud.apply.stdout)["changes"]
    for _mac, ip in ips(cloud.provider):
        if ip not in ("10.0.1.10", "2001:db8:1::10"):  # the primary's DHCP/RA addresses
            assert any(c.startswith(f"addr add {ip}/") for c in changes), (ip, changes)


def test_show_is_a_dry_run_that_names_the_cloud(cloud: Cloud) -> None:
    """`show` reads (JD Cloud: DHCP on links it must bring up) and leaves nothing behind."""
    assert cloud.show.returncode == 0, cloud.show.stderr
    assert cloud.after_show == cloud.before  # links, addresses, rules, routes: all as found
    assert cloud.pids_after_show == []  # no DHCP client (nor anything else) left running
    assert _lease_files(Path.cwd()) == []  # and no lease or pid file where the agent ran
    out = json.loads(cloud.show.stdout)
    assert out["provider"] == cloud.provider
    assert out["provider_chosen_by"] == "configuration"
    assert out["provider_chosen_because"] is None
    assert {e["mac"] for e in out["enis"]} == {PRIMARY, SECOND, THIRD}
    assert out["unsettled"] == []


def test_show_json_follows_its_documented_schema(cloud: Cloud) -> None:
    assert problems(json.loads(cloud.show.stdout), load_show_schema()) == []


def test_every_ip_leaves_through_its_own_eni(cloud: Cloud) -> None:
    vm = cloud.vm
    for mac, ip in ips(cloud.provider):
        far = FAR_V6 if ":" in ip else FAR_V4
        probe = vm.probe(ip, far, count=2)
        assert probe.ok and probe.exit_iface == vm.ifname_of(mac), probe.detail
    for mac, ip in ((SECOND, "10.0.1.21"), (THIRD, "10.0.2.30")):
        probe = vm.probe(ip, OTHER_SUBNET_V4)  # another VPC subnet: still through its ENI
        assert probe.ok and probe.exit_iface == vm.ifname_of(mac), probe.detail


def test_eni_in_the_primary_subnet_reaches_neighbours_through_itself(cloud: Cloud) -> None:
    vm = cloud.vm
    neighbour = neighbour_of("10.0.1.0/24")
    for mac, ip in ((SECOND, "10.0.1.20"), (SECOND, "10.0.1.21"), (PRIMARY, "10.0.1.11")):
        probe = vm.probe(ip, neighbour)
        assert probe.ok and probe.exit_iface == vm.ifname_of(mac), probe.detail


def test_container_stays_reachable_and_natted_traffic_uses_the_primary(cloud: Cloud) -> None:
    vm = cloud.vm
    for _mac, ip in ips(cloud.provider):
        if ":" not in ip:
            local = vm.probe(ip, CONTAINER_V4, count=3)
            assert local.ok and local.exit_iface is None, local.detail  # never sent to the VPC
    natted = vm.probe(None, FAR_V4, count=3, via_container=True)
    assert natted.ok and natted.exit_iface == vm.ifname_of(PRIMARY), natted.detail
    unbound = vm.probe(None, FAR_V4)
    assert unbound.ok and unbound.exit_iface == vm.ifname_of(PRIMARY), unbound.detail


def test_reapply_changes_nothing(cloud: Cloud) -> None:
    before = cloud.vm.snapshot()
    again = cloud.vm.agent("apply", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["changes"] == []
    assert again.stderr == ""
    assert cloud.vm.snapshot() == before


def test_gateway_is_the_one_metadata_names(cloud: Cloud) -> None:
    """Alibaba's vSwitch router is .253 (the simulated VPC has none at .1): never guessed."""
    want = "10.0.1.253" if cloud.provider == "alibaba" else "10.0.1.1"
    routes = cloud.vm.guest_routes("all", 4)
    defaults = {
        (r.get("dev"), r.get("gateway"))
        for r in routes
        if r.get("dst") == "default" and r.get("protocol") == "229"
    }
    assert defaults >= {("eth0", want), ("eth1", want)}, defaults


def test_malformed_document_changes_nothing(cloud: Cloud) -> None:
    vm = cloud.vm
    original = copy.deepcopy(vm.scenario)
    changed = copy.deepcopy(original)
    # A valid read of this scenario would add 10.0.2.32: the failed read must not.
    changed["enis"][2]["local-ipv4s"].append("10.0.2.32")
    changed["paths"] = MALFORMED.get(cloud.provider, {})
    before = vm.snapshot()
    try:
        vm.update_scenario(changed)
        if cloud.provider == "static":
            vm.static_path.write_text(BROKEN_TOML)
        elif cloud.provider == "jdcloud":  # the overlay lists 10.0.2.32: only the doc is bad
            assert "10.0.2.32" in vm.static_path.read_text()
        r = vm.agent("apply")
        assert r.returncode == 3, (r.returncode, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("eni-guest: "), r.stderr
        assert "Traceback" not in r.stderr
        assert vm.snapshot() == before
    finally:
        vm.update_scenario(original)
    again = vm.agent("apply", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["changes"] == [], again.stderr


def test_auto_detects_the_cloud(cloud: Cloud) -> None:
    """`--provider auto` with the clouds' own addresses: DMI here is the host's (often none),
    so the probes decide, and `show` says which cloud it chose and why; the next run of the
    same boot uses the answer kept beside the lock file, and says so."""
    vm = cloud.vm  # defaults=False: no --metadata-url, the probes go to every cloud's address
    r = vm.agent("show", "--json", "--provider", "auto", defaults=False)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["provider_chosen_by"] == "auto"
    host_dmi = detect.match_dmi(detect.read_dmi(detect.DMI_DIR))
    if host_dmi is not None:  # a host that is itself a cloud VM: DMI wins, and says so
        assert out["provider"] == host_dmi[0]
        assert out["provider_chosen_because"].startswith("DMI ")
        return
    assert out["provider"] == cloud.provider
    why = out["provider_chosen_because"]
    if cloud.provider == "static":
        assert "no metadata service answered" in why
    else:
        assert why.startswith("metadata probe: ")
    text = vm.agent("show", "--provider", "auto", defaults=False)
    if cloud.provider == "static":  # the fallback is not kept: a late service gets its chance
        assert "provider: static (auto-detected: no metadata service answered" in text.stdout
    else:  # the probes' answer was kept for the boot, and said to be
        said = f"provider: {cloud.provider} (auto-detected earlier this boot: metadata probe: "
        assert said in text.stdout, text.stdout


def test_eni_table_mtu_and_openstacks_link_mtu(cloud: Cloud, tmp_path: Path) -> None:
    """An [[eni]] mtu is set on every cloud; OpenStack's links[].mtu too (no other cloud
    publishes one), the [[eni]] table winning over it."""
    vm = cloud.vm
    original = copy.deepcopy(vm.scenario)
    changed = copy.deepcopy(original)
    changed["enis"][2]["mtu"] = 1400  # THIRD: dual-stack, so at least 1280
    changed["enis"][1]["mtu"] = 1450  # SECOND: its [[eni]] table says 1300
    override = tmp_path / "mtu.toml"
    override.write_text(f'[[eni]]\nmatch = "{SECOND}"\nmtu = 1300\n')
    reset = tmp_path / "reset.toml"
    reset.write_text("mtu = 1500\n")  # the global one, for ENIs that publish none

    def mtu(mac: str) -> int:
        (link,) = [x for x in vm.guest_links() if x.get("address") == mac]
        return link["mtu"]

    try:
        vm.update_scenario(changed)
        r = vm.agent("apply", "--config", str(override))
        assert r.returncode == 0, r.stderr
        third = 1400 if cloud.provider == "openstack" else 1500
        assert (mtu(SECOND), mtu(THIRD), mtu(PRIMARY)) == (1300, third, 1500)
    finally:
        vm.update_scenario(original)
        again = vm.agent("apply", "--config", str(reset))
    assert again.returncode == 0, again.stderr
    assert (mtu(SECOND), mtu(THIRD)) == (1500, 1500)


# ---------------------------------------------------------------------------------------------
# JD Cloud's DHCP probe at its edges


def test_jd_dhcp_without_a_server_fails_in_bounded_time_and_restores_the_link(simvm: Any) -> None:
    """No DHCP answer: exit 3 after the probe's timeout, and the link it brought up for the
    exchange is down again (no link-local address, nothing else) as it was before."""
    vm = simvm(scenario("jdcloud"), docker=False)  # dhcp=False: nobody answers
    vm.static_path.write_text(  # the primary described locally, eth1 and eth2 left to DHCP
        f'[[eni]]\nmac = "{PRIMARY}"\nipv4s = ["10.0.1.10", "10.0.1.11"]\n'
        'subnet = "10.0.1.0/24"\ngateway = "10.0.1.1"\n\n'
        f'[[eni]]\nmac = "{SECOND}"\nipv4s = ["10.0.1.20", "10.0.1.21"]\n'
    )
    before = vm.snapshot()
    start = time.monotonic()
    r = vm.agent("apply")
    elapsed = time.monotonic() - start
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip().splitlines() == [
        "eni-guest: dhcp: no answer on eth1 within 5 s (is there a DHCP server?)"
    ]
    assert elapsed < 15
    assert vm.snapshot() == before
    assert _guest_pids(vm) == []


def test_jd_dhcp_waits_no_longer_than_the_metadata_deadline(simvm: Any) -> None:
    """The probe is part of the metadata read: with metadata_deadline = 2 s, no DHCP answer
    ends the run within those 2 s (not the probe's own 5 s), exit 3, nothing changed."""
    vm = simvm(scenario("jdcloud"), docker=False)  # dhcp=False: nobody answers
    vm.static_path.write_text(
        f'[[eni]]\nmac = "{PRIMARY}"\nipv4s = ["10.0.1.10", "10.0.1.11"]\n'
        'subnet = "10.0.1.0/24"\ngateway = "10.0.1.1"\n'
    )
    before = vm.snapshot()
    start = time.monotonic()
    r = vm.agent(
        "apply", env={"ENI_GUEST_METADATA_DEADLINE": "2", "ENI_GUEST_METADATA_TIMEOUT": "1"}
    )
    elapsed = time.monotonic() - start
    assert r.returncode == 3, r.stderr
    (line,) = r.stderr.strip().splitlines()
    prefix, rest = line.split(" within ", 1)
    assert prefix == "eni-guest: dhcp: no answer on eth1", line
    assert float(rest.split()[0]) <= 2.0, line
    assert elapsed < 4.9  # the probe's own timeout is 5 s; Python's start-up is in here too
    assert vm.snapshot() == before


def test_jd_eni_whose_nic_is_not_attached_yet_waits(simvm: Any) -> None:
    """Metadata lists an ENI whose NIC is not in the VM yet: DHCP cannot ask about it, so it
    is left unsettled and the others are configured."""
    vm = simvm(scenario("jdcloud"), docker=False, dhcp=True, attached={PRIMARY, SECOND})
    r = vm.agent("apply", "--json")
    assert r.returncode == 0, r.stderr
    shown = json.loads(vm.agent("show", "--json").stdout)
    assert [u["mac"] for u in shown["unsettled"]] == [THIRD]
    assert "not attached" in shown["unsettled"][0]["reason"]
    _settle(vm)
    probe = vm.probe("10.0.1.21", FAR_V4)
    assert probe.ok and probe.exit_iface == "eth1", probe.detail
    vm.attach(THIRD)
    r = vm.agent("apply", "--json")
    assert r.returncode == 0, r.stderr
    assert any(c.startswith("addr add 10.0.2.31/") for c in json.loads(r.stdout)["changes"])


def test_jd_dhcp_once_per_boot_for_each_secondary_nic_and_never_the_primary(simvm: Any) -> None:
    """Two reconciles (and a `show`): each secondary NIC's DHCP service is asked once (the
    answer is kept under the lock file's directory for the boot), the primary's never (its
    subnet and gateway come from its DHCP client's address and default route); unplugging a
    NIC forgets its answer."""
    vm = simvm(scenario("jdcloud"), dhcp=True, docker=False)

    def acks() -> dict[str, int]:
        out = {}
        for mac in (PRIMARY, SECOND, THIRD):
            log = vm.tmpdir / f"dnsmasq-{vm.vpc_if_of(mac)}.log"
            out[mac] = log.read_text(errors="replace").count("DHCPACK(") if log.exists() else 0
        return out

    for command in ("apply", "show", "apply"):
        r = vm.agent(command)
        assert r.returncode == 0, r.stderr
    assert acks() == {PRIMARY: 0, SECOND: 1, THIRD: 1}
    kept = vm.lock_file.with_suffix(".dhcp")
    assert sorted(p.name for p in kept.iterdir()) == sorted(
        mac.replace(":", "-") for mac in (SECOND, THIRD)
    )
    routes = vm.guest_routes("all", 4)
    assert ("eth0", "10.0.1.1") in {
        (x.get("dev"), x.get("gateway")) for x in routes if x.get("protocol") == "229"
    }
    vm.detach(THIRD)
    r = vm.agent("hotplug", "remove", "eth2")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in kept.iterdir()) == [SECOND.replace(":", "-")]

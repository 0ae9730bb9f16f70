"""`eni-guest hotplug add` / `remove` on a simulated VM, proven with real packets.

What a user notices: an ENI attached while the VM runs carries traffic from its own IPs right
after `hotplug add` (whatever the kernel named it, also when metadata lags the attach), a
detached ENI leaves nothing behind after `hotplug remove` (also while metadata is down), nobody
else's connections or routes are disturbed, and interfaces that are not ENIs are ignored.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from hotplug_support import eni, rules, settled_snapshot, sources, wait_for

from eni_guest_lab.testbed import FAR_V4, FAR_V6, OTHER_SUBNET_V4, SimVM

pytestmark = pytest.mark.e2e

Factory = Callable[..., SimVM]
PRIMARY_MAC = "0e:00:00:00:00:c3"
SECOND_MAC = "0e:00:00:00:00:b2"
THIRD_MAC = "0e:00:00:00:00:a1"
THIRD_IPS = ("10.0.2.30", "10.0.2.31", "2001:db8:2::30")


def applied(vm: SimVM) -> None:
    r = vm.agent("apply")
    assert r.returncode == 0, r.stderr


def hotplug(
    vm: SimVM, *args: str, verbose: bool = False
) -> tuple[subprocess.CompletedProcess[str], float]:
    t = time.monotonic()
    r = vm.agent(*(["-v"] if verbose else []), "hotplug", *args)
    return r, time.monotonic() - t


def assert_exits(vm: SimVM, ifname: str, srcs: tuple[str, ...], **kw: Any) -> None:
    for src in srcs:
        dst = FAR_V6 if ":" in src else FAR_V4
        probe = vm.probe(src, dst, **kw)
        assert probe.ok and probe.exit_iface == ifname, probe.detail


def test_add_configures_a_hot_attached_eni(simvm: Factory, scenario_3eni: dict[str, Any]) -> None:
    vm = simvm(scenario_3eni, attached=[PRIMARY_MAC, SECOND_MAC])
    applied(vm)
    vm.start_tcp_server(FAR_V4, 22)
    held = vm.hold_connection("10.0.1.10", FAR_V4, 22)  # the operator's SSH session
    before = rules(vm)

    name = vm.attach(THIRD_MAC)
    r, took = hotplug(vm, "add", name)

    assert r.returncode == 0, r.stderr
    assert "rule add from 10.0.2.31 lookup 10002 priority 10003" in r.stderr
    assert_exits(vm, "eth2", THIRD_IPS)
    assert vm.probe("10.0.2.30", OTHER_SUBNET_V4).exit_iface == "eth2"
    # the ENIs that were there are untouched, the operator's session too
    assert before < rules(vm)
    assert_exits(vm, "eth1", ("10.0.1.20", "10.0.1.21"))
    assert held.alive()
    assert took < 10
    # a second add (udev and the daemon both saw it) changes nothing
    again, _ = hotplug(vm, "add", name)
    assert again.returncode == 0 and again.stderr == ""


def test_add_under_another_kernel_name(simvm: Factory, scenario_3eni: dict[str, Any]) -> None:
    """Names mean nothing to the cloud: ens9 with device-number 2 gets table 10002."""
    vm = simvm(scenario_3eni, attached=[PRIMARY_MAC, SECOND_MAC], docker=False)
    applied(vm)
    vm.attach(THIRD_MAC, ifname="ens9")

    r, _ = hotplug(vm, "add", "ens9")

    assert r.returncode == 0, r.stderr
    assert (10003, "10.0.2.31", "10002") in rules(vm)
    assert_exits(vm, "ens9", THIRD_IPS)


def test_add_waits_for_metadata_lagging_the_attach(
    simvm: Factory, scenario_3eni: dict[str, Any]
) -> None:
    """For 2 s metadata lists the new MAC with device-number 0 and no IPs (AWS right after an
    attach): configured then, slot 0 is the primary's table, and the primary would lose its
    default route.  `add` waits, then configures the ENI in its own table."""
    vm = simvm(scenario_3eni, attached=[PRIMARY_MAC, SECOND_MAC, THIRD_MAC], docker=False)
    applied(vm)
    table0 = vm.guest_routes("10000")
    new = eni(1, device=3, lag=2.0)
    vm.add_eni(new, attach=True)

    r, took = hotplug(vm, "add", "eth3", verbose=True)

    assert r.returncode == 0, r.stderr
    assert took >= 1.5, f"configured after {took:.1f} s, before metadata settled:\n{r.stderr}"
    assert "settled in metadata" in r.stderr
    assert vm.guest_routes("10000") == table0  # the primary's table is intact
    assert {(p, t) for p, s, t in rules(vm) if s.startswith("10.0.11.")} == {(10004, "10003")}
    assert_exits(vm, "eth3", tuple(new["local-ipv4s"]))
    assert vm.probe("10.0.1.11", FAR_V4).exit_iface == "eth0"


def test_add_gives_up_on_a_never_settling_eni_changing_nothing(
    simvm: Factory, scenario_3eni: dict[str, Any]
) -> None:
    vm = simvm(scenario_3eni, docker=False)
    applied(vm)
    vm.add_eni(eni(1, device=3, lag=60.0), attach=True)
    snap = settled_snapshot(vm)

    r, took = hotplug(vm, "add", "eth3", "--timeout", "2")

    assert r.returncode == 3, r.stderr
    assert "has not settled after 2 s" in r.stderr and "device-number reads 0" in r.stderr
    assert 1.5 < took < 10
    assert vm.snapshot() == snap


def test_add_during_a_metadata_outage_exits_3_changing_nothing(
    simvm: Factory, scenario_3eni: dict[str, Any]
) -> None:
    vm = simvm(scenario_3eni, attached=[PRIMARY_MAC, SECOND_MAC], docker=False)
    applied(vm)
    vm.attach(THIRD_MAC)
    vm.stop_metadata()
    snap = settled_snapshot(vm)

    r, took = hotplug(vm, "add", "eth2", "--timeout", "2")

    assert r.returncode == 3, r.stderr
    assert "metadata still failing after 2 s" in r.stderr
    assert took < 10
    assert vm.snapshot() == snap


def test_add_with_provider_auto_waits_for_a_late_metadata_service(
    simvm: Factory, scenario_3eni: dict[str, Any], tmp_path: Path
) -> None:
    """A slow boot with the default `provider = auto`: the NIC is there seconds before the
    metadata service answers.  `hotplug add` keeps trying to tell the cloud within
    hotplug_timeout, configures the ENI once it answers and exits 0.  The next runs of the same
    boot use the answer kept under /run (here beside the VM's lock file) and probe no other
    cloud: the simulator counts no request to OpenStack's or JD Cloud's probe paths."""
    vm = simvm(scenario_3eni, attached=[PRIMARY_MAC, SECOND_MAC], docker=False)
    applied(vm)
    kept = vm.lock_file.with_suffix(".provider")
    assert not kept.exists()  # an explicit provider detects nothing and keeps nothing
    vm.stop_metadata()
    name = vm.attach(THIRD_MAC)
    log_path = tmp_path / "add.err"
    cmd, env = vm.agent_command("-v", "hotplug", "add", name, "--provider", "auto")
    started = time.monotonic()
    with open(log_path, "wb") as err:
        proc = subprocess.Popen(cmd, env=env, stderr=err, stdout=subprocess.DEVNULL)
    try:
        time.sleep(4.0)
        assert proc.poll() is None, log_path.read_text()  # still waiting: not exit 3 at once
        vm.start_metadata()
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    took = time.monotonic() - started
    log = log_path.read_text()

    assert code == 0, log
    assert "provider aws chosen: metadata probe: PUT " in log
    assert "rule add from 10.0.2.31 lookup 10002 priority 10003" in log
    assert_exits(vm, "eth2", THIRD_IPS)
    assert 4.0 < took < 20, log
    record = json.loads(kept.read_text())
    assert record["provider"] == "aws" and record["why"].startswith("metadata probe: PUT ")
    assert record["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()

    probe_paths = ("/openstack/latest/network_data.json", "/metadata/latest/")
    before = vm.metadata_stats()["by_path"]
    assert all(before.get(p, 0) >= 1 for p in probe_paths), before  # the first run probed
    shown = vm.agent("show", "--json", "--provider", "auto")
    assert shown.returncode == 0, shown.stderr
    out = json.loads(shown.stdout)
    assert out["provider"] == "aws" and out["provider_chosen_by"] == "auto"
    assert out["provider_chosen_because"].startswith("earlier this boot: metadata probe: PUT ")
    again, _ = hotplug(vm, "add", name, "--provider", "auto")
    assert again.returncode == 0, again.stderr
    assert "rule" not in again.stderr and "earlier this boot" in again.stderr
    after = vm.metadata_stats()["by_path"]
    assert {p: after.get(p, 0) for p in probe_paths} == {p: before[p] for p in probe_paths}


def test_add_ignores_interfaces_that_are_not_enis(
    simvm: Factory, scenario_3eni: dict[str, Any]
) -> None:
    """A bridge, Docker's and a CNI plugin's veths, VXLAN, a macvlan carrying an ENI's MAC, a
    tunnel, loopback, a name that is gone: exit 0 at once, nothing changed (the default 60 s
    timeout is never waited out)."""
    vm = simvm(scenario_3eni)
    applied(vm)
    vm.guest(["ip", "link", "add", "cni0veth", "type", "veth", "peer", "name", "cni0peer"])
    vm.guest(["ip", "link", "add", "vx0", "type", "vxlan", "id", "5", "dstport", "4789"])
    # a macvlan borrowing an ENI's MAC (VLAN and bond drivers do the same)
    mv = ["ip", "link", "add", "mv0", "link", "eth1", "address", SECOND_MAC, "type", "macvlan"]
    vm.guest(mv)
    vm.guest(["ip", "tuntap", "add", "dev", "tun0", "mode", "tun"])
    snap = settled_snapshot(vm)
    for ifname in ("docker0", "vethegt0", "cni0veth", "vx0", "mv0", "tun0", "lo", "nosuchif"):
        r, took = hotplug(vm, "add", ifname)
        assert r.returncode == 0 and took < 5, (ifname, r.stderr)
        assert "warning" not in r.stderr
    assert vm.snapshot() == snap


def test_remove_cleans_up_only_the_departed_eni_without_metadata(
    simvm: Factory, scenario_3eni: dict[str, Any]
) -> None:
    vm = simvm(scenario_3eni)
    applied(vm)
    vm.start_tcp_server(FAR_V4, 22)
    held = vm.hold_connection("10.0.1.21", FAR_V4, 22)
    others = {r for r in rules(vm) if r[1] not in THIRD_IPS}
    main_before = vm.guest_routes("main")

    vm.detach(THIRD_MAC)
    vm.stop_metadata()  # detach must work while metadata is down
    r, _ = hotplug(vm, "remove", "eth2")

    assert r.returncode == 0, r.stderr
    assert r.stderr.count("rule del") == 3
    assert rules(vm) == others
    assert not set(THIRD_IPS) & sources(vm)
    assert vm.guest_routes("10002") == []
    assert vm.guest_routes("main") == main_before
    assert held.alive()
    assert_exits(vm, "eth1", ("10.0.1.20", "10.0.1.21"))
    assert_exits(vm, "eth0", ("10.0.1.11", "2001:db8:1::10"))
    assert vm.probe(None, FAR_V4, via_container=True)
    # once more: nothing left to do
    again, _ = hotplug(vm, "remove", "eth2")
    assert again.returncode == 0 and again.stderr == ""


def test_remove_of_a_present_interface_does_nothing(
    simvm: Factory, scenario_3eni: dict[str, Any]
) -> None:
    vm = simvm(scenario_3eni, docker=False)
    applied(vm)
    snap = settled_snapshot(vm)
    r, _ = hotplug(vm, "remove", "eth2")
    assert r.returncode == 0 and r.stderr == ""
    assert vm.snapshot() == snap


def test_detach_and_reattach_under_a_new_name(
    simvm: Factory, scenario_3eni: dict[str, Any]
) -> None:
    vm = simvm(scenario_3eni, docker=False)
    applied(vm)
    vm.detach(THIRD_MAC)
    assert hotplug(vm, "remove", "eth2")[0].returncode == 0
    vm.attach(THIRD_MAC, ifname="ens5")
    r, _ = hotplug(vm, "add", "ens5")
    assert r.returncode == 0, r.stderr
    assert_exits(vm, "ens5", THIRD_IPS)


def test_storm_of_eight_enis(simvm: Factory, scenario_3eni: dict[str, Any]) -> None:
    """Boot of a large instance: eight ENIs appear at once and udev starts eight `hotplug add`
    together.  Half of them lag in metadata for a second, so early runs reconcile while later
    ones still wait: every run must exit 0 and no run may undo another's work."""
    scenario = dict(scenario_3eni)
    primary = scenario["enis"][0]
    scenario["enis"] = [primary]
    vm = simvm(scenario, docker=False)
    applied(vm)
    new = [eni(n, device=n, lag=1.0 if n % 2 else 0.0) for n in range(1, 9)]
    for e in new:
        vm.add_eni(e)
    names = [vm.attach(e["mac"]) for e in new]

    procs = []
    for name in names:
        cmd, env = vm.agent_command("hotplug", "add", name)
        procs.append(
            subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    results = [(p.wait(60), p.stderr.read() if p.stderr else "") for p in procs]
    for p in procs:
        for stream in (p.stdout, p.stderr):
            if stream is not None:
                stream.close()

    assert [code for code, _ in results] == [0] * 8, results
    for e, name in zip(new, names):
        n = int(e["mac"][-2:], 16)
        assert {(p, t) for p, s, t in rules(vm) if s in e["local-ipv4s"]} == {
            (10001 + n, str(10000 + n))
        }
        assert_exits(vm, name, tuple(e["local-ipv4s"]), count=1)
    assert vm.probe("10.0.1.11", FAR_V4).exit_iface == "eth0"


def test_add_that_waited_for_the_lock_keeps_what_others_did_meanwhile(
    simvm: Factory, scenario_3eni: dict[str, Any], tmp_path: Path
) -> None:
    """`add` reads metadata, then queues for the run lock behind other runs.  If it then
    reconciled with that earlier read, an ENI attached and configured by a run in between
    would be missing from it, and be torn down again (link, addresses, routes, rules)."""
    vm = simvm(scenario_3eni, attached=[PRIMARY_MAC, SECOND_MAC], docker=False)
    applied(vm)
    vm.attach(THIRD_MAC)
    log_path = tmp_path / "add.err"
    fd = os.open(vm.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another run is busy
        cmd, env = vm.agent_command("-v", "hotplug", "add", "eth2")
        with open(log_path, "wb") as err:
            proc = subprocess.Popen(cmd, env=env, stderr=err, stdout=subprocess.DEVNULL)
        wait_for("add read metadata", lambda: "settled in metadata" in log_path.read_text(), 20)
        # meanwhile a new ENI is attached and configured by a run `add` queued behind
        new = eni(1, device=3)
        vm.add_eni(new, attach=True)
        other = vm.agent("apply", env={"ENI_GUEST_LOCK_FILE": str(tmp_path / "other.lock")})
        assert other.returncode == 0, other.stderr
        assert_exits(vm, "eth3", tuple(new["local-ipv4s"]), count=1)
    finally:
        os.close(fd)
    assert proc.wait(30) == 0, log_path.read_text()
    assert "del" not in log_path.read_text()
    assert_exits(vm, "eth3", tuple(new["local-ipv4s"]))
    assert_exits(vm, "eth2", THIRD_IPS)

"""`eni-guest watch` running in a simulated VM, as a process, judged by packets and its log.

What a user notices: an ENI attached while the daemon runs carries traffic within a second
or two with nobody typing anything, a detached one leaves nothing behind, an IP assigned in
the console is picked up at the next interval, a metadata outage changes nothing and is
logged once, SIGTERM stops it at once with exit 0, SIGHUP reloads its settings, and the
Docker/CNI churn of veths neither changes anything nor fills the log.
"""

from __future__ import annotations

import copy
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from hotplug_support import Daemon, eni, rules, settled_snapshot, sources, wait_for

from eni_guest_lab.testbed import FAR_V4, FAR_V6, SimVM

pytestmark = pytest.mark.e2e

Factory = Callable[..., SimVM]
PRIMARY_MAC = "0e:00:00:00:00:c3"
SECOND_MAC = "0e:00:00:00:00:b2"
THIRD_MAC = "0e:00:00:00:00:a1"
THIRD_IPS = {"10.0.2.30", "10.0.2.31", "2001:db8:2::30"}


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Daemons a test started; killed afterwards if the test did not stop them."""
    made: list[Daemon] = []
    yield made
    for d in made:
        d.close()


def start(made: list[Daemon], vm: SimVM, *args: str, **kw: Any) -> Daemon:
    d = Daemon(vm, *args, **kw)
    made.append(d)
    return d


def carries(vm: SimVM, src: str, ifname: str) -> bool:
    # one echo, but time for it on a loaded machine: no caller expects it to fail
    probe = vm.probe(src, FAR_V6 if ":" in src else FAR_V4, count=1, timeout=1.5)
    return probe.ok and probe.exit_iface == ifname


def stopped_cleanly(d: Daemon) -> None:
    code, took = d.stop()
    assert code == 0, d.log()
    assert took < 1.5, f"SIGTERM took {took:.2f} s"
    assert "Traceback" not in d.log()


def test_attach_and_detach_need_no_command(
    simvm: Factory, scenario_3eni: dict[str, Any], daemons: list[Daemon]
) -> None:
    vm = simvm(scenario_3eni, attached=[PRIMARY_MAC, SECOND_MAC])
    d = start(daemons, vm)  # default interval (60 s): only events can explain what follows
    wait_for("initial reconcile", lambda: carries(vm, "10.0.1.21", "eth1"), 10)
    vm.start_tcp_server(FAR_V4, 22)
    held = vm.hold_connection("10.0.1.10", FAR_V4, 22)

    t = time.monotonic()
    vm.attach(THIRD_MAC)
    wait_for("attached ENI carries traffic", lambda: carries(vm, "10.0.2.31", "eth2"), 5)
    took = time.monotonic() - t
    assert all(carries(vm, ip, "eth2") for ip in THIRD_IPS)
    assert took < 3, f"attach to traffic took {took:.2f} s"

    vm.detach(THIRD_MAC)
    wait_for("detached ENI's rules gone", lambda: not THIRD_IPS & sources(vm), 5)
    assert carries(vm, "10.0.1.21", "eth1") and carries(vm, "10.0.1.11", "eth0")
    assert vm.probe(None, FAR_V4, via_container=True)

    # back, under another name
    vm.attach(THIRD_MAC, ifname="ens7")
    wait_for("re-attached as ens7", lambda: carries(vm, "10.0.2.30", "ens7"), 5)
    assert held.alive()
    assert d.count("rule del from 10.0.2.31 lookup 10002") == 1
    stopped_cleanly(d)


def test_ip_assigned_later_is_picked_up_at_the_next_interval(
    simvm: Factory, scenario_3eni: dict[str, Any], daemons: list[Daemon]
) -> None:
    vm = simvm(scenario_3eni, docker=False)
    d = start(daemons, vm, "--interval", "1")
    wait_for("initial reconcile", lambda: carries(vm, "10.0.2.31", "eth2"), 10)
    changed = copy.deepcopy(vm.scenario)
    third = next(e for e in changed["enis"] if e["mac"] == THIRD_MAC)
    third["local-ipv4s"] = ["10.0.2.30", "10.0.2.32"]  # .32 assigned, .31 unassigned

    vm.update_scenario(changed)

    wait_for("new IP carries traffic", lambda: carries(vm, "10.0.2.32", "eth2"), 4)
    wait_for("unassigned IP's rule gone", lambda: "10.0.2.31" not in sources(vm), 4)
    assert "10.0.2.31/32" not in vm.guest_ips("eth2")
    assert carries(vm, "10.0.2.30", "eth2")
    stopped_cleanly(d)


def test_metadata_outage_changes_nothing_and_is_logged_once(
    simvm: Factory, scenario_3eni: dict[str, Any], daemons: list[Daemon]
) -> None:
    vm = simvm(scenario_3eni, docker=False)
    d = start(daemons, vm, "--interval", "0.5")
    wait_for("initial reconcile", lambda: carries(vm, "10.0.2.31", "eth2"), 10)
    snap = settled_snapshot(vm)
    lines = len(d.lines())

    vm.stop_metadata()
    d.wait_log("metadata unavailable", 10)
    time.sleep(3)  # several failed cycles

    assert vm.snapshot() == snap
    assert d.count("metadata unavailable") == 1
    assert len(d.lines()) == lines + 1, d.log()
    vm.start_metadata()
    d.wait_log("metadata available again", 10)
    time.sleep(1.2)
    assert d.count("metadata available again") == 1
    assert len(d.lines()) == lines + 2, d.log()  # no changes to log: nothing was lost
    assert vm.snapshot() == snap
    stopped_cleanly(d)


def test_sigterm_while_waiting_for_a_lagging_eni(
    simvm: Factory, scenario_3eni: dict[str, Any], daemons: list[Daemon]
) -> None:
    vm = simvm(scenario_3eni, docker=False)
    d = start(daemons, vm, "--interval", "60")
    wait_for("initial reconcile", lambda: carries(vm, "10.0.2.31", "eth2"), 10)
    vm.add_eni(eni(1, device=3, lag=30.0), attach=True)
    time.sleep(1.0)  # the worker is now polling metadata with backoff
    stopped_cleanly(d)
    assert "10.0.11.10" not in sources(vm)  # never configured while unsettled


def test_lagging_attach_is_configured_once_settled(
    simvm: Factory, scenario_3eni: dict[str, Any], daemons: list[Daemon]
) -> None:
    vm = simvm(scenario_3eni, docker=False)
    d = start(daemons, vm)
    wait_for("initial reconcile", lambda: carries(vm, "10.0.2.31", "eth2"), 10)
    table0 = vm.guest_routes("10000")
    new = eni(1, device=3, lag=2.0)
    t = time.monotonic()
    vm.add_eni(new, attach=True)
    wait_for("lagging ENI carries traffic", lambda: carries(vm, "10.0.11.10", "eth3"), 10)
    assert time.monotonic() - t >= 1.5
    assert vm.guest_routes("10000") == table0
    assert {(p, t) for p, s, t in rules(vm) if s.startswith("10.0.11.")} == {(10004, "10003")}
    stopped_cleanly(d)


def test_sighup_reloads_the_configuration_and_keeps_it_when_bad(
    simvm: Factory, scenario_3eni: dict[str, Any], daemons: list[Daemon], tmp_path: Path
) -> None:
    vm = simvm(scenario_3eni, docker=False)
    conf = tmp_path / "eni-guest.toml"
    conf.write_text("watch_interval = 600.0\n")
    d = start(daemons, vm, "--config", str(conf))
    wait_for("initial reconcile", lambda: carries(vm, "10.0.2.31", "eth2"), 10)

    conf.write_text("watch_intervall = 1.0\n")  # a typo
    d.signal(signal.SIGHUP)
    d.wait_log("configuration not reloaded, keeping the old one", 5)
    assert "watch_intervall" in d.log()

    conf.write_text("watch_interval = 1.0\n")
    d.signal(signal.SIGHUP)
    d.wait_log("configuration reloaded", 5)
    changed = copy.deepcopy(vm.scenario)
    third = next(e for e in changed["enis"] if e["mac"] == THIRD_MAC)
    third["local-ipv4s"].append("10.0.2.33")
    vm.update_scenario(changed)
    # only the new 1 s interval can pick this up: no link event happened
    wait_for("IP picked up with the reloaded interval", lambda: carries(vm, "10.0.2.33", "eth2"), 5)
    stopped_cleanly(d)


def test_docker_veth_churn_changes_nothing_and_logs_nothing(
    simvm: Factory, scenario_3eni: dict[str, Any], daemons: list[Daemon]
) -> None:
    vm = simvm(scenario_3eni)
    d = start(daemons, vm)
    wait_for("initial reconcile", lambda: carries(vm, "10.0.2.31", "eth2"), 10)
    snap = settled_snapshot(vm)
    lines = d.lines()
    before = vm.metadata_stats()["requests"]
    assert vm.agent("show").returncode == 0
    per_read = vm.metadata_stats(min_requests=before + 1)["requests"] - before
    before += per_read

    for n in range(10):
        vm.guest(["ip", "link", "add", f"veth{n}a", "type", "veth", "peer", "name", f"veth{n}b"])
        vm.guest(["ip", "link", "set", f"veth{n}a", "master", "docker0", "up"])
    for n in range(10):
        vm.guest(["ip", "link", "del", f"veth{n}a"])
    time.sleep(1.5)

    assert d.lines() == lines
    assert vm.snapshot() == snap
    assert vm.probe(None, FAR_V4, via_container=True)
    # 20 new veths, each looked up once in metadata: the reads are shared, not one each
    reads = (vm.metadata_stats()["requests"] - before) / per_read
    assert 1 <= reads <= 10, f"{reads:.1f} metadata reads for 20 veths"
    stopped_cleanly(d)


def test_systemd_notify_watchdog_and_the_metrics_file(
    simvm: Factory, scenario_3eni: dict[str, Any], daemons: list[Daemon], tmp_path: Path
) -> None:
    """Type=notify: READY=1 and STATUS= over a real AF_UNIX datagram socket, WATCHDOG=1 at
    half of WATCHDOG_USEC, STOPPING=1 on SIGTERM; and the Prometheus text file that `apply`
    starts and the daemon carries on (its counters only grow, across the two processes)."""
    vm = simvm(scenario_3eni, docker=False)
    prom = tmp_path / "eni_guest.prom"
    r = vm.agent("apply", env={"ENI_GUEST_METRICS_FILE": str(prom)})
    assert r.returncode == 0, r.stderr
    after_apply = scrape(prom)
    assert after_apply['eni_guest_reconciles_total{result="success"}'] == 1
    requests = after_apply["eni_guest_metadata_requests_total"]
    assert requests > 0 and after_apply["eni_guest_netlink_requests_total"] > 0
    for mac, name in ((PRIMARY_MAC, "eth0"), (SECOND_MAC, "eth1"), (THIRD_MAC, "eth2")):
        key = next(k for k in after_apply if k.startswith("eni_guest_eni_in_sync") and mac in k)
        assert f'interface="{name}"' in key and 'reason="in_sync"' in key, key
        assert after_apply[key] == 1
    assert [k for k in os.listdir(tmp_path) if k.startswith(".")] == []  # no temporary left

    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(5)
    env = {
        "NOTIFY_SOCKET": str(tmp_path / "notify"),
        "WATCHDOG_USEC": "400000",  # a ping every 0.2 s
        "ENI_GUEST_METRICS_FILE": str(prom),
    }
    d = start(daemons, vm, "--interval", "0.5", env=env)
    got: list[str] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
        got.count("WATCHDOG=1") < 3 or not any(m.startswith("STATUS=reconciled") for m in got)
    ):
        got += notify.recv(4096).decode().splitlines()
    assert got[:2] == ["READY=1", "STATUS=watching; the first reconcile is under way"], got
    assert got.count("WATCHDOG=1") >= 3, got
    status = next(m for m in got if m.startswith("STATUS=reconciled"))
    assert status.endswith(": 3 ENIs, 8 IPs, 0 changes"), status
    wait_for("a daemon cycle in the file", lambda: scrape(prom).get(SUCCESS, 0) >= 3, 10)
    stopped_cleanly(d)
    while "STOPPING=1" not in got:
        got += notify.recv(4096).decode().splitlines()
    notify.close()
    after = scrape(prom)
    assert after["eni_guest_metadata_requests_total"] > requests  # the daemon's added
    assert after["eni_guest_last_reconcile_success"] == 1


SUCCESS = 'eni_guest_reconciles_total{result="success"}'


def scrape(path: Path) -> dict[str, float]:
    """The samples of a Prometheus text file, by series (name and labels as written)."""
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            out[series] = float(value)
    return out


def test_someone_elses_address_gets_its_rule_at_once_without_any_setting(
    simvm: Factory, scenario_3eni: dict[str, Any], daemons: list[Daemon]
) -> None:
    """No floating_ips: `ip addr add 10.0.2.77/32 dev eth2`, an IP metadata does not list
    (the cloud routes it to eth2's ENI; metadata lags far behind), gets eth2's rule within
    100 ms, answers through the VPC's source check, is never removed, and its rule goes with
    it (floating.py, watch_floating.py)."""
    from eni_guest_lab.ha import Client, Responder, address_to_rule

    vm = simvm(scenario_3eni, docker=False)
    api = vm.start_cloud_api(lag=600.0)  # metadata does not list it during the test
    api.call("assign-private-ip", {"eni": THIRD_MAC, "ip": "10.0.2.77"})
    d = start(daemons, vm)
    wait_for("initial reconcile", lambda: "10.0.2.31" in sources(vm), 10)
    time.sleep(1.0)  # the daemon answers address events after its first reconcile's end
    ns = vm.main_guest.ns
    responder, client = Responder(ns, "10.0.2.77", "eth2"), Client(vm, "10.0.2.77")
    try:
        took = address_to_rule(ns, "eth2", "10.0.2.77")
        print(f"\nsomeone else's address: address to rule {took * 1000:.1f} ms (no setting)")
        assert took < 0.1, f"address to rule took {took * 1000:.0f} ms"
        assert (10003, "10.0.2.77", "10002") in rules(vm)
        since = time.time()
        wait_for("an answer from 10.0.2.77", lambda: client.first_from("eth2", since), 2)
        r = vm.agent("apply")
        assert r.returncode == 0, r.stderr
        assert "10.0.2.77/32" in vm.guest_ips("eth2", 4)  # never removed
        assert (10003, "10.0.2.77", "10002") in rules(vm)
        gone = address_to_rule(ns, "eth2", "10.0.2.77", add=False)
        print(f"someone else's address: address gone to rule gone {gone * 1000:.1f} ms")
        assert "10.0.2.77" not in sources(vm)
    finally:
        client.close()
        responder.close()
    assert "rror" not in d.log() and "Traceback" not in d.log()
    stopped_cleanly(d)

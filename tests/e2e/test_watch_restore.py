"""The watch daemon puts back, within a second, what someone else deleted of eni-guest's.

What networkd does when it reconfigures the primary (a restart, an upgrade, netplan apply):
every rule eni-guest added and the primary's secondary IP go, and each ENI IP's traffic leaves
through the wrong NIC until they are back.  Here the deletions are made by hand, in one burst,
with the daemon's periodic reconcile a minute away: only its event handling can explain the
restore.  After it the daemon is quiet: no reconcile loop, no metadata read.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any, Callable, Iterator

import pytest
from hotplug_support import Daemon, rules, settled_snapshot, wait_for

from eni_guest_lab.testbed import FAR_V4, FAR_V6, SimVM

pytestmark = pytest.mark.e2e

Factory = Callable[..., SimVM]
IFNAME = {"0e:00:00:00:00:c3": "eth0", "0e:00:00:00:00:b2": "eth1", "0e:00:00:00:00:a1": "eth2"}
RESTORED = "restored what was deleted"


@pytest.fixture
def daemon() -> Iterator[list[Daemon]]:
    made: list[Daemon] = []
    yield made
    for d in made:
        d.close()


def carries(vm: SimVM, src: str, ifname: str) -> bool:
    probe = vm.probe(src, FAR_V6 if ":" in src else FAR_V4, count=1, timeout=0.3)
    return probe.ok and probe.exit_iface == ifname


def _deletions(vm: SimVM) -> tuple[str, str]:
    """`ip -batch` input deleting every rule of ours (IPv4, IPv6), a default route of one of
    our tables and the primary's secondary address: networkd's reconfigure, and a bit more."""
    batches = []
    for fam in (4, 6):
        lines = []
        for r in vm.guest_rules(fam):
            if 10000 <= r.get("priority", 0) <= 12048:
                frm = f" from {r['src']}" if r.get("src", "all") != "all" else ""
                lines.append(f"rule del priority {r['priority']}{frm} table {r['table']}")
        batches.append(lines)
    batches[0] += ["route del default table 10001", "address del 10.0.1.11/32 dev eth0"]
    return "\n".join(batches[0]) + "\n", "\n".join(batches[1]) + "\n"


def test_deleted_rules_route_and_address_are_back_within_a_second(
    simvm: Factory, scenario_3eni: dict[str, Any], daemon: list[Daemon]
) -> None:
    vm = simvm(scenario_3eni, docker=False)
    d = Daemon(vm)  # default interval (60 s): the periodic reconcile cannot be what restores
    daemon.append(d)
    wait_for("initial reconcile", lambda: carries(vm, "10.0.2.31", "eth2"), 10)
    snap = settled_snapshot(vm)
    ours_before = rules(vm)
    assert len(ours_before) >= 8 and "10.0.1.11/32" in vm.guest_ips("eth0")
    v4, v6 = _deletions(vm)
    requests = vm.metadata_stats().get("requests", 0)
    lines = len(d.lines())

    t = time.monotonic()
    ns = vm.guest_ns
    subprocess.run(
        ["ip", "netns", "exec", ns, "sh", "-c", 'ip -batch "$1" && ip -6 -batch "$2"', "sh"]
        + [_file(vm, "v4", v4), _file(vm, "v6", v6)],
        check=True,
    )
    deleted = time.monotonic() - t
    assert not rules(vm)  # they really went

    wait_for("everything back", lambda: vm.snapshot() == snap, 3, step=0.02)
    took = time.monotonic() - t
    print(f"\nrestore: deletions took {deleted:.3f} s, all back {took:.3f} s after the first")
    assert took < 1.5, f"restored only after {took:.2f} s"
    for e in scenario_3eni["enis"]:
        for ip in e["local-ipv4s"] + e.get("ipv6s", []):
            assert carries(vm, ip, IFNAME[e["mac"]]), f"{ip} does not leave through its ENI"

    # quiet afterwards: one restore for the burst, no reconcile loop, no metadata read
    d.wait_log(RESTORED, 2)
    after = len(d.lines())
    time.sleep(3)
    assert len(d.lines()) == after, d.log()
    assert d.count(RESTORED) == 1, d.log()
    assert after > lines
    assert vm.metadata_stats().get("requests", 0) == requests
    assert vm.snapshot() == snap
    assert "Traceback" not in d.log()
    code, _ = d.stop()
    assert code == 0


def _file(vm: SimVM, name: str, text: str) -> str:
    path = vm.tmpdir / f"restore-{name}.batch"
    path.write_text(text)
    return str(path)

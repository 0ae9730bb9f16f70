"""Floating IPs, the cloud API and keepalived failover on two simulated VMs (issue 9, 3-7).

One set-up for the module (eni_guest_lab/ha.py, about 4 s): VM A and VM B in one VPC, each
with a secondary ENI in 10.0.2.0/24 and eni-guest's watch daemon (floating_ips = the VIP and
10.0.2.101), keepalived on both (unicast VRRP, advert 0.2 s: a loaded CI machine must not
starve a VRRP process into a spurious takeover), A master of the VIP 10.0.2.100,
a client on the far host sending a UDP request to the VIP every 10 ms, a responder in each VM.
Every answer crossed the VPC's source check.  The tests run in order on that one set-up: the
cloud API, a floating address's rule (timed), `eni-guest apply` racing the daemon, the
failover (timed) and A's return as backup, a whole ENI moving from A to B, and the failback
with `eni-guest apply` in the notify script instead of the daemon.
"""

from __future__ import annotations

import json
import shutil
import time
from typing import Any, Iterator

import pytest
from hotplug_support import wait_for

from eni_guest_lab import ha
from eni_guest_lab.ha import MOVING_IP, VIP, Client, HaBed, Responder

pytestmark = pytest.mark.e2e

EXTRA = "10.0.2.101"  # a second floating IP, on B
LAG = 1.0  # the cloud's metadata lag, seconds


@pytest.fixture(scope="module")
def bed() -> Iterator[HaBed]:
    if shutil.which("keepalived") is None:
        pytest.fail("keepalived is not installed (tests/run.sh installs the Debian package)")
    b = HaBed(lag=LAG, advert=0.2, floating=(VIP, EXTRA))
    yield b
    b.close()


def api(bed: HaBed, node: ha.Node, op: str, **args: Any) -> tuple[int, dict[str, Any]]:
    """The cloud API as a notify script calls it: curl inside the VM."""
    query = "&".join(f"{k}={v}" for k, v in args.items())
    method = "GET" if op == "enis" else "POST"
    cp = bed.vm.guest(
        ["curl", "-s", "-w", "\n%{http_code}", "-X", method, f"{bed.api.url}/{op}?{query}"],
        guest=node.guest,
    )
    body, code = cp.stdout.rsplit("\n", 1)
    return int(code), json.loads(body)


def listed_on(bed: HaBed, node: ha.Node, ip: str) -> bool:
    """Whether the VM's metadata file lists `ip` on its ENI (what its simulator serves)."""
    path = bed.vm._md.guest_path(node.guest) if node is bed.b else bed.vm.scenario_path
    enis = json.loads(path.read_text())["enis"]
    return any(ip in e.get("local-ipv4s", []) for e in enis if e["mac"] == node.eni_mac)


def test_cloud_api_moves_an_ip_at_once_and_metadata_after_the_lag(bed: HaBed) -> None:
    b = bed.b
    eni = bed.vm.eni(b.eni_mac)["interface-id"]
    code, out = api(bed, b, "assign-private-ip", eni=eni, ip=VIP)
    assert code == 409 and "allow_reassignment" in out["error"]  # A holds it
    code, out = api(bed, b, "unassign-private-ip", eni=eni, ip=ha.B_SRC)
    assert code == 409 and "primary IP" in out["error"]
    code, out = api(bed, b, "assign-private-ip", eni="eni-nope", ip=EXTRA)
    assert code == 404
    code, out = api(bed, b, "assign-private-ip", eni=eni, ip=EXTRA)
    assert code == 200 and out["ok"]
    assert not listed_on(bed, b, EXTRA)  # metadata lags
    code, out = api(bed, b, "enis")
    mine = next(e for e in out["enis"] if e["mac"] == b.eni_mac)
    assert EXTRA in mine["ipv4s"] and mine["instance"] == "i-0bbbbbbbbbbbbbbb2"
    wait_for("metadata follows", lambda: listed_on(bed, b, EXTRA), LAG + 2)


def test_floating_address_gets_its_rule_within_100_ms_and_loses_it(bed: HaBed) -> None:
    """EXTRA is routed to B's ENI (the test above); keepalived-style, it is added by hand."""
    b = bed.b
    bed.daemons_settled()
    responder = Responder(b.guest.ns, EXTRA, "B")
    client = Client(bed.vm, EXTRA)
    try:
        took = bed.address_to_rule(b, EXTRA)
        print(f"\nfloating IP: address to rule {took * 1000:.1f} ms (watch daemon)")
        assert took < 0.1, f"address to rule took {took * 1000:.0f} ms"
        since = time.time()
        wait_for("B answers from the floating IP", lambda: client.first_from("B", since), 2)
        gone = bed.address_to_rule(b, EXTRA, add=False)
        print(f"floating IP: address gone to rule gone {gone * 1000:.1f} ms")
        assert EXTRA not in {r.get("src") for r in bed.vm.guest_rules(4, guest=b.guest)}
        for _ in range(5):  # keepalived flapping: the rule follows, nothing logged as an error
            assert bed.address_to_rule(b, EXTRA) < 0.5
            assert bed.address_to_rule(b, EXTRA, add=False) < 0.5
        assert "differs" not in bed.watch_log(b) and "rror" not in bed.watch_log(b)
        # metadata lists EXTRA on B's ENI; its address was keepalived's: never put back
        r = bed.vm.agent("apply", guest=b.guest, env=bed.env())
        assert r.returncode == 0, r.stderr
        assert f"{EXTRA}/32" not in bed.vm.guest_ips("eth1", 4, guest=b.guest)
    finally:
        client.close()
        responder.close()


def test_apply_from_a_notify_script_races_the_daemon_and_adds_the_rule(bed: HaBed) -> None:
    """What a notify script does: add the address, run `eni-guest apply` at once, while the
    daemon reacts to the same event (the run lock serialises them)."""
    b = bed.b
    bed.vm.guest(["ip", "addr", "add", f"{EXTRA}/32", "dev", "eth1"], guest=b.guest)
    t = time.monotonic()
    r = bed.vm.agent("apply", guest=b.guest, env=bed.env())
    took = time.monotonic() - t
    print(f"\neni-guest apply from a notify script: {took:.2f} s (with the daemon running)")
    assert r.returncode == 0, r.stderr
    rules = bed.vm.guest_rules(4, guest=b.guest)
    assert [x["priority"] for x in rules if x.get("src") == EXTRA] == [10002]
    bed.vm.guest(["ip", "addr", "del", f"{EXTRA}/32", "dev", "eth1"], guest=b.guest)
    wait_for(
        "rule gone",
        lambda: not [x for x in bed.vm.guest_rules(4, guest=b.guest) if x.get("src") == EXTRA],
        2,
    )


def test_keepalived_failover_and_the_old_master_back_as_backup(bed: HaBed) -> None:
    assert bed.holds_vip(bed.a) == {"address": True, "rule": True}
    assert bed.holds_vip(bed.b) == {"address": False, "rule": False}
    t = bed.fail_over()
    print("\nkeepalived failover:\n" + "\n".join(t.lines()))
    assert t.guest_side is not None and t.guest_side < 0.5, t.lines()
    assert t.detection is not None and t.outage is not None
    assert bed.holds_vip(bed.b) == {"address": True, "rule": True}
    # the old master comes back: keepalived starts as backup and drops the VIP it held;
    # eni-guest drops the rule, and does not put the address back although A's metadata
    # still lists the VIP for the lag
    bed.come_back()
    wait_for(
        "A holds nothing of the VIP",
        lambda: bed.holds_vip(bed.a) == {"address": False, "rule": False},
        2,
    )
    wait_for("metadata moved the VIP", lambda: listed_on(bed, bed.b, VIP), LAG + 2)
    r = bed.vm.agent("apply", guest=bed.a.guest, env=bed.env())
    assert r.returncode == 0, r.stderr
    assert bed.holds_vip(bed.a) == {"address": False, "rule": False}
    since = time.time()
    wait_for("B still answers", lambda: bed.client and bed.client.first_from("B", since), 2)
    assert "Traceback" not in bed.watch_log(bed.a) + bed.watch_log(bed.b)


def test_a_whole_eni_moves_from_a_to_b(bed: HaBed) -> None:
    t = bed.move_eni()
    print("\nENI moving from A to B:\n" + "\n".join(t.lines()))
    assert t.first_b is not None
    assert bed.vm.ifname_of(ha.MOVING_MAC) == "eth2"
    srcs = {r.get("src") for r in bed.vm.guest_rules(4)}
    assert MOVING_IP not in srcs  # A keeps nothing of it
    assert MOVING_IP in {r.get("src") for r in bed.vm.guest_rules(4, guest=bed.b.guest)}


def test_failback_with_apply_in_the_notify_script(bed: HaBed) -> None:
    """A, back as backup, now without its watch daemon: its notify script runs `eni-guest
    apply` after the cloud call.  B dies; A takes the VIP back and answers through the VPC."""
    bed.kill(bed.a)
    since = time.time()
    bed.come_back(guest_side="apply")
    wait_for("apply as backup", lambda: bed.a.notified("APPLIED-BACKUP", since), 10)
    assert bed.holds_vip(bed.a) == {"address": False, "rule": False}
    t = bed.fail_over(dead=bed.b)
    print("\nfailback, eni-guest apply in A's notify script:\n" + "\n".join(t.lines()))
    wait_for("apply as master", lambda: bed.a.notified("APPLIED-MASTER", t.killed), 10)
    assert "Traceback" not in bed.a.notify_log.read_text()
    assert bed.holds_vip(bed.a) == {"address": True, "rule": True}
    assert t.guest_side is not None

"""Verify from the kernel's events (witness.py), against a real kernel in a throw-away namespace.

A run applies a link setting, IPv4 and IPv6 addresses, a route and rules through
Kernel.apply; then another process (`ip`, as a network manager or an operator would) does
something before the run verifies (agent.verify).  What can undo an acknowledged change must
show in the events, and then verify reads the kernel and names the change; what cannot must
leave the events silent and verify must not read the kernel again; and the run's own changes
must not even be queued (that is what makes verify cheap).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from typing import Any, Iterator

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, subprocess, sys
    from ipaddress import ip_address, ip_network
    from eni_guest import agent, witness
    from eni_guest.changes import AddrChange, LinkChange, RouteChange, RuleChange
    from eni_guest.config import Config
    from eni_guest.errors import KernelError
    from eni_guest.kernel import Kernel

    between, mode, rcvbuf = sys.argv[1], sys.argv[2], int(sys.argv[3])
    k = Kernel(Config())
    eth = k.link_by_name("egv0")
    ips = [ip_address(f"10.7.0.{n}") for n in range(10, 60)]
    v6 = ip_address("fd00:7::10")
    changes = [LinkChange(eth.index, "egv0", up=True, mtu=1400)]
    changes += [AddrChange("add", eth.index, "egv0", ip, 24) for ip in ips]
    changes.append(AddrChange("add", eth.index, "egv0", v6, 64))
    changes.append(RouteChange("add", 10001, ip_network("0.0.0.0/0"), eth.index, "egv0",
                               gateway=ip_address("10.7.0.1")))
    changes += [RuleChange("add", 4, 10002, 10001, src=ip_network(f"{ip}/32")) for ip in ips]
    if mode == "removals":  # an earlier run applied all that; this one takes some away
        k.apply(changes, lambda done: None)
        changes = [RuleChange("del", 4, 10002, 10001, src=ip_network(f"{ip}/32")) for ip in ips]
        changes.append(AddrChange("del", eth.index, "egv0", ips[-1], 24))
        changes.append(AddrChange("del", eth.index, "egv0", v6, 64))
    before = k.read_state()
    if rcvbuf:
        k._witness = witness.Witness(k.nl.port, rcvbuf)
    else:
        k.watch()

    seen = {"reason": "not asked", "kinds": {}}
    told = witness.doubt
    def doubt(events, *args):  # what passed the filter
        events = list(events)
        for kind, _ in events:
            seen["kinds"][kind] = seen["kinds"].get(kind, 0) + 1
        return told(events, *args)
    witness.doubt = doubt
    kernel_doubt = k.doubt
    def asked(*args):
        seen["reason"] = kernel_doubt(*args)
        return seen["reason"]
    k.doubt = asked
    reads = []
    read_state = k.read_state
    k.read_state = lambda: reads.append(1) or read_state()

    applied = []
    k.apply(changes, applied.extend)
    if between:
        subprocess.run(between, shell=True, check=True)
    try:
        agent.verify(k, applied, before)
        error = None
    except KernelError as e:
        error = str(e)
    print(json.dumps({**seen, "error": error, "reads": len(reads)}))
    """
)


@pytest.fixture
def netns() -> Iterator[str]:
    ns = f"egv{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        ip = ["ip", "-n", ns]
        subprocess.run(
            [*ip, "link", "add", "egv0", "type", "veth", "peer", "name", "egv1"], check=True
        )
        subprocess.run([*ip, "link", "set", "egv1", "up"], check=True)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def run(ns: str, between: str = "", mode: str = "adds", rcvbuf: int = 0) -> dict[str, Any]:
    r = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", SCRIPT, between, mode, str(rcvbuf)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def test_a_kept_apply_is_vouched_for_by_its_events_without_a_second_read(netns: str) -> None:
    out = run(netns)
    assert out["reason"] is None and out["error"] is None
    assert out["reads"] == 0
    # the run's own 50 addresses, 50 rules and its route, and the kernel's local routes for
    # them, were never queued: only the link's own events were
    assert set(out["kinds"]) == {"16"}, out["kinds"]  # RTM_NEWLINK


def test_its_own_removals_raise_no_doubt(netns: str) -> None:
    out = run(netns, mode="removals")
    assert out["reason"] is None and out["error"] is None and out["reads"] == 0


def test_what_others_add_meanwhile_raises_no_doubt(netns: str) -> None:
    others = (
        "ip addr add 10.7.0.200/24 dev egv0; ip rule add from 10.9.9.9 lookup 100 priority 500;"
        " ip route add 10.8.0.0/16 dev egv0; ip route add 10.6.0.0/16 dev egv0 table 10001"
    )
    out = run(netns, others)
    assert out["reason"] is None and out["error"] is None and out["reads"] == 0


@pytest.mark.parametrize(
    ("between", "reason", "named"),
    [
        (
            "ip addr del 10.7.0.20/24 dev egv0",
            "address 10.7.0.20 was removed",
            "addr add 10.7.0.20/24",
        ),
        (
            "ip -6 addr del fd00:7::10/64 dev egv0",
            "address fd00:7::10 was removed",
            "addr add fd00:7::10/64",
        ),
        ("ip link set egv0 down", "link egv0 went down", "link set dev egv0 up mtu 1400"),
        ("ip link set egv0 mtu 1300", "link egv0 reads otherwise", "link set dev egv0 up mtu 1400"),
        (
            "ip route flush table 10001",
            "route 0.0.0.0/0 in table 10001 was removed",
            "route add default via 10.7.0.1",
        ),
        (
            "ip route replace default via 10.7.0.2 dev egv0 onlink table 10001 proto 229",
            "written by someone else",
            "route add default via 10.7.0.1",
        ),
        (
            "ip rule del from 10.7.0.30 priority 10002",
            "rule priority 10002 was removed",
            "rule add from 10.7.0.30",
        ),
    ],
)
def test_what_undoes_a_change_is_seen_and_the_change_named(
    netns: str, between: str, reason: str, named: str
) -> None:
    out = run(netns, between)
    assert reason in (out["reason"] or ""), out
    assert out["reads"] == 1
    assert "still differs from the plan" in out["error"] and named in out["error"], out["error"]


def test_events_lost_make_verify_read_the_kernel(netns: str) -> None:
    """A queue too small for the events (a burst of link changes by someone else): the
    kernel drops some and says so; verify cannot trust what is left and reads the kernel."""
    flaps = "; ".join(f"link set egv1 mtu {1300 + n % 50}" for n in range(400))
    out = run(netns, f"echo '{flaps}' | tr ';' '\\n' | ip -batch -", rcvbuf=4096)
    assert out["reason"] == "the kernel dropped events (its queue overflowed)"
    assert out["reads"] == 1 and out["error"] is None  # read, and nothing of ours was undone

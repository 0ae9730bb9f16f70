"""Shared helpers for the property tests (tests/e2e/test_prop_*.py).

Everything here runs *inside* the simulated VM's namespaces (``SimVM.guest`` and friends); the
kernel facts are read with ``ip -j`` or, for what iproute2 6.1 does not print (the protocol of
an address, IFA_PROTO), with pyroute2's ``IPRoute`` opened in the guest namespace.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any, Optional

from eni_guest_lab import scenarios
from eni_guest_lab.testbed import SimVM

# The three-ENI instance of the e2e tests, shared with the demo and the benchmarks
# (src/eni_guest_lab/scenarios/three-eni.json). Its MACs (0e:00:00:00:00:c3, :b2, :a1) sort
# in the opposite order of device numbers (as in cloud-init's EC2 tests), so any code that
# orders ENIs by MAC gets the wrong answer.
PRIMARY_MAC, SECOND_MAC, THIRD_MAC = scenarios.macs(scenarios.three_eni())

OURS = "229"  # protocol and interface group of everything the agent creates
PRIO_RANGE = range(10000, 12049)  # priority_base .. priority_base + 2048
TABLE_RANGE = range(10000, 12048)  # table_base .. table_base + 2047

#: (owner MAC, IP) of every private IP of ``three_eni()``, primary's secondaries included.
THREE_ENI_IPS = [
    (PRIMARY_MAC, "10.0.1.10"),
    (PRIMARY_MAC, "10.0.1.11"),
    (PRIMARY_MAC, "2001:db8:1::10"),
    (SECOND_MAC, "10.0.1.20"),
    (SECOND_MAC, "10.0.1.21"),
    (THIRD_MAC, "10.0.2.30"),
    (THIRD_MAC, "10.0.2.31"),
    (THIRD_MAC, "2001:db8:2::30"),
]


def three_eni() -> dict[str, Any]:
    """A fresh copy of the three-ENI scenario (see conftest's ``scenario_3eni``): the
    ``scenario_3eni`` fixture and the module-scoped VMs (which a function-scoped fixture
    cannot feed) both take one."""
    return scenarios.three_eni()


def eni_of(scenario: dict[str, Any], mac: str) -> dict[str, Any]:
    return next(e for e in scenario["enis"] if e["mac"] == mac)


def forget_kept_metadata(vm: SimVM) -> None:
    """Delete what the VM's earlier runs kept of metadata (providers/memo.py): the next run
    reads every key, as the first run of a boot or one on a NIC attached again does.  A test
    that breaks a key which cannot change (a subnet, `mac`) needs it, or the run would not
    even ask for the broken key."""
    from eni_guest.config import Config
    from eni_guest.providers import memo

    path = memo.path_for(Config(lock_file=str(vm.lock_file)))
    assert path is not None
    path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- running the agent


def apply_json(vm: SimVM, *args: str, env: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """``eni-guest apply --json``; it must succeed. Returns the JSON plus ``stderr``."""
    cp = vm.agent("apply", "--json", *args, env=env)
    assert cp.returncode == 0, f"apply exited {cp.returncode}\n{cp.stderr}"
    out = json.loads(cp.stdout)
    out["stderr"] = cp.stderr
    return out


def start_agent(vm: SimVM, *args: str, **env: str) -> subprocess.Popen[str]:
    """``SimVM.agent`` in the background (same command line and environment).

    ``ip netns exec`` execs the interpreter, so the Popen pid is the agent itself.
    """
    argv, full_env = vm.agent_command(*args, env=env)
    return subprocess.Popen(
        argv, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


# ---------------------------------------------------------------------------- reading the guest


def _iproute_in(ns: str) -> Any:
    """pyroute2's IPRoute in a namespace: ``IPRoute(netns=)`` since 0.9, ``NetNS`` before
    (0.7.2 is Debian 12's, which the agent supports too; importing the agent's netlink module
    teaches 0.7.2's address message IFA_PROTO)."""
    from pyroute2 import IPRoute

    import eni_guest.netlink  # noqa: F401

    try:
        return IPRoute(netns=ns)
    except TypeError:
        from pyroute2 import NetNS

        return NetNS(ns)


def addr_protocols(vm: SimVM) -> dict[tuple[str, str], Optional[int]]:
    """``{(ifname, "ip/plen"): IFA_PROTO or None}`` for every address in the guest."""
    with _iproute_in(vm.guest_ns) as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        out: dict[tuple[str, str], Optional[int]] = {}
        for msg in ipr.get_addr():
            ip = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            out[(names[msg["index"]], f"{ip}/{msg['prefixlen']}")] = msg.get_attr("IFA_PROTO")
        return out


def _strip(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k not in ("expires",)}


def foreign_view(vm: SimVM) -> dict[str, Any]:
    """Everything in the guest that neither the agent nor the kernel itself made.

    Rules whose protocol is not ours (the kernel's default rules included), routes in every
    table whose protocol is neither ours nor the kernel's (connected and link-local routes come
    and go with link state), and addresses without a protocol (added by a person, a DHCP client
    or a container runtime; the kernel marks the ones it makes itself).
    """

    def rules(fam: int) -> list[dict[str, Any]]:
        entries = json.loads(vm.guest(["ip", "-j", f"-{fam}", "rule", "show"]).stdout)
        return sorted(
            (e for e in entries if e.get("protocol") != OURS), key=lambda e: json.dumps(e)
        )

    def routes(fam: int) -> list[dict[str, Any]]:
        cmd = ["ip", "-j", f"-{fam}", "route", "show", "table", "all"]
        entries = json.loads(vm.guest(cmd).stdout)
        keep = [
            _strip(e)
            for e in entries
            if e.get("protocol") not in (OURS, "kernel") and e.get("table") != "local"
        ]
        return sorted(keep, key=lambda e: json.dumps(e, sort_keys=True))

    addrs = sorted(f"{dev} {ip}" for (dev, ip), proto in addr_protocols(vm).items() if not proto)
    return {
        "rules4": rules(4),
        "rules6": rules(6),
        "routes4": routes(4),
        "routes6": routes(6),
        "addrs": addrs,
    }


def agent_rules(vm: SimVM) -> list[dict[str, Any]]:
    out = []
    for fam in (4, 6):
        for e in json.loads(vm.guest(["ip", "-j", f"-{fam}", "rule", "show"]).stdout):
            if e.get("protocol") == OURS:
                out.append({**e, "family": fam})
    return out


def route_get(vm: SimVM, dst: str, src: Optional[str] = None) -> str:
    cmd = ["ip", "route", "get", dst] + (["from", src] if src else [])
    return vm.guest(cmd).stdout.strip()


def link(vm: SimVM, ifname: str) -> dict[str, Any]:
    return next(x for x in vm.guest_links() if x["ifname"] == ifname)


def primary_state(vm: SimVM, ifname: str = "eth0") -> dict[str, Any]:
    """What must never change on the primary: DHCP/RA addresses, default routes, link state."""
    lk = link(vm, ifname)
    protos = addr_protocols(vm)
    return {
        "link": {k: lk.get(k) for k in ("address", "mtu", "flags", "operstate")},
        "addrs": sorted(
            (ip, proto) for (dev, ip), proto in protos.items() if dev == ifname and not proto
        ),
        "default4": [_strip(r) for r in vm.guest_routes("main", 4) if r["dst"] == "default"],
        "default6": [_strip(r) for r in vm.guest_routes("main", 6) if r["dst"] == "default"],
    }


def wait_no_tentative(vm: SimVM, namespaces: list[str], timeout: float = 6.0) -> None:
    """Wait until IPv6 duplicate address detection finished on every link of ``namespaces``.

    A link that came up less than ~2 s ago has a tentative link-local address; until it is
    usable, neighbour discovery towards a container behind it can fail, and a probe would
    blame the agent for the testbed's start-up.
    """
    deadline = time.monotonic() + timeout
    while True:
        busy = [
            ns
            for ns in namespaces
            if "tentative"
            in subprocess.run(
                ["ip", "-n", ns, "-6", "addr", "show"], capture_output=True, text=True
            ).stdout
        ]
        if not busy:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"IPv6 DAD still running after {timeout} s in {busy}")
        time.sleep(0.1)

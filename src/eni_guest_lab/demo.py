"""`eni-guest demo`: a simulated VM, the agent applied to it, and proof by real packets.

It shows a newcomer in one command what the agent does and that it works: the secondary IPs
cannot reach anything before, every IP leaves through its own ENI after, and the Docker-like
container and unbound traffic keep using the main table.  Everything lives in network
namespaces created here and removed on exit, Ctrl-C and SIGTERM included; the machine's own
interfaces are never touched.

`--provider NAME` runs the same VM with another cloud's metadata format (the simulator renders
the same ENIs for each, sim/render.py); jdcloud adds dnsmasq in the VPC, because JD's
metadata lacks subnets and gateways and the agent asks the VPC's DHCP service for them.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from typing import Any, Callable

from . import scenarios, testbed
from .demo_guard import guarded
from .testbed import SimVM

# The three-ENI instance the tests use too (scenarios/three-eni.json): the primary with a
# secondary IP and an Elastic IP; a second ENI in the primary's own subnet (the case most tools
# get wrong); a third in another subnet, dual-stack.  MACs sort opposite to device numbers.
PRIMARY, SECOND, THIRD = scenarios.macs(scenarios.three_eni())

# Tencent's and JD Cloud's metadata publish no IPv6: the agent configures IPv4 only there.
IPV6_CLOUDS = frozenset({"aws", "alibaba", "openstack", "static"})


def scenario_for(provider: str) -> dict[str, Any]:
    """The demo's ENIs in the format of `provider`."""
    return scenarios.three_eni(provider)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]
    )


def _exit(p: testbed.Probe) -> str:
    if p.ok:
        return f"ok via {p.exit_iface or '?'}"
    if p.exit_iface:
        return f"DROPPED (left via {p.exit_iface})"
    return "no route"


def run(echo: Callable[[str], None] = print, provider: str = "aws") -> int:
    """Build, apply, prove, clean up.  Returns the exit code (0: every check as expected)."""

    def build() -> SimVM:
        return SimVM(scenario_for(provider), dhcp=provider == "jdcloud").start()

    return guarded(echo, "eni-guest demo", "VM", build, lambda vm: _demo(vm, echo))


def _demo(vm: SimVM, echo: Callable[[str], None]) -> int:
    enis = {e["mac"]: e for e in vm.scenario["enis"]}
    v6 = vm.provider in IPV6_CLOUDS
    ips = [
        (mac, ip)
        for mac in (PRIMARY, SECOND, THIRD)
        for ip in enis[mac].get("local-ipv4s", []) + (enis[mac].get("ipv6s", []) if v6 else [])
    ]
    source = "a static ENI file" if vm.provider == "static" else "the metadata simulator"
    echo(f"simulated {vm.provider} VM: ENIs from {source}")
    echo(f"guest namespace {vm.guest_ns}, VPC namespace {vm.vpc_ns}")
    echo("ENIs: " + ", ".join(f"{vm.ifname_of(m)}={enis[m]['interface-id']}" for m in enis))

    echo("\n== before: the image knows only its first NIC")
    before = []
    for mac, ip in ips[:4]:
        far = testbed.FAR_V4 if ipaddress.ip_address(ip).version == 4 else testbed.FAR_V6
        before.append((ip, vm.ifname_of(mac) or "-", _exit(vm.probe(ip, far, count=1))))
    echo(_table(("source IP", "owner", "to the internet"), before))

    echo("\n== eni-guest apply")
    r = vm.agent("apply")
    for line in r.stderr.splitlines():
        echo("  " + line)
    if r.returncode != 0:
        echo(f"apply failed with exit code {r.returncode}")
        return 1

    echo("\n== after: every IP leaves through the ENI that owns it (strict source check in VPC)")
    failures = _after(vm, enis, ips, echo)

    echo("\n== eni-guest apply again (idempotent)")
    again = vm.agent("apply", "--json")
    changes = json.loads(again.stdout)["changes"] if again.returncode == 0 else None
    echo(f"  changes: {len(changes) if changes is not None else 'apply failed'}")
    failures += changes != []

    echo("\n== eni-guest show")
    for line in vm.agent("show").stdout.splitlines():
        echo("  " + line)
    echo("")
    echo("all checks passed" if not failures else f"{failures} check(s) FAILED")
    return 0 if not failures else 1


_AFTER = ("source IP", "owner", "internet", "own subnet", "other subnet", "container")


def _after(
    vm: SimVM,
    enis: dict[str, Any],
    ips: list[tuple[str, str]],
    echo: Callable[[str], None],
) -> int:
    """Probe every IP to the internet, its own subnet, another subnet and the container, and
    unbound and NATed traffic; print the tables; return the number of failed checks."""
    rows, failures = [], 0
    for mac, ip in ips:
        v4 = ipaddress.ip_address(ip).version == 4
        subnet = enis[mac]["subnet-ipv4-cidr-block" if v4 else "subnet-ipv6-cidr-blocks"]
        subnet = subnet[0] if isinstance(subnet, list) else subnet
        targets = (
            testbed.FAR_V4 if v4 else testbed.FAR_V6,
            testbed.neighbour_of(subnet),
            testbed.OTHER_SUBNET_V4 if v4 else testbed.OTHER_SUBNET_V6,
            testbed.CONTAINER_V4 if v4 else testbed.CONTAINER_V6,
        )
        want = vm.ifname_of(mac)
        # two tries for the container: its bridge's links may still be in IPv6 DAD
        got = [vm.probe(ip, t, count=2 if t in targets[3:] else 1) for t in targets]
        good = all(p.ok and p.exit_iface == want for p in got[:3]) and got[3].ok
        failures += not good
        rows.append(
            (
                ip,
                want or "-",
                *(_exit(p) for p in got[:3]),
                "ok (local)" if got[3].ok else "FAIL",
                "yes" if good else "NO",
            )
        )
    echo(_table((*_AFTER, "as expected"), rows))

    unbound = vm.probe(None, testbed.FAR_V4, count=1)
    container = vm.probe(None, testbed.FAR_V4, count=1, via_container=True)
    primary = vm.ifname_of(PRIMARY)
    echo(f"\nunbound socket -> internet: {_exit(unbound)} (main table, unchanged)")
    echo(f"container behind NAT -> internet: {_exit(container)} (main table, unchanged)")
    failures += not (unbound.ok and unbound.exit_iface == primary)
    failures += not (container.ok and container.exit_iface == primary)
    return failures


if __name__ == "__main__":
    sys.exit(run())

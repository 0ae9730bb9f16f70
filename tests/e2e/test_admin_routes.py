"""An administrator's main-table route through an ENI holds for that ENI's own addresses.

The VPC here has an inspection appliance in eth2's subnet (10.0.2.5, topology/appliance.py),
the only next hop in the VM's view to a far network (203.0.113.0/24) that the vpc also
routes directly.  The administrator writes `203.0.113.0/24 via 10.0.2.5 dev eth2 onlink` in
`main`.  eni-guest copies it into eth2's table (mirror.py), so traffic from eth2's addresses to
the far network goes through the appliance (its nftables counter of forwarded echo requests
says so), while traffic from the other ENIs' addresses still leaves through their own ENI and
passes the VPC's source check.  When the route goes, the copy goes, and eth2's traffic goes
to its subnet's router again.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Iterator

import pytest
from conftest import SECOND_MAC, THIRD_MAC
from hotplug_support import Daemon, wait_for

from eni_guest_lab.testbed import SimVM
from eni_guest_lab.topology.appliance import FAR_NET, FAR_NET_HOST

pytestmark = pytest.mark.e2e

Factory = Callable[..., SimVM]
ADMIN_ROUTE = [FAR_NET, "via", "10.0.2.5", "dev", "eth2", "onlink"]


def mirrors(vm: SimVM, table: int) -> list[dict[str, Any]]:
    """The routes in `table` to the far network (eni-guest's mirrors); none while the table
    does not exist yet."""
    cp = vm.guest(["ip", "-4", "-j", "route", "show", "table", str(table)], check=False)
    routes = json.loads(cp.stdout) if cp.returncode == 0 and cp.stdout.strip() else []
    return [r for r in routes if r.get("dst") == FAR_NET]


def through_appliance(vm: SimVM, appliance: Any, src: str) -> tuple[bool, bool, Any]:
    """(answered, went through the appliance, the ENI it reached the vpc on)."""
    before = appliance.forwarded()
    probe = vm.probe(src, FAR_NET_HOST, count=1, timeout=1.0)
    return probe.ok, appliance.forwarded() > before, probe.exit_iface


@pytest.fixture
def vm_with_appliance(simvm: Factory, scenario_3eni: dict[str, Any]) -> Iterator[tuple]:
    vm = simvm(scenario_3eni, docker=False)
    appliance = vm.add_appliance(THIRD_MAC, "10.0.2.5/24")
    assert vm.ifname_of(THIRD_MAC) == "eth2" and vm.ifname_of(SECOND_MAC) == "eth1"
    yield vm, appliance


def test_admin_route_via_an_appliance_holds_for_that_enis_ips(vm_with_appliance) -> None:
    vm, appliance = vm_with_appliance
    assert vm.agent("apply").returncode == 0
    # before the administrator's route: eth2's addresses reach the far network through
    # eth2's subnet router, not through the appliance (the test is live)
    assert through_appliance(vm, appliance, "10.0.2.30") == (True, False, "eth2")

    vm.guest(["ip", "route", "add", *ADMIN_ROUTE, "proto", "static"])
    r = vm.agent("apply")
    assert r.returncode == 0, r.stderr
    (copy,) = mirrors(vm, 10002)
    assert (copy["gateway"], copy["dev"], copy["metric"]) == ("10.0.2.5", "eth2", 229)
    assert copy["protocol"] in ("eni-guest", "229") and "onlink" in copy["flags"]
    assert mirrors(vm, 10001) == [] and mirrors(vm, 10000) == []
    # eth2's addresses now go through the appliance (the vpc sees nothing on eth2's veth)
    for src in ("10.0.2.30", "10.0.2.31"):
        assert through_appliance(vm, appliance, src) == (True, True, None), src
    # the other ENIs' addresses leave through their own ENI and pass the source check
    for src, eni in (("10.0.1.20", "eth1"), ("10.0.1.11", "eth0")):
        assert through_appliance(vm, appliance, src) == (True, False, eni), src
    assert "203.0.113.0/24 via 10.0.2.5 dev eth2" in vm.agent("show").stdout
    assert vm.agent("apply", "--json").returncode == 0
    assert '"changes": []' in vm.agent("apply", "--json").stdout

    # the gateway changes: the copy follows in one replace
    vm.guest(["ip", "route", "replace", *ADMIN_ROUTE[:2], "10.0.2.6", *ADMIN_ROUTE[3:]])
    vm.guest(["ip", "route", "del", *ADMIN_ROUTE[:2], "10.0.2.5", *ADMIN_ROUTE[3:]], check=False)
    assert vm.agent("apply").returncode == 0
    assert [m["gateway"] for m in mirrors(vm, 10002)] == ["10.0.2.6"]

    # the route goes: the copy goes, and eth2's traffic takes its subnet router again
    vm.guest(["ip", "route", "del", FAR_NET])
    assert vm.agent("apply").returncode == 0
    assert mirrors(vm, 10002) == []
    assert through_appliance(vm, appliance, "10.0.2.30") == (True, False, "eth2")


def test_watch_daemon_mirrors_a_new_admin_route_at_once(vm_with_appliance, daemon) -> None:
    vm, appliance = vm_with_appliance
    d = Daemon(vm)  # 60 s interval: only the route event can explain what follows
    daemon.append(d)
    wait_for("eth2 configured", lambda: through_appliance(vm, appliance, "10.0.2.30")[0], 10)
    assert mirrors(vm, 10002) == []
    t = time.monotonic()
    vm.guest(["ip", "route", "add", *ADMIN_ROUTE])
    wait_for("mirror added", lambda: len(mirrors(vm, 10002)) == 1, 3, step=0.02)
    took = time.monotonic() - t
    print(f"mirror added {took:.3f} s after the route")
    assert took < 1.5, took
    assert through_appliance(vm, appliance, "10.0.2.30")[:2] == (True, True)
    vm.guest(["ip", "route", "del", FAR_NET])
    wait_for("mirror removed", lambda: mirrors(vm, 10002) == [], 3, step=0.02)
    assert through_appliance(vm, appliance, "10.0.2.30") == (True, False, "eth2")


@pytest.fixture
def daemon() -> Iterator[list[Daemon]]:
    made: list[Daemon] = []
    yield made
    for d in made:
        d.close()


def test_route_entry_in_the_configuration_writes_what_the_usual_form_cannot(
    vm_with_appliance, tmp_path
) -> None:
    """`ip route add FAR via 10.0.2.5 dev eth2` is refused on a secondary ENI (its addresses
    are /32 without a prefix route); a `[[route]]` entry writes it with onlink, in eth2's
    table and, with `main = true`, in main: unbound traffic takes the appliance too."""
    vm, appliance = vm_with_appliance
    assert vm.agent("apply").returncode == 0
    usual = vm.guest(["ip", "route", "add", *ADMIN_ROUTE[:-1]], check=False)
    assert usual.returncode != 0 and "invalid gateway" in usual.stderr.lower()
    config = tmp_path / "eni-guest.toml"
    entry = f'[[route]]\nto = "{FAR_NET}"\nvia = "10.0.2.5"\neni = "{THIRD_MAC}"\n'
    config.write_text(entry + "main = true\n")
    r = vm.agent("apply", "--config", str(config))
    assert r.returncode == 0, r.stderr
    (copy,) = mirrors(vm, 10002)
    (main,) = mirrors(vm, 254)
    assert copy["gateway"] == main["gateway"] == "10.0.2.5" and "onlink" in main["flags"]
    assert copy.get("metric", 0) == 0  # the ENI's own route, not a mirror
    for src in ("10.0.2.30", None):  # eth2's address, and an unbound socket
        assert through_appliance(vm, appliance, src)[:2] == (True, True), src
    assert through_appliance(vm, appliance, "10.0.1.20") == (True, False, "eth1")
    assert '"changes": []' in vm.agent("apply", "--json", "--config", str(config)).stdout
    # the entry loses `main = true`: main's route goes, the table's stays; then all of it
    config.write_text(entry)
    assert vm.agent("apply", "--config", str(config)).returncode == 0
    assert mirrors(vm, 254) == [] and len(mirrors(vm, 10002)) == 1
    assert vm.agent("apply").returncode == 0
    assert mirrors(vm, 10002) == []

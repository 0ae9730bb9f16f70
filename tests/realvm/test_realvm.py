"""Real Debian guests under QEMU in the simulated VPC, one per network stack (tests/realvm/).

Each flavour (``eni_guest_lab.realvm.image.FLAVOURS``: Debian 12 with NetworkManager, with
systemd-networkd and a catch-all DHCP ``.network``, with netplan rendering for networkd, and
Debian 11 with ifupdown) is booted once with eni-guest installed as a user installs it
(``provider = auto``; only ``watch_interval`` is shortened, so the no-event test waits less)
and the three ENIs of the e2e tests attached; then, in file order on that VM:

* boot: eni-guest's boot unit has configured every ENI before network-online.target: a
  service ordered after it binds to a secondary ENI's IP; each private IPv4 reaches the far
  host through its own ENI (the VPC's source check would drop it anywhere else); the distro's
  stack has left the secondary ENIs alone, from the start: no DHCP request from them ever
  reached the VPC's DHCP server (udev marks every cloud NIC but the first unmanaged before any
  eni-guest run), no lease, one default route; no eni-guest unit of the boot failed (the
  hot-plug units udev starts for the NICs present at boot find them configured);
* hot-plug a fourth ENI through QMP: udev starts the unit, the unit exits 0, its IPs reach
  the far host through it (the time from ``device_add`` is printed), and no DHCP client ever
  ran on it: the VPC's DHCP server heard nothing from its MAC;
* unplug it: its rules go, the other ENIs keep working;
* the stack reactivates the primary (``nmcli device reapply``, ``networkctl reconfigure``,
  ``netplan apply``, ``ifdown``/``ifup``): the primary's secondary IP works again at once or
  the watch daemon restores it (the time is printed);
* metadata unassigns one secondary IP and assigns another, with no event in the guest: the
  watch daemon (under systemd) removes the old address (kernel 5.10 too: eni-guest recognises
  its addresses by their metric) and routes the new one through its ENI;
* a second hot-plug, as the first;
* that ENI migrates to a second VM in the same VPC (VM B, of another flavour: see
  :func:`test_eni_migrates_to_another_vm`): it leaves this one (QMP ``device_del``) and
  arrives there with the same MAC, metadata following.
"""

from __future__ import annotations

import copy
import json
import re
import time
from typing import Any, Callable, Iterator, Optional, TypeVar

import pytest

from eni_guest_lab import scenarios
from eni_guest_lab.realvm.bed import RealVM
from eni_guest_lab.realvm.image import BIND_UNIT, FLAVOURS, IFUPDOWN, NM, Flavour
from eni_guest_lab.testbed import FAR_V4

T = TypeVar("T")

PRIMARY_MAC, SECOND_MAC, THIRD_MAC = scenarios.macs(scenarios.three_eni())
BOOT_IPS = [
    (PRIMARY_MAC, "10.0.1.10"),
    (PRIMARY_MAC, "10.0.1.11"),
    (SECOND_MAC, "10.0.1.20"),
    (SECOND_MAC, "10.0.1.21"),
    (THIRD_MAC, "10.0.2.30"),
    (THIRD_MAC, "10.0.2.31"),
]
BIND_IP = "10.0.2.30"  # the third ENI's: a secondary ENI, only eni-guest puts it on the NIC
HOTPLUG_ENI: dict[str, Any] = {
    "mac": "0e:00:00:00:10:04",
    "interface-id": "eni-00000000000000004",
    "device-number": 3,
    "local-ipv4s": ["10.0.14.10", "10.0.14.11"],
    "subnet-ipv4-cidr-block": "10.0.14.0/24",
}
SECOND_HOTPLUG_ENI: dict[str, Any] = {
    "mac": "0e:00:00:00:10:05",
    "interface-id": "eni-00000000000000005",
    "device-number": 3,
    "local-ipv4s": ["10.0.15.10"],
    "subnet-ipv4-cidr-block": "10.0.15.0/24",
}
#: The installed configuration, with a shorter periodic reconcile (60 s by default).
CONFIG = "watch_interval = 15\n"
# What the unplug unit's run cost in CPU, kept where the test reads it.  systemd's own "Consumed
# ... CPU time" journal line cannot be relied on: systemd 247 and later log it at debug level,
# i.e. not at all by default, when a unit used less than a second of CPU (and no megabyte of
# disk), which a quick unplug does.  ExecStopPost runs in the unit's cgroup once the command has
# exited; "+" lifts the sandbox for this line only (the unit's own command keeps it).
UNPLUG_CPU_FILE = "/run/lab-cpu.eni-guest-unplug@{ifname}.service"
UNPLUG_CPU_DROPIN_PATH = "/etc/systemd/system/eni-guest-unplug@.service.d/lab-cpu.conf"
UNPLUG_CPU_DROPIN = (
    "[Service]\n"
    "ExecStopPost=+/bin/sh -c 'grep usage_usec "
    '"/sys/fs/cgroup$$(cut -d: -f3 /proc/self/cgroup)/cpu.stat" >/run/lab-cpu.%n\'\n'
)
#: VM B of the migration test: another instance in the same VPC, its primary ENI only.
B_PRIMARY_MAC = "0e:00:00:00:01:c3"
B_SCENARIO: dict[str, Any] = {
    "provider": "aws",
    "primary_mac": B_PRIMARY_MAC,
    "instance_id": "i-0fedcba9876543210",
    "enis": [
        {
            "mac": B_PRIMARY_MAC,
            "interface-id": "eni-000000000000001b0",
            "device-number": 0,
            "local-ipv4s": ["10.0.1.50"],
            "subnet-ipv4-cidr-block": "10.0.1.0/24",
        }
    ],
}


def migration_target(a: Flavour) -> Flavour:
    """VM B's flavour for VM A's: Debian 11 with ifupdown (kernel 5.10, Python 3.9, the
    quickest boot), or NetworkManager's VM when A is the Debian 11 one: the ENI always
    crosses network stacks."""
    return NM if a is IFUPDOWN else IFUPDOWN


def wait_for(what: str, check: Callable[[], Optional[T]], timeout: float, step: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every scenario on a VM of every flavour."""
    if "vm" in metafunc.fixturenames:
        names = list(FLAVOURS)
        metafunc.parametrize("vm", names, ids=names, indirect=True, scope="module")


@pytest.fixture(scope="module")
def vm(request: pytest.FixtureRequest) -> Iterator[RealVM]:
    files = {
        "/etc/systemd/system/lab-bind.service": BIND_UNIT.format(ip=BIND_IP),
        UNPLUG_CPU_DROPIN_PATH: UNPLUG_CPU_DROPIN,
    }
    with RealVM(
        scenarios.three_eni(),
        flavour=FLAVOURS[request.param],
        config=CONFIG,
        files=files,
        enable=("lab-bind.service",),
    ) as machine:
        yield machine


def default_routes(vm: RealVM) -> list[dict[str, Any]]:
    return json.loads(vm.sh("ip -j -4 route show default table main").stdout or "[]")


def stack_leaves_alone(vm: RealVM, ifname: str) -> Optional[str]:
    """None when the distro's network stack runs nothing on ``ifname`` now; else what it runs."""
    flavour: Flavour = vm.flavour
    if flavour.name.endswith("-nm"):
        out = vm.sh("nmcli -t -f DEVICE,STATE device").stdout
        state = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        if state.get(ifname) != "unmanaged":
            return f"NetworkManager: {ifname} is {state.get(ifname)!r}"
    elif flavour.enable:  # networkd, directly or rendered by netplan
        out = vm.sh("networkctl list --no-legend --no-pager").stdout
        setup = {f[1]: f[4] for f in (line.split() for line in out.splitlines()) if len(f) >= 5}
        if setup.get(ifname) != "unmanaged":
            return f"networkd: {ifname} is {setup.get(ifname)!r}"
    out = vm.sh("pgrep -a dhclient || true").stdout
    clients = [line for line in out.splitlines() if ifname in line.split()]
    if clients:
        return f"a DHCP client runs on {ifname}: {clients}"
    addrs = vm.sh(f"ip -4 -o addr show dev {ifname}").stdout
    if "dynamic" in addrs:
        return f"{ifname} holds a leased address: {addrs}"
    return None


def assert_left_alone(vm: RealVM, mac: str, primary: str = PRIMARY_MAC) -> None:
    ifname = vm.ifname_of(mac) or "?"
    problem = stack_leaves_alone(vm, ifname)
    assert problem is None, problem
    assert [r["dev"] for r in default_routes(vm)] == [vm.ifname_of(primary)], default_routes(vm)


def dhcp_ran(vm: RealVM, mac: str) -> bool:
    """Whether a DHCP client ever ran on this ENI: the VPC's DHCP server heard from its MAC."""
    log = vm.dhcp_log(mac)
    return "DHCPDISCOVER" in log or "DHCPREQUEST" in log


def unit_journal(vm: RealVM, pattern: str) -> str:
    """The journal of units matching ``pattern`` (finished template instances are gone from
    ``systemctl show``: the journal keeps their result)."""
    return vm.sh(f"journalctl -b --no-pager -o cat -u '{pattern}'").stdout


def unit_done(journal: str) -> bool:
    """The journal says the oneshot unit ended (systemd 248+: "Deactivated successfully.",
    Debian 11's 247: "Succeeded.")."""
    return any(w in journal for w in ("Deactivated successfully", "Succeeded.", "Failed"))


def hotplug_unit_journal(vm: RealVM, ifname: Optional[str]) -> str:
    """The journal of ``eni-guest-hotplug@IFNAME`` once it has finished."""

    def finished() -> Optional[str]:
        j = unit_journal(vm, f"eni-guest-hotplug@{ifname}.service")
        return j if unit_done(j) else None

    return wait_for("the hot-plug unit to finish", finished, timeout=90.0)


def reaches_far_host(vm: RealVM, mac: str, ip: str) -> bool:
    p = vm.ping(ip, FAR_V4, count=1, wait=1.0)
    return p.ok and p.exit_iface == mac and not p.dropped_by_rpf


def tag(vm: RealVM) -> str:
    return f"[realvm {vm.flavour.name}]"


def assert_boot_apply_succeeded(vm: RealVM) -> None:
    """eni-guest's boot unit exited 0 where it is on; where cloud-init runs (a NoCloud seed),
    cloud-init ran eni-guest's module without an error and kept the user-data's settings for
    the units.  (Both, where both run: bookworm-netplan.)"""
    if "eni-guest-boot.service" not in vm.flavour.disable:
        boot = vm.sh("systemctl show -p Result -p ExecMainStatus eni-guest-boot.service").stdout
        assert "Result=success" in boot and "ExecMainStatus=0" in boot, boot + unit_journal(
            vm, "eni-guest-boot.service"
        )
    if "/var/lib/cloud/seed/nocloud/user-data" not in vm.flavour.files:
        return
    status = vm.sh("cloud-init status --long", check=False)
    log = vm.sh("cat /var/log/cloud-init.log").stdout
    ran = [line for line in log.splitlines() if "eni_guest" in line]
    # Only eni-guest's module is ours to judge; other modules' errors are the image's.
    assert "eni_guest" not in status.stdout, status.stdout
    assert "status: done" in status.stdout or "status: error" in status.stdout, status.stdout
    if status.returncode != 0:
        print(f"{tag(vm)} cloud-init reported errors of other modules: {status.stdout}")
    assert any("Running module eni_guest" in line for line in ran), "\n".join(ran[-20:])
    assert any("config-eni_guest ran successfully" in line for line in ran), "\n".join(ran)
    assert not [line for line in ran if "warning" in line.lower()], "\n".join(ran[-20:])
    env = vm.sh("cat /etc/eni-guest/cloud-init.env").stdout
    assert any(
        line.replace('"', "") == "ENI_GUEST_WATCH_INTERVAL=15" for line in env.splitlines()
    ), env


def cpu_seconds(text: str) -> float:
    """The CPU time ``systemd-run --wait`` reported in ``text`` ("CPU time consumed: 1.234s";
    "952ms", "1min 2.345s"): it reads the unit's CPUUsageNSec property, whatever the amount."""
    found = re.findall(r"CPU time consumed: ((?:[\d.]+(?:min|ms|us|h|s) ?)+)", text)
    assert found, f"no CPU time in: {text[-500:]}"
    unit = {"h": 3600.0, "min": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
    return sum(float(n) * unit[u] for n, u in re.findall(r"([\d.]+)(min|ms|us|h|s)", found[-1]))


def assert_no_unit_failed(vm: RealVM, pattern: str = "eni-guest*") -> None:
    units = f"journalctl -b --no-pager -o cat -u '{pattern}'"
    failed = vm.sh(f"{units} | grep -a 'Failed with' || true").stdout
    assert not failed.strip(), failed + unit_journal(vm, pattern)


def test_boot_configures_three_enis(vm: RealVM) -> None:
    assert_boot_apply_succeeded(vm)
    bind = vm.sh("systemctl show -p Result -p ExecMainStatus lab-bind.service").stdout
    assert "Result=success" in bind and "ExecMainStatus=0" in bind, bind + unit_journal(
        vm, "lab-bind.service"
    )
    for mac, ip in BOOT_IPS:
        p = vm.ping(ip, FAR_V4)
        assert p.ok and p.exit_iface == mac and not p.dropped_by_rpf, p
    for mac in (SECOND_MAC, THIRD_MAC):
        assert_left_alone(vm, mac)
        # not even for a moment at boot: the VPC's DHCP server never heard from it
        assert not dhcp_ran(vm, mac), f"a DHCP client ran on secondary ENI {mac}: " + vm.dhcp_log(
            mac
        )
    # Every eni-guest unit of the boot exited 0: the boot apply (asserted above) and udev's
    # hot-plug units for the NICs present at boot, which find them configured.
    assert_no_unit_failed(vm)
    kernel = vm.sh("uname -r").stdout.strip()
    python = vm.sh("python3 -V").stdout.strip()
    print(f"{tag(vm)} kernel {kernel}, {python}, {vm.flavour.stack}")


def _hotplug(vm: RealVM, eni: dict[str, Any], what: str) -> None:
    mac = eni["mac"]
    vm.sim.add_eni(eni)
    t0 = vm.hotplug(mac)
    ip = eni["local-ipv4s"][0]
    took = wait_for(
        f"traffic through the {what}",
        lambda: time.monotonic() - t0 if reaches_far_host(vm, mac, ip) else None,
        timeout=120.0,
    )
    vm.timings[what] = took
    print(f"{tag(vm)} {what}: device_add to traffic through the new ENI: {took:.1f} s")
    for ip in eni["local-ipv4s"]:
        p = vm.ping(ip, FAR_V4)
        assert p.ok and p.exit_iface == mac and not p.dropped_by_rpf, p
    journal = hotplug_unit_journal(vm, vm.ifname_of(mac))
    assert "Failed" not in journal and "status=" not in journal, journal
    assert_left_alone(vm, mac)
    assert not dhcp_ran(vm, mac), vm.dhcp_log(mac)


def test_hotplug(vm: RealVM) -> None:
    _hotplug(vm, HOTPLUG_ENI, "hot-plug")


def test_unplug_cleans_up(vm: RealVM) -> None:
    mac = HOTPLUG_ENI["mac"]
    ifname = vm.ifname_of(mac)
    took = vm.unplug(mac)
    print(f"{tag(vm)} unplug: device_del to DEVICE_DELETED: {took:.1f} s")
    wait_for(
        "the unplugged ENI's rules to go",
        lambda: "10.0.14." not in vm.sh("ip -4 rule show").stdout,
        timeout=60.0,
    )

    def finished() -> Optional[str]:
        j = unit_journal(vm, f"eni-guest-unplug@{ifname}.service")
        return j if unit_done(j) else None

    journal = wait_for("the unplug unit to finish", finished, timeout=60.0)
    assert "Failed" not in journal, journal
    # No CPU burn: the unit costs about what a cold start of the same command with nothing to
    # do costs (Python is 5-30x slower under TCG than on the host: seconds for either).
    kept = UNPLUG_CPU_FILE.format(ifname=ifname)
    usage = vm.sh(f"cat {kept}; rm -f {kept}", check=False).stdout
    found = re.fullmatch(r"usage_usec (\d+)\s*", usage)
    assert found, f"the unplug unit's cgroup CPU time was not kept: {usage!r}\n{journal}"
    spent = int(found.group(1)) / 1e6
    floor = cpu_seconds(
        vm.sh("systemd-run --wait --collect eni-guest hotplug remove lab-none0 2>&1").stdout
    )
    print(f"{tag(vm)} unplug unit: {spent:.1f} s CPU; with nothing to remove: {floor:.1f} s")
    assert spent < 3 * floor + 1.0, journal  # deleting sends changes: more than a no-op
    for mac_, ip in BOOT_IPS:
        p = vm.ping(ip, FAR_V4)
        assert p.ok and p.exit_iface == mac_, p


def test_reactivating_the_primary_keeps_its_secondary_ip(vm: RealVM) -> None:
    """What a network restart, an upgrade or an administrator does to the primary."""
    watch = vm.sh("systemctl is-active eni-guest-watch.service", check=False).stdout.strip()
    assert watch == "active", unit_journal(vm, "eni-guest-watch.service")
    t0 = time.monotonic()
    vm.sh(vm.flavour.reactivate_primary, timeout=120)
    took = wait_for(
        "the primary's secondary IP to work again",
        lambda: time.monotonic() - t0 if reaches_far_host(vm, PRIMARY_MAC, "10.0.1.11") else None,
        timeout=60.0,
    )
    print(f"{tag(vm)} `{vm.flavour.reactivate_primary}`: the primary's secondary IP "
          f"works again after {took:.1f} s")  # fmt: skip
    for mac, ip in BOOT_IPS:
        p = vm.ping(ip, FAR_V4)
        assert p.ok and p.exit_iface == mac and not p.dropped_by_rpf, p
    assert [r["dev"] for r in default_routes(vm)] == [vm.ifname_of(PRIMARY_MAC)]


def test_ip_reassigned_without_an_event(vm: RealVM) -> None:
    """10.0.2.31 unassigned from the third ENI and 10.0.2.32 assigned: only metadata changes,
    the guest sees no event; the watch daemon's periodic reconcile follows."""
    scn = copy.deepcopy(vm.sim.scenario)
    for eni in scn["enis"]:
        if eni["mac"] == THIRD_MAC:
            eni["local-ipv4s"] = ["10.0.2.30", "10.0.2.32"]
    vm.sim.update_scenario(scn)
    ifname = vm.ifname_of(THIRD_MAC)
    t0 = time.monotonic()

    def followed() -> Optional[float]:
        addrs = vm.sh(f"ip -4 -o addr show dev {ifname}").stdout
        if "10.0.2.31/" in addrs or "10.0.2.32/" not in addrs:
            return None
        return time.monotonic() - t0

    took = wait_for("the watch daemon to follow metadata", followed, timeout=90.0)
    print(f"{tag(vm)} IP reassigned in metadata: the guest followed after {took:.1f} s")
    assert wait_for("10.0.2.32 to reach the far host through its ENI",
                    lambda: reaches_far_host(vm, THIRD_MAC, "10.0.2.32"), 30.0)  # fmt: skip
    assert "10.0.2.31" not in vm.sh("ip -4 rule show").stdout


def test_second_hotplug(vm: RealVM) -> None:
    _hotplug(vm, SECOND_HOTPLUG_ENI, "second hot-plug")


@pytest.fixture(scope="module")
def vm_b(vm: RealVM) -> Iterator[RealVM]:
    """VM B: another instance (its primary ENI only) in VM A's VPC, booted for the migration."""
    flavour = migration_target(vm.flavour)
    with RealVM(B_SCENARIO, flavour=flavour, config=CONFIG, join=vm) as machine:
        yield machine


def test_eni_migrates_to_another_vm(vm: RealVM, vm_b: RealVM) -> None:
    """ENI migration (failover): the second hot-plugged ENI leaves VM A (QMP ``device_del``)
    and arrives at VM B in the same VPC with the same MAC (``device_add``); A's metadata stops
    listing it and B's lists it, at B's device number 1.  B sends the ENI's IPs through it
    (the VPC's source check drops them anywhere else) with no DHCP ever run on it; A keeps
    nothing of it (no rule, no route in its table, no address) and its units exit 0.

    On every flavour as A; B (:func:`migration_target`, one more boot of about a minute
    under TCG) is of another flavour, so the ENI crosses network stacks and distros: each
    stack lets go of an ENI it had and the arrival meets another stack's hot-plug path.
    """
    mac, ips = SECOND_HOTPLUG_ENI["mac"], SECOND_HOTPLUG_ENI["local-ipv4s"]
    assert reaches_far_host(vm, mac, ips[0])  # A has it (test_second_hotplug)
    a_ifname = vm.ifname_of(mac)
    table = str(10000 + int(SECOND_HOTPLUG_ENI["device-number"]))
    unplug_took, t0 = vm.move_eni(mac, vm_b)
    took = wait_for(
        "traffic through the migrated ENI in B",
        lambda: time.monotonic() - t0 if reaches_far_host(vm_b, mac, ips[0]) else None,
        timeout=120.0,
    )
    vm_b.timings["migration"] = took
    print(
        f"{tag(vm)} -> {tag(vm_b)} migration: device_del in A to DEVICE_DELETED "
        f"{unplug_took:.1f} s; device_add in B to traffic through the ENI: {took:.1f} s"
    )
    for ip in ips:
        p = vm_b.ping(ip, FAR_V4)
        assert p.ok and p.exit_iface == mac and not p.dropped_by_rpf, p
    assert f"from {ips[0]} lookup 10001" in vm_b.sh("ip -4 rule show").stdout
    journal = hotplug_unit_journal(vm_b, vm_b.ifname_of(mac))
    assert "Failed" not in journal and "status=" not in journal, journal
    assert_left_alone(vm_b, mac, primary=B_PRIMARY_MAC)
    assert not dhcp_ran(vm_b, mac), vm_b.dhcp_log(mac)
    p = vm_b.ping("10.0.1.50", FAR_V4)
    assert p.ok and p.exit_iface == B_PRIMARY_MAC, p

    def a_forgot() -> bool:
        rules = vm.sh("ip -4 rule show").stdout
        routes = vm.sh(f"ip -4 route show table {table}").stdout
        addrs = vm.sh("ip -4 -o addr show").stdout
        return not any(ip in rules or ip in addrs for ip in ips) and not routes.strip()

    wait_for("A to keep nothing of the ENI", a_forgot, timeout=60.0)
    assert vm.ifname_of(mac) is None
    assert not vm.ping(ips[0], FAR_V4, count=1, wait=1.0).ok  # nothing in A sends from it

    def finished() -> Optional[str]:
        j = unit_journal(vm, f"eni-guest-unplug@{a_ifname}.service")
        return j if unit_done(j) else None

    journal = wait_for("A's unplug unit to finish", finished, timeout=60.0)
    assert "Failed" not in journal, journal
    assert_no_unit_failed(vm)
    # B's hot-plug and unplug units (its boot is the boot test's subject, on every flavour)
    for pattern in ("eni-guest-hotplug@*", "eni-guest-unplug@*"):
        assert_no_unit_failed(vm_b, pattern)
    for mac_, ip in BOOT_IPS[:5]:  # A's other ENIs (10.0.2.31 was unassigned above)
        p = vm.ping(ip, FAR_V4)
        assert p.ok and p.exit_iface == mac_ and not p.dropped_by_rpf, p

"""Businesses ([[business]] tables, docs/routing.md "Businesses"), with real traffic through the
simulated VPC's source check.

One three-ENI VM (eth0 10.0.1.10/.11, eth1 10.0.1.20/.21 in the same subnet, eth2 10.0.2.30/.31
in its own) with five businesses: a partner network reached from 10.0.2.31, SO_MARK-marked
traffic through eth1, one uid range from 10.0.1.21, TCP port 8443 from 10.0.2.30, and an IPv6
partner network from eth2's first IPv6 address; a sixth waits for an ENI not attached, and
is configured once that ENI is.  Every
probe is an *unbound* socket: the kernel picks the source from the business's route, and the
far end, a server in the VPC that answers with the source address it saw, proves that source
reached it.  The SYN counters of the VPC's veths prove the exit ENI.  Removing the tables
removes every rule and route of theirs.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest
from e2e_support import SECOND_MAC, THIRD_MAC, apply_json, three_eni, wait_no_tentative
from hotplug_support import Daemon, wait_for

from eni_guest_lab.probes import netprobe_command
from eni_guest_lab.shell import in_ns
from eni_guest_lab.testbed import CONTAINER_V4, FAR_V4, FAR_V6, OTHER_SUBNET_V4, SimVM

pytestmark = pytest.mark.e2e

PORT, TLS_PORT = 7070, 8443
BUSINESSES = f"""
[[business]]
name = "partner"
ip = "10.0.2.31"
destinations = ["198.51.100.0/24"]

[[business]]
name = "marked"
eni = "{SECOND_MAC}"
fwmark = "0x10/0xff"

[[business]]
name = "batch"
ip = "10.0.1.21"
uids = ["1500-1599"]

[[business]]
name = "tls"
ip = "10.0.2.30"
protocol = "tcp"
dports = [{TLS_PORT}]

[[business]]
name = "partner6"
eni = "{THIRD_MAC}"
destinations = ["2001:db8:ffff::/64"]

[[business]]
name = "later"
eni = "eni-not-attached-yet"
destinations = ["10.0.250.0/24"]
"""


class Biz:
    def __init__(self, vm: SimVM, config: Path, empty: Path, log: str) -> None:
        self.vm, self.config, self.empty, self.log = vm, config, empty, log

    def whoami(
        self,
        dst: str,
        port: int = PORT,
        mark: Optional[int] = None,
        uid: Optional[int] = None,
        ns: Optional[str] = None,
    ) -> tuple[str, str, Optional[str]]:
        """(local address, the address the server saw, the ENI the SYN left through)."""
        before = self.vm._prober.counters()
        args = [
            dst,
            str(port),
            "3",
            "-" if mark is None else str(mark),
            "-" if uid is None else str(uid),
        ]
        cp = in_ns(ns or self.vm.guest_ns, netprobe_command("whoami", *args), check=False)
        probe = self.vm._prober.verdict(
            cp.returncode == 0, before, self.vm._prober.counters(), "", tcp=True
        )
        assert cp.returncode == 0, cp.stdout + cp.stderr
        local, seen = cp.stdout.split()
        return local, seen, probe.exit_iface


def _serve(vm: SimVM, addr: str, port: int) -> subprocess.Popen[str]:
    cmd = ["ip", "netns", "exec", vm.vpc_ns, *netprobe_command("serve-peer", addr, str(port))]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


@pytest.fixture(scope="module")
def biz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Biz]:
    tmp = tmp_path_factory.mktemp("biz")
    config, empty = tmp / "eni-guest.toml", tmp / "empty.toml"
    config.write_text(BUSINESSES)
    empty.write_text("")
    vm = SimVM(three_eni(), kernel_rp_filter=True)
    servers = []
    try:
        vm.start()
        wait_no_tentative(vm, [vm.guest_ns])
        for addr in (FAR_V4, OTHER_SUBNET_V4, FAR_V6):
            for port in (PORT, TLS_PORT):
                servers.append(_serve(vm, addr, port))
        out = apply_json(vm, "--config", str(config))
        yield Biz(vm, config, empty, out["stderr"])
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()
        vm.close()


def rules(vm: SimVM) -> list[dict[str, Any]]:
    return [r for r in vm.guest_rules(4) if 12049 <= r["priority"] < 12049 + 256]


def test_partner_network_is_reached_from_the_business_ip_through_its_eni(biz: Biz) -> None:
    assert biz.whoami(FAR_V4) == ("10.0.2.31", "10.0.2.31", "eth2")


def test_ipv6_partner_network_from_the_enis_first_ipv6(biz: Biz) -> None:
    assert biz.whoami(FAR_V6) == ("2001:db8:2::30", "2001:db8:2::30", "eth2")


def test_bound_sockets_keep_their_own_eni(biz: Biz) -> None:
    # a source bound to the primary's address still leaves through eth0 (per-IP rules first)
    assert biz.vm.tcp_check("10.0.1.10", FAR_V4, TLS_PORT).exit_iface == "eth0"


def test_so_mark_selects_the_marked_business(biz: Biz) -> None:
    assert biz.whoami(OTHER_SUBNET_V4, mark=0x10) == ("10.0.1.20", "10.0.1.20", "eth1")
    assert biz.whoami(OTHER_SUBNET_V4, mark=0x110) == ("10.0.1.20", "10.0.1.20", "eth1")  # mask
    assert biz.whoami(OTHER_SUBNET_V4, mark=0x20) == ("10.0.1.10", "10.0.1.10", "eth0")


def nft(biz: Biz, hook: str, rule: str) -> None:
    """One nftables rule in the guest, in table ip biz (a route chain for output)."""
    kind = "route" if hook == "output" else "filter"
    path = biz.config.parent / "biz.nft"
    path.write_text(f"table ip biz {{\n chain c {{\n type {kind} hook {hook} priority mangle\n"
                    f" {rule}\n }}\n}}\n")  # fmt: skip
    biz.vm.guest(["nft", "-f", str(path)])


def test_nft_mark_on_forwarded_traffic_selects_the_business(biz: Biz) -> None:
    # A container's packets, marked by nftables before the guest routes them.  The replies
    # need the mark too (kept in the connection's ct mark) and src_valid_mark, or the guest's
    # strict rp_filter drops them: their reverse path without the mark is main's eth0.
    rules = 'iifname "docker0" meta mark set 0x10 ct mark set meta mark\n'
    rules += ' iifname != "docker0" ct mark 0x10 meta mark set ct mark'
    nft(biz, "prerouting", rules)
    biz.vm.guest(["sysctl", "-qw", "net.ipv4.conf.eth1.src_valid_mark=1"])
    try:
        local, seen, exit_iface = biz.whoami(OTHER_SUBNET_V4, ns=biz.vm.container_ns)
    finally:
        biz.vm.guest(["nft", "delete table ip biz"])
        biz.vm.guest(["sysctl", "-qw", "net.ipv4.conf.eth1.src_valid_mark=0"])
    assert (local, exit_iface) == ("172.17.0.2", "eth1")
    assert seen in ("10.0.1.20", "10.0.1.21")  # masqueraded to an address of eth1


def test_nft_mark_in_output_keeps_the_source_the_kernel_chose(biz: Biz) -> None:
    # Limit (docs/routing.md): a mark set after the first route lookup reroutes the packet
    # with the source already chosen (the primary's), so the per-IP rule keeps it on eth0:
    # delivered, not through the business's ENI.
    nft(biz, "output", "meta skuid 1700 meta mark set 0x10")
    try:
        assert biz.whoami(OTHER_SUBNET_V4, uid=1700) == ("10.0.1.10", "10.0.1.10", "eth0")
    finally:
        biz.vm.guest(["nft", "delete table ip biz"])


def test_uid_range_selects_the_batch_business(biz: Biz) -> None:
    assert biz.whoami(OTHER_SUBNET_V4, uid=1500) == ("10.0.1.21", "10.0.1.21", "eth1")
    assert biz.whoami(OTHER_SUBNET_V4, uid=1600) == ("10.0.1.10", "10.0.1.10", "eth0")


def test_tcp_dport_selects_the_tls_business(biz: Biz) -> None:
    assert biz.whoami(OTHER_SUBNET_V4, TLS_PORT) == ("10.0.2.30", "10.0.2.30", "eth2")
    assert biz.whoami(OTHER_SUBNET_V4, PORT) == ("10.0.1.10", "10.0.1.10", "eth0")


def test_local_networks_still_win_for_business_traffic(biz: Biz) -> None:
    # the container behind docker0, with the business's mark: main's route wins (property 4)
    out = biz.vm.guest(["ip", "route", "get", CONTAINER_V4, "mark", "0x10"]).stdout
    assert "dev docker0" in out


def test_rules_and_tables_carry_our_marks(biz: Biz) -> None:
    got = rules(biz.vm)
    assert {r["priority"] for r in got} == {12049, 12050, 12051, 12052}
    assert all(r["protocol"] in ("229", "eni-guest") for r in got)
    table = biz.vm.guest_routes("12048", 4)
    assert {(r["dst"], r.get("prefsrc"), r["dev"]) for r in table} == {
        ("default", "10.0.2.31", "eth2"),
        ("10.0.2.0/24", "10.0.2.31", "eth2"),
    }


def test_apply_logs_each_change_with_its_business(biz: Biz) -> None:
    line = "rule add from all to 198.51.100.0/24 lookup 12048 priority 12049 (business partner)"
    assert f"eni-guest: {line}" in biz.log.splitlines()


def test_show_lists_businesses_and_says_which_wait(biz: Biz) -> None:
    cp = biz.vm.agent("show", "--json", "--config", str(biz.config))
    assert cp.returncode == 0, cp.stderr
    rows = {r["name"]: r for r in json.loads(cp.stdout)["businesses"]}
    assert rows["partner"]["in_sync"] is True and rows["partner"]["interface"] == "eth2"
    assert rows["partner6"]["sources"] == ["2001:db8:2::30"]
    assert rows["later"]["in_sync"] is None and "not attached" in rows["later"]["waiting"]
    text = biz.vm.agent("show", "--config", str(biz.config)).stdout
    assert "business later: waiting: ENI eni-not-attached-yet is not attached" in text
    assert apply_json(biz.vm, "--config", str(biz.config))["changes"] == []  # idempotent


def test_ip_of_another_eni_is_exit_2_changing_nothing(biz: Biz, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        BUSINESSES.replace('ip = "10.0.2.31"', f'eni = "{SECOND_MAC}"\nip = "10.0.2.31"')
    )
    before = biz.vm.snapshot()
    cp = biz.vm.agent("apply", "--config", str(bad))
    assert cp.returncode == 2, cp.stderr
    assert cp.stderr.count("\n") == 1 and "ip = '10.0.2.31': not an IP of ENI" in cp.stderr
    assert biz.vm.snapshot() == before


def test_watch_daemon_puts_back_a_deleted_business_rule_and_route(biz: Biz) -> None:
    # Its periodic reconcile is 60 s away: only its handling of deletions can put them back
    # (logged "restored ..."). A deletion may still meet its first full reconcile, which puts
    # them back too: then again, once it is done.
    d = Daemon(biz.vm, "--config", str(biz.config))
    try:
        before = (rules(biz.vm), biz.vm.guest_routes("12048", 4))
        for _ in range(4):
            biz.vm.guest(["ip", "rule", "del", "priority", "12049", "to", "198.51.100.0/24"])
            biz.vm.guest(["ip", "route", "del", "default", "table", "12048"])
            assert rules(biz.vm) != before[0]
            wait_for(
                "business rule and route back",
                lambda: (rules(biz.vm), biz.vm.guest_routes("12048", 4)) == before,
                10,
            )
            try:
                d.wait_log("restored what was deleted", 2)
                break
            except AssertionError:
                continue
        assert d.count("restored what was deleted") == 1, d.log()
    finally:
        d.close()
    assert biz.whoami(FAR_V4) == ("10.0.2.31", "10.0.2.31", "eth2")


def test_z_waiting_business_is_configured_once_its_eni_is_attached(biz: Biz) -> None:
    # (after the tests above: from now on unbound traffic to 10.0.250.0/24 is the business's)
    assert biz.whoami(OTHER_SUBNET_V4) == ("10.0.1.10", "10.0.1.10", "eth0")
    new = {
        "mac": "0e:00:00:00:00:d4",
        "interface-id": "eni-not-attached-yet",
        "device-number": 3,
        "local-ipv4s": ["10.0.3.40"],
        "subnet-ipv4-cidr-block": "10.0.3.0/24",
    }
    biz.vm.add_eni(new, attach=True)
    changes = apply_json(biz.vm, "--config", str(biz.config))["changes"]
    assert "rule add from all to 10.0.250.0/24 lookup 12053 priority 12054" in changes
    assert biz.whoami(OTHER_SUBNET_V4) == ("10.0.3.40", "10.0.3.40", "eth3")


def test_zz_removing_the_entries_removes_rules_and_routes(biz: Biz) -> None:
    band = {str(t) for t in range(12048, 12048 + 256)}

    def band_routes() -> list[dict[str, Any]]:
        return [r for r in biz.vm.guest_routes("all", 4) if r.get("table") in band]

    assert band_routes()
    dry = biz.vm.agent("apply", "--dry-run", "--config", str(biz.empty)).stdout
    assert "rule del from all to 198.51.100.0/24 lookup 12048 priority 12049" in dry
    apply_json(biz.vm, "--config", str(biz.empty))
    assert rules(biz.vm) == []
    assert band_routes() == []
    assert biz.whoami(FAR_V4)[:2] == ("10.0.1.10", "10.0.1.10")

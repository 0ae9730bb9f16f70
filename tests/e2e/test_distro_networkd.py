"""The real systemd-networkd leaves a secondary ENI alone because of keep_off's drop-in.

A cloud image's catch-all ``.network`` file (DHCP on every NIC) would give a secondary ENI a
second default route.  Here systemd-networkd itself runs inside a throw-away network namespace
with a private /run (its configuration and state live there and vanish afterwards), /sys
read-only (so it does not wait for a udev that is not running) and /proc/sys read-only (it
cannot change any sysctl): with the file `distro.keep_off` wrote, the ENI's MAC is
"unmanaged" while the other NIC is still configured by the catch-all file.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest

from eni_guest.distro import NETWORKD_FILE, NETWORKD_FOREIGN, keep_off

pytestmark = pytest.mark.e2e

NETWORKD = "/lib/systemd/systemd-networkd"
ENI_MAC = "02:e0:00:00:00:b2"
PRIMARY_MAC = "02:e0:00:00:00:c3"
OTHER_MAC = "02:e0:00:00:00:d4"  # a NIC that is not an ENI of ours: the catch-all keeps it

CATCH_ALL = "[Match]\nName=*\n\n[Network]\nDHCP=yes\n"

_SCRIPT = r"""
set -eu
conf="$1"
mount -t tmpfs -o mode=0755 eni-guest-test /run
mount -o remount,ro /sys
mount --bind -o ro /proc/sys /proc/sys
mkdir -p /run/systemd/network /run/systemd/netif
cp "$conf"/*.network /run/systemd/network/
chown systemd-network:systemd-network /run/systemd/netif
SYSTEMD_LOG_LEVEL=debug "$2" >"$conf/networkd.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    states=$(cat /run/systemd/netif/links/* 2>/dev/null | grep -c '^ADMIN_STATE=' || true)
    [ "$states" -ge 3 ] && grep -q 'ADMIN_STATE=\(unmanaged\|configuring\|configured\)' \
        "/run/systemd/netif/links/$(cat /sys/class/net/eth8/ifindex)" && break
    sleep 0.1
done
for dev in eth7 eth8; do
    state="/run/systemd/netif/links/$(cat "/sys/class/net/$dev/ifindex")"
    echo "$dev $(grep '^ADMIN_STATE=' "$state")"
done
"""


def run_networkd(
    conf: Path, eth7_mac: str, script: str, tag: str
) -> tuple[subprocess.CompletedProcess, str]:
    """Run `script` with a real networkd in a namespace of its own (veth eth7/eth8, eth7
    carrying `eth7_mac`), deleted afterwards; (the script's result, networkd's log)."""
    ns = f"egt{os.getpid():x}{secrets.token_hex(2)}-{tag}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(
            ["ip", "-n", ns, "link", "add", "eth7", "address", eth7_mac, "type", "veth"]
            + ["peer", "name", "eth8", "address", OTHER_MAC],
            check=True,
        )
        cp = subprocess.run(
            ["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private"]
            + ["sh", "-c", script, "sh", str(conf), NETWORKD],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        for pid in pids.stdout.split():
            subprocess.run(["kill", "-9", pid], check=False)
        subprocess.run(["ip", "netns", "del", ns], check=False)
    log = (conf / "networkd.log").read_text() if (conf / "networkd.log").exists() else ""
    return cp, log


def test_networkd_leaves_the_eni_unmanaged(tmp_path: Path) -> None:
    assert Path(NETWORKD).exists(), "systemd-networkd missing (Debian package systemd)"
    root = tmp_path / "root"
    keep_off([ENI_MAC, PRIMARY_MAC], PRIMARY_MAC, root)
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / NETWORKD_FILE.name).write_text((root / NETWORKD_FILE).read_text())
    (conf / "99-catch-all.network").write_text(CATCH_ALL)

    cp, log = run_networkd(conf, ENI_MAC, _SCRIPT, "chk")
    assert cp.returncode == 0, cp.stderr + log[-3000:]
    states = dict(line.split(" ", 1) for line in cp.stdout.splitlines())
    assert states["eth7"] == "ADMIN_STATE=unmanaged", log[-3000:]
    assert states["eth8"] in ("ADMIN_STATE=configuring", "ADMIN_STATE=configured"), log[-3000:]
    assert f"eth7: found matching network '/run/systemd/network/{NETWORKD_FILE.name}'" in log


# networkd reconfiguring a link (`networkctl reconfigure`: what a netplan apply or an upgrade
# does) deletes the rules and routes it did not create, eni-guest's included.  The networkd.conf
# drop-in keeps the rules; addresses it cannot keep (KeepConfiguration= is per .network file),
# and a route through a link whose IPv4 addresses networkd removed the kernel deletes itself:
# those the watch daemon restores (test_watch_restore.py).  networkctl needs D-Bus: a private
# system bus runs in the throw-away /run, killed by its pid.
_FOREIGN_SCRIPT = r"""
set -eu
conf="$1"
mount -t tmpfs -o mode=0755 eni-guest-test /run
mount -o remount,ro /sys
mount --bind -o ro /proc/sys /proc/sys
mkdir -p /run/systemd/network /run/systemd/netif /run/dbus /run/systemd/networkd.conf.d
cp "$conf"/*.network /run/systemd/network/
if [ -e "$conf/dropin.conf" ]; then cp "$conf/dropin.conf" /run/systemd/networkd.conf.d/; fi
chown systemd-network:systemd-network /run/systemd/netif
dbus-daemon --system --fork --nopidfile --print-pid=3 3>/run/dbus/test.pid \
    --address=unix:path=/run/dbus/system_bus_socket
ip link set eth8 up
ip link set eth7 up
SYSTEMD_LOG_LEVEL=debug "$2" >"$conf/networkd.log" 2>&1 &
pid=$!
trap 'kill $pid $(cat /run/dbus/test.pid) 2>/dev/null || true' EXIT
state="/run/systemd/netif/links/$(cat /sys/class/net/eth7/ifindex)"
for _ in $(seq 100); do
    grep -q '^ADMIN_STATE=configured' "$state" 2>/dev/null && break
    sleep 0.1
done
grep '^ADMIN_STATE=' "$state"
ip addr add 10.9.0.5/32 dev eth7 noprefixroute
ip rule add from 10.9.0.5 lookup 10001 priority 10002 proto 229
ip route add default via 10.9.0.1 dev eth7 onlink table 10001 proto 229
ip route add default via 10.9.0.1 dev eth8 onlink table 10002 proto 229
networkctl reconfigure eth7
for _ in $(seq 100); do
    sleep 0.1
    grep -q '^ADMIN_STATE=configured' "$state" && ip -4 addr show dev eth7 | grep -q 10.9.0.2 \
        && break
done
sleep 0.5
echo "rules: $(ip rule show priority 10002)"
echo "routes: $(ip route show table 10001)"
echo "other link: $(ip route show table 10002)"
echo "addrs: $(ip -4 -o addr show dev eth7 | awk '{print $4}' | tr '\n' ' ')"
"""


def _networkd_reconfigure(tmp_path: Path, dropin: bool) -> dict[str, str]:
    """eni-guest's rule, routes and address, then `networkctl reconfigure`: what is left."""
    root = tmp_path / "root"
    keep_off([], PRIMARY_MAC, root)
    conf = tmp_path / ("with" if dropin else "without")
    conf.mkdir()
    if dropin:
        (conf / "dropin.conf").write_text((root / NETWORKD_FOREIGN).read_text())
    (conf / "10-primary.network").write_text(
        "[Match]\nName=eth7\n\n[Network]\nAddress=10.9.0.2/24\nConfigureWithoutCarrier=yes\n"
        "LinkLocalAddressing=no\nIPv6AcceptRA=no\n"
    )
    cp, log = run_networkd(conf, PRIMARY_MAC, _FOREIGN_SCRIPT, "nwd")
    assert cp.returncode == 0, cp.stdout + cp.stderr + log[-3000:]
    out = dict(line.split(": ", 1) for line in cp.stdout.splitlines() if ": " in line)
    assert "ADMIN_STATE=configured" in cp.stdout, cp.stdout + log[-3000:]
    return {k: v.strip() for k, v in out.items()}


def test_networkd_keeps_eni_guests_rules_with_the_drop_in(tmp_path: Path) -> None:
    assert Path(NETWORKD).exists(), "systemd-networkd missing (Debian package systemd)"
    without = _networkd_reconfigure(tmp_path, dropin=False)
    # the default: networkd deletes the "foreign" rules and the routes through the link
    assert without["rules"] == "" and without["routes"] == "", without
    # a link networkd does not manage (a secondary ENI, with keep_off's file) keeps its routes
    assert without["other link"] == "default via 10.9.0.1 dev eth8 proto 229 onlink", without
    assert "10.9.0.5/32" not in without["addrs"], without

    kept = _networkd_reconfigure(tmp_path, dropin=True)
    assert kept["rules"] == "10002:\tfrom 10.9.0.5 lookup 10001 proto 229", kept
    # a route through another link survives; the reconfigured link's route went with the
    # link's addresses (the kernel's doing): the watch daemon's to restore
    assert kept["other link"] == "default via 10.9.0.1 dev eth8 proto 229 onlink", kept
    assert kept["routes"] == "", kept
    # not covered by networkd.conf: the address (KeepConfiguration= is per .network file)
    assert kept["addrs"] == "10.9.0.2/24", kept

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

from eni_guest.distro import NETWORKD_FILE, keep_off

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


def test_networkd_leaves_the_eni_unmanaged(tmp_path: Path) -> None:
    assert Path(NETWORKD).exists(), "systemd-networkd missing (Debian package systemd)"
    root = tmp_path / "root"
    keep_off([ENI_MAC, PRIMARY_MAC], PRIMARY_MAC, root)
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / NETWORKD_FILE.name).write_text((root / NETWORKD_FILE).read_text())
    (conf / "99-catch-all.network").write_text(CATCH_ALL)

    ns = f"egt{os.getpid():x}{secrets.token_hex(2)}-chk"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(
            ["ip", "-n", ns, "link", "add", "eth7", "address", ENI_MAC, "type", "veth"]
            + ["peer", "name", "eth8", "address", OTHER_MAC],
            check=True,
        )
        cp = subprocess.run(
            ["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private"]
            + ["sh", "-c", _SCRIPT, "sh", str(conf), NETWORKD],
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
    assert cp.returncode == 0, cp.stderr + log[-3000:]
    states = dict(line.split(" ", 1) for line in cp.stdout.splitlines())
    assert states["eth7"] == "ADMIN_STATE=unmanaged", log[-3000:]
    assert states["eth8"] in ("ADMIN_STATE=configuring", "ADMIN_STATE=configured"), log[-3000:]
    assert f"eth7: found matching network '/run/systemd/network/{NETWORKD_FILE.name}'" in log

"""iproute2 reads the installed rt_protos.d file: `ip route` shows "proto eni-guest".

The file from `eni-guest install --root` is bind-mounted over /etc/iproute2/rt_protos.d in a
private mount namespace, inside a throw-away network namespace holding one route with our
protocol number; this machine's /etc/iproute2 and routes are never touched.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest

from eni_guest.install import RT_PROTOS, install

pytestmark = pytest.mark.e2e


def _sh(*args: str) -> str:
    cp = subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False)
    assert cp.returncode == 0, f"{' '.join(args)}: {cp.stderr}"
    return cp.stdout


def test_ip_route_names_our_protocol(tmp_path: Path) -> None:
    install(tmp_path, binary="/usr/local/bin/eni-guest")
    protos_dir = (tmp_path / RT_PROTOS).parent
    ns = f"egt{os.getpid():x}{secrets.token_hex(2)}-chk"
    _sh("ip", "netns", "add", ns)
    try:
        _sh("ip", "-n", ns, "link", "add", "eth7", "type", "veth", "peer", "name", "eth8")
        _sh("ip", "-n", ns, "link", "set", "eth7", "up")
        _sh("ip", "-n", ns, "route", "add", "10.9.9.0/24", "dev", "eth7", "proto", "229")
        script = (
            'mount --bind "$1" /etc/iproute2/rt_protos.d && '
            "ip route show 10.9.9.0/24 && ip -j route show 10.9.9.0/24"
        )
        out = _sh(
            "ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private",
            "sh", "-c", script, "sh", str(protos_dir),
        )  # fmt: skip
        assert "proto eni-guest" in out.splitlines()[0], out
        assert '"protocol":"eni-guest"' in out.splitlines()[1], out
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)

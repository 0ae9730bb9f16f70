"""The netlink batching of netlink.py, against a real kernel in a throw-away namespace.

Only the last request of each send() asks for an acknowledgement; a request in the middle
that fails must still be reported (by its own error message), and the others still applied.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from ipaddress import ip_address
    from eni_guest.config import Config
    from eni_guest.errors import KernelError
    from eni_guest.kernel import Kernel
    from eni_guest.plan import AddrChange

    k = Kernel(Config())
    eth = k.link_by_name("egb0")
    ips = [ip_address(f"10.9.{i // 200}.{i % 200 + 1}") for i in range(300)]
    changes = [AddrChange("add", eth.index, "egb0", ip, 32) for ip in ips]
    changes[150] = AddrChange("add", 99999, "nope0", ip_address("10.9.9.9"), 32)
    done = []
    try:
        k.apply(changes, done.extend)
        error = None
    except KernelError as e:
        error = str(e)
    print(json.dumps({"error": error, "done": len(done), "sent": k.requests_sent}))
    """
)


def test_a_failure_in_the_middle_of_a_batch_is_reported_and_the_rest_applied() -> None:
    ns = f"egb{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(
            ["ip", "-n", ns, "link", "add", "name", "egb0", "type", "veth", "peer", "name", "egb1"],
            check=True,
        )
        r = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", SCRIPT],
            capture_output=True,
            text=True,
            check=True,
        )
        out = json.loads(r.stdout)
        addrs = subprocess.run(
            ["ip", "-n", ns, "-j", "addr", "show", "dev", "egb0"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert out["sent"] == 300
    assert out["done"] == 299
    assert "addr add 10.9.9.9/32 dev nope0" in out["error"]
    assert "No such device" in out["error"]
    local = {a["local"] for i in json.loads(addrs) for a in i["addr_info"]}
    assert {f"10.9.{i // 200}.{i % 200 + 1}" for i in range(300) if i != 150} == local

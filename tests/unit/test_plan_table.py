"""The planner as a table: kernel state now, what metadata lists, and the changes expected.

Each case is data a network engineer can read: the kernel's objects in `ip` words, the ENIs
metadata lists, and the exact `ip` lines the plan must hold, in order.  The kernel state is
written as lines like

    link eth1 0e:00:00:00:00:02 group 229 up
    addr 10.0.1.30/32 dev eth1 proto 229 metric 229
    route 10.0.1.0/24 dev eth1 table 10001
    route default via 10.0.1.1 dev eth1 table 10001
    rule from 10.0.1.30 lookup 10001 priority 10002
    rule from all lookup main suppress_ifgroup 229 priority 10000

(the kernel's rules and routes as eni-guest reads them: ours only).  An address shows the
marks the kernel reports: `proto` where it keeps address protocols, `metric` where it keeps
address metrics; a kernel older than 5.18 reports the metric of eni-guest's addresses only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from typing import Any, Optional

import pytest

from eni_guest.config import Config
from eni_guest.model import Eni, Excluded, Instance, Unsettled
from eni_guest.plan import plan
from eni_guest.state import Addr, KernelState, Link, Route, Rule

MAC0, MAC1, MAC2 = "0e:00:00:00:00:01", "0e:00:00:00:00:02", "0e:00:00:00:00:03"


def eni(mac: str, device: int, ips: str, subnet: str, gateway: Optional[str] = None) -> Eni:
    net = ip_network(subnet)
    return Eni(
        mac=mac,
        eni_id=f"eni-{device}",
        device_number=device,
        network_card=0,
        primary=device == 0,
        ipv4s=tuple(ip_address(a) for a in ips.split()),
        ipv4_subnets=(net,),
        ipv4_gateway=ip_address(gateway) if gateway else net.network_address + 1,
    )


KEYWORDS = (
    "dev",
    "via",
    "table",
    "proto",
    "metric",
    "from",
    "lookup",
    "suppress_ifgroup",
    "priority",
    "group",
)


def kernel(*lines: str) -> KernelState:
    """A kernel state from `ip`-like lines (see the module docstring)."""
    links: list[Link] = []
    addrs: list[Addr] = []
    routes: list[Route] = []
    rules: list[Rule] = []
    index = {"lo": 1}
    for line in lines:
        w = line.split()
        kv = {k: w[i + 1] for i, k in enumerate(w[:-1]) if k in KEYWORDS}
        if w[0] == "link":
            index[w[1]] = len(index) + 1
            group = int(kv.get("group", 0))
            links.append(Link(index[w[1]], w[1], w[2], group, "up" in w, 1500))
        elif w[0] == "addr":
            iface = ip_network(w[1], strict=False)
            proto = int(kv["proto"]) if "proto" in kv else None
            ip = ip_address(w[1].split("/")[0])
            addrs.append(
                Addr(index[kv["dev"]], ip, iface.prefixlen, proto, int(kv.get("metric", 0)))
            )
        elif w[0] == "route":
            dst = ip_network("0.0.0.0/0" if w[1] == "default" else w[1])
            gw = ip_address(kv["via"]) if "via" in kv else None
            routes.append(Route(4, int(kv["table"]), dst, index[kv["dev"]], gw))
        elif w[0] == "rule":
            src = None if kv["from"] == "all" else ip_network(kv["from"])
            table = 254 if kv["lookup"] == "main" else int(kv["lookup"])
            group = int(kv["suppress_ifgroup"]) if "suppress_ifgroup" in kv else None
            rules.append(Rule(4, int(kv["priority"]), table, src, group))
        else:
            raise AssertionError(f"unknown kernel line {line!r}")
    return KernelState(tuple(links), tuple(addrs), tuple(rules), tuple(routes))


# The VM of these cases: the primary eth0 and one secondary ENI eth1 in the same subnet.
BOOT = (
    f"link eth0 {MAC0} up",
    f"link eth1 {MAC1}",
    "addr 10.0.1.10/24 dev eth0",  # the DHCP client's address: no protocol
)
CONVERGED = (
    f"link eth0 {MAC0} group 229 up",
    f"link eth1 {MAC1} group 229 up",
    "addr 10.0.1.10/24 dev eth0",
    "addr 10.0.1.11/32 dev eth0 proto 229 metric 229",
    "addr 10.0.1.30/32 dev eth1 proto 229 metric 229",
    "route 10.0.1.0/24 dev eth0 table 10000",
    "route default via 10.0.1.1 dev eth0 table 10000",
    "route 10.0.1.0/24 dev eth1 table 10001",
    "route default via 10.0.1.1 dev eth1 table 10001",
    "rule from all lookup main suppress_ifgroup 229 priority 10000",
    "rule from 10.0.1.10/32 lookup 10000 priority 10001",
    "rule from 10.0.1.11/32 lookup 10000 priority 10001",
    "rule from 10.0.1.30/32 lookup 10001 priority 10002",
)
# The same VM converged on a kernel that keeps no address protocols (4.18 .. 5.17): eni-guest
# sent both marks, the kernel kept the metric only.
CONVERGED_NO_ADDR_PROTO = tuple(line.replace(" proto 229", "") for line in CONVERGED)
# ... and as an eni-guest without address metrics left it there (or a kernel before 4.18).
CONVERGED_UNMARKED = tuple(line.replace(" metric 229", "") for line in CONVERGED_NO_ADDR_PROTO)
PRIMARY = eni(MAC0, 0, "10.0.1.10 10.0.1.11", "10.0.1.0/24")
SECOND = eni(MAC1, 1, "10.0.1.30", "10.0.1.0/24")


@dataclass
class Case:
    name: str
    state: tuple[str, ...]
    enis: tuple[Eni, ...]
    expected: list[str]
    unsettled: tuple[Unsettled, ...] = ()
    excluded: tuple[Excluded, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case(
        "first apply: the primary only joins the group, the secondary comes up; adds in order",
        BOOT,
        (PRIMARY, SECOND),
        [
            "link set dev eth0 group 229",
            "link set dev eth1 up group 229",
            "addr add 10.0.1.11/32 dev eth0 metric 229 noprefixroute",
            "addr add 10.0.1.30/32 dev eth1 metric 229 noprefixroute",
            "route add 10.0.1.0/24 dev eth0 scope link table 10000",
            "route add 10.0.1.0/24 dev eth1 scope link table 10001",
            "route add default via 10.0.1.1 dev eth0 onlink table 10000",
            "route add default via 10.0.1.1 dev eth1 onlink table 10001",
            "rule add from all lookup main suppress_ifgroup 229 priority 10000",
            "rule add from 10.0.1.10 lookup 10000 priority 10001",
            "rule add from 10.0.1.11 lookup 10000 priority 10001",
            "rule add from 10.0.1.30 lookup 10001 priority 10002",
        ],
    ),
    Case("converged: nothing to do", CONVERGED, (PRIMARY, SECOND), []),
    Case(
        "a secondary IP unassigned: its rule, then its address go",
        CONVERGED,
        (eni(MAC0, 0, "10.0.1.10", "10.0.1.0/24"), SECOND),
        [
            "rule del from 10.0.1.11 lookup 10000 priority 10001",
            "addr del 10.0.1.11/32 dev eth0",
        ],
    ),
    Case(
        "an IP moves between ENIs: the new address and rule come before the old ones go",
        CONVERGED,
        (
            eni(MAC0, 0, "10.0.1.10", "10.0.1.0/24"),
            eni(MAC1, 1, "10.0.1.30 10.0.1.11", "10.0.1.0/24"),
        ),
        [
            "addr add 10.0.1.11/32 dev eth1 metric 229 noprefixroute",
            "rule add from 10.0.1.11 lookup 10001 priority 10002",
            "rule del from 10.0.1.11 lookup 10000 priority 10001",
            "addr del 10.0.1.11/32 dev eth0",
        ],
    ),
    Case(
        "the gateway changed: the default route is replaced in one step",
        CONVERGED,
        (PRIMARY, eni(MAC1, 1, "10.0.1.30", "10.0.1.0/24", "10.0.1.254")),
        ["route replace default via 10.0.1.254 dev eth1 onlink table 10001"],
    ),
    Case(
        "the secondary ENI detached: its table, rules, address and group go",
        CONVERGED,
        (PRIMARY,),
        [
            "rule del from 10.0.1.30 lookup 10001 priority 10002",
            "route del 10.0.1.0/24 dev eth1 scope link table 10001",
            "route del default via 10.0.1.1 dev eth1 onlink table 10001",
            "addr del 10.0.1.30/32 dev eth1",
            "link set dev eth1 group 0",
        ],
    ),
    Case(
        "an unsettled ENI listed: the unassigned IP waits, nothing is removed this run",
        CONVERGED,
        (eni(MAC0, 0, "10.0.1.10", "10.0.1.0/24"), SECOND),
        [],
        unsettled=(Unsettled(MAC2, "no private IP listed yet"),),
    ),
    Case(
        "an excluded ENI: nothing of it is configured or removed",
        CONVERGED,
        (PRIMARY,),
        [],
        excluded=(
            Excluded(MAC1, "eni-1", "exclude_enis 'eni-1'", (ip_address("10.0.1.30"),), (), 1),
        ),
    ),
    Case(
        "an excluded interface name: the ENI on it keeps everything it has",
        CONVERGED,
        (PRIMARY, eni(MAC1, 1, "10.0.1.31", "10.0.1.0/24")),
        [],
        config={"exclude_interfaces": ("eth1",)},
    ),
    Case(
        "the secondary ENI's NIC is not here yet: its table and rules stay",
        # the kernel flushed eth1's address and routes with the link; its rule is left
        tuple(line for line in CONVERGED if "eth1" not in line),
        (PRIMARY, SECOND),
        [],
    ),
    Case(
        "someone else's address on an ENI (no protocol 229) is never removed, and has its rule",
        (*CONVERGED, "addr 10.0.1.99/32 dev eth1"),
        (PRIMARY, SECOND),
        ["rule add from 10.0.1.99 lookup 10001 priority 10002"],
    ),
    Case(
        "an address with our metric but another protocol is someone else's",
        (*CONVERGED, "addr 10.0.1.99/32 dev eth1 proto 4 metric 229"),
        (PRIMARY, SECOND),
        ["rule add from 10.0.1.99 lookup 10001 priority 10002"],
    ),
    # --- a kernel that keeps no address protocols: the metric marks eni-guest's addresses
    Case(
        "no address protocols, converged: nothing to do",
        CONVERGED_NO_ADDR_PROTO,
        (PRIMARY, SECOND),
        [],
    ),
    Case(
        "no address protocols, a secondary IP unassigned: its rule, then its address go",
        CONVERGED_NO_ADDR_PROTO,
        (eni(MAC0, 0, "10.0.1.10", "10.0.1.0/24"), SECOND),
        [
            "rule del from 10.0.1.11 lookup 10000 priority 10001",
            "addr del 10.0.1.11/32 dev eth0",
        ],
    ),
    Case(
        "no address protocols, an IP moves between ENIs (failover): it leaves the old owner",
        CONVERGED_NO_ADDR_PROTO,
        (
            eni(MAC0, 0, "10.0.1.10", "10.0.1.0/24"),
            eni(MAC1, 1, "10.0.1.30 10.0.1.11", "10.0.1.0/24"),
        ),
        [
            "addr add 10.0.1.11/32 dev eth1 metric 229 noprefixroute",
            "rule add from 10.0.1.11 lookup 10001 priority 10002",
            "rule del from 10.0.1.11 lookup 10000 priority 10001",
            "addr del 10.0.1.11/32 dev eth0",
        ],
    ),
    Case(
        "no address protocols, the secondary ENI detached: its address goes with the rest",
        CONVERGED_NO_ADDR_PROTO,
        (PRIMARY,),
        [
            "rule del from 10.0.1.30 lookup 10001 priority 10002",
            "route del 10.0.1.0/24 dev eth1 scope link table 10001",
            "route del default via 10.0.1.1 dev eth1 onlink table 10001",
            "addr del 10.0.1.30/32 dev eth1",
            "link set dev eth1 group 0",
        ],
    ),
    Case(
        "no address protocols: someone else's address, another metric or none, stays",
        (
            *CONVERGED_NO_ADDR_PROTO,
            "addr 10.0.1.98/32 dev eth1 metric 100",
            "addr 10.0.1.99/32 dev eth1",
        ),
        (PRIMARY, SECOND),
        [
            "rule add from 10.0.1.98 lookup 10001 priority 10002",
            "rule add from 10.0.1.99 lookup 10001 priority 10002",
        ],
    ),
    Case(
        "no address protocols: our metric on a subnet address is not ours (we add host ones)",
        (*CONVERGED_NO_ADDR_PROTO, "addr 10.0.1.99/24 dev eth1 metric 229"),
        (PRIMARY, SECOND),
        ["rule add from 10.0.1.99 lookup 10001 priority 10002"],
    ),
    # --- addresses with neither mark: never ours, whoever added them
    Case(
        # an address without marks is someone else's: while it is on the link inside the
        # subnet it keeps its rule (floating.py), listed or not
        "neither mark, an IP unassigned: its address stays, and so does its rule",
        CONVERGED_UNMARKED,
        (eni(MAC0, 0, "10.0.1.10", "10.0.1.0/24"), SECOND),
        [],
    ),
    Case(
        "neither mark, converged: the listed addresses are used as they are, not re-added",
        CONVERGED_UNMARKED,
        (PRIMARY, SECOND),
        [],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_plan_table(case: Case) -> None:
    instance = Instance("aws", "i-1", MAC0, case.enis, case.unsettled, excluded=case.excluded)
    p = plan(instance, Config(**case.config), kernel(*case.state))
    assert [c.describe() for c in p.changes] == case.expected

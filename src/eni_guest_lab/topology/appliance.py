"""An inspection appliance in an ENI's subnet: the next hop of an administrator's route.

Traffic chained through an appliance (a firewall, an IDS) is routed in the VM with
`ip route add FAR_NET via APPLIANCE dev ethX onlink`.  In a VPC the appliance is another
instance's ENI in ethX's subnet, so the VM reaches it as a neighbour on that subnet's wire.
Here it is a namespace ``<prefix>-app`` with two links:

* ``eni0``, a macvlan on the vpc-side veth of ENI X: on the same wire as the guest's ethX,
  with its own MAC and an address in X's subnet.  It answers ARP itself, and what the guest
  sends to its MAC goes into the appliance, not into the vpc (the vpc has no route to that
  address, so its proxy ARP stays silent);
* ``up0``, a veth into the vpc (``10.0.251.2/30``, vpc side ``10.0.251.1``), its way on.  The
  vpc's source check is off for packets from it, as AWS requires for an appliance's ENI
  (source/destination check disabled), since it forwards the guest's packets unchanged.

The far network (``FAR_NET``, host ``FAR_NET_HOST`` on the vpc's ``lo``) is reachable from the
vpc directly too, so traffic of other ENIs to it simply goes through their own ENI.  The
appliance counts the echo requests it forwards to the far network (nftables counter
``forwarded``): the proof that a packet went through it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..shell import in_ns, ip_batch, nft, sysctl
from .namespaces import NS_PREFIX, Namespaces

#: The network behind the appliance (TEST-NET-3), and the host in it that answers.
FAR_NET = "203.0.113.0/24"
FAR_NET_HOST = "203.0.113.10"
UPLINK_VPC, UPLINK_APP = "10.0.251.1", "10.0.251.2"
NFT_TABLE = "egt_app"


@dataclass(frozen=True)
class Appliance:
    ns: str
    address: str  # its address in the ENI's subnet: the administrator's next hop

    def forwarded(self) -> int:
        """Echo requests to the far network the appliance has forwarded so far."""
        cmd = ["nft", "-j", "list", "counter", "inet", NFT_TABLE, "forwarded"]
        for item in json.loads(in_ns(self.ns, cmd).stdout).get("nftables", []):
            if "counter" in item:
                return int(item["counter"].get("packets", 0))
        return 0


def build(
    namespaces: Namespaces, vpc_ns: str, vpc_if: str, address: str, rpf_table: str
) -> Appliance:
    """Create the appliance on the wire of the ENI behind ``vpc_if`` at ``address``
    (``10.0.2.5/24``), and the far network; the vpc's source check (``rpf_table``'s chain
    ``rpf``) lets the appliance's uplink through."""
    ns = vpc_ns[: -len("-vpc")] + "-app"
    namespaces.add(ns)
    mv, up = f"{vpc_if}m", f"{NS_PREFIX}up{vpc_if[len(NS_PREFIX) :]}"
    ip_batch(
        vpc_ns,
        [
            f"link add link {vpc_if} name {mv} type macvlan mode private",
            f"link set {mv} netns {ns} name eni0",
            f"link add {up} type veth peer name up0 netns {ns}",
            f"addr add {UPLINK_VPC}/30 dev {up}",
            f"link set {up} up",
            f"addr add {FAR_NET_HOST}/32 dev lo",
        ],
    )
    ip_batch(
        ns,
        [
            f"addr add {address} dev eni0",
            "link set eni0 up",
            f"addr add {UPLINK_APP}/30 dev up0",
            "link set up0 up",
            f"route add default via {UPLINK_VPC} dev up0",
        ],
    )
    settings = {"net.ipv4.ip_forward": 1}
    for scope in ("all", "default", "eni0", "up0"):
        settings[f"net.ipv4.conf.{scope}.rp_filter"] = 0
        settings[f"net.ipv4.conf.{scope}.send_redirects"] = 0
    sysctl(ns, settings)
    nft(
        ns,
        f"""
table inet {NFT_TABLE} {{
    counter forwarded {{ }}
    chain forwarding {{
        type filter hook forward priority 0; policy accept;
        ip daddr {FAR_NET} icmp type echo-request counter name "forwarded"
    }}
}}
""",
    )
    nft(vpc_ns, f'insert rule inet {rpf_table} rpf iifname "{up}" accept\n')
    return Appliance(ns, address.split("/")[0])

"""The simulated VPC: one namespace (``<prefix>-vpc``) that is the cloud's network.

Every ENI is a veth pair whose vpc end carries the subnet's router as a host address, a /32
(/128) route per private IP of the ENI, proxy ARP / proxy NDP for the rest of the subnet, and
a strict reverse-path check in nftables that drops any packet arriving on a veth that does not
own its source address, exactly like the VPC's source/destination check. The far host, a host
in another subnet, a neighbour in every ENI subnet and the metadata service are addresses on the
vpc's ``lo``. The other end of a veth waits, down, in the vpc ("parked") until the ENI is
attached to a guest (:meth:`Vpc.plug`).

The cloud routes exactly what metadata lists, so after a scenario change :meth:`Vpc.sync`
makes the vpc follow: an IP removed from metadata is no longer routed to its ENI.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

from ..shell import SimVMError, ip_batch, nft, run, sysctl
from ..sim.scenario import METADATA_ADDRESSES
from ..sim.tree import ipv4_gateway, ipv6_gateway
from . import appliance
from .addresses import (
    FAR_V4,
    FAR_V6,
    METADATA_V4,
    METADATA_V6,
    OTHER_SUBNET_V4,
    OTHER_SUBNET_V6,
    as_list,
    neighbour_of,
)
from .appliance import Appliance
from .guests import Guest
from .namespaces import NS_PREFIX, Namespaces

#: The vpc's nftables table: per-veth probe counters, then the source check.
NFT_TABLE = "egt_vpc"
#: The suffix of a veth's counter of TCP SYNs (its plain name counts echo requests).
SYN_SUFFIX = "_syn"
#: The counter of packets the source check dropped.
RPF_COUNTER = "rpf_drop"
#: Addresses on the vpc's ``lo`` whatever the scenario says.
_LO_ALWAYS = frozenset(
    {
        f"{METADATA_V4}/32",
        f"{METADATA_V6}/128",
        f"{FAR_V4}/32",
        f"{FAR_V6}/128",
        f"{OTHER_SUBNET_V4}/32",
        f"{OTHER_SUBNET_V6}/128",
    }
)

Scenario = Mapping[str, Any]


@dataclass
class Port:
    """The veth pair of one ENI and what the vpc side currently carries (for diffing)."""

    mac: str
    vpc_if: str
    park_if: str
    exists: bool = False
    guest: Optional[Guest] = None
    ifname: Optional[str] = None
    addrs: set[str] = field(default_factory=set)
    routes: set[str] = field(default_factory=set)
    proxies: set[str] = field(default_factory=set)

    def clear(self) -> None:
        self.addrs.clear()
        self.routes.clear()
        self.proxies.clear()


@dataclass
class _Wanted:
    """What the vpc should carry: per vpc-side veth, and on ``lo``."""

    addrs: dict[str, set[str]]
    routes: dict[str, set[str]]
    proxies: dict[str, set[str]]
    lo: set[str]


def index_enis(scenarios: Iterable[Scenario]) -> tuple[dict[str, Any], dict[str, str]]:
    """Every ENI of every VM by MAC, and the cloud (``provider``) each one belongs to."""
    enis: dict[str, Any] = {}
    provider_of: dict[str, str] = {}
    for scn in scenarios:
        cloud = str(scn.get("provider", "aws"))
        for e in scn["enis"]:
            enis[e["mac"]] = e
            provider_of[e["mac"]] = cloud
    return enis, provider_of


class Vpc:
    """The vpc namespace and the ENI veths in it. ``kernel_rp_filter``: see ``SimVM``."""

    def __init__(self, ns: str, namespaces: Namespaces, *, kernel_rp_filter: bool) -> None:
        self.ns = ns
        self._namespaces = namespaces
        self._kernel_rpf = kernel_rp_filter
        self.ports: dict[str, Port] = {}
        self._lo_addrs: set[str] = set()
        self._counters_made: set[str] = set()

    # ---- building

    def build(self) -> None:
        """Create the namespace: a router with the VPC's source/destination check."""
        ns = self.ns
        self._namespaces.add(ns)
        rpf = 1 if self._kernel_rpf else 0
        # New namespaces inherit the host's IPv4 defaults: set every knob that matters.
        settings: dict[str, Any] = {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1}
        for scope in ("all", "default"):
            settings.update(
                {
                    f"net.ipv4.conf.{scope}.rp_filter": rpf,
                    f"net.ipv4.conf.{scope}.send_redirects": 0,
                    f"net.ipv4.conf.{scope}.arp_ignore": 0,
                    f"net.ipv4.conf.{scope}.arp_announce": 0,
                    f"net.ipv4.conf.{scope}.arp_filter": 0,
                    f"net.ipv4.conf.{scope}.accept_local": 0,
                    f"net.ipv6.conf.{scope}.accept_dad": 0,
                    f"net.ipv6.conf.{scope}.accept_ra": 0,
                }
            )
        sysctl(ns, settings)
        # The VPC's source/destination check, for both families: a packet whose source is not
        # routed back through the veth it arrived on is dropped. Neighbour discovery is exempt
        # (the VPC answers ARP/ND itself), so a mis-routed packet still reaches the wrong veth
        # and is counted there: tests can see where it left.
        nft(
            ns,
            f"""
table inet {NFT_TABLE} {{
    counter {RPF_COUNTER} {{ }}
    chain probe {{
        type filter hook prerouting priority -400; policy accept;
    }}
    chain rpf {{
        type filter hook prerouting priority -300; policy accept;
        icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, \
mld-listener-report, mld2-listener-report, mld-listener-done }} accept
        fib saddr . iif oif missing counter name "{RPF_COUNTER}" drop
    }}
}}
""",
        )

    def _create_ports(self, macs: Sequence[str]) -> None:
        """Create the veth pairs of ENIs; the guest ends wait, down, in the vpc ("parked")."""
        if not macs:
            return
        lines = []
        settings: dict[str, Any] = {}
        nft_lines = []
        new = []
        for mac in macs:
            p = self.ports.get(mac)
            if p is None:
                n = len(self.ports)
                p = Port(mac, f"{NS_PREFIX}v{n}", f"{NS_PREFIX}p{n}")
                self.ports[mac] = p
            v = p.vpc_if
            lines.append(f"link add name {v} type veth peer name {p.park_if} address {mac}")
            lines.append(f"link set {v} up")
            new.append(p)
            settings.update(
                {
                    f"net.ipv4.conf.{v}.proxy_arp": 1,
                    f"net.ipv4.conf.{v}.rp_filter": 1 if self._kernel_rpf else 0,
                    f"net.ipv4.conf.{v}.send_redirects": 0,
                    f"net.ipv4.neigh.{v}.proxy_delay": 0,
                    f"net.ipv6.conf.{v}.proxy_ndp": 1,
                    f"net.ipv6.conf.{v}.accept_dad": 0,
                    f"net.ipv6.conf.{v}.accept_ra": 0,
                    f"net.ipv6.neigh.{v}.proxy_delay": 0,
                }
            )
            if v not in self._counters_made:
                t = f"inet {NFT_TABLE}"
                # echo requests and TCP SYNs counted apart: a ping probe must not take the
                # agent's own metadata connections (TCP, through the primary) for its exit
                nft_lines += [
                    f"add counter {t} {v}",
                    f"add counter {t} {v}{SYN_SUFFIX}",
                    f'add rule {t} probe iifname "{v}" icmp type echo-request counter name "{v}"',
                    f'add rule {t} probe iifname "{v}" icmpv6 type echo-request counter name "{v}"',
                    f'add rule {t} probe iifname "{v}" tcp flags & (syn | ack) == syn '
                    f'counter name "{v}{SYN_SUFFIX}"',
                ]
        ip_batch(self.ns, lines)
        for p in new:
            p.exists = True
            p.clear()
        sysctl(self.ns, settings)
        if nft_lines:
            nft(self.ns, "\n".join(nft_lines) + "\n")
            self._counters_made.update(p.vpc_if for p in new)

    # ---- following metadata

    def sync(self, scenarios: Sequence[Scenario]) -> None:
        """Make the vpc match the scenarios: veths, gateways, routes, proxies, neighbours.

        Only the difference is applied, in two batches (removals, then additions).
        """
        enis, provider_of = index_enis(scenarios)
        self._create_ports([m for m in enis if m not in self.ports or not self.ports[m].exists])
        ports = {m: p for m, p in self.ports.items() if p.exists}
        want = _wanted(scenarios, enis, provider_of, {m: p.vpc_if for m, p in ports.items()})
        dels: list[str] = []
        adds: list[str] = []
        for p in ports.values():
            v = p.vpc_if
            dels += [f"route del {r} dev {v}" for r in sorted(p.routes - want.routes[v])]
            dels += [f"neigh del proxy {a} dev {v}" for a in sorted(p.proxies - want.proxies[v])]
            dels += [f"addr del {a} dev {v}" for a in sorted(p.addrs - want.addrs[v])]
            adds += [
                f"addr replace {a} dev {v}" + (" nodad" if ":" in a else "")
                for a in sorted(want.addrs[v] - p.addrs)
            ]
            adds += [f"route replace {r} dev {v}" for r in sorted(want.routes[v])]
            adds += [f"neigh replace proxy {a} dev {v}" for a in sorted(want.proxies[v])]
        dels += [f"addr del {a} dev lo" for a in sorted(self._lo_addrs - want.lo)]
        adds += [f"addr replace {a} dev lo" for a in sorted(want.lo - self._lo_addrs)]
        ip_batch(self.ns, dels, force=True)
        ip_batch(self.ns, adds)
        for p in ports.values():
            p.addrs = set(want.addrs[p.vpc_if])
            p.routes = set(want.routes[p.vpc_if])
            p.proxies = set(want.proxies[p.vpc_if])
        self._lo_addrs = want.lo

    # ---- attaching and detaching

    def plug(self, mac: str, g: Guest, name: str) -> None:
        """Hot-plug: the ENI's parked veth end moves into the guest, down, named ``name``."""
        p = self.ports[mac]
        if p.guest is not None:
            raise SimVMError(f"ENI {mac} is already attached as {p.guest.ns}/{p.ifname}")
        run(["ip", "-n", self.ns, "link", "set", p.park_if, "netns", g.ns, "name", name])
        p.guest, p.ifname = g, name
        g.links[mac] = name

    def unplug(self, mac: str) -> None:
        """Hot-unplug: the veth pair is deleted, so the link disappears from the guest."""
        p = self.ports.get(mac)
        if p is not None and p.exists:
            run(["ip", "-n", self.ns, "link", "del", p.vpc_if])
            p.exists = False
            p.clear()
        if p is not None and p.guest is not None:
            p.guest.links.pop(mac, None)
            p.guest, p.ifname = None, None

    def attached(self, mac: str) -> Port:
        """The port of an attached ENI (``SimVMError`` if it is not attached)."""
        p = self.ports.get(mac)
        if p is None or p.guest is None or p.ifname is None:
            raise SimVMError(f"ENI {mac} is not attached")
        return p

    def move(self, mac: str, dst: Guest, name: str) -> None:
        """Migrate an attached ENI: the same veth end moves to ``dst``, the cloud side stays."""
        p = self.attached(mac)
        src, old = p.guest, p.ifname
        assert src is not None and old is not None
        run(["ip", "-n", src.ns, "link", "set", "dev", old, "down"])
        run(["ip", "-n", src.ns, "link", "set", "dev", old, "netns", dst.ns, "name", name])
        src.links.pop(mac, None)
        p.guest, p.ifname = dst, name
        dst.links[mac] = name

    def add_appliance(self, mac: str, address: str) -> Appliance:
        """An inspection appliance at ``address`` (``10.0.2.5/24``) on the wire of ENI
        ``mac``, forwarding to a far network of its own (appliance.py)."""
        vpc_if = self.ports[mac].vpc_if
        return appliance.build(self._namespaces, self.ns, vpc_if, address, NFT_TABLE)

    def forget_links(self) -> None:
        """After the namespaces are gone: no veth exists, nothing is attached."""
        for p in self.ports.values():
            p.exists = False
            p.guest = None
            p.ifname = None

    def ifname_of_vpc_if(self, vpc_if: str) -> Optional[str]:
        """The guest interface name behind a vpc-side veth (``None``: parked or gone)."""
        for p in self.ports.values():
            if p.vpc_if == vpc_if:
                return p.ifname
        return None


def _wanted(
    scenarios: Sequence[Scenario],
    enis: Mapping[str, Any],
    provider_of: Mapping[str, str],
    vifs: Mapping[str, str],
) -> _Wanted:
    """What the vpc should carry for the ENIs whose veth exists (``vifs``: MAC -> vpc_if)."""
    veths = list(vifs.values())
    want = _Wanted(
        addrs={v: set() for v in veths},
        routes={v: set() for v in veths},
        proxies={v: set() for v in veths},
        lo=set(_LO_ALWAYS),
    )
    for scn in scenarios:
        for a in METADATA_ADDRESSES.get(str(scn.get("provider", "aws")), ()):
            want.lo.add(f"{a}/128" if ":" in a else f"{a}/32")
    route_owner: dict[str, str] = {}
    v6_by_subnet: dict[str, set[tuple[str, str]]] = {}
    for mac, e in enis.items():
        if mac not in vifs:
            continue
        v = vifs[mac]
        for ip in as_list(e.get("local-ipv4s")):
            route_owner[f"{ip}/32"] = v
        for ip in as_list(e.get("ipv6s")):
            route_owner[f"{ip}/128"] = v
            for c in as_list(e.get("subnet-ipv6-cidr-blocks")):
                if ipaddress.ip_address(ip) in ipaddress.ip_network(c, strict=False):
                    key = str(ipaddress.ip_network(c, strict=False))
                    v6_by_subnet.setdefault(key, set()).add((ip, v))
        for pfx in as_list(e.get("ipv4-prefix")) + as_list(e.get("ipv6-prefix")):
            route_owner[str(ipaddress.ip_network(pfx, strict=False))] = v
        cidr4 = e.get("subnet-ipv4-cidr-block")
        if cidr4:
            want.addrs[v].add(f"{ipv4_gateway(provider_of.get(mac, 'aws'), e)}/32")
            want.lo.add(f"{neighbour_of(cidr4)}/32")
    for r, v in route_owner.items():
        want.routes[v].add(r)
    for mac, e in enis.items():
        if mac not in vifs:
            continue
        v = vifs[mac]
        for c in as_list(e.get("subnet-ipv6-cidr-blocks")):
            key = str(ipaddress.ip_network(c, strict=False))
            want.addrs[v].add(f"{ipv6_gateway(e, c)}/128")
            want.lo.add(f"{neighbour_of(c)}/128")
            # Guests ND for anything in their own subnet: answer for the neighbour and for
            # the addresses of the other ENIs in it (the vpc then routes them).
            want.proxies[v].add(neighbour_of(c))
            want.proxies[v] |= {ip for ip, owner in v6_by_subnet.get(key, ()) if owner != v}
    return want

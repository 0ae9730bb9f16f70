"""What the kernel holds now, as plain immutable values: the planner's view of the kernel.

The kernel module fills these from netlink dumps; tests build them by hand.  Only what the
planner needs is kept.  Rules and routes are pre-filtered to ours (our protocol number, our
priority range or table range), because nothing else may ever be changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

from .model import IPAddress, IPNetwork

# Link kinds (IFLA_INFO_KIND) that may carry an ENI's MAC without being the ENI: a VLAN on it,
# a bridge or bond that borrowed its address, a tunnel.  The ENI itself is the NIC driver's link
# (kind "") or, in the simulated VM, a veth.  The one list: the planner, the hot-plug settle
# decision and the JD Cloud DHCP probe all ask `could_be_nic`.
VIRTUAL_KINDS = frozenset(
    {"bridge", "bond", "team", "vlan", "macvlan", "macvtap", "ipvlan", "ipvtap", "vxlan", "vrf"}
)


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    mac: str
    group: int
    up: bool
    mtu: int
    kind: str = ""  # IFLA_INFO_KIND: "" for physical NICs, "veth", "bridge", "vlan", ...
    master: int = 0  # index of a bond/bridge this link is enslaved to

    @property
    def could_be_nic(self) -> bool:
        """Whether this link may be an ENI's NIC (not a VLAN, bridge, bond... on its MAC)."""
        return self.kind not in VIRTUAL_KINDS


@dataclass(frozen=True)
class Addr:
    index: int
    ip: IPAddress
    prefixlen: int
    proto: Optional[int]  # None: the kernel does not report address protocols (< 6.3)


@dataclass(frozen=True)
class Rule:
    family: int  # 4 or 6
    priority: int
    table: int
    src: Optional[IPNetwork] = None
    suppress_ifgroup: Optional[int] = None


@dataclass(frozen=True)
class Route:
    family: int
    table: int
    dst: IPNetwork
    oif: int
    gateway: Optional[IPAddress] = None


@dataclass(frozen=True)
class KernelState:
    links: tuple[Link, ...] = ()
    addrs: tuple[Addr, ...] = ()
    rules: tuple[Rule, ...] = ()  # ours only
    routes: tuple[Route, ...] = ()  # ours only
    addr_proto_supported: bool = True

    def nics_with_mac(self, mac: str) -> list[Link]:
        """The links carrying `mac` that could be the ENI itself."""
        return nics_with_mac(self.links, mac)

    def link(self, index: int) -> Optional[Link]:
        for link in self.links:
            if link.index == index:
                return link
        return None


def nics_with_mac(links: Iterable[Link], mac: str) -> list[Link]:
    """The links carrying `mac` that could be the ENI itself (not a VLAN, bridge, bond...)."""
    return [link for link in links if link.mac == mac and link.could_be_nic]

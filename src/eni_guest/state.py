"""What the kernel holds now, as plain immutable values: the planner's view of the kernel.

The kernel module fills these from netlink dumps; tests build them by hand.  Only what the
planner needs is kept.  Rules and routes are pre-filtered to ours (our protocol number, our
priority range or table range), because nothing else may ever be changed; other rules that
select a source are kept apart, read only (`foreign_rules`, for capture.py), and so are
others' main-table routes through NIC links (`main_routes`, for mirror.py).  Addresses are
kept whole, and `Addr.marked` tells eni-guest's from the others (docs/routing.md, "Marks").
"""

from __future__ import annotations

from .record import record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Iterable, Optional

    from .model import IPAddress, IPNetwork

# Link kinds (IFLA_INFO_KIND) that may carry an ENI's MAC without being the ENI: a VLAN on it,
# a bridge or bond that borrowed its address, a tunnel.  The ENI itself is the NIC driver's link
# (kind "") or, in the simulated VM, a veth.  The one list: the planner, the hot-plug settle
# decision and the JD Cloud DHCP probe all ask `could_be_nic`.
VIRTUAL_KINDS = frozenset(
    {"bridge", "bond", "team", "vlan", "macvlan", "macvtap", "ipvlan", "ipvtap", "vxlan", "vrf"}
)


@record(frozen=True)
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


def addr_metric(protocol: int) -> int:
    """The metric (IFA_RT_PRIORITY) eni-guest gives its addresses: its protocol number, 229.

    The second mark, for kernels that keep no address protocol (IFA_PROTO is newer than the
    metric, which every kernel since 4.18 keeps for IPv4 and IPv6).  The metric of an address
    is the metric of the prefix route the kernel would add for it; eni-guest's are host
    addresses added with `noprefixroute`, so there is no such route and routing is the same.
    """
    return protocol


@record(frozen=True)
class Addr:
    index: int
    ip: IPAddress
    prefixlen: int
    # IFA_PROTO, None when the kernel reports none: for addresses added without one, and for
    # every address on a kernel that keeps no address protocols.
    proto: Optional[int]
    metric: int = 0  # IFA_RT_PRIORITY, 0 when the kernel reports none

    def marked(self, protocol: int) -> bool:
        """Whether the address carries eni-guest's marks: it is ours to remove.

        Our protocol; or, with no protocol reported at all, our metric on a host address (the
        kernel dropped the protocol we sent and kept the metric).  An address with neither is
        never ours: someone else's, or added by an eni-guest without the metric on such a
        kernel.
        """
        if self.proto is not None:
            return self.proto == protocol
        return self.metric == addr_metric(protocol) and self.prefixlen == self.ip.max_prefixlen


@record(frozen=True)
class Rule:
    family: int  # 4 or 6
    priority: int
    table: int
    src: Optional[IPNetwork] = None
    suppress_ifgroup: Optional[int] = None
    # What a business's rule selects (business.py; a per-IP or shared rule has none of them)
    dst: Optional[IPNetwork] = None
    fwmark: Optional[tuple[int, int]] = None  # (mark, mask)
    uids: Optional[tuple[int, int]] = None  # first and last uid
    ipproto: Optional[int] = None
    dports: Optional[tuple[int, int]] = None  # first and last destination port

    @property
    def selects(self) -> bool:
        """Whether it has a business's selectors (to, fwmark, uidrange, ipproto, dport)."""
        return (self.dst, self.fwmark, self.uids, self.ipproto, self.dports) != (None,) * 5


# Table names as `ip rule` prints them.
TABLE_NAMES = {253: "default", 254: "main", 255: "local"}


@record(frozen=True)
class ForeignRule:
    """A policy rule that is not eni-guest's and selects a source prefix: what capture.py
    checks for rules taking an ENI IP's traffic before eni-guest's rules see it."""

    family: int  # 4 or 6
    priority: int
    src: IPNetwork
    action: str  # "lookup", "blackhole", "unreachable", "prohibit", "goto", "nop"
    table: int = 0  # the table of a "lookup"
    # its other selectors, in `ip rule` words ("not", "to 10.1.0.0/16", "iif eth0", "fwmark",
    # "tos", "ipproto", ...): each narrows the traffic the rule takes
    narrowed_by: tuple[str, ...] = ()

    def describe(self) -> str:
        """As `ip rule` shows it: 'from 10.0.1.20 lookup 77'."""
        src = self.src.network_address if self.src.prefixlen == self.src.max_prefixlen else self.src
        words = ["from", str(src), *self.narrowed_by, self.action]
        if self.action == "lookup":
            words.append(TABLE_NAMES.get(self.table, str(self.table)))
        return " ".join(words)


@record(frozen=True)
class Route:
    family: int
    table: int
    dst: IPNetwork
    oif: int
    gateway: Optional[IPAddress] = None
    # RTA_PRIORITY, 0 for the kernel's default (IPv6's 1024 is read as 0): with the table and
    # the destination, what tells two routes apart.  eni-guest's own routes have 0, its
    # copies of administrators' main-table routes `mirror.mirror_metric` (mirror.py).
    metric: int = 0

    prefsrc: Optional[IPAddress] = None  # a business's route: the source unbound sockets get


@record(frozen=True)
class MainRoute:
    """A main-table unicast route of someone else's through a link that may be an ENI: the
    administrator's `10.50.0.0/16 via 10.0.2.5 dev eth2`.  Read only: mirror.py copies it
    into the ENI's table, so it holds for the ENI's own addresses too."""

    route: Route
    proto: int


@record(frozen=True)
class KernelState:
    links: tuple[Link, ...] = ()
    addrs: tuple[Addr, ...] = ()
    rules: tuple[Rule, ...] = ()  # ours only
    routes: tuple[Route, ...] = ()  # ours only
    # Whether this kernel keeps address protocols, as the address dump shows it: True when an
    # address carries one, False when none does while one carries our metric (an address we
    # added, protocol dropped), None when the dump cannot tell (no address has either mark).
    addr_proto_supported: Optional[bool] = None
    # Rules of others that select a source prefix (capture.py): never changed, only read.
    foreign_rules: tuple[ForeignRule, ...] = ()
    # Others' main-table routes through NIC links (mirror.py): never changed, only read.
    main_routes: tuple[MainRoute, ...] = ()

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

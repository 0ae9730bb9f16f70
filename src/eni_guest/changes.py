"""The changes the planner asks of the kernel: one type per object kind, printable in `ip` syntax.

`describe()` is what `apply` logs and `--dry-run` prints: the same line, given to `ip`
(or `ip -batch`), makes the same change.  `eni` is the MAC of the ENI a change is for, so
logs can name the ENI and `show` can tell which ENI is out of sync (`ALL_ENIS` for the shared
rule every ENI relies on, "" for cleanup that belongs to no listed ENI).
"""

from __future__ import annotations

import _socket  # socket.py's C core (inet_ntoa), without socket.py's enums

from .business import PROTO_NAMES
from .record import record
from .state import Rule

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Optional, Union

    from .model import IPAddress, IPNetwork
    from .state import Link

MAIN_TABLE = 254
ALL_ENIS = "*"  # the `eni` tag of changes every ENI depends on


def ip_text(ip: IPAddress) -> str:
    """An address as `ip` and str() write it; IPv4 through the C library's inet_ntoa, at a
    third of ipaddress's cost (a first apply of 750 IPs logs 1,500 of them)."""
    return _socket.inet_ntoa(ip.packed) if ip.version == 4 else str(ip)


@record(frozen=True)
class LinkChange:
    index: int
    ifname: str
    group: Optional[int] = None
    up: Optional[bool] = None
    mtu: Optional[int] = None
    eni: str = ""  # MAC of the ENI this change is for ("" for shared items)
    op: str = "set"

    def holds_on(self, link: Link) -> bool:
        """Whether `link` reads as this change set it (what it leaves as it is: anything)."""
        return (
            (self.group is None or link.group == self.group)
            and (self.up is None or link.up == self.up)
            and (self.mtu is None or link.mtu == self.mtu)
        )

    def describe(self) -> str:
        parts = [f"link set dev {self.ifname}"]
        if self.up is not None:
            parts.append("up" if self.up else "down")
        if self.group is not None:
            parts.append(f"group {self.group}")
        if self.mtu is not None:
            parts.append(f"mtu {self.mtu}")
        return " ".join(parts)


@record(frozen=True)
class AddrChange:
    op: str  # "add" | "del"
    index: int
    ifname: str
    ip: IPAddress
    prefixlen: int
    eni: str = ""
    metric: int = 0  # an add's metric (IFA_RT_PRIORITY): eni-guest's second address mark

    def describe(self) -> str:
        extra = ""
        if self.op == "add":
            extra = f" metric {self.metric}" if self.metric else ""
            extra += " noprefixroute" + (" nodad" if self.ip.version == 6 else "")
        return f"addr {self.op} {ip_text(self.ip)}/{self.prefixlen} dev {self.ifname}{extra}"


@record(frozen=True)
class RouteChange:
    op: str  # "add" (none of ours at this table+destination) | "replace" (ours differs) | "del"
    table: int
    dst: IPNetwork
    oif: int
    ifname: str
    gateway: Optional[IPAddress] = None
    eni: str = ""
    metric: int = 0  # 0: the kernel's default; a mirror's (mirror.py) is its mark
    prefsrc: Optional[IPAddress] = None  # a business's route (business.py): `src IP`

    @property
    def family(self) -> int:
        return self.dst.version

    def describe(self) -> str:
        # `ip` syntax (also valid in `ip -batch`): the family follows from the addresses
        dst = "default" if self.dst.prefixlen == 0 else str(self.dst)
        via = f" via {ip_text(self.gateway)}" if self.gateway is not None else ""
        scope = " onlink" if self.gateway is not None else " scope link"
        metric = f" metric {self.metric}" if self.metric else ""
        src = f" src {ip_text(self.prefsrc)}" if self.prefsrc is not None else ""
        return (
            f"route {self.op} {dst}{via} dev {self.ifname}{scope}{src} table {self.table}{metric}"
        )


@record(frozen=True)
class RuleChange:
    op: str  # "add" | "del"
    family: int
    priority: int
    table: int
    src: Optional[IPNetwork] = None
    suppress_ifgroup: Optional[int] = None
    eni: str = ""  # for a business's rule: "business NAME" (business.py)
    # A business's selectors (state.Rule has the same; None: not selected on)
    dst: Optional[IPNetwork] = None
    fwmark: Optional[tuple[int, int]] = None  # (mark, mask)
    uids: Optional[tuple[int, int]] = None
    ipproto: Optional[int] = None
    dports: Optional[tuple[int, int]] = None

    def describe(self) -> str:
        if self.src is not None:
            host = self.src.prefixlen == self.src.max_prefixlen
            frm = f"from {ip_text(self.src.network_address) if host else self.src}"
        else:
            frm = "from all" if self.family == 4 else "from ::/0"
        table = "main" if self.table == MAIN_TABLE else str(self.table)
        sup = f" suppress_ifgroup {self.suppress_ifgroup}" if self.suppress_ifgroup else ""
        sel = self.selectors()
        return f"rule {self.op} {frm}{sel} lookup {table}{sup} priority {self.priority}"

    def selectors(self) -> str:
        """A business rule's selectors in `ip rule` words (" to 203.0.113.0/24 dport 443")."""
        words = []
        if self.dst is not None:
            words.append(f"to {self.dst}")
        if self.fwmark is not None:
            words.append(f"fwmark {self.fwmark[0]:#x}/{self.fwmark[1]:#x}")
        if self.uids is not None:
            words.append(f"uidrange {self.uids[0]}-{self.uids[1]}")
        if self.ipproto is not None:
            words.append(f"ipproto {PROTO_NAMES.get(self.ipproto, self.ipproto)}")
        if self.dports is not None:
            first, last = self.dports
            words.append(f"dport {first}" + (f"-{last}" if last != first else ""))
        return "".join(" " + w for w in words)

    def key(self) -> Rule:
        return Rule(
            self.family,
            self.priority,
            self.table,
            self.src,
            self.suppress_ifgroup,
            self.dst,
            self.fwmark,
            self.uids,
            self.ipproto,
            self.dports,
        )


def rule_change(op: str, r: Rule, eni: str = "") -> RuleChange:
    """The change that adds or deletes the rule `r` (every selector it has)."""
    return RuleChange(
        op, r.family, r.priority, r.table, r.src, r.suppress_ifgroup, eni,
        r.dst, r.fwmark, r.uids, r.ipproto, r.dports,
    )  # fmt: skip


if TYPE_CHECKING:  # only type checkers need it: annotations are never evaluated
    Change = Union[LinkChange, AddrChange, RouteChange, RuleChange]

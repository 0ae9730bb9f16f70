"""Someone else's policy rules that take an ENI IP's traffic before eni-guest's rule does.  Pure.

eni-guest sends each ENI IP's traffic to its ENI's table with `from IP lookup T` at the ENI's
priority (plan.py).  The kernel tries rules from the lowest priority number up, so a rule of
someone else's at a lower number that matches that IP decides first: an operator's
`ip rule add from 10.0.1.20 lookup 77 priority 100`, a VPN's or a CNI's.  The ENI's routing is
then all in place and "in sync", and yet that IP's traffic does not follow its ENI.

What counts as capturing an ENI IP (only what eni-guest can tell from the rule alone):

* a rule that is not eni-guest's, at a lower priority number than the ENI's rule;
* its source prefix contains the IP (`from 10.0.1.20`, `from 10.0.0.0/16`);
* it has no other selector (`not`, `to`, `iif`, `oif`, `fwmark`, `tos`, `ipproto`, ports,
  `uidrange`, `suppress_*`, ...): any of them may well narrow the rule away from this IP's
  traffic, and a warning that cries wolf would teach operators to ignore the real one;
* its action decides: `lookup` a table other than the ENI's own (`main` included; not
  `local`, which holds only the machine's own addresses), or `blackhole`, `unreachable`,
  `prohibit`.  A lookup takes only the destinations its table has a route for (otherwise the
  kernel goes on to the next rule); what those are is its owner's business, so such a rule
  is reported as one that captures.

Rules without a source (`from all`) are not reported: they concern every address, the
primary's included (the kernel's own `from all lookup local` is one).  eni-guest never changes
a capturing rule: `show` reports it (SYNC "captured"), `apply` warns about it once a run and
`watch` once a process for each rule.
"""

from __future__ import annotations

from .record import record
from .state import ForeignRule

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Iterable

    from .model import IPAddress
    from .plan import EniPlan

LOCAL_TABLE = 255
DECIDING = frozenset({"lookup", "blackhole", "unreachable", "prohibit"})


@record(frozen=True)
class Capture:
    """One foreign rule and the ENI IPs whose traffic it takes: (ENI MAC, IP) each."""

    rule: ForeignRule
    ips: tuple[tuple[str, IPAddress], ...]

    @property
    def reason(self) -> str:
        return f"captured by foreign rule '{self.rule.describe()}' at priority {self.rule.priority}"

    @property
    def warning(self) -> str:
        ips = ", ".join(str(ip) for _, ip in self.ips)
        return (
            f"{ips}: {self.reason}, before eni-guest's rule: that traffic does not leave "
            "through its ENI; eni-guest leaves that rule alone (delete it, or give it a "
            "priority number above eni-guest's)"
        )


def takes(rule: ForeignRule, ip: IPAddress, priority: int, table: int) -> bool:
    """Whether `rule` decides for traffic from `ip` before eni-guest's rule at `priority`
    (which leads into `table`)."""
    if rule.priority >= priority or rule.narrowed_by or rule.action not in DECIDING:
        return False
    if rule.src.version != ip.version or ip not in rule.src:
        return False
    return rule.action != "lookup" or rule.table not in (table, LOCAL_TABLE)


def captures(enis: Iterable[EniPlan], rules: Iterable[ForeignRule]) -> tuple[Capture, ...]:
    """Every foreign rule that takes a configured ENI IP's traffic, in priority order."""
    candidates = [r for r in rules if not r.narrowed_by and r.action in DECIDING]
    found: dict[ForeignRule, list[tuple[str, IPAddress]]] = {}
    for ep in enis:
        if ep.excluded is not None or ep.link is None or not candidates:
            continue  # an ENI left alone or without its NIC has no rule of eni-guest's yet
        for ip in ep.eni.ips:
            for rule in candidates:
                if takes(rule, ip, ep.priority, ep.table):
                    found.setdefault(rule, []).append((ep.eni.mac, ip))
    order = sorted(found, key=lambda r: (r.priority, r.family, str(r.src), r.describe()))
    return tuple(Capture(rule, tuple(found[rule])) for rule in order)

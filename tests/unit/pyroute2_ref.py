"""pyroute2's rtnetlink message classes: the reference the agent's `struct` code is tested
against (netlink_encode.py's requests, netlink_decode.py's readings), and a handy way to
write a message the way the kernel sends it.

The agent itself never imports pyroute2.  pyroute2 0.7.2 (Debian 12's python3-pyroute2, on
which tests/run.sh runs the unit tests too) stops its address message at IFA_FLAGS, so it
would neither encode nor decode the two marks eni-guest puts on its addresses: the metric
(IFA_RT_PRIORITY, 9) and the protocol (IFA_PROTO, 11).  `_complete_ifaddrmsg` appends them,
as newer pyroute2 numbers them, before any message is built.
"""

from __future__ import annotations

import types
from typing import Any

from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

# The address attributes after IFA_FLAGS (8), numbered by position in pyroute2's nla_map.
_IFA_LATER = (("IFA_RT_PRIORITY", "uint32"), ("IFA_TARGET_NETNSID", "hex"), ("IFA_PROTO", "uint8"))


def _complete_ifaddrmsg(cls: Any) -> None:
    """Append IFA_RT_PRIORITY .. IFA_PROTO to an older pyroute2's address message, in place
    (pyroute2 compiles a class's map at its first instance; the flag makes it compile again)."""
    names = [item[0] for item in cls.nla_map]
    if "IFA_PROTO" in names or names[-1] != "IFA_FLAGS" or len(names) != 9:
        return
    cls.nla_map = tuple(cls.nla_map) + _IFA_LATER
    if getattr(cls, "_nlmsg_base__compiled_nla", False):
        cls._nlmsg_base__compiled_nla = False


_complete_ifaddrmsg(ifaddrmsg)

# NL.ifinfmsg (links), NL.ifaddrmsg, NL.rtmsg (routes), NL.fibmsg (rules)
NL = types.SimpleNamespace(fibmsg=fibmsg, ifaddrmsg=ifaddrmsg, ifinfmsg=ifinfmsg, rtmsg=rtmsg)

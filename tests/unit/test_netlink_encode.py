"""netlink_encode's `struct` requests against pyroute2's: the same change, the same bytes.

The reference builders below are what eni-guest sent before netlink_encode.py packed its
requests itself: pyroute2's message classes (pyroute2_ref.py, completed for 0.7.2's address
message), filled attribute by attribute, encoded with the same message type, header flags and
sequence number.  Any difference a kernel could read differently (a header field, an
attribute's type, length, order or padding, a missing mark, EXCL lost from an add) fails
here; tests/e2e send the same requests to a real kernel.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyroute2_ref import NL

import eni_guest
from eni_guest.changes import AddrChange, LinkChange, RouteChange, RuleChange
from eni_guest.netlink import (
    IFF_UP,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    RTM_DELADDR,
    RTM_DELROUTE,
    RTM_DELRULE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTM_NEWRULE,
    Netlink,
)
from eni_guest.netlink_encode import Encoder

if TYPE_CHECKING:
    from eni_guest.changes import Change

P = 229  # eni-guest's default protocol number
AF = {4: socket.AF_INET, 6: socket.AF_INET6}
REQUEST = NLM_F_REQUEST | NLM_F_ACK
CREATE = REQUEST | NLM_F_CREATE | NLM_F_EXCL

# ---------------------------------------------------------------- the reference (pyroute2)


def _msg(cls: Any, attrs: list, **header: Any) -> Any:
    msg = cls()
    for key, value in header.items():
        msg[key] = value
    msg["attrs"] = attrs
    return msg


def ref_link(c: LinkChange, protocol: int) -> tuple[Any, int, int]:
    header: dict[str, Any] = {"family": 0, "index": c.index}
    if c.up is not None:
        header.update(flags=IFF_UP if c.up else 0, change=IFF_UP)
    attrs = []
    if c.group is not None:
        attrs.append(("IFLA_GROUP", c.group))
    if c.mtu is not None:
        attrs.append(("IFLA_MTU", c.mtu))
    return _msg(NL.ifinfmsg, attrs, **header), RTM_NEWLINK, REQUEST


def ref_addr(c: AddrChange, protocol: int) -> tuple[Any, int, int]:
    af, ip = AF[c.ip.version], str(c.ip)
    header = {"family": af, "prefixlen": c.prefixlen, "index": c.index}
    attrs = [("IFA_LOCAL", ip), ("IFA_ADDRESS", ip)] if c.ip.version == 4 else [("IFA_ADDRESS", ip)]
    if c.op != "add":
        return _msg(NL.ifaddrmsg, attrs, **header), RTM_DELADDR, REQUEST
    flags = 0x200 | (0x02 if c.ip.version == 6 else 0)  # noprefixroute, nodad (IPv6)
    attrs += [("IFA_FLAGS", flags), ("IFA_PROTO", protocol)]
    if c.metric:
        attrs.append(("IFA_RT_PRIORITY", c.metric))
    return _msg(NL.ifaddrmsg, attrs, **header), RTM_NEWADDR, CREATE


def ref_route(c: RouteChange, protocol: int) -> tuple[Any, int, int]:
    via = c.gateway is not None
    header = {
        "family": AF[c.family],
        "dst_len": c.dst.prefixlen,
        "table": c.table if c.table < 256 else 0,
        "proto": protocol,
        "scope": 0 if via else 253,  # universe, link
        "type": 1,  # unicast
        "flags": 4 if via else 0,  # onlink
    }
    attrs: list = [("RTA_TABLE", c.table), ("RTA_OIF", c.oif)]
    if c.dst.prefixlen:
        attrs.append(("RTA_DST", str(c.dst.network_address)))
    if via:
        attrs.append(("RTA_GATEWAY", str(c.gateway)))
    if c.metric:
        attrs.append(("RTA_PRIORITY", c.metric))
    if c.prefsrc is not None and c.op != "del":
        attrs.append(("RTA_PREFSRC", str(c.prefsrc)))
    msg = _msg(NL.rtmsg, attrs, **header)
    if c.op == "replace":
        return msg, RTM_NEWROUTE, REQUEST | NLM_F_CREATE | NLM_F_REPLACE
    if c.op == "add":
        return msg, RTM_NEWROUTE, CREATE
    return msg, RTM_DELROUTE, REQUEST


def ref_rule(c: RuleChange, protocol: int) -> tuple[Any, int, int]:
    header = {
        "family": AF[c.family],
        "src_len": c.src.prefixlen if c.src is not None else 0,
        "dst_len": c.dst.prefixlen if c.dst is not None else 0,
        "table": c.table if c.table < 256 else 0,
        "action": 1,  # to table
    }
    attrs: list = [("FRA_PRIORITY", c.priority), ("FRA_TABLE", c.table)]
    attrs.append(("FRA_PROTOCOL", protocol))
    if c.src is not None:
        attrs.append(("FRA_SRC", str(c.src.network_address)))
    if c.suppress_ifgroup is not None:
        attrs.append(("FRA_SUPPRESS_IFGROUP", c.suppress_ifgroup))
    if c.dst is not None:
        attrs.append(("FRA_DST", str(c.dst.network_address)))
    if c.fwmark is not None:
        attrs += [("FRA_FWMARK", c.fwmark[0]), ("FRA_FWMASK", c.fwmark[1])]
    if c.uids is not None:  # pyroute2 takes a range as "first:last"
        attrs.append(("FRA_UID_RANGE", f"{c.uids[0]}:{c.uids[1]}"))
    if c.ipproto is not None:
        attrs.append(("FRA_IP_PROTO", c.ipproto))
    if c.dports is not None:
        attrs.append(("FRA_DPORT_RANGE", f"{c.dports[0]}:{c.dports[1]}"))
    msg = _msg(NL.fibmsg, attrs, **header)
    return (
        msg,
        (RTM_NEWRULE if c.op == "add" else RTM_DELRULE),
        (CREATE if c.op == "add" else REQUEST),
    )


REFERENCE: dict[type, Callable[[Any, int], tuple[Any, int, int]]] = {
    LinkChange: ref_link,
    AddrChange: ref_addr,
    RouteChange: ref_route,
    RuleChange: ref_rule,
}


def pyroute2_request(c: Change, protocol: int, seq: int) -> bytes:
    msg, mtype, flags = REFERENCE[type(c)](c, protocol)
    msg["header"]["type"] = mtype
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


class _Sequence(Netlink):
    """A Netlink without a socket: the encoder only takes sequence numbers from it."""

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.requests_sent = 0


def struct_request(c: Change, protocol: int = P, seq: int = 41) -> bytes:
    return Encoder(_Sequence(seq), protocol).request(c)


def assert_same_bytes(c: Change, protocol: int = P) -> None:
    ours = struct_request(c, protocol, seq=41)
    theirs = pyroute2_request(c, protocol, seq=42)  # the encoder's next sequence number
    assert ours.hex(" ", 4) == theirs.hex(" ", 4), c


# ---------------------------------------------------------------- a spread of changes

V4, V6 = ip_address("10.0.1.20"), ip_address("2600:1f18:1:2::20")
NET = ip_network

CHANGES = {
    # links: bring up, take down, mark with the group, set the MTU, all at once
    "link up": LinkChange(3, "eth1", up=True),
    "link down": LinkChange(3, "eth1", up=False),
    "link group": LinkChange(3, "eth1", group=P),
    "link mtu": LinkChange(3, "eth1", mtu=9001),
    "link up group mtu": LinkChange(2_000_000_000, "eth1", group=0xFFFFFFFF, up=True, mtu=1500),
    # addresses: with the metric mark (and without: an earlier eni-guest's), and removals
    "addr4 add metric": AddrChange("add", 3, "eth1", V4, 32, metric=P),
    "addr4 add": AddrChange("add", 3, "eth1", V4, 32),
    "addr4 add subnet": AddrChange("add", 3, "eth1", V4, 24, metric=P),
    "addr4 del": AddrChange("del", 3, "eth1", V4, 32),
    "addr6 add metric": AddrChange("add", 4, "eth1", V6, 128, metric=P),
    "addr6 add": AddrChange("add", 4, "eth1", V6, 128),
    "addr6 del": AddrChange("del", 4, "eth1", V6, 128),
    # routes: an ENI's default (via the gateway, onlink) and its subnet, in tables above 255
    "route4 default via onlink": RouteChange(
        "add", 10001, NET("0.0.0.0/0"), 3, "eth1", gateway=ip_address("10.0.1.1")
    ),
    "route4 subnet on link": RouteChange("add", 10001, NET("10.0.1.0/24"), 3, "eth1"),
    "route4 replace": RouteChange(
        "replace", 10001, NET("0.0.0.0/0"), 3, "eth1", gateway=ip_address("10.0.1.254")
    ),
    "route4 del": RouteChange(
        "del", 10001, NET("0.0.0.0/0"), 3, "eth1", gateway=ip_address("10.0.1.1")
    ),
    # ... a mirror's (its metric is its mark), a table below 256, a business's with `src`
    "route4 mirror metric": RouteChange(
        "add", 10002, NET("10.50.0.0/16"), 4, "eth2", ip_address("10.0.2.5"), metric=P
    ),
    "route4 main table": RouteChange("add", 254, NET("10.60.0.0/16"), 4, "eth2", metric=100),
    "route4 table 200": RouteChange("add", 200, NET("10.70.0.0/16"), 4, "eth2"),
    "route4 prefsrc": RouteChange(
        "add", 12048, NET("0.0.0.0/0"), 3, "eth1", ip_address("10.0.1.1"), prefsrc=V4
    ),
    "route4 prefsrc del": RouteChange(
        "del", 12048, NET("0.0.0.0/0"), 3, "eth1", ip_address("10.0.1.1"), prefsrc=V4
    ),
    "route6 default via": RouteChange(
        "add", 10001, NET("::/0"), 3, "eth1", gateway=ip_address("fe80::1")
    ),
    "route6 subnet": RouteChange("add", 10001, NET("2600:1f18:1:2::/64"), 3, "eth1"),
    "route6 replace metric": RouteChange(
        "replace", 10001, NET("::/0"), 3, "eth1", ip_address("fe80::1"), metric=1024
    ),
    "route6 del": RouteChange("del", 10001, NET("2600:1f18:1:2::/64"), 3, "eth1"),
    # rules: per IP (IPv4 host, IPv6 prefix), the shared suppress_ifgroup one, removals
    "rule4 per-IP": RuleChange("add", 4, 10002, 10001, NET("10.0.1.20/32")),
    "rule4 per-IP del": RuleChange("del", 4, 10002, 10001, NET("10.0.1.20/32")),
    "rule6 per-IP prefix": RuleChange("add", 6, 10003, 10002, NET("2600:1f18:1:2::/80")),
    "rule6 per-IP del": RuleChange("del", 6, 10003, 10002, NET("2600:1f18:1:2::20/128")),
    "rule shared suppress_ifgroup": RuleChange("add", 4, 10000, 254, suppress_ifgroup=P),
    "rule6 shared suppress_ifgroup": RuleChange("del", 6, 10000, 254, suppress_ifgroup=P),
    # businesses' rules: each selector, all of them, IPv6
    "rule business dst": RuleChange(
        "add", 4, 12049, 12048, eni="business x", dst=NET("198.51.100.0/24")
    ),
    "rule business fwmark": RuleChange("add", 4, 12050, 12048, fwmark=(0x10, 0xFF)),
    "rule business uids": RuleChange("add", 4, 12051, 12048, uids=(1000, 1999)),
    "rule business ipproto dport": RuleChange("add", 4, 12052, 12048, ipproto=6, dports=(443, 443)),
    "rule business all": RuleChange(
        "add",
        4,
        12049,
        12048,
        None,
        None,
        "business x",
        NET("198.51.100.0/24"),
        (0x10, 0xFFFFFFFF),
        (0, 0xFFFFFFFF),
        17,
        (1024, 65535),
    ),  # fmt: skip
    "rule6 business": RuleChange(
        "del",
        6,
        12049,
        12048,
        None,
        None,
        "business y",
        NET("2001:db8:1::/48"),
        (0x1, 0x1),
        (1000, 1000),
        58,
        None,
    ),  # fmt: skip
}


@pytest.mark.parametrize("c", CHANGES.values(), ids=CHANGES.keys())
def test_struct_request_is_pyroute2s_byte_for_byte(c: Change) -> None:
    assert_same_bytes(c)


@pytest.mark.parametrize("protocol", [0, 4, 17, 255])
def test_the_protocol_setting_marks_every_kind_of_request(protocol: int) -> None:
    for c in CHANGES.values():
        assert_same_bytes(c, protocol)


def test_requests_take_the_sockets_sequence_numbers_in_turn() -> None:
    nl = _Sequence(7)
    enc = Encoder(nl, P)
    a, b = (enc.request(CHANGES[k]) for k in ("addr4 add metric", "rule4 per-IP"))
    assert (int.from_bytes(a[8:12], sys.byteorder), int.from_bytes(b[8:12], sys.byteorder)) == (
        8,
        9,
    )
    assert nl.seq == 9
    assert int.from_bytes(a[:4], sys.byteorder) == len(a)  # nlmsg_len covers the padding


def test_an_unknown_change_is_refused() -> None:
    with pytest.raises(TypeError):
        Encoder(_Sequence(0), P).request(object())  # type: ignore[arg-type]


# ---------------------------------------------------------------- random changes

U32, U16, U8 = st.integers(0, 2**32 - 1), st.integers(0, 2**16 - 1), st.integers(0, 255)
INDEX = st.integers(1, 2**31 - 1)
IP = {4: st.ip_addresses(v=4), 6: st.ip_addresses(v=6)}
BITS = {4: 32, 6: 128}


def _net(family: int) -> st.SearchStrategy:
    return st.builds(
        lambda ip, plen: ip_network((ip, plen), strict=False),
        IP[family],
        st.integers(0, BITS[family]),
    )


def _pair(values: st.SearchStrategy) -> st.SearchStrategy:
    return st.tuples(values, values).map(lambda t: (min(t), max(t)))


LINKS = st.builds(
    LinkChange, INDEX, st.just("eth1"), st.none() | U32, st.none() | st.booleans(), st.none() | U32
)
ADDRS = st.sampled_from([4, 6]).flatmap(
    lambda v: st.builds(
        AddrChange,
        st.sampled_from(["add", "del"]),
        INDEX,
        st.just("eth1"),
        IP[v],
        st.integers(0, BITS[v]),
        metric=st.just(0) | U32,
    )
)
ROUTES = st.sampled_from([4, 6]).flatmap(
    lambda v: st.builds(
        RouteChange,
        st.sampled_from(["add", "replace", "del"]),
        st.integers(1, 2**32 - 1),
        _net(v),
        INDEX,
        st.just("eth1"),
        st.none() | IP[v],
        metric=st.just(0) | U32,
        prefsrc=st.none() | IP[v],
    )
)
RULES = st.sampled_from([4, 6]).flatmap(
    lambda v: st.builds(
        RuleChange,
        st.sampled_from(["add", "del"]),
        st.just(v),
        U32,
        st.integers(1, 2**32 - 1),
        st.none() | _net(v),
        st.none() | U32,
        dst=st.none() | _net(v),
        fwmark=st.none() | st.tuples(U32, U32),
        uids=st.none() | _pair(U32),
        ipproto=st.none() | U8,
        dports=st.none() | _pair(U16),
    )
)


@settings(
    max_examples=400,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(c=st.one_of(LINKS, ADDRS, ROUTES, RULES), protocol=U8)
def test_random_changes_encode_as_pyroute2_does(c: Change, protocol: int) -> None:
    assert_same_bytes(c, protocol)


# ---------------------------------------------------------------- no pyroute2 on the hot path

AGENT_SRC = str(Path(eni_guest.__file__).resolve().parent.parent)

_FIRST_APPLY = """
import json, sys
from ipaddress import ip_address as a, ip_network as n
import eni_guest.kernel
from eni_guest.changes import AddrChange, LinkChange, RouteChange, RuleChange
from eni_guest.netlink import Netlink
from eni_guest.netlink_encode import Encoder
nl = Netlink()
enc = Encoder(nl, 229)
changes = [
    LinkChange(3, "eth1", group=229, up=True, mtu=9001),
    AddrChange("add", 3, "eth1", a("10.0.1.20"), 32, metric=229),
    AddrChange("del", 3, "eth1", a("2001:db8::20"), 128),
    RouteChange("add", 10001, n("0.0.0.0/0"), 3, "eth1", a("10.0.1.1"), prefsrc=a("10.0.1.20")),
    RuleChange("add", 4, 10002, 10001, n("10.0.1.20/32")),
    RuleChange("add", 4, 10000, 254, suppress_ifgroup=229),
    RuleChange("add", 6, 12049, 12048, None, None, "business x", n("2001:db8::/32"),
               (16, 255), (1000, 1999), 6, (443, 443)),
]
sizes = [len(enc.request(c)) for c in changes]
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "pyroute2")
print(json.dumps({"sizes": sizes, "pyroute2": loaded}))
"""


def test_a_first_apply_encodes_its_changes_without_importing_pyroute2() -> None:
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": AGENT_SRC + (os.pathsep + path if path else "")}
    cp = subprocess.run(
        [sys.executable, "-c", _FIRST_APPLY], capture_output=True, text=True, env=env, timeout=60
    )
    assert cp.returncode == 0, cp.stderr
    out = json.loads(cp.stdout)
    assert len(out["sizes"]) == 7 and min(out["sizes"]) > 16  # every request was encoded
    assert out["pyroute2"] == []

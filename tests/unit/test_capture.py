"""Foreign rules that take an ENI IP's traffic before eni-guest's rule (capture.py).

The detection is pure: kernel state (eni-guest's rules and, read only, others' rules that
select a source) and the plan's ENIs in, the capturing rules out.  `show` marks the ENI
"captured" and names the rule; nothing in the plan touches the rule.  The decoding of such
rules from netlink messages is tested here too, shaped as the kernel sends them.
"""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from ipaddress import ip_address, ip_network
from typing import Any

import pytest
from test_kernel_parse import rule_msg
from test_plan import BOOT_STATE, ETH1, MAC1, MAC2, MAC3, B, C, P, converged, vm

from eni_guest.agent import Result
from eni_guest.capture import captures, takes
from eni_guest.config import Config
from eni_guest.netlink_decode import NO_SUPPRESS_PREFIXLEN, decode_rule, foreign_rule_of
from eni_guest.plan import RuleChange, plan
from eni_guest.show import render_json, render_text
from eni_guest.state import ForeignRule

OURS = 10002  # B's rule (slot 1): priority_base + 1 + 1
TABLE = 10001  # B's table
IP = ip_address("10.0.1.30")  # B's IP


def rule(src: str = "10.0.1.30/32", priority: int = 100, action: str = "lookup", **kw: Any):
    kw.setdefault("table", 77 if action == "lookup" else 0)
    return ForeignRule(4, priority, ip_network(src), action, **kw)


@pytest.mark.parametrize(
    "r",
    [
        rule(),
        rule("10.0.0.0/16"),  # a prefix holding the IP
        rule(table=254),  # main: the classic "my traffic leaves through the primary"
        rule(action="blackhole"),
        rule(action="unreachable"),
        rule(action="prohibit"),
        rule(priority=OURS - 1),
    ],
    ids=lambda r: f"{r.describe()} at {r.priority}",
)
def test_rules_that_capture(r: ForeignRule) -> None:
    assert takes(r, IP, OURS, TABLE)


@pytest.mark.parametrize(
    "r",
    [
        rule("10.0.1.31/32"),  # another IP
        rule("10.0.2.0/24"),  # another subnet
        rule("::/0"),  # another family (and an IPv6 source holds no IPv4 address)
        rule(priority=OURS),  # not before ours
        rule(priority=40000),
        rule(table=TABLE),  # into the ENI's own table: the traffic goes where it should
        rule(table=255),  # local: only the machine's own addresses
        rule(narrowed_by=("to 192.0.2.0/24",)),
        rule(narrowed_by=("iif eth9",)),
        rule(narrowed_by=("fwmark",)),
        rule(narrowed_by=("not",)),
        rule(narrowed_by=("suppress_prefixlength",)),
        rule(action="nop"),
        rule(action="goto", table=0),
    ],
    ids=lambda r: f"{r.describe()} at {r.priority}",
)
def test_rules_that_do_not(r: ForeignRule) -> None:
    if r.src.version == 6:
        r = replace(r, family=6)
    assert not takes(r, IP, OURS, TABLE)


def test_describe_is_ip_rule_s_wording() -> None:
    assert rule().describe() == "from 10.0.1.30 lookup 77"
    assert rule("10.0.0.0/16", table=254).describe() == "from 10.0.0.0/16 lookup main"
    assert rule(action="blackhole").describe() == "from 10.0.1.30 blackhole"
    assert rule(narrowed_by=("iif eth9",)).describe() == "from 10.0.1.30 iif eth9 lookup 77"


def converged_with(*foreign: ForeignRule) -> tuple[Any, Any]:
    instance = vm(P, B, C)
    state = converged(instance, Config(), BOOT_STATE)
    return instance, replace(state, foreign_rules=foreign)


def test_a_capturing_rule_is_reported_and_left_alone() -> None:
    wide = rule("10.0.1.0/24", priority=200, table=254)
    instance, state = converged_with(rule(), wide, rule("10.0.2.0/24", narrowed_by=("fwmark",)))
    p = plan(instance, Config(), state)
    assert p.changes == ()  # nothing to do, and nothing done about those rules
    assert [(c.rule, c.ips) for c in p.captures] == [
        (rule(), ((MAC2, IP),)),
        (wide, ((MAC1, ip_address("10.0.1.10")), (MAC1, ip_address("10.0.1.20")), (MAC2, IP))),
    ]
    assert p.captured(MAC2) == [
        "10.0.1.30: captured by foreign rule 'from 10.0.1.30 lookup 77' at priority 100",
        "10.0.1.30: captured by foreign rule 'from 10.0.1.0/24 lookup main' at priority 200",
    ]
    assert p.captured(MAC3) == []
    assert p.captures[0].warning == (
        "10.0.1.30: captured by foreign rule 'from 10.0.1.30 lookup 77' at priority 100, "
        "before eni-guest's rule: that traffic does not leave through its ENI; eni-guest "
        "leaves that rule alone (delete it, or give it a priority number above eni-guest's)"
    )


def test_an_eni_left_alone_or_without_its_nic_is_not_reported() -> None:
    instance, state = converged_with(rule())
    excluded = plan(instance, Config(exclude_interfaces=("eth1",)), state)
    assert excluded.captures == ()
    gone = replace(state, links=tuple(x for x in state.links if x.index != ETH1.index))
    assert plan(instance, Config(), gone).captures == ()


def test_no_foreign_rule_no_capture() -> None:
    instance, state = converged_with()
    assert plan(instance, Config(), state).captures == ()
    assert captures(plan(instance, Config(), state).enis, []) == ()


def _result(*foreign: ForeignRule) -> Result:
    instance, state = converged_with(*foreign)
    return Result(instance, plan(instance, Config(), state), state)


def test_show_says_captured_and_names_the_rule() -> None:
    res = _result(rule())
    lines = render_text(res).splitlines()
    row = {line.split()[0]: line.split() for line in lines[1:4]}
    assert row["eth1"][5] == "captured" and row["eth0"][6] == "yes"
    assert (
        f"captured: {B.eni_id} ({MAC2}): 10.0.1.30: captured by foreign rule "
        "'from 10.0.1.30 lookup 77' at priority 100"
    ) in lines
    rows = {r["mac"]: r for r in json.loads(render_json(res))["enis"]}
    assert rows[MAC2]["in_sync"] is False
    assert rows[MAC2]["captured"] == [
        "10.0.1.30: captured by foreign rule 'from 10.0.1.30 lookup 77' at priority 100"
    ]
    assert rows[MAC1]["in_sync"] is True and rows[MAC1]["captured"] == []


def test_pending_changes_still_show_as_not_in_sync() -> None:
    instance = vm(P, B, C)
    state = replace(BOOT_STATE, foreign_rules=(rule(),))
    res = Result(instance, plan(instance, Config(), state), state)
    row = {line.split()[0]: line.split() for line in render_text(res).splitlines()[1:4]}
    assert row["eth1"][5] == "no"


# ---------------------------------------------------------------- decoding


def test_decode_a_plain_foreign_rule() -> None:
    data = rule_msg(
        [
            ("FRA_TABLE", 77),
            ("FRA_PRIORITY", 100),
            ("FRA_SRC", "10.0.1.30"),
            ("FRA_SUPPRESS_PREFIXLEN", NO_SUPPRESS_PREFIXLEN),  # the kernel always sends it
            ("FRA_PROTOCOL", 0),
        ],
        src_len=32,
        table=77,
    )
    assert foreign_rule_of(decode_rule(data)) == rule()


@pytest.mark.parametrize(
    "attrs,header,narrowed",
    [
        ([("FRA_DST", "192.0.2.0")], {"dst_len": 24}, ("to 192.0.2.0/24",)),
        ([("FRA_IIFNAME", "lo")], {}, ("iif lo",)),
        ([("FRA_OIFNAME", "eth1")], {}, ("oif eth1",)),
        ([("FRA_FWMARK", 1), ("FRA_FWMASK", 0xFFFFFFFF)], {}, ("fwmark",)),
        ([("FRA_SUPPRESS_PREFIXLEN", 0)], {}, ("suppress_prefixlength",)),
        ([("FRA_SUPPRESS_IFGROUP", 229)], {}, ("suppress_ifgroup",)),
        ([("FRA_IP_PROTO", 6)], {}, ("ipproto",)),
        ([], {"flags": 2}, ("not",)),
        ([], {"tos": 0x10}, ("tos 0x10",)),
    ],
)
def test_decode_the_selectors_that_narrow_a_rule(attrs: list, header: dict, narrowed) -> None:
    base = [("FRA_TABLE", 77), ("FRA_PRIORITY", 100), ("FRA_SRC", "10.0.1.30")]
    data = rule_msg(base + attrs, src_len=32, table=77, **header)
    decoded = foreign_rule_of(decode_rule(data))
    assert decoded is not None and decoded.narrowed_by == narrowed


def test_decode_actions_and_from_all() -> None:
    def decoded(action: int, attrs: list, src_len: int = 16) -> Any:
        data = rule_msg(attrs, src_len=src_len, action=action)
        return foreign_rule_of(decode_rule(data))

    src = [("FRA_PRIORITY", 5), ("FRA_SRC", "10.0.0.0")]
    assert decoded(6, src) == rule("10.0.0.0/16", 5, "blackhole")
    assert decoded(8, src).action == "prohibit" and decoded(7, src).action == "unreachable"
    assert decoded(2, [*src, ("FRA_GOTO", 9)]).action == "goto"
    assert decoded(1, [("FRA_PRIORITY", 0), ("FRA_TABLE", 255)], src_len=0) is None  # from all
    v6 = rule_msg(
        [("FRA_TABLE", 77), ("FRA_PRIORITY", 9), ("FRA_SRC", "2600:1f18::")],
        family=socket.AF_INET6,
        src_len=32,
    )
    assert foreign_rule_of(decode_rule(v6)) == ForeignRule(
        6, 9, ip_network("2600:1f18::/32"), "lookup", 77
    )


def test_the_plan_never_changes_a_foreign_rule() -> None:
    instance = vm(P, B, C)
    state = replace(BOOT_STATE, foreign_rules=(rule(),))
    p = plan(instance, Config(), state)
    assert all(c.priority != 100 for c in p.changes if isinstance(c, RuleChange))


# ---------------------------------------------------------------- the watch daemon


def test_watch_warns_once_a_process_for_each_capturing_rule(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from eni_guest import agent, watch

    other = rule("10.0.1.0/24", priority=200, action="blackhole")
    found = [(rule(),), (rule(),), (), (rule(), other), (rule(), other)]
    instance = vm(P, B, C)

    def fake_reconcile(config: Config, **kw: Any) -> Result:
        assert kw["log_warnings"] is False  # the daemon logs them itself
        _, state = converged_with(*found.pop(0))
        return Result(instance, plan(instance, Config(), state), state)

    monkeypatch.setattr(agent, "reconcile", fake_reconcile)
    cfg = Config(provider="aws", lock_file=str(tmp_path / "lock"))  # no detection
    w = watch.Watcher(lambda: cfg, cfg)
    for _ in range(5):
        assert w._reconcile(lambda: instance) is not None
    warned = [r.getMessage() for r in caplog.records if "captured by" in r.getMessage()]
    assert len(warned) == 2
    assert "'from 10.0.1.30 lookup 77' at priority 100" in warned[0]
    assert "'from 10.0.1.0/24 blackhole' at priority 200" in warned[1]

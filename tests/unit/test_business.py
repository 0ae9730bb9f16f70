"""Businesses: the [[business]] tables (business.py) and what the planner makes of them
(business_plan.py): parsing, every refusal (exit 2, one line naming the value), the rules and
routes of the band after the ENIs', removal, waiting for an ENI, and the netlink round trip."""

from __future__ import annotations

import socket
from dataclasses import replace
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
from test_plan import BOOT_STATE, C6, MAC2, MAC3, B, P, applied, of, vm

from eni_guest import config, netlink_decode
from eni_guest.agent import Result
from eni_guest.business import Business
from eni_guest.business_plan import check
from eni_guest.config import Config, load
from eni_guest.errors import EXIT_USAGE, ConfigError
from eni_guest.kernel import our_route, our_rule
from eni_guest.netlink import Netlink
from eni_guest.netlink_encode import Encoder
from eni_guest.plan import RouteChange, RuleChange, plan
from eni_guest.show import render_json, render_text
from eni_guest.state import Route, Rule

PARTNER = """
[[business]]
name = "partner"
ip = "10.0.2.11"
destinations = ["198.51.100.0/24", "203.0.113.7"]
"""


@pytest.fixture(autouse=True)
def no_system_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "DEFAULT_CONFIG_FILE", tmp_path / "absent" / "eni-guest.toml")


def cfg(tmp_path: Path, text: str, **settings: Any) -> Config:
    path = tmp_path / "eni-guest.toml"
    path.write_text(text)
    return load(path, environ={}, options=settings)


def refusal(tmp_path: Path, text: str, **settings: Any) -> str:
    with pytest.raises(ConfigError) as e:
        cfg(tmp_path, text, **settings)
    assert e.value.exit_code == EXIT_USAGE
    message = str(e.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- parsing


def test_a_business_table_is_parsed_and_normalised(tmp_path: Path) -> None:
    c = cfg(
        tmp_path,
        """
[[business]]
name = "api"
eni = "0E-00-00-00-00-03"
ip = "10.0.2.11"
destinations = ["10.50.0.0/16", "10.50.0.0/16", "192.0.2.9"]
fwmark = "0x10/0xff"
uids = [33, "1000-1999"]
protocol = "TCP"
dports = [443, "8000-8100"]
""",
    )
    assert c.business == (
        Business(
            name="api",
            eni=MAC3,
            ip="10.0.2.11",
            destinations=("10.50.0.0/16", "192.0.2.9/32"),
            fwmark=(0x10, 0xFF),
            uids=((33, 33), (1000, 1999)),
            protocol=6,
            dports=((443, 443), (8000, 8100)),
            where=f"config {tmp_path / 'eni-guest.toml'}: business[1] 'api'",
        ),
    )
    # every combination of its values is one rule: 2 destinations x 2 uid ranges x 2 ports
    assert len(c.business[0].selectors(4)) == 8


@pytest.mark.parametrize(
    ("value", "mark"),
    [("16", (16, 0xFFFFFFFF)), ("0x10", (16, 0xFFFFFFFF)), ("0x100/0xf00", (0x100, 0xF00))],
)
def test_fwmark_forms(tmp_path: Path, value: str, mark: tuple) -> None:
    text = f'[[business]]\nname = "m"\neni = "{MAC2}"\nfwmark = "{value}"\n'
    assert cfg(tmp_path, text).business[0].fwmark == mark
    text = f'[[business]]\nname = "m"\neni = "{MAC2}"\nfwmark = 16\n'
    assert cfg(tmp_path, text).business[0].fwmark == (16, 0xFFFFFFFF)


BASE = '[[business]]\nname = "b"\nip = "10.0.2.11"\n'


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[[business]]\nip = "10.0.2.11"\n', "business[1].name: missing"),
        ('[[business]]\nname = "a b"\nip = "10.0.2.11"\n', "name = 'a b': must be 1-64"),
        (BASE + 'destinations = ["10.1.0.0/8"]\n', "'10.1.0.0/8' is not a network: host bits"),
        (BASE + 'destinations = ["0.0.0.0/0"]\n', "too wide"),
        (BASE + 'destinations = ["10.1.0"]\n', "not an IP address or network"),
        (BASE + 'destinations = ["2001:db8::/32"]\n', "is not IPv4 like ip '10.0.2.11'"),
        (BASE + "fwmark = 0\n", "fwmark = 0: must be a mark 1..0xffffffff"),
        (BASE + 'fwmark = "0x110/0xff"\n', "the mark has bits outside the mask 0xff"),
        (BASE + 'uids = ["1599-1500"]\n', "'1599-1500' is not ordered: 1599 > 1500"),
        (BASE + "uids = [4294967295]\n", "4294967295 is outside 0..4294967294"),
        (BASE + 'protocol = "tcp"\ndports = [0]\n', "0 is outside 1..65535"),
        (BASE + 'protocol = "tcp"\ndports = [65536]\n', "65536 is outside 1..65535"),
        (BASE + 'protocol = "tcp"\ndports = ["x"]\n', "'x' is not a number or a 'FIRST-LAST'"),
        (BASE + "dports = [443]\n", "dports = [443]: ports need protocol"),
        (BASE + 'protocol = "icmp"\ndports = [443]\n', "must be 'tcp', 'udp', 'sctp' or"),
        (BASE + "protocol = 1\ndports = [443]\n", "ports need protocol"),
        (BASE + "protocol = 256\n", "protocol = 256: must be 'tcp'"),
        (BASE, "selects no traffic"),
        ('[[business]]\nname = "b"\nfwmark = 1\n', "names no carrier"),
        ('[[business]]\nname = "b"\neni = "0e:00:00"\nfwmark = 1\n', "eni = '0e:00:00': not a MAC"),
        ('[[business]]\nname = "b"\nip = "224.0.0.1"\nfwmark = 1\n', "not a unicast"),
        (BASE + "fwmark = 1\ncolour = 1\n", "unknown key 'colour'"),
        (BASE + "fwmark = 1\n" + BASE + "fwmark = 2\n", "business[2] 'b'.name: business[1] has"),
    ],
)
def test_bad_business_is_exit_2_in_one_line_naming_the_value(
    tmp_path: Path, text: str, says: str
) -> None:
    assert says in refusal(tmp_path, text)


def test_no_two_businesses_claim_the_same_traffic(tmp_path: Path) -> None:
    first = '[[business]]\nname = "intranet"\nip = "10.0.2.11"\ndestinations = ["10.0.0.0/8"]\n'
    same = first.replace("intranet", "other")
    assert "'to 10.0.0.0/8' is already taken by business[1] 'intranet'" in refusal(
        tmp_path, first + same
    )
    # a later rule that an earlier one takes entirely could never match
    inner = '[[business]]\nname = "mgmt"\nip = "10.0.1.30"\ndestinations = ["10.9.0.0/16"]\n'
    assert "'to 10.9.0.0/16' is already taken" in refusal(tmp_path, first + inner)
    # the narrower one first is the exception to the wider one: fine
    assert [b.name for b in cfg(tmp_path, inner + first).business] == ["mgmt", "intranet"]
    # the same mark with different ports is not the same traffic
    tls = BASE + 'fwmark = 1\nprotocol = "tcp"\ndports = [443]\n'
    web = tls.replace('"b"', '"c"').replace("443", "80")
    assert len(cfg(tmp_path, tls + web).business) == 2
    assert "'fwmark 0x1/0xffffffff ipproto tcp dport 443' is already taken" in refusal(
        tmp_path, tls + web.replace("80", "443")
    )
    wide = BASE.replace('"b"', '"w"') + 'fwmark = 1\nprotocol = "tcp"\ndports = ["1-1000"]\n'
    assert "'fwmark 0x1/0xffffffff ipproto tcp dport 80' is already taken by business[1] 'w'" in (
        refusal(tmp_path, wide + web)
    )


def test_business_conflicting_with_other_settings(tmp_path: Path) -> None:
    assert "also excluded by exclude_ips '10.0.2.0/24'" in refusal(
        tmp_path, 'exclude_ips = ["10.0.2.0/24"]\n' + PARTNER
    )
    text = f'exclude_enis = ["{MAC2}"]\n[[business]]\nname = "m"\neni = "{MAC2}"\nfwmark = 1\n'
    assert "also in exclude_enis" in refusal(tmp_path, text)
    assert "priorities up to 32766" in refusal(tmp_path, PARTNER, priority_base=32765 - 2048)
    assert cfg(tmp_path, PARTNER, priority_base=32764 - 2048).business


def test_businesses_only_in_the_file() -> None:
    with pytest.raises(ConfigError, match="can only be in the file"):
        load(environ={"ENI_GUEST_BUSINESS": "x"}, options={})


# ---------------------------------------------------------------- planning

BUSY = vm(P, B, C6)


def test_partner_business_gets_rules_and_a_table_with_its_ip_as_source(tmp_path: Path) -> None:
    c = cfg(tmp_path, PARTNER)
    p = plan(BUSY, c, BOOT_STATE)
    rules = [r for r in of(p, RuleChange) if r.priority == 12049]
    assert [r.describe() for r in rules] == [
        "rule add from all to 198.51.100.0/24 lookup 12048 priority 12049",
        "rule add from all to 203.0.113.7/32 lookup 12048 priority 12049",
    ]
    routes = [r.describe() for r in of(p, RouteChange) if r.table == 12048]
    assert routes == [
        "route add 10.0.2.0/24 dev eth2 scope link src 10.0.2.11 table 12048",
        "route add default via 10.0.2.1 dev eth2 onlink src 10.0.2.11 table 12048",
    ]
    assert {c.eni for c in rules} == {"business partner"}
    # the business's rules come after every per-IP rule: a bound socket keeps its own ENI
    prios = [c.priority for c in of(p, RuleChange)]
    assert prios == sorted(prios) and max(prios) == 12049
    # the ENI's own table is untouched: no prefsrc on its routes
    assert all(r.prefsrc is None for r in of(p, RouteChange) if r.table < 12048)
    after = applied(BOOT_STATE, p.changes)
    assert plan(BUSY, c, after).changes == ()
    bp = p.businesses[0]
    assert (bp.ifname, bp.sources, bp.waiting) == ("eth2", (ip_address("10.0.2.11"),), None)


def test_eni_business_uses_its_first_ip_per_family(tmp_path: Path) -> None:
    text = f'[[business]]\nname = "m"\neni = "{MAC3}"\nfwmark = "0x10/0xff"\n'
    p = plan(BUSY, cfg(tmp_path, text), BOOT_STATE)
    assert sorted(r.describe() for r in of(p, RuleChange) if r.priority == 12049) == [
        "rule add from ::/0 fwmark 0x10/0xff lookup 12048 priority 12049",
        "rule add from all fwmark 0x10/0xff lookup 12048 priority 12049",
    ]
    assert p.businesses[0].sources == (ip_address("10.0.2.10"), ip_address("2600:1f18:1:2::10"))
    six = [r.describe() for r in of(p, RouteChange) if r.table == 12048 and r.family == 6]
    assert six == [
        "route add 2600:1f18:1:2::/64 dev eth2 scope link src 2600:1f18:1:2::10 table 12048",
        "route add default via 2600:1f18:1:2::1 dev eth2 onlink src 2600:1f18:1:2::10 table 12048",
    ]
    p4 = plan(BUSY, cfg(tmp_path, text, ipv6=False), BOOT_STATE)
    assert {r.family for r in of(p4, RuleChange) if r.priority == 12049} == {4}


def test_uid_protocol_and_ports_in_the_rule(tmp_path: Path) -> None:
    text = BASE + 'uids = ["1000-1999"]\nprotocol = "udp"\ndports = ["5000-5010"]\n'
    p = plan(BUSY, cfg(tmp_path, text), BOOT_STATE)
    assert [r.describe() for r in of(p, RuleChange) if r.priority == 12049] == [
        "rule add from all uidrange 1000-1999 ipproto udp dport 5000-5010 lookup 12048 "
        "priority 12049"
    ]


def test_removing_the_entry_removes_its_rules_and_routes(tmp_path: Path) -> None:
    c = cfg(tmp_path, PARTNER)
    after = applied(BOOT_STATE, plan(BUSY, c, BOOT_STATE).changes)
    p = plan(BUSY, Config(), after)
    assert sorted(x.describe() for x in p.changes) == [
        "route del 10.0.2.0/24 dev eth2 scope link src 10.0.2.11 table 12048",
        "route del default via 10.0.2.1 dev eth2 onlink src 10.0.2.11 table 12048",
        "rule del from all to 198.51.100.0/24 lookup 12048 priority 12049",
        "rule del from all to 203.0.113.7/32 lookup 12048 priority 12049",
    ]
    assert [type(x) for x in p.changes] == [RuleChange, RuleChange, RouteChange, RouteChange]
    assert plan(BUSY, Config(), applied(after, p.changes)).changes == ()


def test_a_changed_ip_replaces_the_routes(tmp_path: Path) -> None:
    after = applied(BOOT_STATE, plan(BUSY, cfg(tmp_path, PARTNER), BOOT_STATE).changes)
    p = plan(BUSY, cfg(tmp_path, PARTNER.replace("10.0.2.11", "10.0.2.10")), after)
    assert sorted(x.describe() for x in p.changes) == [
        "route replace 10.0.2.0/24 dev eth2 scope link src 10.0.2.10 table 12048",
        "route replace default via 10.0.2.1 dev eth2 onlink src 10.0.2.10 table 12048",
    ]


def test_business_of_an_eni_not_attached_waits(tmp_path: Path) -> None:
    text = PARTNER + '\n[[business]]\nname = "later"\neni = "eni-new"\nfwmark = 7\n'
    p = plan(BUSY, cfg(tmp_path, text), BOOT_STATE)
    assert p.businesses[1].waiting == "ENI eni-new is not attached (or not settled) yet"
    assert not [c for c in p.changes if c.eni == "business later"]
    # its IP listed by no ENI yet, or its ENI listed without its NIC
    gone = plan(vm(P, B), cfg(tmp_path, PARTNER), replace(BOOT_STATE, links=BOOT_STATE.links[:3]))
    assert gone.businesses[0].waiting == "no attached ENI lists 10.0.2.11"
    no_nic = plan(BUSY, cfg(tmp_path, PARTNER), replace(BOOT_STATE, links=BOOT_STATE.links[:3]))
    assert "has no interface here yet" in (no_nic.businesses[0].waiting or "")
    assert not [c for c in no_nic.changes if c.eni == "business partner"]


def test_ip_alone_follows_the_ip_and_eni_with_ip_must_agree(tmp_path: Path) -> None:
    moved = replace(B, ipv4s=(*B.ipv4s, ip_address("10.0.1.99")))
    text = '[[business]]\nname = "f"\nip = "10.0.1.99"\nfwmark = 9\n'
    assert plan(vm(P, moved, C6), cfg(tmp_path, text), BOOT_STATE).businesses[0].ifname == "eth1"
    check(vm(P, moved, C6), cfg(tmp_path, text))  # no error: no ENI named
    pinned = text.replace("fwmark", f'eni = "{MAC3}"\nfwmark')
    with pytest.raises(ConfigError) as e:
        check(vm(P, moved, C6), cfg(tmp_path, pinned))
    assert e.value.exit_code == EXIT_USAGE
    assert "business[1] 'f'.ip = '10.0.1.99': not an IP of ENI eni-0e0000000003" in str(e.value)


def test_show_lists_businesses(tmp_path: Path) -> None:
    text = PARTNER + '\n[[business]]\nname = "later"\neni = "eni-new"\nfwmark = 7\n'
    c = cfg(tmp_path, text)
    after = applied(BOOT_STATE, plan(BUSY, c, BOOT_STATE).changes)
    result = Result(BUSY, plan(BUSY, c, after), after)
    lines = render_text(result).splitlines()
    assert (
        "business partner: eth2 (eni-0e0000000003) src 10.0.2.11 table 12048 priority 12049, "
        "in sync: to 198.51.100.0/24; to 203.0.113.7/32"
    ) in lines
    assert (
        "business later: waiting: ENI eni-new is not attached (or not settled) yet "
        "(nothing configured)"
    ) in lines
    import json

    rows = json.loads(render_json(result))["businesses"]
    assert [(r["name"], r["in_sync"]) for r in rows] == [("partner", True), ("later", None)]
    pending = Result(BUSY, plan(BUSY, c, BOOT_STATE), BOOT_STATE)
    assert json.loads(render_json(pending))["businesses"][0]["in_sync"] is False


# ---------------------------------------------------------------- the kernel's side


def test_business_rule_round_trips_through_netlink_and_is_ours_in_the_band() -> None:
    c = RuleChange(
        "add", 4, 12049, 12048, None, None, "business x",
        ip_network("198.51.100.0/24"), (0x10, 0xFF), (1000, 1999), 6, (443, 443),
    )  # fmt: skip
    nl = Netlink()
    try:
        request = Encoder(nl, 229).request(c)
    finally:
        nl.close()
    rule, proto = netlink_decode.parse_rule(request)
    assert rule == c.key() and proto == 229
    assert our_rule(Config(), rule, 229)
    assert not our_rule(Config(), replace(rule, priority=10005), 229)  # selectors: band only
    assert not our_rule(Config(), replace(rule, priority=12049 + 256), 229)
    assert our_route(Config(), Route(4, 12048 + 255, ip_network("0.0.0.0/0"), 4), 229)
    assert not our_route(Config(), Route(4, 12048 + 256, ip_network("0.0.0.0/0"), 4), 229)


def test_a_source_with_a_business_selector_is_never_ours() -> None:
    from test_kernel_parse import rule_msg

    data = rule_msg(
        [("FRA_TABLE", 12048), ("FRA_PRIORITY", 12049), ("FRA_PROTOCOL", 229),
         ("FRA_SRC", "10.0.1.20"), ("FRA_IP_PROTO", 6)],
        src_len=32, family=socket.AF_INET, table=252,
    )  # fmt: skip
    assert netlink_decode.parse_rule(data) is None


def test_state_rule_selects() -> None:
    assert not Rule(4, 10001, 10000, ip_network("10.0.1.20/32")).selects
    assert Rule(4, 12049, 12048, uids=(1, 2)).selects


def test_a_family_the_eni_cannot_route_is_noted(tmp_path: Path) -> None:
    text = f'[[business]]\nname = "v6"\neni = "{MAC2}"\ndestinations = ["2001:db8::/32"]\n'
    p = plan(BUSY, cfg(tmp_path, text), BOOT_STATE)
    assert p.businesses[0].notes == (
        "ENI eni-0e0000000002 has no IPv6 address or gateway: no routes",
    )
    assert not [c for c in p.changes if c.eni == "business v6"]
    # an ENI-only business without destinations routes IPv6 only where the ENI has it
    text = f'[[business]]\nname = "m"\neni = "{MAC2}"\nfwmark = 3\n'
    assert plan(BUSY, cfg(tmp_path, text), BOOT_STATE).businesses[0].notes == ()

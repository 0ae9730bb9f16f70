"""Floating IPs (floating.py): the rule follows the address, the address is keepalived's."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_network

import pytest
from test_plan import (
    BOOT_STATE,
    C6,
    ETH2,
    PROTO,
    B,
    C,
    P,
    converged,
    deletes,
    h,
    ip,
    make_eni,
    of,
    rule_keys,
    vm,
)

from eni_guest.config import Config, load
from eni_guest.errors import ConfigError
from eni_guest.model import Excluded
from eni_guest.plan import AddrChange, RuleChange, plan
from eni_guest.state import Addr

VIP = "10.0.2.100"
CFG = Config(floating_ips=("10.0.2.100/32", "10.0.1.0/28"))


def with_addrs(state, *addrs):  # type: ignore[no-untyped-def]
    return replace(state, addrs=(*state.addrs, *addrs))


def keepalived(ip_text: str, index: int = ETH2.index) -> Addr:
    """An address keepalived adds: no protocol of ours, no metric (its own /32)."""
    return Addr(index, ip(ip_text), 32, None)


def test_unlisted_floating_address_gets_its_enis_rule_and_loses_it_when_it_goes() -> None:
    state = converged(vm(P, B, C), CFG, BOOT_STATE)
    with_vip = with_addrs(state, keepalived(VIP))
    p = plan(vm(P, B, C), CFG, with_vip)
    assert rule_keys(of(p, RuleChange)) == {(10003, 10002, h(VIP), None)}
    assert [c.op for c in p.changes] == ["add"]
    assert any("floating IP 10.0.2.100 on eth2" in n for n in p.notes)
    after = converged(vm(P, B, C), CFG, with_vip)
    assert plan(vm(P, B, C), CFG, after).changes == ()
    # keepalived deleted it: the rule goes, nothing else
    gone = replace(after, addrs=tuple(a for a in after.addrs if a.ip != ip(VIP)))
    p = plan(vm(P, B, C), CFG, gone)
    assert [(c.op, c.src) for c in p.changes] == [("del", h(VIP))]


def test_listed_floating_ip_is_never_added_and_its_rule_needs_the_address() -> None:
    c_vip = make_eni(C.mac, 2, ["10.0.2.10", "10.0.2.11", VIP], "10.0.2.0/24")
    state = converged(vm(P, B, C), CFG, BOOT_STATE)
    p = plan(vm(P, B, c_vip), CFG, state)
    assert p.changes == ()  # metadata lists it, keepalived has not added it: nothing
    p = plan(vm(P, B, c_vip), CFG, with_addrs(state, keepalived(VIP)))
    assert not of(p, AddrChange)  # never a second copy
    assert rule_keys(of(p, RuleChange)) == {(10003, 10002, h(VIP), None)}


@pytest.mark.parametrize("proto", [None, 0, PROTO])
def test_floating_address_is_never_removed_listed_or_not(proto: object) -> None:
    c_vip = make_eni(C.mac, 2, ["10.0.2.10", "10.0.2.11", VIP], "10.0.2.0/24")
    # keepalived's, someone's with proto 0, or one an earlier eni-guest added with its marks
    vip = Addr(ETH2.index, ip(VIP), 32, proto, PROTO if proto == PROTO else 0)
    state = with_addrs(converged(vm(P, B, c_vip), Config(), BOOT_STATE), vip)
    for instance in (vm(P, B, c_vip), vm(P, B, C), vm(P, B)):
        p = plan(instance, CFG, state)
        assert not [c for c in deletes(p) if isinstance(c, AddrChange) and c.ip == ip(VIP)]


def test_metadata_listed_ip_keepalived_added_without_our_marks_is_not_touched() -> None:
    """Without floating_ips too: a listed address without marks is used as it is."""
    c_vip = make_eni(C.mac, 2, ["10.0.2.10", "10.0.2.11", VIP], "10.0.2.0/24")
    state = with_addrs(converged(vm(P, B, C), Config(), BOOT_STATE), keepalived(VIP))
    p = plan(vm(P, B, c_vip), Config(), state)
    assert not of(p, AddrChange)
    assert rule_keys(of(p, RuleChange)) == {(10003, 10002, h(VIP), None)}
    p = plan(vm(P, B, C), Config(), converged(vm(P, B, c_vip), Config(), state))
    # unlisted again: an address on the link inside the ENI's subnet that is not ours keeps
    # its rule while it is there (floating.py), and the address stays
    assert p.changes == ()


def test_floating_address_outside_the_enis_subnet_or_listed_elsewhere_gets_nothing() -> None:
    state = converged(vm(P, B, C), CFG, BOOT_STATE)
    # 10.0.1.5 is floating, but on eth2 it is outside 10.0.2.0/24
    assert plan(vm(P, B, C), CFG, with_addrs(state, keepalived("10.0.1.5"))).changes == ()
    # 10.0.1.10 is the primary's, listed there: on eth1 metadata decides, not presence
    on_eth1 = with_addrs(state, keepalived("10.0.1.10", 3))
    assert plan(vm(P, B, C), CFG, on_eth1).changes == ()
    # an address outside floating_ips on an ENI link (an administrator's), inside the
    # subnet: its rule all the same, never an address change
    p = plan(vm(P, B, C), CFG, with_addrs(state, keepalived("10.0.2.99")))
    assert [(c.op, c.src) for c in p.changes] == [("add", h("10.0.2.99"))]


def test_floating_ips_setting_is_checked() -> None:
    cfg = load(environ={"ENI_GUEST_FLOATING_IPS": "10.0.2.100, 2001:db8:2::100"})
    assert cfg.floating_ips == ("10.0.2.100/32", "2001:db8:2::100/128")
    with pytest.raises(ConfigError, match="floating_ips"):
        load(environ={"ENI_GUEST_FLOATING_IPS": "10.0.2.100/24"})
    with pytest.raises(ConfigError, match="overlaps exclude_ips"):
        load(
            environ={
                "ENI_GUEST_FLOATING_IPS": "10.0.2.100",
                "ENI_GUEST_EXCLUDE_IPS": "10.0.2.0/24",
            }
        )


def test_ipv6_floating_address_gets_its_rule_in_the_enis_ipv6_table() -> None:
    vip6 = "2600:1f18:1:2::100"
    cfg = Config(floating_ips=(f"{vip6}/128",))
    state = converged(vm(P, B, C6), cfg, BOOT_STATE)
    p = plan(vm(P, B, C6), cfg, with_addrs(state, Addr(ETH2.index, ip(vip6), 128, None)))
    assert rule_keys(of(p, RuleChange)) == {(10003, 10002, h(vip6), None)}
    assert not of(p, AddrChange)
    # the ENI has no IPv6 table without IPv6 IPs: no rule into an empty table
    p = plan(
        vm(P, B, C),
        cfg,
        with_addrs(converged(vm(P, B, C), cfg, BOOT_STATE), Addr(ETH2.index, ip(vip6), 128, None)),
    )
    assert p.changes == ()


# --- with no floating_ips setting: every address someone else adds on an ENI link


def test_without_the_setting_someone_elses_address_in_the_subnet_gets_its_rule() -> None:
    cfg = Config()
    state = converged(vm(P, B, C), cfg, BOOT_STATE)
    here = with_addrs(state, keepalived("10.0.2.77"))
    p = plan(vm(P, B, C), cfg, here)
    assert [(c.op, c.priority, c.table, c.src) for c in p.changes] == [
        ("add", 10003, 10002, h("10.0.2.77"))
    ]
    assert any("address (not eni-guest's) 10.0.2.77 on eth2" in n for n in p.notes)
    after = converged(vm(P, B, C), cfg, here)
    assert plan(vm(P, B, C), cfg, after).changes == ()  # never an address change
    gone = replace(after, addrs=tuple(a for a in after.addrs if a.ip != ip("10.0.2.77")))
    assert [(c.op, c.src) for c in plan(vm(P, B, C), cfg, gone).changes] == [
        ("del", h("10.0.2.77"))
    ]


def test_without_the_setting_ours_unlisted_goes_and_others_outside_or_excluded_get_nothing() -> (
    None
):
    cfg = Config()
    state = converged(vm(P, B, C), cfg, BOOT_STATE)
    # one of ours that metadata no longer lists: removed, no rule
    ours = Addr(ETH2.index, ip("10.0.2.77"), 32, PROTO, PROTO)
    p = plan(vm(P, B, C), cfg, with_addrs(state, ours))
    assert [(type(c).__name__, c.op) for c in p.changes] == [("AddrChange", "del")]
    # outside the ENI's subnets: nothing
    assert plan(vm(P, B, C), cfg, with_addrs(state, keepalived("192.0.2.7"))).changes == ()
    # exclude_ips covers it: nothing
    excluded = replace(vm(P, B, C), excluded_ips=(ip_network("10.0.2.64/26"),))
    assert plan(excluded, cfg, with_addrs(state, keepalived("10.0.2.77"))).changes == ()


def test_without_the_setting_an_address_listed_on_an_excluded_eni_is_left_to_metadata() -> None:
    cfg = Config()
    state = converged(vm(P, B, C), cfg, BOOT_STATE)
    other = Excluded("0e:ee:00:00:00:09", "eni-x", "exclude_enis 'eni-x'", (ip("10.0.2.77"),))
    instance = replace(vm(P, B, C), excluded=(other,))
    p = plan(instance, cfg, with_addrs(state, keepalived("10.0.2.77")))
    assert not of(p, RuleChange)
    assert any("10.0.2.77 on eth2: metadata lists it on another ENI" in n for n in p.notes)

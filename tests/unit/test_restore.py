"""The watch daemon's answer to deletions: which trigger a restore (restore.ours, the event
decoding in kernel.LinkMonitor), when (restore.Schedule: debounced, bounded) and which never
do (a foreign rule, a route outside our tables, the daemon's own deletions during a
reconcile, what left with its link).  No netlink socket is opened."""

from __future__ import annotations

import struct
from ipaddress import ip_address, ip_network
from typing import Any

import pytest
from pyroute2_ref import NL

from eni_guest import restore
from eni_guest.changes import AddrChange, RouteChange, RuleChange
from eni_guest.config import Config
from eni_guest.kernel import Gone, LinkMonitor, MainRouteEvent
from eni_guest.netlink import RTM_DELADDR, RTM_DELROUTE, RTM_DELRULE, RTM_NEWROUTE
from eni_guest.netlink_decode import route_protocol
from eni_guest.state import Addr, Link, Route, Rule

CFG = Config(provider="aws")
P, PRIO, TABLE, GROUP = CFG.protocol, CFG.priority_base, CFG.table_base, CFG.interface_group
ENI_LINK, OTHER_LINK = 3, 9
GROUPS = {ENI_LINK: GROUP, OTHER_LINK: 0}

PER_IP = Rule(4, PRIO + 2, TABLE + 1, ip_network("10.0.1.21/32"))
SHARED = Rule(6, PRIO, 254, None, GROUP)
DEFAULT = Route(4, TABLE + 1, ip_network("0.0.0.0/0"), ENI_LINK, ip_address("10.0.1.1"))
SECONDARY = Addr(ENI_LINK, ip_address("10.0.1.11"), 32, P)


def ours(gone: Gone) -> Any:
    return restore.ours(gone, CFG, GROUPS.get)


def test_our_rules_routes_and_addresses_trigger() -> None:
    assert ours(Gone(PER_IP, P)) == (("rule", PER_IP), 0)
    assert ours(Gone(SHARED, P)) == (("rule", SHARED), 0)
    assert ours(Gone(DEFAULT, P)) == (("route", 4, TABLE + 1, DEFAULT.dst), ENI_LINK)
    assert ours(Gone(SECONDARY, P)) == (("addr", ENI_LINK, SECONDARY.ip), ENI_LINK)
    # a kernel that reports no address protocol (< 6.3): any address on an ENI link counts;
    # the restore then finds nothing to do if it was not ours
    older = Addr(ENI_LINK, ip_address("10.0.1.11"), 32, None)
    assert ours(Gone(older, None)) == (("addr", ENI_LINK, older.ip), ENI_LINK)
    # the primary's DHCP address: when a link loses its last IPv4 address the kernel deletes
    # the IPv4 routes through it (our table's too) without an event for them
    dhcp = Addr(ENI_LINK, ip_address("10.0.1.10"), 24, 16)
    assert ours(Gone(dhcp, 16)) == (("addr", ENI_LINK, dhcp.ip), ENI_LINK)


@pytest.mark.parametrize(
    "gone",
    [
        Gone(PER_IP, 0),  # someone else's rule (no protocol) at one of our priorities
        Gone(PER_IP, 4),  # "static": an administrator's rule
        Gone(Rule(4, PRIO - 1, TABLE + 1, ip_network("10.0.1.21/32")), P),  # below our range
        Gone(Rule(4, 32766, 254), 2),  # the kernel's main rule
        Gone(Route(4, 254, ip_network("0.0.0.0/0"), ENI_LINK), 16),  # DHCP's default route
        Gone(Route(4, 254, ip_network("10.0.9.0/24"), ENI_LINK), P),  # our proto, main table
        Gone(Route(4, TABLE + 1, ip_network("10.0.9.0/24"), ENI_LINK), 3),  # boot proto
        Gone(Addr(ENI_LINK, ip_address("fe80::1"), 64, 2), 2),  # the kernel's link-local
        Gone(Addr(ENI_LINK, ip_address("2001:db8:1::99"), 64, 3), 3),  # someone's IPv6
        Gone(Addr(OTHER_LINK, ip_address("172.17.0.1"), 16, None), None),  # docker0
        Gone(Addr(OTHER_LINK, ip_address("10.0.1.11"), 32, P), P),  # not on an ENI link
        Gone(Addr(42, ip_address("10.0.1.11"), 32, P), P),  # a link the daemon never saw
    ],
)
def test_what_is_not_ours_never_triggers(gone: Gone) -> None:
    assert ours(gone) is None


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def seen(*objs: Any) -> list[Any]:
    return [ours(Gone(o, P)) for o in objs]


def test_a_burst_of_deletions_is_one_restore_soon_after_its_end() -> None:
    clock = Clock()
    s = restore.Schedule(clock)
    assert s.due is None and not s.take()
    assert s.deleted(seen(PER_IP))
    assert s.due == pytest.approx(100.0 + restore.DEBOUNCE)
    clock.now += 0.1
    assert s.deleted(seen(SHARED, DEFAULT))  # still in the burst: later, once
    assert s.due == pytest.approx(100.1 + restore.DEBOUNCE)
    assert not s.take()
    clock.now = s.due
    assert s.take() and not s.take()  # one restore
    assert s.due is None


def test_deletions_that_never_stop_are_answered_within_max_delay() -> None:
    clock = Clock()
    s = restore.Schedule(clock)
    for _ in range(20):
        s.deleted(seen(PER_IP))
        clock.now += restore.DEBOUNCE / 2
        if s.take():
            break
    assert clock.now - 100.0 <= restore.MAX_DELAY + restore.DEBOUNCE / 2
    assert restore.DEBOUNCE < restore.MAX_DELAY < 1.0  # "within a second", with the reconcile


def test_the_daemons_own_deletions_during_a_reconcile_never_trigger() -> None:
    clock = Clock()
    s = restore.Schedule(clock)
    s.mine(
        [
            RuleChange("del", 4, PRIO + 2, TABLE + 1, ip_network("10.0.1.21/32")),
            RouteChange("del", TABLE + 1, ip_network("0.0.0.0/0"), ENI_LINK, "eth1"),
            AddrChange("del", ENI_LINK, "eth0", ip_address("10.0.1.11"), 32),
            AddrChange("add", ENI_LINK, "eth0", ip_address("10.0.1.12"), 32),  # an add: none
        ]
    )
    clock.now += 0.5  # the events arrive a moment later
    assert not s.deleted(seen(PER_IP, DEFAULT, SECONDARY))
    assert s.due is None
    # remembered once: the same object deleted again later is someone else's doing
    assert s.deleted(seen(PER_IP))


def test_own_deletions_are_forgotten_after_a_while() -> None:
    clock = Clock()
    s = restore.Schedule(clock)
    s.mine([RuleChange("del", 4, PRIO + 2, TABLE + 1, ip_network("10.0.1.21/32"))])
    clock.now += restore.OWN_MEMORY + 0.1
    assert s.deleted(seen(PER_IP))  # memory stays bounded: nothing is kept for ever
    assert s._own == {}
    # nor when no event ever comes (the daemon's cycles alone, as in the RSS benchmark)
    for n in range(100):
        s.mine([AddrChange("del", ENI_LINK, "eth0", ip_address(f"10.0.7.{n}"), 32)])
        clock.now += restore.OWN_MEMORY
    assert len(s._own) == 1


def test_what_left_with_its_link_is_unplugs_business() -> None:
    s = restore.Schedule(Clock())
    assert not s.deleted(seen(SECONDARY, DEFAULT), left={ENI_LINK})
    assert s.deleted(seen(SECONDARY, PER_IP), left={OTHER_LINK})


def test_a_full_reconcile_cancels_a_pending_restore() -> None:
    s = restore.Schedule(Clock())
    s.deleted(seen(PER_IP))
    s.cancel()
    assert s.due is None and not s.take()


# ------------------------------------------------------------------ decoding the events


def _message(cls: Any, kind: int, header: dict[str, Any], attrs: list[Any]) -> bytes:
    m = cls()
    for k, v in header.items():
        m[k] = v
    m["attrs"] = attrs
    m["header"]["type"] = kind
    m.encode()
    return bytes(m.data)


def monitor(protocol: Any = P) -> LinkMonitor:
    mon = LinkMonitor.__new__(LinkMonitor)  # no socket: only the decoding is tested
    mon.protocol = protocol
    return mon


def test_route_deletions_are_told_by_their_header_before_decoding() -> None:
    ours_ = _message(
        NL.rtmsg,
        RTM_DELROUTE,
        {"family": 2, "dst_len": 0, "table": 252, "proto": P, "type": 1},
        [("RTA_TABLE", TABLE + 1), ("RTA_OIF", ENI_LINK), ("RTA_GATEWAY", "10.0.1.1")],
    )
    other = _message(
        NL.rtmsg,
        RTM_DELROUTE,
        {"family": 2, "dst_len": 24, "table": 254, "proto": 2, "type": 1},
        [("RTA_DST", "10.0.9.0"), ("RTA_OIF", ENI_LINK)],
    )
    elsewhere = _message(
        NL.rtmsg,
        RTM_DELROUTE,
        {"family": 2, "dst_len": 24, "table": 100, "proto": 2, "type": 1},
        [("RTA_DST", "10.0.9.0"), ("RTA_OIF", ENI_LINK)],
    )
    assert route_protocol(ours_) == P and route_protocol(other) == 2
    assert route_protocol(b"\0" * 10) == -1
    assert monitor()._decode(RTM_DELROUTE, ours_) == Gone(DEFAULT, P)
    assert monitor()._decode(RTM_DELROUTE, elsewhere) is None  # not even decoded
    assert monitor(None)._decode(RTM_DELROUTE, elsewhere) is not None
    assert monitor()._decode(RTM_NEWROUTE, ours_) is None  # additions need no answer
    # someone else's main-table route through a link, added or deleted: decoded for the
    # mirrors (mirror.py), whose reconcile follows it
    main = Route(4, 254, ip_network("10.0.9.0/24"), ENI_LINK)
    assert monitor()._decode(RTM_DELROUTE, other) == MainRouteEvent(main, False)
    new = other[:4] + struct.pack("=H", RTM_NEWROUTE) + other[6:]
    assert monitor()._decode(RTM_NEWROUTE, new) == MainRouteEvent(main, True)


def test_rule_and_address_deletions_are_decoded() -> None:
    rule = _message(
        NL.fibmsg,
        RTM_DELRULE,
        {"family": 2, "src_len": 32, "table": 252, "action": 1},
        [
            ("FRA_SRC", "10.0.1.21"),
            ("FRA_PRIORITY", PRIO + 2),
            ("FRA_TABLE", TABLE + 1),
            ("FRA_PROTOCOL", P),
        ],
    )
    assert monitor()._decode(RTM_DELRULE, rule) == Gone(PER_IP, P)
    addr = _message(
        NL.ifaddrmsg,
        RTM_DELADDR,
        {"family": 2, "prefixlen": 32, "index": ENI_LINK},
        [("IFA_LOCAL", "10.0.1.11"), ("IFA_ADDRESS", "10.0.1.11"), ("IFA_PROTO", P)],
    )
    assert monitor()._decode(RTM_DELADDR, addr) == Gone(SECONDARY, P)


# ------------------------------------------------------------------ the worker's restore


def test_restore_reconciles_with_the_last_metadata_read_and_remembers_its_own_deletions(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """No metadata read for a restore; what that reconcile deletes is the daemon's own."""
    from dataclasses import replace

    from eni_guest import agent
    from eni_guest.watch import Watcher

    cfg = replace(CFG, lock_file=str(tmp_path / "lock"))
    clock = Clock()
    w = Watcher(lambda: cfg, cfg, clock=clock)
    instance = object()
    w._instance = instance  # type: ignore[assignment]
    w._next_full = clock.now + 60  # the periodic reconcile is a minute away
    own = RuleChange("del", 4, PRIO + 2, TABLE + 1, ip_network("10.0.1.99/32"))
    calls: list[Any] = []

    class Result:
        applied = [own]

        class plan:
            warnings = ()
            captures = ()

    def fake(config: Config, *, instance: Any, log_warnings: bool) -> Any:
        calls.append(instance)
        return Result

    monkeypatch.setattr(agent, "reconcile", fake)
    monkeypatch.setattr(agent, "read_instance", lambda c: pytest.fail("metadata was read"))
    w.post(gone=dict(seen(PER_IP)))
    box, w._inbox = w._inbox, type(w._inbox)()
    w._take(box)
    assert w._due() == pytest.approx(clock.now + restore.DEBOUNCE)
    clock.now += restore.DEBOUNCE
    assert w._restore.take()
    w._restore_now()
    assert calls == [instance] and w.restores == 1 and w.cycles == 0
    # the restore's own deletion comes back as an event: no second restore
    w._take(type(w._inbox)(gone=dict(seen(Rule(4, PRIO + 2, TABLE + 1, own.src)))))
    assert w._restore.due is None


def test_restore_without_a_metadata_read_yet_is_a_full_reconcile() -> None:
    from eni_guest.watch import Watcher

    clock = Clock()
    w = Watcher(lambda: CFG, CFG, clock=clock)
    w._next_full = clock.now + 60
    w._restore_now()
    assert w._next_full == clock.now and w.restores == 0


def test_reload_forgets_the_metadata_read_made_with_the_old_configuration() -> None:
    from eni_guest.watch import Watcher

    w = Watcher(lambda: CFG, CFG)
    w._instance = object()  # type: ignore[assignment]
    w.reload()
    assert w._instance is None


def test_a_main_table_route_through_an_eni_link_is_followed_like_a_deletion() -> None:
    """An administrator's route through an ENI comes or goes: the daemon reconciles soon
    (its copy in the ENI's table follows, mirror.py); through another link, never."""
    links = {ENI_LINK: Link(ENI_LINK, "eth1", "0e:00:00:00:00:02", GROUP, True, 1500)}
    links[OTHER_LINK] = Link(OTHER_LINK, "docker0", "02:42:00:00:00:01", 0, True, 1500)
    admin = Route(4, 254, ip_network("10.50.0.0/16"), ENI_LINK, ip_address("10.0.1.5"))
    docker = Route(4, 254, ip_network("172.18.0.0/16"), OTHER_LINK)
    seen = restore.collect([MainRouteEvent(admin, True)], CFG, links)
    assert list(seen.values()) == [ENI_LINK]
    assert restore.collect([MainRouteEvent(docker, True)], CFG, links) == {}
    schedule = restore.Schedule(lambda: 10.0)
    assert schedule.deleted(seen.items()) and schedule.due == 10.0 + restore.DEBOUNCE

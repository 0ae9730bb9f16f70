"""Hot-plug without a kernel: the unplug planner, the interface filter, and the metadata wait.

`plan_unplug` decides what to delete after a NIC left *without metadata*, so it must be right
from the kernel alone: delete what only the departed NIC used, and nothing that still serves a
present one.  The wait decides when a just-attached NIC may be configured; a wrong answer
either configures an ENI that reads device-number 0 (two ENIs in one table) or hangs udev.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from ipaddress import ip_address, ip_network
from typing import Any, Callable, Optional

import pytest

from eni_guest import hotplug, settle
from eni_guest.config import Config
from eni_guest.errors import MetadataDisabled, MetadataUnavailable
from eni_guest.model import Eni, Excluded, Instance, Unsettled
from eni_guest.plan import RouteChange, RuleChange, plan_unplug
from eni_guest.state import Addr, KernelState, Link, Route, Rule

CFG = Config(provider="aws")  # never "auto": nothing here may probe a network
G = 229
MAIN = 254
MAC0, MAC1, MAC2 = "0e:00:00:00:00:10", "0e:00:00:00:00:11", "0e:00:00:00:00:12"


def net(text: str) -> Any:
    return ip_network(text)


def link(index: int, name: str, mac: str, kind: str = "", group: int = G) -> Link:
    return Link(index, name, mac, group, True, 1500, kind)


def addr(index: int, text: str) -> Addr:
    ip = ip_address(text)
    return Addr(index, ip, ip.max_prefixlen, 229)


# A VM after a full reconcile: eth0 (primary, table 10000), eth1 (table 10001) and eth2
# (table 10002, with an IPv6 address and a delegated prefix).
ETH0, ETH1, ETH2 = link(2, "eth0", MAC0), link(3, "eth1", MAC1), link(4, "eth2", MAC2)
SHARED = [Rule(4, 10000, MAIN, None, G), Rule(6, 10000, MAIN, None, G)]
RULES0 = [Rule(4, 10001, 10000, net("10.0.1.10/32")), Rule(4, 10001, 10000, net("10.0.1.11/32"))]
RULES1 = [Rule(4, 10002, 10001, net("10.0.1.20/32"))]
RULES2 = [
    Rule(4, 10003, 10002, net("10.0.2.30/32")),
    Rule(4, 10003, 10002, net("10.0.2.48/28")),
    Rule(6, 10003, 10002, net("2001:db8:2::30/128")),
]
ROUTES = {
    2: [Route(4, 10000, net("10.0.1.0/24"), 2), Route(4, 10000, net("0.0.0.0/0"), 2)],
    3: [Route(4, 10001, net("10.0.1.0/24"), 3), Route(4, 10001, net("0.0.0.0/0"), 3)],
    4: [Route(4, 10002, net("10.0.2.0/24"), 4), Route(6, 10002, net("2001:db8:2::/64"), 4)],
}
ADDRS = {
    2: [addr(2, "10.0.1.10"), addr(2, "10.0.1.11")],
    3: [addr(3, "10.0.1.20")],
    4: [addr(4, "10.0.2.30"), addr(4, "2001:db8:2::30")],
}


def vm(present: list[Link], *, routes_of: Optional[list[int]] = None) -> KernelState:
    """The kernel once the links not in `present` left (the kernel took their routes and
    addresses along; `routes_of` overrides whose routes are still there)."""
    indexes = [x.index for x in present] if routes_of is None else routes_of
    return KernelState(
        links=tuple(present),
        addrs=tuple(a for x in present for a in ADDRS[x.index]),
        rules=tuple(SHARED + RULES0 + RULES1 + RULES2),
        routes=tuple(r for i in indexes for r in ROUTES[i]),
    )


def deleted_rules(state: KernelState) -> set[Rule]:
    changes = plan_unplug(state, CFG).changes
    assert all(c.op == "del" for c in changes)
    return {c.key() for c in changes if isinstance(c, RuleChange)}


# ------------------------------------------------------------------ plan_unplug


def test_nothing_left_nothing_planned() -> None:
    p = plan_unplug(vm([ETH0, ETH1, ETH2]), CFG)
    assert p.changes == ()


def test_departed_eni_loses_all_its_rules_and_only_those() -> None:
    assert deleted_rules(vm([ETH0, ETH1])) == set(RULES2)


def test_delegated_prefix_rule_goes_with_its_table() -> None:
    # a prefix has no address on the link; its rule goes because its table is empty
    assert net("10.0.2.48/28") in {r.src for r in deleted_rules(vm([ETH0, ETH1]))}


def test_shared_rule_is_never_deleted_even_when_only_the_primary_is_left() -> None:
    gone = deleted_rules(vm([ETH0]))
    assert gone == set(RULES1 + RULES2)
    assert not gone & set(SHARED)


def test_rules_deleted_from_highest_priority_number_first() -> None:
    changes = plan_unplug(vm([ETH0]), CFG).changes
    prios = [c.priority for c in changes if isinstance(c, RuleChange)]
    assert prios == sorted(prios, reverse=True)


def test_link_down_with_routes_flushed_keeps_its_rules() -> None:
    # eth1 was set down by someone: the kernel flushed its IPv4 routes, its addresses stay.
    # It has not left: its rules must survive a hot-unplug of eth2.
    state = vm([ETH0, ETH1], routes_of=[2])
    assert deleted_rules(state) == set(RULES2)


def test_table_with_a_live_route_keeps_rules_whose_ip_is_gone() -> None:
    # An IP unassigned in metadata but not yet reconciled: not unplug's business.
    state = replace(vm([ETH0, ETH1, ETH2]), addrs=tuple(ADDRS[2] + ADDRS[3]))
    assert deleted_rules(state) == set()


def test_route_through_a_vanished_link_is_deleted() -> None:
    state = vm([ETH0, ETH1], routes_of=[2, 3, 4])
    changes = plan_unplug(state, CFG).changes
    routes = [c for c in changes if isinstance(c, RouteChange)]
    assert {(c.table, c.dst, c.oif) for c in routes} == {(r.table, r.dst, 4) for r in ROUTES[4]}
    # its table still has routes in the kernel, but through nothing: the rules go too
    assert {c.key() for c in changes if isinstance(c, RuleChange)} == set(RULES2)


def test_rules_go_before_routes() -> None:
    changes = plan_unplug(vm([ETH0, ETH1], routes_of=[2, 3, 4]), CFG).changes
    kinds = [type(c).__name__ for c in changes]
    assert kinds == sorted(kinds, key=lambda k: k != "RuleChange")


def test_only_our_rules_are_seen_so_only_ours_can_go() -> None:
    # state.rules holds only rules with our protocol in our priority range (kernel.py
    # filters); a rule that is ours by mark but points at main (the shared one) stays.
    state = replace(vm([ETH0]), rules=tuple(SHARED))
    assert plan_unplug(state, CFG).changes == ()


# ------------------------------------------------------------------ which links may be ENIs


@pytest.mark.parametrize("kind", ["bridge", "bond", "vlan", "vxlan", "tun", "wireguard", "dummy"])
def test_virtual_links_are_not_nics(kind: str) -> None:
    assert settle.not_a_nic(link(9, "x0", MAC1, kind)) is not None


@pytest.mark.parametrize("kind", ["", "veth"])
def test_nic_drivers_and_veths_may_be_enis(kind: str) -> None:
    assert settle.not_a_nic(link(9, "x0", MAC1, kind)) is None


def test_loopback_and_macless_links_are_not_nics() -> None:
    assert settle.not_a_nic(link(1, "lo", "00:00:00:00:00:00")) is not None
    assert settle.not_a_nic(link(9, "gre0", "")) is not None


# ------------------------------------------------------------------ classify and backoff


def eni(mac: str, device: int) -> Eni:
    return Eni(
        mac,
        "eni-" + mac.replace(":", ""),
        device,
        0,
        device == 0,
        (ip_address(f"10.0.1.{10 + device}"),),
        (net("10.0.1.0/24"),),
        ip_address("10.0.1.1"),
    )


def instance(*enis: Eni, unsettled: tuple[Unsettled, ...] = ()) -> Instance:
    return Instance("aws", "i-1", MAC0, tuple(enis), unsettled)


def test_classify() -> None:
    inst = instance(eni(MAC0, 0), unsettled=(Unsettled(MAC1, "device-number reads 0"),))
    assert settle.classify(inst, MAC0) == (settle.SETTLED, "")
    assert settle.classify(inst, MAC1) == (settle.UNSETTLED, "device-number reads 0")
    assert settle.classify(inst, MAC2) == (settle.UNLISTED, "")
    excluded = replace(inst, excluded=(Excluded(MAC2, "eni-2", "exclude_enis 'eni-2'"),))
    assert settle.classify(excluded, MAC2) == (settle.EXCLUDED, "exclude_enis 'eni-2'")


def test_backoff_doubles_to_the_cap_with_jitter() -> None:
    lows = settle.Backoff(rng=lambda: 0.0)
    highs = settle.Backoff(rng=lambda: 1.0)
    assert [round(lows.next(), 3) for _ in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.5, 1.5, 1.5]
    assert [round(highs.next(), 3) for _ in range(7)] == [0.2, 0.4, 0.8, 1.6, 3.0, 3.0, 3.0]
    highs.reset()
    assert highs.next() == pytest.approx(0.2)


# ------------------------------------------------------------------ the wait


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def run_wait(
    monkeypatch: pytest.MonkeyPatch,
    answers: list[Any],
    nic: Link,
    timeout: float = 10.0,
    relookup: Optional[Callable[[int], Optional[Link]]] = None,
) -> tuple[Optional[Link], FakeClock, list[float]]:
    """Wait with metadata answering `answers` in turn (the last one repeats)."""
    clock = FakeClock()
    budgets: list[float] = []

    def read(config: Config, left: float) -> Instance:
        budgets.append(left)
        clock.now += 0.05
        answer = answers[min(len(budgets) - 1, len(answers) - 1)]
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(hotplug, "_read", read)
    got = hotplug.wait_until_settled(
        CFG,
        nic,
        timeout,
        relookup=relookup or (lambda index: nic),
        clock=clock,
        sleep=clock.sleep,
        rng=lambda: 0.5,
    )
    assert got is None or got.config is CFG  # an explicit provider is never re-resolved
    return (None if got is None else got.link), clock, budgets


SETTLED = instance(eni(MAC0, 0), eni(MAC1, 1))
LAGGING = instance(eni(MAC0, 0), unsettled=(Unsettled(MAC1, "device-number reads 0"),))
WITHOUT = instance(eni(MAC0, 0))
NIC = link(5, "eth1", MAC1, group=0)
VETH = link(6, "veth1", MAC1, "veth", group=0)


def test_settled_at_once_configures_without_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    got, clock, _ = run_wait(monkeypatch, [SETTLED], NIC)
    assert got == NIC
    assert clock.sleeps == []


def test_excluded_eni_is_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    # exclude_enis: left alone, so neither configured nor warned about after hotplug_timeout
    excluded = replace(WITHOUT, excluded=(Excluded(MAC1, "eni-1", "exclude_enis 'eni-1'"),))
    got, clock, budgets = run_wait(monkeypatch, [excluded], NIC)
    assert got is None and clock.sleeps == [] and len(budgets) == 1


def test_lagging_attach_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    got, clock, budgets = run_wait(monkeypatch, [LAGGING, LAGGING, LAGGING, SETTLED], NIC)
    assert got == NIC
    assert len(budgets) == 4
    assert clock.sleeps == pytest.approx([0.15, 0.3, 0.6])  # backoff with jitter 0.5


def test_not_yet_listed_physical_nic_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    got, _, budgets = run_wait(monkeypatch, [WITHOUT, WITHOUT, SETTLED], NIC)
    assert got == NIC and len(budgets) == 3


def test_unlisted_veth_gives_up_after_one_read(monkeypatch: pytest.MonkeyPatch) -> None:
    got, clock, budgets = run_wait(monkeypatch, [WITHOUT, SETTLED], VETH)
    assert got is None
    assert len(budgets) == 1 and clock.sleeps == []


def test_unlisted_physical_nic_warns_after_the_timeout(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    got, clock, _ = run_wait(monkeypatch, [WITHOUT], NIC, timeout=5.0)
    assert got is None
    assert clock.now == pytest.approx(5.0, abs=0.1)
    assert "interface eth1 (0e:00:00:00:00:11) is not an ENI of this instance" in caplog.text


def test_never_settled_is_a_metadata_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MetadataUnavailable, match="not settled after 5 s.*device-number reads 0"):
        run_wait(monkeypatch, [LAGGING], NIC, timeout=5.0)


def test_outage_is_retried_until_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    down = MetadataUnavailable("metadata service: connection failed")
    with pytest.raises(MetadataUnavailable, match="still failing after 5 s.*connection failed"):
        run_wait(monkeypatch, [down], NIC, timeout=5.0)


def test_outage_then_recovery_configures(monkeypatch: pytest.MonkeyPatch) -> None:
    down = MetadataUnavailable("metadata service: connection failed")
    got, _, _ = run_wait(monkeypatch, [down, down, SETTLED], VETH)
    assert got == VETH  # an outage is not "unlisted": the veth is not given up on


def test_disabled_metadata_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MetadataDisabled):
        run_wait(monkeypatch, [MetadataDisabled("metadata service disabled")], NIC)


def test_reads_never_outlast_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    got, clock, budgets = run_wait(monkeypatch, [LAGGING] * 5 + [SETTLED], NIC, timeout=4.0)
    assert got == NIC and len(budgets) == 6
    assert budgets[0] == pytest.approx(4.0)
    assert budgets == sorted(budgets, reverse=True)
    assert clock.sleeps[-1] == pytest.approx(1.5)  # the last pause is cut to the time left
    assert clock.now <= 4.0 + 0.05


def test_link_leaving_during_the_wait_ends_it(monkeypatch: pytest.MonkeyPatch) -> None:
    got, _, budgets = run_wait(monkeypatch, [LAGGING], NIC, relookup=lambda index: None)
    assert got is None and len(budgets) == 1


def test_renamed_link_is_followed_by_index(monkeypatch: pytest.MonkeyPatch) -> None:
    renamed = replace(NIC, name="ens6")
    got, _, _ = run_wait(monkeypatch, [LAGGING, SETTLED], NIC, relookup=lambda index: renamed)
    assert got == renamed


# ------------------------------------------------------------------ auto-detection in the wait

AUTO_CFG = Config(provider="auto")
NO_CLOUD = MetadataUnavailable("no cloud recognised: DMI sys_vendor 'QEMU'; probes: aws: timed out")


def run_detecting_wait(
    monkeypatch: pytest.MonkeyPatch, answers: list[Any], timeout: float = 10.0
) -> tuple[Optional[hotplug.Settled], FakeClock, list[float], list[Config]]:
    """Wait with provider "auto": detection answers `answers` in turn (an exception: nothing
    answered; a name: that cloud), each try costing its whole window on the fake clock;
    metadata, once read, lists NIC as settled.  (result, clock, windows tried, configs read)."""
    clock = FakeClock()
    windows: list[float] = []
    reads: list[Config] = []

    def choose(config: Config, *, window: float) -> tuple[str, str]:
        assert config.provider == "auto"
        windows.append(window)
        answer = answers[min(len(windows) - 1, len(answers) - 1)]
        if isinstance(answer, Exception):
            clock.now += window
            raise answer
        clock.now += 0.1
        return answer, "metadata probe: a token"

    def read(config: Config, left: float) -> Instance:
        reads.append(config)
        return SETTLED

    import eni_guest.providers.detect

    monkeypatch.setattr(eni_guest.providers.detect, "choose", choose)
    monkeypatch.setattr(hotplug, "_read", read)
    got = hotplug.wait_until_settled(
        AUTO_CFG,
        NIC,
        timeout,
        relookup=lambda i: NIC,
        clock=clock,
        sleep=clock.sleep,
        rng=lambda: 0.5,
    )
    return got, clock, windows, reads


def test_detection_is_retried_within_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """No answer at first (a slow guest, a service not up yet): detection is tried again with
    the metadata reads' backoff and a longer window, and once it answers the NIC is read and
    configured with the cloud it named, detection not repeated."""
    got, clock, windows, reads = run_detecting_wait(
        monkeypatch, [NO_CLOUD, NO_CLOUD, "aws"], timeout=60.0
    )
    assert got is not None and got.link == NIC
    assert got.config.provider == "aws" and got.config == replace(AUTO_CFG, provider="aws")
    assert windows == [3.0, 6.0, 12.0]  # the probes' window doubles on every try
    assert clock.sleeps == pytest.approx([0.15, 0.3])  # the reads' backoff (jitter 0.5)
    assert [c.provider for c in reads] == ["aws"]


def test_detection_windows_stop_at_the_cap_and_the_time_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    got, clock, windows, _ = run_detecting_wait(monkeypatch, [NO_CLOUD] * 5 + ["tencent"], 60.0)
    assert got is not None and got.config.provider == "tencent"
    assert windows[:5] == [3.0, 6.0, 12.0, 12.0, 12.0]
    assert windows[5] == pytest.approx(60.0 - sum(windows[:5]) - sum(clock.sleeps[:5]))
    assert windows[5] < 12.0  # cut to what is left of hotplug_timeout


def test_no_cloud_within_the_timeout_fails_saying_what_was_tried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(MetadataUnavailable) as info:
        run_detecting_wait(monkeypatch, [NO_CLOUD], timeout=20.0)  # 3 s + 6 s + the 10.5 s left
    message = str(info.value)
    assert "eth1 (0e:00:00:00:00:11): metadata still failing after 20 s (hotplug_timeout)" in (
        message
    )
    assert "nothing changed" in message
    assert "auto-detection tried 3 times, the last: no cloud recognised: DMI" in message
    assert "aws: timed out" in message


def test_a_short_timeout_still_gets_one_full_probe_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(MetadataUnavailable, match="auto-detection tried once, the last: no cl"):
        run_detecting_wait(monkeypatch, [NO_CLOUD], timeout=1.0)
    got, _, windows, _ = run_detecting_wait(monkeypatch, ["aws"], timeout=0.0)
    assert windows == [3.0] and got is not None


def test_detection_answering_at_once_costs_no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    got, clock, windows, reads = run_detecting_wait(monkeypatch, ["openstack"])
    assert got is not None and got.config.provider == "openstack"
    assert windows == [3.0] and clock.sleeps == [] and len(reads) == 1


def test_watch_retries_detection_until_it_answers(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The daemon resolves "auto" at each metadata read until detection answers (a failure is
    an outage, logged once, not a resolution kept), then keeps the answer for that config."""
    import eni_guest.providers.detect
    from eni_guest.watch import Watcher

    answers: list[Any] = [NO_CLOUD, "alibaba"]
    windows: list[float] = []

    def choose(config: Config, *, window: float) -> tuple[str, str]:
        windows.append(window)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer, "metadata probe: a token"

    monkeypatch.setattr(eni_guest.providers.detect, "choose", choose)
    watcher = Watcher(lambda: AUTO_CFG, AUTO_CFG)
    assert watcher._metadata(lambda c: c.provider) is None
    assert "metadata unavailable, changing nothing until it answers: no cloud" in caplog.text
    assert watcher._metadata(lambda c: c.provider) == "alibaba"
    assert watcher._metadata(lambda c: c.provider) == "alibaba"
    assert len(windows) == 2  # not detected again once it answered


def test_read_budget_caps_request_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Config] = []

    def read_instance(config: Config) -> tuple[Instance, int]:
        seen.append(config)
        return SETTLED, 1

    import eni_guest.agent

    monkeypatch.setattr(eni_guest.agent, "read_instance", read_instance)
    hotplug._read(CFG, 1.0)
    hotplug._read(CFG, 0.0)
    assert (seen[0].metadata_deadline, seen[0].metadata_timeout) == (1.0, 1.0)
    assert (seen[1].metadata_deadline, seen[1].metadata_timeout) == (0.5, 0.5)


# ------------------------------------------------------------------ settings


def test_hotplug_settings_are_validated() -> None:
    from eni_guest.config import load
    from eni_guest.errors import ConfigError

    got = load(None, environ={}, options={"hotplug_timeout": "5", "watch_interval": 2})
    assert (got.hotplug_timeout, got.watch_interval) == (5.0, 2.0)
    assert Config(hotplug_timeout=0).validate().hotplug_timeout == 0  # one read, no wait
    for bad in ({"hotplug_timeout": -1.0}, {"hotplug_timeout": 1e9}, {"watch_interval": 0.0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            Config(**bad).validate()


# ------------------------------------------------------------------ the daemon's bookkeeping


def watcher() -> tuple[Any, list[dict[str, Any]]]:
    """A Watcher that is never run, and what it posts to its worker."""
    from eni_guest.watch import Watcher

    w = Watcher(lambda: CFG, CFG)
    posted: list[dict[str, Any]] = []
    w.post = lambda **kw: posted.append(kw)  # type: ignore[method-assign]
    return w, posted


def test_daemon_passes_on_only_new_renamed_or_readdressed_nics() -> None:
    w, posted = watcher()
    known: dict[int, Link] = {}
    w._seen(known, ETH1, startup=True)  # present at start: the first cycle covers it
    w._seen(known, replace(ETH1, up=False, group=0))  # flags, group: our own changes
    assert posted == []
    w._seen(known, ETH2)  # a new NIC
    w._seen(known, replace(ETH2, name="ens6"))  # renamed
    w._seen(known, replace(ETH2, name="ens6", mac="0e:00:00:00:00:99"))  # new MAC
    assert [(p["appeared"].name, p["reconcile"]) for p in posted] == [
        ("eth2", False),
        ("ens6", False),
        ("ens6", True),  # its old MAC's ENI must be reconciled away at once
    ]
    posted.clear()
    w._seen(known, link(9, "br0", MAC0, "bridge", group=0))
    w._seen(known, link(10, "lo", "00:00:00:00:00:00", group=0))
    assert posted == []


def test_daemon_unplugs_only_when_an_eni_link_leaves() -> None:
    from eni_guest.watch import Watcher

    w = Watcher(lambda: CFG, CFG)
    w.post(left=link(7, "veth7", MAC1, "veth", group=0))
    assert not w._inbox.unplug and w._inbox.left == {7}
    w.post(appeared=link(8, "eth3", MAC2, group=0))
    w.post(left=ETH2)  # group 229: one of ours
    assert w._inbox.unplug and 8 in w._inbox.appeared
    w.post(left=link(8, "eth3", MAC2, group=0))  # appeared and left before the worker ran
    assert 8 not in w._inbox.appeared


def test_daemon_logs_an_outage_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    from eni_guest.watch import Watcher

    caplog.set_level(logging.DEBUG, logger="eni_guest")

    w = Watcher(lambda: CFG, CFG)

    def down(config: Config) -> None:
        raise MetadataUnavailable("metadata service: connection failed")

    results = [w._metadata(down) for _ in range(5)]
    results += [w._metadata(lambda c: "ok") for _ in range(3)]
    assert results == [None] * 5 + ["ok"] * 3
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "metadata unavailable, changing nothing until it answers: "
        "metadata service: connection failed",
        "metadata available again",
    ]


def test_daemon_reload_keeps_the_old_configuration_when_the_new_one_is_bad(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from eni_guest.errors import ConfigError
    from eni_guest.watch import Watcher

    configs: list[Any] = [ConfigError("config watch_interval = 0.0: must be > 0"), replace(CFG)]

    def load() -> Config:
        got = configs.pop(0)
        if isinstance(got, Exception):
            raise got
        return got

    caplog.set_level(logging.DEBUG, logger="eni_guest")
    w = Watcher(load, CFG)
    w.reload()
    assert w.config is CFG
    assert "configuration not reloaded, keeping the old one" in caplog.text
    w.reload()
    assert w.config is not CFG and "configuration reloaded" in caplog.text

"""The settle engine: one verdict per new NIC and metadata read, for `hotplug add` and `watch`."""

from __future__ import annotations

import logging
from dataclasses import replace
from ipaddress import ip_address, ip_network
from typing import Optional

import pytest

from eni_guest import settle
from eni_guest.config import Config
from eni_guest.errors import MetadataUnavailable
from eni_guest.model import Eni, Excluded, Instance, Unsettled
from eni_guest.state import Link
from eni_guest.watch import Watcher

MAC0, MAC1 = "0e:00:00:00:00:10", "0e:00:00:00:00:11"
NIC = Link(5, "eth1", MAC1, 0, False, 1500)
VETH = replace(NIC, name="veth1", kind="veth")
PRIMARY = Eni(MAC0, "eni-0", 0, 0, True, (ip_address("10.0.1.10"),), (ip_network("10.0.1.0/24"),))
SECOND = replace(PRIMARY, mac=MAC1, eni_id="eni-1", device_number=1, primary=False)
WITHOUT = Instance("aws", "i-1", MAC0, (PRIMARY,))
SETTLED = replace(WITHOUT, enis=(PRIMARY, SECOND))
LAGGING = replace(WITHOUT, unsettled=(Unsettled(MAC1, "device-number reads 0"),))
EXCLUDED = replace(WITHOUT, excluded=(Excluded(MAC1, "eni-1", "exclude_enis 'eni-1'"),))
DOWN = MetadataUnavailable("metadata service: connection failed")

# (what the read said, the link, time left) -> (action, words the operator reads, level)
CASES = [
    (SETTLED, NIC, 5.0, settle.CONFIGURE, "", logging.DEBUG),
    (SETTLED, NIC, 0.0, settle.CONFIGURE, "", logging.DEBUG),
    (EXCLUDED, NIC, 5.0, settle.IGNORE, "is excluded (exclude_enis 'eni-1')", logging.DEBUG),
    (WITHOUT, VETH, 5.0, settle.IGNORE, "is not an ENI of this instance: ignored", logging.DEBUG),
    (WITHOUT, NIC, 5.0, settle.WAIT, "", logging.DEBUG),
    (LAGGING, NIC, 5.0, settle.WAIT, "", logging.DEBUG),
    (None, NIC, 5.0, settle.WAIT, "", logging.DEBUG),
    (None, VETH, 5.0, settle.WAIT, "", logging.DEBUG),  # an outage is not "unlisted"
    (LAGGING, NIC, 0.0, settle.GIVE_UP, "not settled after 60 s", logging.ERROR),
    (None, NIC, 0.0, settle.GIVE_UP, "still failing after 60 s", logging.ERROR),
    (WITHOUT, NIC, 0.0, settle.GIVE_UP, "is not an ENI of this instance", logging.WARNING),
]


@pytest.mark.parametrize("instance,link,left,action,words,level", CASES)
def test_judge(
    instance: Optional[Instance], link: Link, left: float, action: str, words: str, level: int
) -> None:
    v = settle.judge(link, instance, error=DOWN, time_left=left, timeout=60.0)
    assert (v.action, v.level) == (action, level)
    assert words in v.why
    assert v.failed == (level == logging.ERROR)


def test_first_look_ignores_what_no_read_can_make_an_eni() -> None:
    config = Config(provider="aws", exclude_interfaces=("eth1",))
    assert settle.first_look(replace(NIC, kind="bridge"), Config(provider="aws")) is not None
    assert "matches exclude_interfaces 'eth1'" in settle.first_look(NIC, config).why  # type: ignore[union-attr]
    assert settle.first_look(NIC, Config(provider="aws")) is None


def test_the_daemon_gives_up_with_the_same_words_as_hotplug_add(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="eni_guest")
    clock = [100.0]
    w = Watcher(lambda: Config(provider="aws"), Config(provider="aws"), clock=lambda: clock[0])
    w._take(type(w._inbox)(appeared={NIC.index: NIC}))
    assert w._judge_waiting(LAGGING) is False and NIC.index in w._waiting
    clock[0] += 61.0
    assert w._judge_waiting(LAGGING) is False and w._waiting == {}
    v = settle.judge(NIC, LAGGING, time_left=0.0, timeout=60.0)
    assert v.why in caplog.text


def test_the_daemon_keeps_a_settled_link_waiting_until_its_reconcile_ran() -> None:
    w = Watcher(lambda: Config(provider="aws"), Config(provider="aws"), clock=lambda: 0.0)
    w._take(type(w._inbox)(appeared={NIC.index: NIC}))
    assert w._judge_waiting(SETTLED, configured=False) is True
    assert NIC.index in w._waiting  # a failed reconcile is retried by the next poll
    assert w._judge_waiting(SETTLED) is True and w._waiting == {}


def test_an_eni_whose_metadata_is_refused_is_waited_for_not_configured() -> None:
    refused = replace(WITHOUT, invalid=(Excluded(MAC1, "eni-1", "metadata x = 'y': bad"),))
    assert settle.classify(refused, MAC1) == (settle.UNSETTLED, "metadata x = 'y': bad")
    v = settle.judge(NIC, refused, time_left=0.0, timeout=60.0)
    assert v.action == settle.GIVE_UP and v.failed and "metadata x = 'y': bad" in v.why

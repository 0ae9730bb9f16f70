"""The watch daemon's memo (providers/memo.py): what cannot change is read once, everything
that can is read every time, and nothing kept survives a link event or a failed read.

Against the metadata simulator over real HTTP, with the scenario of test_provider_aws.py.
"""

from __future__ import annotations

import copy
from typing import Iterator

import pytest
from test_provider_aws import MAC_B, MAC_C, MAC_P, Imds, config, imds, read, scenario

from eni_guest.errors import MetadataUnavailable
from eni_guest.providers import memo

__all__ = ["imds"]  # the fixture, imported for these tests


@pytest.fixture(autouse=True)
def daemon_memo() -> Iterator[None]:
    memo.forget()
    memo.enable()
    yield
    memo.forget()
    memo._on = False


def ips(raw, mac: str) -> list[str]:
    return next(e.ipv4s for e in raw.enis if e.mac == mac)


def test_a_second_read_asks_only_for_what_can_change(imds: Imds) -> None:
    url = imds.start(scenario())
    first, sent = read(config(url))
    assert sent == 22  # as without the memo (test_provider_aws.py counts them)
    second, again = read(config(url))
    # no token, no `mac`; per ENI no device-number, interface-id, subnet CIDRs:
    # macs/ + P: listing, local-ipv4s, ipv4-associations/ and its one address (4)
    #        + B: listing, local-ipv4s (2) + C: listing, local-ipv4s, ipv6s (3)
    assert again == 10
    assert second == first


def test_an_ip_unassigned_is_seen_by_the_next_read(imds: Imds) -> None:
    url = imds.start(scenario())
    read(config(url))
    changed = copy.deepcopy(scenario())
    for e in changed["enis"]:
        if e["mac"] == MAC_P:
            e["local-ipv4s"] = ["10.0.1.10"]
    imds.write(changed)
    raw, _ = read(config(url))
    assert ips(raw, MAC_P) == ["10.0.1.10"]


def test_a_link_event_or_a_failed_read_forgets_everything(imds: Imds) -> None:
    url = imds.start(scenario())
    read(config(url))
    memo.forget()  # what the daemon does on a link event or a failed read
    _, sent = read(config(url))
    assert sent == 22


def test_a_detached_eni_is_forgotten_and_read_whole_when_it_comes_back(imds: Imds) -> None:
    url = imds.start(scenario())
    read(config(url))
    gone = copy.deepcopy(scenario())
    gone["enis"] = [e for e in gone["enis"] if e["mac"] != MAC_B]
    imds.write(gone)
    read(config(url))
    back = copy.deepcopy(scenario())
    for e in back["enis"]:
        if e["mac"] == MAC_B:
            e["device-number"] = 3  # attached again at another index
    imds.write(back)
    raw, _ = read(config(url))
    assert next(e.device_number for e in raw.enis if e.mac == MAC_B) == "3"
    assert ips(raw, MAC_C) == ["10.0.2.30"]


def test_a_failed_read_keeps_nothing_half_read(imds: Imds) -> None:
    """A read that fails raises (the run changes nothing); the next one is complete."""
    url = imds.start(scenario())
    imds.sim.stop()
    with pytest.raises(MetadataUnavailable):
        read(config(url, metadata_deadline=1.0, metadata_retries=0))
    assert memo.token((url,)) is None


def test_an_eni_not_settled_yet_is_read_whole_until_it_is(imds: Imds) -> None:
    """Right after an attach AWS lists device-number 0 and no IPs: nothing of it is kept."""
    lagging = copy.deepcopy(scenario())
    for e in lagging["enis"]:
        if e["mac"] == MAC_B:
            e["device-number"] = 0
            del e["local-ipv4s"]
    url = imds.start(lagging)
    read(config(url))
    imds.write(scenario())  # settled: device 1, its IP
    raw, _ = read(config(url))
    assert next(e.device_number for e in raw.enis if e.mac == MAC_B) == "1"

"""What one boot's runs share of their metadata reads (providers/memo.py, the boot's file).

Each "run" below is a new process as far as the memo goes (nothing in memory), reading the
metadata simulator over real HTTP with the scenario of test_provider_aws.py, and the kernel's
links as given: the ENIs' NICs are plain values here (their MACs are on no interface of this
machine).  What a user notices: a later run of the boot sends fewer requests and configures
exactly what a complete read would; an ENI attached again, a file someone else could have
written, another boot's file or an expired token never stand in for a fresh answer.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

import pytest
from test_provider_aws import (
    MAC_B,
    MAC_C,
    MAC_P,
    Imds,
    config,
    imds,
    scenario,
)

from eni_guest.agent import read_instance
from eni_guest.config import Config
from eni_guest.errors import MetadataUnavailable
from eni_guest.model import RawInstance
from eni_guest.providers import memo
from eni_guest.providers.aws import AwsProvider
from eni_guest.record import replace
from eni_guest.state import Link

__all__ = ["imds"]  # the fixture, imported for these tests

LINKS = [
    Link(index=2, name="eth0", mac=MAC_P, group=0, up=True, mtu=9001),
    Link(index=3, name="eth1", mac=MAC_B, group=0, up=True, mtu=9001),
    Link(index=4, name="eth2", mac=MAC_C, group=0, up=True, mtu=9001),
]
COMPLETE = 22  # requests of a complete read of this scenario (test_provider_aws.py)
LATER = 10  # macs/ + each ENI's listing and what can change (test_memo.py counts them)


def new_process() -> None:
    memo.forget()
    memo._on = False


def run(cfg: Config, links: Sequence[Link] = LINKS) -> tuple[RawInstance, int]:
    """One run's read as agent.read_instance does it: load, read, save."""
    new_process()
    memo.load(cfg, "aws", links)
    provider = AwsProvider(cfg)
    try:
        raw = provider.read()
    finally:
        provider.close()
    memo.save(cfg, "aws", links)
    return raw, provider.requests_sent


def boot_config(url: str, tmp_path: Path) -> Config:
    return config(url, lock_file=str(tmp_path / "run" / "eni-guest.lock"))


def device(raw: RawInstance, mac: str) -> Any:
    return next(e.device_number for e in raw.enis if e.mac == mac)


def test_a_later_run_of_the_boot_asks_only_for_what_can_change(imds: Imds, tmp_path: Path) -> None:
    cfg = boot_config(imds.start(scenario()), tmp_path)
    first, sent = run(cfg)
    assert sent == COMPLETE
    second, again = run(cfg)
    assert again == LATER  # no token, no `mac`, no device-number, interface-id, subnets
    assert second == first
    path = memo.path_for(cfg)
    assert path == tmp_path / "run" / "eni-guest.metadata"
    assert path.stat().st_mode & 0o777 == 0o600  # it holds the session token


def test_an_ip_unassigned_is_seen_by_the_next_run(imds: Imds, tmp_path: Path) -> None:
    cfg = boot_config(imds.start(scenario()), tmp_path)
    run(cfg)
    changed = scenario()
    for e in changed["enis"]:
        if e["mac"] == MAC_P:
            e["local-ipv4s"] = ["10.0.1.10"]
    imds.write(changed)
    raw, _ = run(cfg)
    assert next(e.ipv4s for e in raw.enis if e.mac == MAC_P) == ["10.0.1.10"]


def test_an_eni_attached_again_is_read_whole(imds: Imds, tmp_path: Path) -> None:
    """Detached and attached again: a new NIC (ifindex 7) and, in metadata, another device
    number; the kept one (1) must not choose its table."""
    cfg = boot_config(imds.start(scenario()), tmp_path)
    run(cfg)
    back = scenario()
    for e in back["enis"]:
        if e["mac"] == MAC_B:
            e["device-number"] = 3
    imds.write(back)
    new_nic = [
        LINKS[0],
        Link(index=7, name="eth1", mac=MAC_B, group=0, up=True, mtu=9001),
        LINKS[2],
    ]
    raw, sent = run(cfg, new_nic)
    assert device(raw, MAC_B) == "3"
    assert sent == LATER + 3  # B's device-number, interface-id and subnet asked again
    assert device(raw, MAC_C) == "2"


def test_an_eni_whose_nic_left_is_forgotten_by_the_unplug(imds: Imds, tmp_path: Path) -> None:
    """The unplug clean-up and the watch daemon drop a departed NIC's keys from the file, so
    even a NIC that comes back with its old ifindex (a namespace move can do that) is read
    whole."""
    cfg = boot_config(imds.start(scenario()), tmp_path)
    run(cfg)
    assert memo.forget_departed(cfg, [LINKS[0], LINKS[2]])  # what `hotplug remove` runs
    back = scenario()
    for e in back["enis"]:
        if e["mac"] == MAC_B:
            e["device-number"] = 3
    imds.write(back)
    raw, _ = run(cfg)  # same ifindex 3 as before
    assert device(raw, MAC_B) == "3"
    assert memo.forget_departed(cfg, None, LINKS[2])  # the daemon, when C's link leaves
    data = json.loads(memo.path_for(cfg).read_text())
    assert sorted(data["enis"]) == sorted([MAC_P, MAC_B])


def test_nothing_is_kept_for_an_eni_without_a_nic(imds: Imds, tmp_path: Path) -> None:
    cfg = boot_config(imds.start(scenario()), tmp_path)
    run(cfg, [LINKS[0]])
    _, sent = run(cfg, [LINKS[0]])
    assert sent == LATER + 3 + 4  # B's and C's fixed keys (C: an IPv6 subnet too): no NIC


def edit(path: Path, change: Any) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


UNTRUSTED = {
    "another boot": lambda p: edit(p, lambda d: d.update(boot_id="0" * 36)),
    "another metadata_url": lambda p: edit(p, lambda d: d.update(metadata_url="http://x")),
    "another provider": lambda p: edit(p, lambda d: d.update(provider="tencent")),
    "writable by others": lambda p: os.chmod(p, 0o666),
    "half written": lambda p: p.write_text(p.read_text()[:40]),
    "an extra field": lambda p: edit(p, lambda d: d.update(extra=1)),
    "an ifindex that is not a number": lambda p: edit(
        p, lambda d: d["enis"][MAC_B].update(ifindex="3")
    ),
    "a value that is not a string": lambda p: edit(
        p, lambda d: d["enis"][MAC_B]["values"].update(x=1)
    ),
    "a symbolic link": lambda p: (
        p.rename(p.with_name("elsewhere")),
        p.symlink_to(p.with_name("elsewhere")),
    ),
}


@pytest.mark.parametrize("why", list(UNTRUSTED))
def test_a_file_not_to_be_trusted_is_ignored(imds: Imds, tmp_path: Path, why: str) -> None:
    cfg = boot_config(imds.start(scenario()), tmp_path)
    run(cfg)
    path = memo.path_for(cfg)
    # what a wrong file would claim: another device number for B
    edit(path, lambda d: d["enis"][MAC_B]["values"].update(
        {k: "9" for k in d["enis"][MAC_B]["values"] if k.endswith("device-number")}
    ))  # fmt: skip
    UNTRUSTED[why](path)
    raw, sent = run(cfg)
    assert sent == COMPLETE
    assert device(raw, MAC_B) == "1"


def test_the_claimed_value_would_be_used_from_a_trusted_file(imds: Imds, tmp_path: Path) -> None:
    """The other side of the test above: the file's values are what a later run uses (so the
    test above would fail if an untrusted file were read)."""
    cfg = boot_config(imds.start(scenario()), tmp_path)
    run(cfg)
    edit(memo.path_for(cfg), lambda d: d["enis"][MAC_B]["values"].update(
        {k: "9" for k in d["enis"][MAC_B]["values"] if k.endswith("device-number")}
    ))  # fmt: skip
    os.chmod(memo.path_for(cfg), 0o600)
    raw, _ = run(cfg)
    assert device(raw, MAC_B) == "9"


def test_an_expired_token_is_not_used(imds: Imds, tmp_path: Path) -> None:
    cfg = boot_config(imds.start(scenario()), tmp_path)
    run(cfg)
    edit(memo.path_for(cfg), lambda d: d["token"].update(until=time.monotonic() - 1))
    os.chmod(memo.path_for(cfg), 0o600)
    _, sent = run(cfg)
    assert sent == LATER + 1  # a new token first


def test_a_dry_run_and_a_failed_read_write_nothing(imds: Imds, tmp_path: Path) -> None:
    url = imds.start(scenario())
    cfg = boot_config(url, tmp_path)
    new_process()
    instance, sent = read_instance(cfg, lambda: LINKS, dry_run=True)
    assert sent == COMPLETE and len(instance.enis) == 3
    assert not memo.path_for(cfg).exists()
    imds.sim.stop()
    new_process()
    with pytest.raises(MetadataUnavailable):
        read_instance(replace(cfg, metadata_deadline=1.0, metadata_retries=0), lambda: LINKS)
    assert not memo.path_for(cfg).exists()


def test_a_run_keeps_what_it_read_for_the_next(imds: Imds, tmp_path: Path) -> None:
    """agent.read_instance, as apply, hotplug and show call it."""
    cfg = boot_config(imds.start(scenario()), tmp_path)
    new_process()
    first, _ = read_instance(cfg, lambda: LINKS)
    new_process()
    second, sent = read_instance(cfg, lambda: LINKS)
    assert sent == LATER
    assert second.enis == first.enis


def test_a_vlan_on_the_nics_mac_does_not_stand_for_the_nic(imds: Imds, tmp_path: Path) -> None:
    """A VLAN (or bridge) on eth1 carries eth1's MAC: the keys stay bound to eth1's ifindex,
    whether the VLAN comes or goes."""
    cfg = boot_config(imds.start(scenario()), tmp_path)
    vlan = Link(index=9, name="eth1.7", mac=MAC_B, group=0, up=True, mtu=9001, kind="vlan")
    run(cfg, [*LINKS, vlan])
    _, with_vlan = run(cfg, [*LINKS, vlan])
    _, without = run(cfg, LINKS)
    assert with_vlan == without == LATER

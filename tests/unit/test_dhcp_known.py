"""JD Cloud's DHCP answers known without an exchange (dhcp_known.py): kept per NIC for the
boot, and the primary's read from the kernel.

Nothing here touches the host's /run or its boot id: the files go beside a lock file in
tmp_path and /proc/sys/kernel/random/boot_id is faked; the probe is a counting fake.
"""

from __future__ import annotations

import json
import os
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest

from eni_guest import dhcp_known
from eni_guest.config import Config
from eni_guest.providers import boot_cache
from eni_guest.state import Addr, Link, Route

BOOT = "3f1e2d4c-0000-4000-8000-000000000001"
ETH0 = Link(2, "eth0", "0e:00:00:00:00:01", 0, True, 1500)
ETH1 = Link(4, "eth1", "0e:00:00:00:00:02", 0, False, 1500)
ANSWER = ("10.0.2.0/24", "10.0.2.1")


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    boot = tmp_path / "boot_id"
    boot.write_text(BOOT + "\n")
    monkeypatch.setattr(boot_cache, "BOOT_ID", boot)
    return Config(lock_file=str(tmp_path / "run" / "eni-guest.lock")).validate()


def counting(asked: list[str]) -> dhcp_known.Probe:
    def probe(link: Link) -> tuple[str, str]:
        asked.append(link.name)
        return ANSWER

    return probe


def test_one_probe_per_nic_and_boot(cfg: Config) -> None:
    asked: list[str] = []
    probe = dhcp_known.cached(cfg, counting(asked))
    assert [probe(ETH1), probe(ETH1), probe(ETH1)] == [ANSWER] * 3
    assert asked == ["eth1"]
    path = Path(cfg.lock_file).with_suffix(".dhcp") / "0e-00-00-00-00-02"
    assert json.loads(path.read_text()) == {
        "boot_id": BOOT,
        "mac": ETH1.mac,
        "ifindex": 4,
        "subnet": "10.0.2.0/24",
        "gateway": "10.0.2.1",
    }
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_nic_that_came_back_another_boot_or_a_bad_file_is_asked_again(cfg: Config) -> None:
    asked: list[str] = []
    probe = dhcp_known.cached(cfg, counting(asked))
    probe(ETH1)
    path = Path(cfg.lock_file).with_suffix(".dhcp") / "0e-00-00-00-00-02"
    good = json.loads(path.read_text())
    back = Link(7, "eth1", ETH1.mac, 0, False, 1500)  # detached, attached again: new ifindex
    probe(back)
    assert asked == ["eth1", "eth1"]
    for bad in (
        {**good, "boot_id": "another"},
        {**good, "ifindex": True},
        {**good, "subnet": "10.0.2.0/33"},
        {**good, "gateway": "10.0.2"},
        {**good, "subnet": "0.0.0.0/0"},
        {**good, "extra": 1},
        [good],
    ):
        path.write_text(json.dumps(bad))
        assert dhcp_known.load(cfg, ETH1, BOOT) is None, bad
    path.write_text(json.dumps(good))
    assert dhcp_known.load(cfg, ETH1, BOOT) == ANSWER
    os.chmod(path, 0o666)  # writable by anyone: anyone could have planted it
    assert dhcp_known.load(cfg, ETH1, BOOT) is None
    os.chmod(path, 0o644)
    path.unlink()
    path.symlink_to(path.parent / "elsewhere")
    assert dhcp_known.load(cfg, ETH1, BOOT) is None
    assert not dhcp_known.store(cfg, ETH1, BOOT, ANSWER)  # nor written through a link


def test_unplug_forgets_the_nics_that_left(cfg: Config) -> None:
    probe = dhcp_known.cached(cfg, counting([]))
    probe(ETH1)
    probe(Link(5, "eth2", "0e:00:00:00:00:03", 0, False, 1500))
    where = Path(cfg.lock_file).with_suffix(".dhcp")
    gone = dhcp_known.forget_departed(cfg, [ETH0, ETH1])
    assert gone == [where / "0e-00-00-00-00-03"]
    assert sorted(p.name for p in where.iterdir()) == ["0e-00-00-00-00-02"]
    assert dhcp_known.forget_departed(cfg, [ETH0]) == [where / "0e-00-00-00-00-02"]


def test_the_primarys_lease_as_its_dhcp_client_configured_it() -> None:
    addrs = [
        Addr(2, ip_address("10.0.1.11"), 32, 229),  # a secondary IP of ours
        Addr(2, ip_address("10.0.1.10"), 24, None),  # the DHCP address
        Addr(4, ip_address("10.0.2.10"), 24, None),
    ]
    routes = [
        Route(4, 254, ip_network("10.0.1.0/24"), 2),
        Route(4, 254, ip_network("0.0.0.0/0"), 4, ip_address("10.0.2.1")),
        Route(4, 254, ip_network("0.0.0.0/0"), 2, ip_address("10.0.1.1")),
    ]
    assert dhcp_known.from_kernel(addrs, routes, ETH0, "10.0.1.10") == ("10.0.1.0/24", "10.0.1.1")
    assert dhcp_known.from_kernel(addrs, routes, ETH0, '"10.0.1.10"') is not None
    assert dhcp_known.from_kernel(addrs, routes, ETH0, "10.0.1.11") is None  # only a /32
    assert dhcp_known.from_kernel(addrs, routes[:2], ETH0, "10.0.1.10") is None  # no default
    assert dhcp_known.from_kernel(addrs, routes, ETH0, "not an ip") is None

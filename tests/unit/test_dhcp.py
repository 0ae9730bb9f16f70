"""The DHCP probe's pure parts and its contract with the JD Cloud provider.

The exchange itself needs a NIC and a DHCP server: tests/e2e/test_clouds.py runs it against
dnsmasq in a simulated VPC.  Nothing here opens a raw socket or touches an interface.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from eni_guest import dhcp
from eni_guest.agent import read_from
from eni_guest.config import Config
from eni_guest.errors import MetadataUnavailable, NotPermitted
from eni_guest.providers import _make
from eni_guest.providers.jdcloud import JdcloudProvider
from eni_guest.state import Link
from eni_guest_lab.sim.server import MetadataSimulator

PRIMARY, SECOND = "0e:00:00:00:00:c3", "0e:00:00:00:00:b2"


def lease(**kw: Any) -> SimpleNamespace:
    values = {"ip": "10.0.2.30", "subnet_mask": "255.255.240.0", "routers": ["10.0.0.1"]}
    values.update(kw)
    return SimpleNamespace(**values)


def test_subnet_and_router_from_a_lease() -> None:
    assert dhcp._subnet_and_router(lease(), "eth1", SECOND) == ("10.0.0.0/20", "10.0.0.1")


class NoMask:
    ip = "10.0.2.30"
    routers = ["10.0.2.1"]

    @property
    def subnet_mask(self) -> str:
        raise LookupError("Lease does not set <Option.SUBNET_MASK: 1>")


@pytest.mark.parametrize(
    "bad",
    [NoMask(), lease(routers=[]), lease(subnet_mask="255.0.255.0"), lease(ip="fe80::1")],
)
def test_an_unusable_lease_is_metadata_unavailable(bad: Any) -> None:
    with pytest.raises(MetadataUnavailable) as info:
        dhcp._subnet_and_router(bad, "eth1", SECOND)
    assert "eth1" in str(info.value) and "\n" not in str(info.value)


def test_probe_needs_root_and_says_what_else_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dhcp.os, "geteuid", lambda: 1000)
    probe = dhcp.make_probe(Config(static_file="/etc/eni-guest/enis.toml"))
    with pytest.raises(NotPermitted) as info:
        probe(SECOND)
    assert "root" in str(info.value) and "/etc/eni-guest/enis.toml" in str(info.value)


def test_retransmissions_fit_in_the_timeout() -> None:
    waits = dhcp._retries()
    assert [next(waits) for _ in range(5)] == [0.5, 1.0, 2.0, 2.0, 2.0]


@pytest.fixture
def jd(tmp_path: Path):
    data = {
        "provider": "jdcloud",
        "primary_mac": PRIMARY,
        "enis": [
            {
                "mac": PRIMARY,
                "device-number": 0,
                "local-ipv4s": ["10.0.1.10"],
                "subnet-ipv4-cidr-block": "10.0.1.0/24",
            },
            {
                "mac": SECOND,
                "device-number": 1,
                "local-ipv4s": ["10.0.2.30"],
                "subnet-ipv4-cidr-block": "10.0.2.0/24",
            },
        ],
    }
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(data))
    sim = MetadataSimulator(path, listen=["127.0.0.1:0"])
    ((host, port),) = sim.start()
    cfg = Config(
        provider="jdcloud",
        metadata_url=f"http://{host}:{port}",
        metadata_retries=0,
        static_file=str(tmp_path / "absent.toml"),
        lock_file=str(tmp_path / "eni-guest.lock"),  # its DHCP answers go beside it, not /run
    ).validate()
    yield cfg
    sim.stop()


def test_an_eni_without_its_nic_is_left_unsettled(jd: Config) -> None:
    asked: list[str] = []

    def probe(link: Link) -> tuple[str, str]:
        asked.append(link.mac)
        return "10.0.1.0/24", "10.0.1.1"

    provider = JdcloudProvider(jd, dhcp_probe=probe)
    try:  # only the primary's NIC is in the VM yet
        instance = read_from(provider, jd, lambda: [Link(2, "eth0", PRIMARY, 0, True, 1500)])
    finally:
        provider.close()
    assert asked == [PRIMARY]
    assert [e.mac for e in instance.enis] == [PRIMARY]
    assert [(u.mac, u.reason) for u in instance.unsettled] == [
        (SECOND, f"dhcp: no network interface has MAC {SECOND} (not attached yet)")
    ]


def test_a_probe_that_gets_no_answer_fails_the_read(jd: Config) -> None:
    def probe(link: Link) -> tuple[str, str]:
        raise MetadataUnavailable("dhcp: no answer on eth0 within 5 s")

    provider = JdcloudProvider(jd, dhcp_probe=probe)
    try:
        with pytest.raises(MetadataUnavailable, match="no answer"):
            read_from(provider, jd, lambda: [Link(2, "eth0", PRIMARY, 0, True, 1500)])
    finally:
        provider.close()


def test_get_provider_gives_jdcloud_the_dhcp_probe(jd: Config) -> None:
    provider: Any = _make("jdcloud", jd)
    try:
        assert provider.dhcp_probe is not None
        assert provider.dhcp_probe.__qualname__.startswith("make_probe")
    finally:
        provider.close()


class NoKernel:
    """Stands in for kernel.Kernel: the probes below never change a link (theirs are up)."""

    def __init__(self, config: Config) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def exchanges(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The timeout of every DHCP exchange the probe starts (each answers at once)."""
    started: list[float] = []

    def fake_lease(ifname: str, timeout: float) -> SimpleNamespace:
        started.append(timeout)
        return lease()

    monkeypatch.setattr(dhcp, "_lease", fake_lease)
    monkeypatch.setattr("eni_guest.kernel.Kernel", NoKernel)
    return started


UP = Link(3, "eth1", SECOND, 0, True, 1500)
ANOTHER = Link(4, "eth2", "0e:00:00:00:00:c3", 0, True, 1500)


def test_the_probe_waits_no_longer_than_the_metadata_deadline(exchanges: list[float]) -> None:
    plenty = dhcp.make_probe(Config(), time_left=lambda: 60.0)
    short = dhcp.make_probe(Config(), time_left=lambda: 1.25)
    assert plenty(UP) == short(UP) == ("10.0.0.0/20", "10.0.0.1")
    assert exchanges == [dhcp.DHCP_TIMEOUT, 1.25]


def test_the_probe_asks_nothing_once_the_deadline_passed(exchanges: list[float]) -> None:
    late = dhcp.make_probe(Config(metadata_deadline=15.0), time_left=lambda: -0.1)
    with pytest.raises(MetadataUnavailable) as info:
        late(UP)
    assert str(info.value) == (
        f"dhcp: the metadata deadline (15 s) passed before eth1 ({SECOND}) could be asked"
    )
    assert exchanges == []


def test_jdclouds_probe_shares_the_metadata_clients_deadline(
    jd: Config, exchanges: list[float]
) -> None:
    provider: Any = _make("jdcloud", jd)
    try:
        provider.service.http.deadline_at = time.monotonic() + 2.0
        provider.dhcp_probe(UP)
        provider.service.http.deadline_at = time.monotonic() - 1.0
        with pytest.raises(MetadataUnavailable, match="deadline"):
            provider.dhcp_probe(ANOTHER)  # UP's answer is kept for the boot: no exchange
    finally:
        provider.close()
    assert len(exchanges) == 1 and 1.5 < exchanges[0] <= 2.0


def test_importing_dhcp_is_cheap() -> None:
    """Every run imports the providers; only JD Cloud may pay for pyroute2's DHCP client."""
    code = "import sys, eni_guest.dhcp; print('pyroute2' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"

"""The AWS provider against the metadata simulator, over real HTTP on 127.0.0.1.

The simulator runs in-process (its own threads) on port 0; every test writes its scenario to
tmp_path.  The CLI tests at the end run `eni-guest apply --dry-run` in a subprocess against the
same simulator: dry-run only reads the kernel, and the scenario's MACs (0e:ee:...) exist on no
interface of this machine, so nothing here can change the host's network.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import replace
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from eni_guest.config import Config
from eni_guest.errors import (
    EXIT_METADATA,
    MetadataDisabled,
    MetadataUnavailable,
)
from eni_guest.model import Instance, RawInstance, build_instance
from eni_guest.providers import registry
from eni_guest.providers.aws import AwsProvider
from eni_guest_lab.sim.server import MetadataSimulator
from eni_guest_lab.sim.tree import MACS_DIR

# MACs sort opposite to device numbers: P (device 0) > B (1) > C (2).
MAC_P, MAC_B, MAC_C = "0e:ee:00:00:00:09", "0e:ee:00:00:00:05", "0e:ee:00:00:00:01"
MAC_NEW = "0e:ee:00:00:00:07"
DEADLINE = 3.0


def eni(mac: str, device: int, ipv4s: Optional[list] = None, subnet: str = "", **keys: Any):
    data: dict[str, Any] = {"mac": mac, "device-number": device}
    if ipv4s:
        data["local-ipv4s"] = ipv4s
    if subnet:
        data["subnet-ipv4-cidr-block"] = subnet
    data.update(keys)
    return data


BASE: dict[str, Any] = {
    "provider": "aws",
    "primary_mac": MAC_P,
    # file order differs from MAC order and from device order
    "enis": [
        eni(
            MAC_C,
            2,
            ["10.0.2.30"],
            "10.0.2.0/24",
            **{"ipv6s": ["2001:db8:0:2::30"], "subnet-ipv6-cidr-blocks": ["2001:db8:0:2::/64"]},
        ),
        eni(
            MAC_P,
            0,
            ["10.0.1.10", "10.0.1.11"],
            "10.0.1.0/24",
            **{"ipv4-associations": {"203.0.113.10": "10.0.1.11"}},
        ),
        eni(MAC_B, 1, ["10.0.1.20"], "10.0.1.0/24"),
    ],
    "control": {"imdsv2": "required"},
}


def scenario(**control: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["control"].update(control)
    return data


def eni_path(mac: str, key: str = "") -> str:
    return f"{MACS_DIR}/{mac}/{key}".rstrip("/")


class Imds:
    """A running simulator and the scenario file behind it."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "scenario.json"
        self.sims: list[MetadataSimulator] = []
        self.sim: Optional[MetadataSimulator] = None
        self.url = ""

    def write(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_name("scenario.json.new")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.path)  # the simulator notices the new file on the next request

    def start(self, data: dict[str, Any]) -> str:
        self.write(data)
        self.sim = MetadataSimulator(self.path, listen=[("127.0.0.1", 0)])
        self.sims.append(self.sim)
        ((host, port),) = self.sim.start()
        self.url = f"http://{host}:{port}"
        return self.url

    def stats(self, at_least: int = 0) -> dict[str, Any]:
        # The simulator counts a request after answering it: wait for the last one to land.
        assert self.sim is not None
        deadline = time.monotonic() + 3
        while self.sim.stats()["requests"] < at_least and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.sim.stats()

    def stop(self) -> None:
        for sim in self.sims:
            sim.stop()


@pytest.fixture
def imds(tmp_path: Path) -> Iterator[Imds]:
    server = Imds(tmp_path)
    yield server
    server.stop()


def config(url: str, **kw: Any) -> Config:
    values: dict[str, Any] = {
        "metadata_url": url,
        "metadata_timeout": 0.5,
        "metadata_deadline": DEADLINE,
        "metadata_retries": 2,
    }
    values.update(kw)
    return Config(**values).validate()


def read(cfg: Config) -> tuple[RawInstance, int]:
    provider = AwsProvider(cfg)
    try:
        return provider.read(), provider.requests_sent
    finally:
        provider.close()


def read_instance(url: str, **kw: Any) -> Instance:
    raw, _ = read(config(url, **kw))
    return build_instance(raw)


def fails(cfg: Config, error: type = MetadataUnavailable) -> tuple[str, float, int]:
    provider = AwsProvider(cfg)
    start = time.monotonic()
    try:
        with pytest.raises(error) as err:
            provider.read()
    finally:
        provider.close()
    return str(err.value), time.monotonic() - start, provider.requests_sent


# ---------------------------------------------------------------- real-world shapes


def test_reads_enis_whose_macs_sort_opposite_to_device_numbers(imds: Imds) -> None:
    inst = read_instance(imds.start(scenario()))
    assert inst.complete and inst.primary_mac == MAC_P
    assert [(e.mac, e.device_number, e.primary) for e in inst.enis] == [
        (MAC_P, 0, True),
        (MAC_B, 1, False),
        (MAC_C, 2, False),
    ]
    p, b, c = inst.enis
    assert p.ipv4s == (ip_address("10.0.1.10"), ip_address("10.0.1.11"))
    assert b.ipv4s == (ip_address("10.0.1.20"),)
    assert b.ipv4_subnets == (ip_network("10.0.1.0/24"),)
    assert c.ipv4s == (ip_address("10.0.2.30"),)
    assert c.ipv4_gateway == ip_address("10.0.2.1")
    assert c.ipv6s == (ip_address("2001:db8:0:2::30"),)
    assert c.ipv6_subnets == (ip_network("2001:db8:0:2::/64"),)
    # the simulator's interface ids are derived from the MAC: ids belong to the right ENI
    assert c.eni_id.endswith(MAC_C.replace(":", ""))


def test_elastic_ip_mapping_is_read(imds: Imds) -> None:
    inst = read_instance(imds.start(scenario()))
    p = inst.by_mac(MAC_P)
    assert p is not None
    assert p.elastic_ip(ip_address("10.0.1.11")) == ip_address("203.0.113.10")
    assert p.elastic_ip(ip_address("10.0.1.10")) is None


def test_requests_per_run_are_what_the_docstring_promises(imds: Imds) -> None:
    url = imds.start(scenario())
    raw, sent = read(config(url))
    build_instance(raw)
    # "a token, the primary MAC, the MAC listing, then per ENI its key listing and only the
    # keys it lists":
    #   PUT token + GET mac + GET macs/                                            =  3
    #   P: listing, device-number, interface-id, local-ipv4s, subnet-ipv4-cidr-block,
    #      ipv4-associations/ and ipv4-associations/203.0.113.10                   =  7
    #   B: listing, device-number, interface-id, local-ipv4s, subnet-ipv4-cidr-block =  5
    #   C: as B, plus ipv6s and subnet-ipv6-cidr-blocks                             =  7
    # Keys it does not need (vpc-id, owner-id, security-group-ids, ...) are not asked for.
    assert sent == 22
    stats = imds.stats(at_least=22)
    assert stats["requests"] == 22
    assert stats["by_method"] == {"PUT": 1, "GET": 21}  # one token per run
    assert stats["by_status"] == {"200": 22}  # no 401 (never a GET without token), no 404
    assert not [p for p in stats["by_path"] if "vpc-id" in p or "security-group" in p]


def test_just_attached_eni_is_unsettled_until_it_settles(imds: Imds) -> None:
    data = scenario()
    lag = 1.0
    data["enis"].append(eni(MAC_NEW, 3, ["10.0.3.40"], "10.0.3.0/24", lag=lag))
    started = time.monotonic()
    url = imds.start(data)  # the lag starts when the simulator first sees the MAC
    inst = read_instance(url)
    assert time.monotonic() - started < lag, "test machine too slow for the lag window"
    assert not inst.complete
    assert [u.mac for u in inst.unsettled] == [MAC_NEW]
    assert [e.mac for e in inst.enis] == [MAC_P, MAC_B, MAC_C]  # the others are usable
    time.sleep(max(0.0, lag + 0.1 - (time.monotonic() - started)))
    settled = read_instance(url)
    assert settled.complete
    new = settled.by_mac(MAC_NEW)
    assert new is not None and new.device_number == 3
    assert new.ipv4s == (ip_address("10.0.3.40"),)


def test_ipv6_only_eni_lists_no_local_ipv4s(imds: Imds) -> None:
    data = scenario()
    data["enis"][0] = eni(
        MAC_C,
        2,
        **{"ipv6s": ["2001:db8:0:2::30"], "subnet-ipv6-cidr-blocks": ["2001:db8:0:2::/64"]},
    )
    inst = read_instance(imds.start(data))
    c = inst.by_mac(MAC_C)
    assert inst.complete and c is not None
    assert c.ipv4s == () and c.ipv6s == (ip_address("2001:db8:0:2::30"),)


def test_listed_keys_answering_404_are_absent_not_errors(imds: Imds) -> None:
    # An IPv6-only ENI answering 404 for local-ipv4s, and 404 for ipv4-prefix (what AWS
    # answers when no prefix is delegated), even though the ENI's listing names both.
    data = scenario()
    data["enis"][0] = eni(
        MAC_C,
        2,
        **{"ipv6s": ["2001:db8:0:2::30"], "subnet-ipv6-cidr-blocks": ["2001:db8:0:2::/64"]},
    )
    data["paths"] = {
        eni_path(MAC_C): "device-number\ninterface-id\nipv4-prefix\nipv6s\nlocal-ipv4s\n"
        "mac\nsubnet-ipv6-cidr-blocks\n",
    }
    url = imds.start(data)
    raw, sent = read(config(url))
    inst = build_instance(raw)
    c = inst.by_mac(MAC_C)
    assert inst.complete and c is not None
    assert c.ipv4s == () and c.ipv4_prefixes == ()
    assert c.ipv6s == (ip_address("2001:db8:0:2::30"),)
    stats = imds.stats(at_least=sent)
    assert stats["by_status"]["404"] == 2
    assert stats["by_path"]["/" + eni_path(MAC_C, "local-ipv4s")] == 1  # a 404 is not retried


def test_ipv4_prefix_is_read_when_delegated(imds: Imds) -> None:
    data = scenario()
    data["enis"][2]["ipv4-prefix"] = ["10.0.1.48/28"]
    b = read_instance(imds.start(data)).by_mac(MAC_B)
    assert b is not None and b.ipv4_prefixes == (ip_network("10.0.1.48/28"),)


@pytest.mark.parametrize("spelling", ["network-card", "network-card-index"])
def test_network_card_in_either_spelling(imds: Imds, spelling: str) -> None:
    data = scenario()
    data["paths"] = {eni_path(MAC_B, spelling): "1"}
    inst = read_instance(imds.start(data))
    b = inst.by_mac(MAC_B)
    assert b is not None
    assert (b.network_card, b.device_number, b.slot) == (1, 1, 65)
    assert [e.mac for e in inst.enis] == [MAC_P, MAC_C, MAC_B]  # slot 65 sorts last


def test_eni_listed_but_gone_makes_the_read_incomplete(imds: Imds) -> None:
    # Listed in macs/, but its directory is already gone (detaching between two requests).
    data = scenario()
    data["paths"] = {MACS_DIR: f"{MAC_C}/\n{MAC_P}/\n{MAC_B}/\n{MAC_NEW}/\n"}
    inst = read_instance(imds.start(data))
    assert not inst.complete
    assert [u.mac for u in inst.unsettled] == [MAC_NEW]


# ---------------------------------------------------------------- IMDSv2 tokens


def test_expired_token_is_renewed_and_the_request_retried_once(imds: Imds) -> None:
    data = scenario()
    url = imds.start(data)
    provider = AwsProvider(config(url))
    try:
        assert provider.get("mac").strip() == MAC_P  # a token is issued and used
        time.sleep(0.01)
        data["control"]["expire_tokens_before"] = time.time()  # revokes that token
        imds.write(data)
        raw = provider.read()
        sent = provider.requests_sent
    finally:
        provider.close()
    assert build_instance(raw).complete
    stats = imds.stats(at_least=sent)
    assert stats["requests"] == sent
    assert stats["by_method"]["PUT"] == 2
    assert stats["by_status"]["401"] == 1


def test_token_that_is_never_accepted_gives_up_after_one_renewal(imds: Imds) -> None:
    url = imds.start(scenario(expire_tokens_before=time.time() + 3600))
    message, elapsed, sent = fails(config(url))
    assert "401" in message
    stats = imds.stats(at_least=sent)
    # PUT, GET (401), PUT, GET (401): no loop
    assert sent == 4 and stats["requests"] == 4
    assert stats["by_method"] == {"PUT": 2, "GET": 2}
    assert elapsed < 1


def test_token_call_refused_means_metadata_disabled(imds: Imds) -> None:
    url = imds.start(scenario(disabled=True))
    message, _, sent = fails(config(url), MetadataDisabled)
    assert "disabled" in message
    assert sent == 1  # no retry, no GET


def test_403_on_a_get_means_metadata_disabled(imds: Imds) -> None:
    url = imds.start(scenario(fail=403, fail_paths=["/latest/meta-data/mac"]))
    message, _, _ = fails(config(url), MetadataDisabled)
    assert "disabled" in message


def test_imdsv1_is_never_used_even_when_optional(imds: Imds) -> None:
    url = imds.start(scenario(imdsv2="optional"))
    raw, sent = read(config(url))
    assert build_instance(raw).complete
    stats = imds.stats(at_least=sent)
    assert stats["by_method"]["PUT"] == 1


# ---------------------------------------------------------------- a misbehaving service


def test_redirect_is_not_followed(imds: Imds) -> None:
    url = imds.start(scenario(redirect_paths=["/latest/meta-data/mac"]))
    message, _, sent = fails(config(url))
    assert "redirect" in message
    stats = imds.stats(at_least=sent)
    assert stats["by_path"]["/latest/meta-data/mac"] == 1  # neither followed nor retried


def test_oversize_body_is_rejected(imds: Imds) -> None:
    url = imds.start(scenario(oversize_paths=["/" + MACS_DIR + "/"]))
    message, elapsed, _ = fails(config(url))
    assert "bytes" in message
    assert elapsed < DEADLINE


def test_500_on_one_path_fails_after_bounded_retries(imds: Imds) -> None:
    path = "/" + eni_path(MAC_B, "local-ipv4s")
    url = imds.start(scenario(fail=500, fail_paths=[path]))
    message, elapsed, sent = fails(config(url))
    assert path in message and "500" in message
    assert elapsed < DEADLINE + 1
    stats = imds.stats(at_least=sent)
    assert stats["by_path"][path] == 3  # metadata_retries = 2: three tries in all
    assert stats["by_status"]["500"] == 3


def test_5xx_everywhere_stops_at_the_deadline(imds: Imds) -> None:
    url = imds.start(scenario(fail=503))
    cfg = config(url, metadata_retries=10, metadata_deadline=1.0)
    _, elapsed, _ = fails(cfg)
    assert elapsed < 1.0 + 1


def test_connection_reset_fails_after_bounded_retries(imds: Imds) -> None:
    path = "/" + eni_path(MAC_C)
    url = imds.start(scenario(fail="reset", fail_paths=[path, path + "/"]))
    _, elapsed, _ = fails(config(url))
    assert elapsed < DEADLINE + 1


def test_slow_metadata_beyond_the_timeout_is_unavailable(imds: Imds) -> None:
    url = imds.start(scenario(delay=2.0))
    message, elapsed, _ = fails(config(url))
    assert "timed out" in message
    assert elapsed < DEADLINE + 1


def test_nothing_listening_is_unavailable(unused_port: int) -> None:
    message, elapsed, _ = fails(config(f"http://127.0.0.1:{unused_port}"))
    assert "connection failed" in message
    assert elapsed < DEADLINE + 1


@pytest.fixture
def unused_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # connecting now gets "connection refused"
    return port


def test_falls_back_to_the_second_endpoint(
    imds: Imds, unused_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = imds.start(scenario())
    two = replace(registry.cloud("aws"), endpoints=(f"http://127.0.0.1:{unused_port}", url))
    monkeypatch.setitem(registry.BY_NAME, "aws", two)
    cfg = Config(metadata_timeout=0.5, metadata_deadline=DEADLINE, metadata_retries=2)
    start = time.monotonic()
    raw, sent = read(cfg)
    assert time.monotonic() - start < DEADLINE
    assert build_instance(raw).complete
    stats = imds.stats(at_least=sent - 3)
    assert stats["requests"] == sent - 3  # three refused tries of the first endpoint
    assert stats["by_method"]["PUT"] == 1  # and then everything on the second one


# ---------------------------------------------------------------- through the command line


def host_network() -> dict[str, Any]:
    """Everything of this namespace's network a run could change, for before/after checks."""

    def ip(*args: str) -> Any:
        out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True)
        return json.loads(out.stdout or "[]")

    addrs = ip("addr")
    for link in addrs:
        for a in link.get("addr_info", []):
            a.pop("valid_life_time", None)
            a.pop("preferred_life_time", None)
    return {
        "addr": [
            (x["ifname"], x.get("address"), x.get("group"), x.get("mtu"), x.get("addr_info"))
            for x in addrs
        ],
        "rule4": ip("-4", "rule"),
        "rule6": ip("-6", "rule"),
        "route4": ip("-4", "route", "show", "table", "all"),
        "route6": ip("-6", "route", "show", "table", "all"),
    }


def run_cli(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess:
    (tmp_path / "empty.toml").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENI_GUEST_")}
    env.update({f"ENI_GUEST_{k.upper()}": v for k, v in settings.items()})
    env["ENI_GUEST_LOCK_FILE"] = str(tmp_path / "lock")
    env["ENI_GUEST_CONFIG"] = str(tmp_path / "empty.toml")
    env["ENI_GUEST_PROVIDER"] = "aws"  # the default is auto: these tests count AWS requests
    return subprocess.run(
        [sys.executable, "-m", "eni_guest", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@pytest.fixture
def foreign_macs() -> None:
    """The scenario's MACs must be on no interface here, or a dry-run would plan for them."""
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    assert "0e:ee:00:00:00" not in out.stdout.lower()


scenario_macs_not_here = pytest.mark.usefixtures("foreign_macs")


@scenario_macs_not_here
def test_cli_dry_run_prints_json_and_changes_nothing(imds: Imds, tmp_path: Path) -> None:
    assert shutil.which("ip"), "the before/after check needs iproute2"
    url = imds.start(scenario())
    before = host_network()
    proc = run_cli(tmp_path, "apply", "--dry-run", "--metadata-url", url, "--json")
    after = host_network()
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["dry_run"] is True
    assert isinstance(out["changes"], list)
    assert all(isinstance(c, str) for c in out["changes"])
    for mac in (MAC_P, MAC_B, MAC_C):  # no NIC here carries them: each one is reported
        assert any(mac in note and "no interface" in note for note in out["notes"])
    assert out["metadata_requests"] == 22
    assert imds.stats(at_least=22)["requests"] == 22
    assert out["netlink_requests"] == 0
    assert after == before
    assert not (tmp_path / "lock").exists()  # a dry-run does not even take the lock


@scenario_macs_not_here
def test_cli_bad_metadata_exits_3_with_one_line(imds: Imds, tmp_path: Path) -> None:
    data = scenario()
    data["paths"] = {eni_path(MAC_B, "local-ipv4s"): "10.0.5.300"}
    url = imds.start(data)
    before = host_network()
    proc = run_cli(tmp_path, "apply", "--dry-run", "--metadata-url", url)
    assert host_network() == before
    assert proc.returncode == EXIT_METADATA
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"{MAC_B}/local-ipv4s" in lines[0]
    assert "10.0.5.300" in lines[0]


@scenario_macs_not_here
def test_cli_metadata_unreachable_exits_3(tmp_path: Path, unused_port: int) -> None:
    proc = run_cli(
        tmp_path, "apply", "--dry-run", "--metadata-url", f"http://127.0.0.1:{unused_port}"
    )
    assert proc.returncode == EXIT_METADATA
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr

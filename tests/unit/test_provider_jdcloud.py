"""JD Cloud provider against fixed documents over real HTTP on 127.0.0.1.

Documents follow JD Cloud's metadata reference: directory listings as JSON arrays, values as
JSON strings, ENIs under `network/<n>/` from 1 (the primary).  No prefix, gateway or
secondary IP is published: they come from the static ENI file or an injected DHCP probe.
"""

from __future__ import annotations

import json
from dataclasses import replace
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any, Optional

import pytest
from cloud_http import CloudServer, Routes
from refusal import refusal

from eni_guest.agent import read_from, read_instance
from eni_guest.config import Config, load
from eni_guest.errors import MetadataInvalid, MetadataUnavailable
from eni_guest.model import Instance
from eni_guest.providers.jdcloud import JdcloudProvider
from eni_guest.state import Link

META = "/metadata/latest/"
MAC_1 = "fa:16:3e:8f:00:09"  # primary (network/1/); sorts after MAC_2
MAC_2 = "fa:16:3e:11:00:02"
KEYS = [
    "local-ipv4",
    "floating-ipv4",
    "mac",
    "network-interface-id",
    "subnet-id",
    "security-group-ids",
]


def q(value: str) -> str:
    return json.dumps(value)


def routes(enis: list[dict[str, Any]], quoted: bool = True) -> Routes:
    out: Routes = {
        META: (200, '["attributes/","network/","placement/","image/","instance-id"]'),
        META + "network/": (200, json.dumps([f"{n}/" for n in range(1, len(enis) + 1)])),
        META + "instance-id": (200, q("i-abcdefg123")),
    }
    for n, e in enumerate(enis, 1):
        d = f"{META}network/{n}/"
        keys = [k for k in KEYS if k in e or k in ("subnet-id", "security-group-ids")]
        out[d] = (200, json.dumps(keys))
        for key, value in e.items():
            out[d + key] = (200, q(value) if quoted else value)
        out[d + "subnet-id"] = (200, q("subnet-1vfnyxxxxx"))
        out[d + "security-group-ids"] = (200, '["sg-wx0ivnxxxx","sg-jh8ebvxxxx"]')
    return out


def two_enis() -> list[dict[str, Any]]:
    return [
        {
            "mac": MAC_1,
            "local-ipv4": "10.0.128.6",
            "network-interface-id": "port-a2uv000001",
            "floating-ipv4": "114.67.10.20",
        },
        {"mac": MAC_2, "local-ipv4": "10.0.160.8", "network-interface-id": "port-b7kq000002"},
    ]


OVERLAY = f"""
[[eni]]
mac = "{MAC_1.upper()}"
subnet = "10.0.128.0/20"
gateway = "10.0.128.1"

[[eni]]
mac = "02:00:00:00:00:99"
id = "port-b7kq000002"   # matched by ENI id: this MAC is not the one JD lists
ipv4s = ["10.0.160.9", "10.0.160.10"]
subnet = "10.0.160.0/20"
gateway = "10.0.160.1"
"""


def config(server: CloudServer, static: Path) -> Config:
    return Config(
        provider="jdcloud",
        metadata_url=server.url,
        metadata_timeout=1.0,
        metadata_deadline=5.0,
        metadata_retries=0,
        static_file=str(static),
    ).validate()


@pytest.fixture
def server():
    with CloudServer(routes(two_enis())) as s:
        yield s


@pytest.fixture
def overlay(tmp_path: Path) -> Path:
    path = tmp_path / "enis.toml"
    path.write_text(OVERLAY)
    return path


# The VM's NICs: the DHCP probe runs on the NIC the run's scope found for each ENI.
LINKS = (Link(2, "eth0", MAC_1, 0, True, 1500), Link(3, "eth1", MAC_2, 0, False, 1500))


def read_with_probe(cfg: Config, probe: Any) -> Instance:
    """The metadata phase of a run (agent.read_from), with a probe taking the NIC's MAC."""
    provider = JdcloudProvider(cfg, dhcp_probe=(lambda link: probe(link.mac)) if probe else None)
    try:
        return read_from(provider, cfg, lambda: LINKS)
    finally:
        provider.close()


def test_reads_enis_with_the_static_overlay(server, overlay):
    instance, requests = read_instance(config(server, overlay))
    first, second = instance.enis
    assert first.mac == MAC_1 and first.primary and first.device_number == 0 and first.slot == 0
    assert first.eni_id == "port-a2uv000001"
    assert first.ipv4_subnets == (ip_network("10.0.128.0/20"),)
    assert first.ipv4_gateway == ip_address("10.0.128.1")
    assert first.elastic_ip(ip_address("10.0.128.6")) == ip_address("114.67.10.20")
    assert second.device_number == 1 and second.slot == 1  # network/2/
    assert second.ipv4s == tuple(ip_address(a) for a in ("10.0.160.8", "10.0.160.9", "10.0.160.10"))
    assert second.ipv4_gateway == ip_address("10.0.160.1")
    assert requests == len(server.requests)


def test_bare_values_are_accepted_too(overlay):
    with CloudServer(routes(two_enis(), quoted=False)) as s:
        instance, _ = read_instance(config(s, overlay))
    assert instance.enis[0].ipv4s == (ip_address("10.0.128.6"),)


def test_without_overlay_or_probe_says_what_to_add(server, tmp_path):
    missing = tmp_path / "none.toml"
    with pytest.raises(MetadataUnavailable) as info:
        read_with_probe(config(server, missing), None)  # never the real probe on this host
    message = str(info.value)
    assert MAC_1 in message and str(missing) in message and "DHCP" in message
    assert "\n" not in message


def test_dhcp_probe_fills_in_what_the_overlay_lacks(server, tmp_path):
    partial = tmp_path / "enis.toml"
    partial.write_text(
        f'[[eni]]\nmac = "{MAC_1}"\nsubnet = "10.0.128.0/20"\ngateway = "10.0.128.1"\n'
    )
    asked: list[str] = []

    def probe(mac: str) -> tuple[str, str]:
        asked.append(mac)
        return "10.0.160.0/19", "10.0.160.1"

    instance = read_with_probe(config(server, partial), probe)
    assert asked == [MAC_2]  # the overlay already gave MAC_1's subnet and gateway
    assert instance.enis[1].ipv4_subnets == (ip_network("10.0.160.0/19"),)
    assert instance.enis[0].ipv4_subnets == (ip_network("10.0.128.0/20"),)


def test_the_primarys_subnet_and_gateway_come_from_the_kernel_not_a_probe(server, tmp_path):
    """The primary's DHCP client holds its lease: its address and default route say it all."""
    cfg = config(server, tmp_path / "none.toml")
    asked: list[str] = []

    def probe(link: Link) -> tuple[str, str]:
        asked.append(link.mac)
        return (
            ("10.0.128.0/20", "10.0.128.1")
            if link.mac == MAC_1
            else ("10.0.160.0/19", "10.0.160.1")
        )

    def lease(link: Link, ip: str) -> Optional[tuple[str, str]]:
        return ("10.0.128.0/20", "10.0.128.1") if (link.mac, ip) == (MAC_1, "10.0.128.6") else None

    provider = JdcloudProvider(cfg, dhcp_probe=probe)
    provider.kernel_lease = lease
    try:
        instance = read_from(provider, cfg, lambda: LINKS)
    finally:
        provider.close()
    assert asked == [MAC_2]
    assert instance.enis[0].ipv4_subnets == (ip_network("10.0.128.0/20"),)
    assert instance.enis[0].ipv4_gateway == ip_address("10.0.128.1")
    provider = JdcloudProvider(cfg, dhcp_probe=probe)
    provider.kernel_lease = lambda link, ip: None  # no lease in the kernel (a static address)
    try:
        read_from(provider, cfg, lambda: LINKS)
    finally:
        provider.close()
    assert asked == [MAC_2, MAC_1, MAC_2]  # then the primary is probed like the others


def test_config_overlay_spares_dhcp_and_excluded_enis_are_not_probed(server, tmp_path):
    # The [[eni]] tables of eni-guest.toml are applied after the read (model.apply_overlay),
    # but JD already knows to spare DHCP for what they give, and for what they exclude.
    asked: list[str] = []

    def probe(mac: str) -> tuple[str, str]:
        asked.append(mac)
        raise MetadataUnavailable(f"DHCP on {mac}: no answer")

    base = config(server, tmp_path / "none.toml")
    given = tmp_path / "eni-guest.toml"
    given.write_text(
        f'exclude_enis = ["port-b7kq000002"]\n[[eni]]\nmatch = "{MAC_1}"\n'
        'ipv4_subnet = "10.0.128.0/20"\nipv4_gateway = "10.0.128.1"\nadd_ipv4s = ["10.0.128.7"]\n'
    )
    overlay_cfg = load(given, environ={})
    cfg = replace(base, exclude_enis=overlay_cfg.exclude_enis, eni=overlay_cfg.eni)
    instance = read_with_probe(cfg, probe)
    assert asked == []
    (primary,) = instance.enis
    assert primary.ipv4_subnets == (ip_network("10.0.128.0/20"),)
    assert primary.ipv4s == (ip_address("10.0.128.6"), ip_address("10.0.128.7"))
    assert [(x.mac, x.reason) for x in instance.excluded] == [
        (MAC_2, "exclude_enis 'port-b7kq000002'")
    ]


def test_an_eni_whose_nic_name_is_excluded_is_marked_excluded_not_probed(server, tmp_path):
    asked: list[str] = []

    def probe(mac: str) -> tuple[str, str]:
        asked.append(mac)
        return "10.0.128.0/20", "10.0.128.1"

    cfg = replace(config(server, tmp_path / "none.toml"), exclude_interfaces=("eth1",))
    instance = read_with_probe(cfg, probe)
    assert asked == [MAC_1]  # no DHCP exchange on the excluded NIC
    assert [e.mac for e in instance.enis] == [MAC_1] and instance.complete
    assert [(x.mac, x.reason, x.slot) for x in instance.excluded] == [
        (MAC_2, "interface eth1 matches exclude_interfaces 'eth1'", 1)
    ]


def test_probe_failure_stops_the_read(server, tmp_path):
    def probe(mac: str) -> tuple[str, str]:
        raise MetadataUnavailable(f"DHCP on {mac}: no answer")

    with pytest.raises(MetadataUnavailable, match="no answer"):
        read_with_probe(config(server, tmp_path / "none.toml"), probe)


def test_bad_probe_answer_is_refused(server, tmp_path):
    with pytest.raises(MetadataInvalid, match="DHCP"):
        read_with_probe(config(server, tmp_path / "none.toml"), lambda mac: ("10.0.0.0/33", "x"))


def error_of(server: CloudServer, static: Path, exc: type = MetadataInvalid) -> str:
    return refusal(lambda: read_instance(config(server, static))[0], exc)


def test_overlay_ip_outside_subnet_names_file_and_key(server, tmp_path):
    path = tmp_path / "enis.toml"
    path.write_text(OVERLAY.replace('"10.0.160.10"', '"10.9.9.9"'))
    message = error_of(server, path)
    assert str(path) in message and "ipv4s" in message and "10.9.9.9" in message


def test_overlay_unknown_key_names_file_and_key(server, tmp_path):
    path = tmp_path / "enis.toml"
    path.write_text(OVERLAY + 'gatway = "10.0.160.1"\n')
    message = error_of(server, path)
    assert str(path) in message and "gatway" in message


def test_listing_without_the_primary_is_refused(server, overlay):
    server.routes[META + "network/"] = (200, '["2/"]')
    assert "1/" in error_of(server, overlay)


def test_listing_entry_not_a_number_is_refused(server, overlay):
    server.routes[META + "network/"] = (200, '["1/","eth1/"]')
    assert "eth1" in error_of(server, overlay)


def test_listing_not_a_json_array_is_refused(server, overlay):
    server.routes[META + "network/"] = (200, '["1/","2/"')
    assert "network/" in error_of(server, overlay)


def test_eni_gone_between_listing_and_read_changes_nothing(server, overlay):
    del server.routes[META + "network/2/"]
    message = error_of(server, overlay, MetadataUnavailable)
    assert "network/2/" in message


def test_bad_local_ipv4_names_key_and_value(server, overlay):
    server.routes[META + "network/2/local-ipv4"] = (200, q("10.0.160.300"))
    message = error_of(server, overlay)
    assert "network/2/local-ipv4" in message and "10.0.160.300" in message


@pytest.mark.parametrize("value", [None, ""])
def test_eni_without_local_ipv4_yet_is_unsettled(server, overlay, value: Optional[str]):
    if value is None:
        del server.routes[META + "network/2/local-ipv4"]
        server.routes[META + "network/2/"] = (200, '["mac","network-interface-id"]')
    else:
        server.routes[META + "network/2/local-ipv4"] = (200, q(value))
    instance, _ = read_instance(config(server, overlay))
    # the overlay's secondary IPs do not stand in for the primary IP metadata has not listed
    assert [e.mac for e in instance.enis] == [MAC_1]
    assert [u.mac for u in instance.unsettled] == [MAC_2]

"""Tencent Cloud provider against fixed documents over real HTTP on 127.0.0.1.

Documents follow Tencent's metadata reference: MACs listed in upper case (paths are
case-sensitive), one `local-ipv4s/<ip>/` directory per private IP holding `gateway` and
`subnet-mask`, no tokens, no device numbers, no ENI ids.
"""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from typing import Any

import pytest
from cloud_http import CloudServer, Routes
from refusal import refusal

from eni_guest.agent import read_instance
from eni_guest.config import Config
from eni_guest.errors import MetadataInvalid, MetadataUnavailable
from eni_guest.model import home_slot
from eni_guest.providers import registry
from eni_guest.providers.tencent import TencentProvider

META = "/latest/meta-data/"
MACS = META + "network/interfaces/macs/"
MAC_P = "52:54:00:AB:CD:01"
MAC_S = "20:90:6F:12:34:56"


def eni(mac: str, ips: list[str], mask: str, gateway: str) -> dict[str, Any]:
    return {"mac": mac, "ips": ips, "mask": mask, "gateway": gateway}


def routes(enis: list[dict[str, Any]], primary: str = MAC_P) -> Routes:
    out: Routes = {
        META + "mac": (200, primary),
        MACS: (200, "".join(e["mac"] + "/\n" for e in enis)),
    }
    for e in enis:
        d = f"{MACS}{e['mac']}/"
        out[d] = (
            200,
            "local-ipv4s/\nmac\nprimary-local-ipv4\npublic-ipv4s\nsubnet-id\nvpc-id\n",
        )
        out[d + "mac"] = (200, e["mac"])
        out[d + "primary-local-ipv4"] = (200, e["ips"][0])
        out[d + "vpc-id"] = (200, "vpc-1a2b3c4d")
        out[d + "subnet-id"] = (200, "subnet-5e6f7g8h")
        out[d + "local-ipv4s/"] = (200, "\n".join(ip + "/" for ip in e["ips"]))
        for ip in e["ips"]:
            p = f"{d}local-ipv4s/{ip}/"
            out[p] = (200, "gateway\nlocal-ipv4\npublic-ipv4\npublic-ipv4-mode\nsubnet-mask\n")
            out[p + "gateway"] = (200, e["gateway"])
            out[p + "subnet-mask"] = (200, e["mask"])
            out[p + "local-ipv4"] = (200, ip)
            out[p + "public-ipv4-mode"] = (200, "NAT")
    return out


def two_enis() -> list[dict[str, Any]]:
    return [
        eni(MAC_P, ["10.15.1.7"], "255.255.192.0", "10.15.1.1"),
        eni(MAC_S, ["10.15.64.9", "10.15.64.10"], "255.255.192.0", "10.15.64.1"),
    ]


def config(server: CloudServer) -> Config:
    return Config(
        provider="tencent",
        metadata_url=server.url,
        metadata_timeout=1.0,
        metadata_deadline=5.0,
        metadata_retries=0,
    ).validate()


@pytest.fixture
def cloud():
    servers: list[CloudServer] = []

    def make(enis: list[dict[str, Any]], **kw: Any) -> CloudServer:
        servers.append(CloudServer(routes(enis, **kw)))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def test_default_endpoint_is_the_address_not_a_name():
    assert registry.cloud("tencent").endpoints == ("http://169.254.0.23",)
    provider = TencentProvider(Config(provider="tencent").validate())
    try:
        assert provider.service.root == "http://169.254.0.23"
    finally:
        provider.close()


def test_reads_every_eni(cloud):
    server = cloud(two_enis())
    instance, requests = read_instance(config(server))
    primary, second = instance.enis
    assert primary.mac == MAC_P.lower() and primary.primary and primary.slot == 0
    assert primary.ipv4_subnets == (ip_network("10.15.0.0/18"),)
    assert second.mac == MAC_S.lower() and second.eni_id == MAC_S.lower()
    assert second.ipv4s == (ip_address("10.15.64.9"), ip_address("10.15.64.10"))
    assert second.ipv4_subnets == (ip_network("10.15.64.0/18"),)
    assert second.ipv4_gateway == ip_address("10.15.64.1")
    assert second.slot == home_slot(MAC_S.lower())
    assert requests == len(server.requests)


def test_paths_use_the_listing_spelling(cloud):
    server = cloud(two_enis())
    read_instance(config(server))
    asked = server.paths()
    assert f"{MACS}{MAC_S}/local-ipv4s/" in asked
    assert not any(MAC_S.lower() in p for p in asked)
    # one gateway and mask per ENI (its primary IP), not per IP: the service is rate limited
    assert not any("10.15.64.10/" in p for p in asked)


def test_primary_local_ipv4_comes_first(cloud):
    enis = two_enis()
    server = cloud(enis)
    d = f"{MACS}{MAC_S}/"
    server.routes[d + "local-ipv4s/"] = (200, "10.15.64.10/\n10.15.64.9/\n")
    instance, _ = read_instance(config(server))
    assert instance.enis[1].ipv4s[0] == ip_address("10.15.64.9")


def test_eni_without_ips_yet_is_unsettled(cloud):
    enis = two_enis()
    server = cloud(enis)
    d = f"{MACS}{MAC_S}/"
    server.routes[d] = (200, "mac\nvpc-id\n")
    instance, _ = read_instance(config(server))
    assert [u.mac for u in instance.unsettled] == [MAC_S.lower()]
    assert not instance.complete


def error_of(server: CloudServer, exc: type = MetadataInvalid) -> str:
    return refusal(lambda: read_instance(config(server))[0], exc)


def test_bad_subnet_mask_names_key_and_value(cloud):
    enis = two_enis()
    enis[1]["mask"] = "255.0.255.0"
    message = error_of(cloud(enis))
    assert f"{MACS}{MAC_S}/local-ipv4s/10.15.64.9/subnet-mask" in message
    assert "255.0.255.0" in message


def test_missing_gateway_names_key(cloud):
    server = cloud(two_enis())
    del server.routes[f"{MACS}{MAC_S}/local-ipv4s/10.15.64.9/gateway"]
    message = error_of(server)
    assert "local-ipv4s/10.15.64.9/gateway" in message and "missing" in message


def test_ip_outside_subnet_names_it(cloud):
    enis = two_enis()
    enis[1]["ips"] = ["10.15.64.9", "10.15.200.3"]
    message = error_of(cloud(enis))
    assert "10.15.200.3" in message and "local-ipv4s" in message


def test_bad_ip_directory_name_names_it(cloud):
    enis = two_enis()
    enis[1]["ips"] = ["10.15.64.999"]
    message = error_of(cloud(enis))
    assert "10.15.64.999" in message


def test_error_answer_is_unavailable(cloud):
    server = cloud(two_enis())
    server.routes[f"{MACS}{MAC_S}/local-ipv4s/"] = (503, "busy")
    error_of(server, MetadataUnavailable)

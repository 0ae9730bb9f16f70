"""Alibaba Cloud provider against fixed documents over real HTTP on 127.0.0.1.

Documents follow Alibaba's metadata reference: `private-ipv4s` as a one-line JSON array,
`ipv6s` as a bracketed list without quotes, the vSwitch gateway at .253, hardened-mode tokens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any, Optional

import pytest
from cloud_http import CloudServer, Routes, TokenRule
from refusal import refusal

from eni_guest.agent import read_instance
from eni_guest.config import Config
from eni_guest.errors import MetadataDisabled, MetadataInvalid, MetadataUnavailable
from eni_guest.model import home_slot
from eni_guest.providers import get_provider

META = "/latest/meta-data/"
MACS = META + "network/interfaces/macs/"
MAC_P = "00:16:3e:0a:12:01"
MAC_S = "00:16:3e:0b:34:02"
TTL = "X-aliyun-ecs-metadata-token-ttl-seconds"
TOKEN = "X-aliyun-ecs-metadata-token"


def eni(mac: str, eni_id: str, ips: list[str], cidr: str, gateway: str, **extra: str) -> dict:
    keys = {
        "network-interface-id": eni_id,
        "primary-ip-address": ips[0],
        "private-ipv4s": json.dumps(ips, separators=(",", ":")),
        "netmask": str(ip_network(cidr).netmask),
        "vswitch-cidr-block": cidr,
        "vpc-cidr-block": "192.168.0.0/16",
        "gateway": gateway,
        "vpc-id": "vpc-bp1e0g399hkd7c8q3xxxx",
        "vswitch-id": "vsw-bp1ygryo03m39xhsyxxxx",
        "mac": mac,
    }
    keys.update(extra)
    return {"mac": mac, "keys": {k: v for k, v in keys.items() if v is not None}}


def routes(enis: list[dict], primary: str = MAC_P) -> Routes:
    out: Routes = {
        META + "mac": (200, primary),
        MACS: (200, "\n".join(e["mac"] + "/" for e in enis)),
    }
    for e in enis:
        out[f"{MACS}{e['mac']}/"] = (200, "\n".join(e["keys"]))
        for key, value in e["keys"].items():
            out[f"{MACS}{e['mac']}/{key}"] = (200, value)
    return out


def two_enis(**secondary: Any) -> list[dict]:
    return [
        eni(MAC_P, "eni-bp1aaaaaaaaaaaaaxxxx", ["192.168.0.10"], "192.168.0.0/24", "192.168.0.253"),
        eni(
            MAC_S,
            "eni-bp1bbbbbbbbbbbbbxxxx",
            ["192.168.1.20", "192.168.1.21"],
            "192.168.1.0/24",
            "192.168.1.253",
            **secondary,
        ),
    ]


def config(server: CloudServer, **kw: Any) -> Config:
    values: dict[str, Any] = dict(
        provider="alibaba",
        metadata_url=server.url,
        metadata_timeout=1.0,
        metadata_deadline=5.0,
        metadata_retries=0,
        static_file="/nonexistent/eni-guest-test/enis.toml",
    )
    values.update(kw)
    return Config(**values).validate()


def serve(enis: Optional[list[dict]] = None, mode: str = "required", **rule: Any) -> CloudServer:
    token = TokenRule(ttl_header=TTL, token_header=TOKEN, mode=mode, **rule)
    return CloudServer(routes(enis if enis is not None else two_enis()), token)


@pytest.fixture
def cloud():
    servers: list[CloudServer] = []

    def make(*args: Any, **kw: Any) -> CloudServer:
        servers.append(serve(*args, **kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def test_reads_every_eni_with_published_gateways(cloud):
    ipv6 = {
        "ipv6s": "[2408:4005:325:a204:1875:217f:184a:e4e]",
        "ipv6-gateway": "2408:4005:325:a204:ffff:ffff:ffff:fff7",
        "vswitch-ipv6-cidr-block": "2408:4005:325:a204::/64",
        "ipv4-prefixes": '["192.168.1.48/28"]',
    }
    server = cloud(two_enis(**ipv6))
    instance, requests = read_instance(config(server))
    assert instance.provider == "alibaba" and instance.complete
    primary, second = instance.enis
    assert primary.mac == MAC_P and primary.primary and primary.slot == 0
    assert primary.ipv4_gateway == ip_address("192.168.0.253")  # published, not .1
    assert second.eni_id == "eni-bp1bbbbbbbbbbbbbxxxx"
    assert second.ipv4s == (ip_address("192.168.1.20"), ip_address("192.168.1.21"))
    assert second.ipv4_subnets == (ip_network("192.168.1.0/24"),)
    assert second.ipv4_gateway == ip_address("192.168.1.253")
    assert second.ipv6s == (ip_address("2408:4005:325:a204:1875:217f:184a:e4e"),)
    assert second.ipv6_gateway == ip_address("2408:4005:325:a204:ffff:ffff:ffff:fff7")
    assert second.ipv4_prefixes == (ip_network("192.168.1.48/28"),)
    assert second.slot == home_slot(MAC_S) and second.device_number == 0
    assert requests == len(server.requests)


def test_token_always_asked_for_and_sent_on_every_get(cloud):
    server = cloud(mode="optional")
    read_instance(config(server))
    puts = [r for r in server.requests if r.method == "PUT"]
    gets = [r for r in server.requests if r.method == "GET"]
    assert len(puts) == 1 and puts[0].path == "/latest/api/token"
    assert int(puts[0].headers[TTL]) <= 21600
    assert gets and all(TOKEN in r.headers for r in gets)


def test_only_keys_listed_in_the_eni_directory_are_fetched(cloud):
    server = cloud()
    read_instance(config(server))
    asked = set(server.paths())
    assert f"{MACS}{MAC_S}/ipv6s" not in asked  # not listed: never asked (rate limit)
    assert f"{MACS}{MAC_S}/vpc-id" not in asked  # informational: not needed
    assert f"{MACS}{MAC_S}/gateway" in asked


@pytest.mark.parametrize("status", [404, 405])
def test_service_without_hardened_mode_is_read_with_plain_gets(cloud, status):
    server = cloud(mode="unsupported", put_status=status)
    instance, _ = read_instance(config(server))
    assert len(instance.enis) == 2
    assert all(TOKEN not in r.headers for r in server.requests if r.method == "GET")


def test_token_refused_with_403_means_disabled(cloud):
    server = cloud(mode="disabled")
    with pytest.raises(MetadataDisabled, match="403"):
        read_instance(config(server))


def test_expired_token_is_renewed_once(cloud):
    from eni_guest.providers.alibaba import AlibabaProvider

    server = cloud()
    provider = AlibabaProvider(config(server))
    try:
        provider.get("mac")
        server.token.revoke_all()  # type: ignore[union-attr]
        raw = provider.read()
    finally:
        provider.close()
    assert len(raw.enis) == 2
    assert len(server.paths("PUT")) == 2


def test_private_ipv4s_one_a_line_and_primary_first(cloud):
    enis = two_enis()
    enis[1]["keys"]["private-ipv4s"] = "192.168.1.21\n192.168.1.20\n"
    server = cloud(enis)
    instance, _ = read_instance(config(server))
    assert instance.enis[1].ipv4s[0] == ip_address("192.168.1.20")  # primary-ip-address first
    assert set(instance.enis[1].ipv4s) == {ip_address("192.168.1.20"), ip_address("192.168.1.21")}


def test_subnet_from_netmask_when_no_vswitch_cidr(cloud):
    enis = two_enis()
    del enis[1]["keys"]["vswitch-cidr-block"]
    enis[1]["keys"]["netmask"] = "255.255.254.0"
    server = cloud(enis)
    instance, _ = read_instance(config(server))
    assert instance.enis[1].ipv4_subnets == (ip_network("192.168.0.0/23"),)


def test_slots_follow_macs_not_listing_order(cloud):
    a = read_instance(config(cloud(two_enis())))[0]
    b = read_instance(config(cloud(list(reversed(two_enis())))))[0]
    assert {e.mac: e.slot for e in a.enis} == {e.mac: e.slot for e in b.enis}


# ------------------------------------------------------------------ malformed documents


def error_of(cloud, enis: list[dict], exc: type = MetadataInvalid) -> str:
    server = cloud(enis)
    return refusal(lambda: read_instance(config(server))[0], exc)


def test_bad_json_array_names_key_and_value(cloud):
    enis = two_enis()
    enis[1]["keys"]["private-ipv4s"] = '["192.168.1.20","192.168.1.21"'
    message = error_of(cloud, enis)
    assert f"{MACS}{MAC_S}/private-ipv4s" in message and "192.168.1.21" in message


def test_misquoted_json_array_is_refused(cloud):
    enis = two_enis()
    enis[1]["keys"]["private-ipv4s"] = '["192.168.1.20" "192.168.1.21"]'
    message = error_of(cloud, enis)
    assert "private-ipv4s" in message and "JSON array" in message


def test_bad_netmask_names_key_and_value(cloud):
    enis = two_enis()
    del enis[1]["keys"]["vswitch-cidr-block"]
    enis[1]["keys"]["netmask"] = "255.255.0.255"
    message = error_of(cloud, enis)
    assert f"{MACS}{MAC_S}/netmask" in message and "255.255.0.255" in message


def test_netmask_disagreeing_with_vswitch_cidr_is_refused(cloud):
    enis = two_enis()
    enis[1]["keys"]["netmask"] = "255.255.255.128"
    message = error_of(cloud, enis)
    assert "netmask" in message and "vswitch-cidr-block" in message


def test_missing_gateway_is_refused_not_guessed(cloud):
    enis = two_enis()
    del enis[1]["keys"]["gateway"]
    message = error_of(cloud, enis)
    assert f"{MACS}{MAC_S}/gateway" in message and "missing" in message


def test_missing_ipv6_gateway_is_refused(cloud):
    enis = two_enis(**{"ipv6s": "[2408:4005:325:a204::10]"})
    enis[1]["keys"]["vswitch-ipv6-cidr-block"] = "2408:4005:325:a204::/64"
    message = error_of(cloud, enis)
    assert "ipv6-gateway" in message


def test_ip_outside_subnet_names_key_and_value(cloud):
    enis = two_enis()
    enis[1]["keys"]["private-ipv4s"] = '["192.168.1.20","192.168.7.9"]'
    message = error_of(cloud, enis)
    assert f"{MACS}{MAC_S}/private-ipv4s" in message and "192.168.7.9" in message


def test_server_error_is_unavailable_not_empty(cloud):
    enis = two_enis()
    server = cloud(enis)
    server.routes[f"{MACS}{MAC_S}/private-ipv4s"] = (500, "Internal Server Error")
    with pytest.raises(MetadataUnavailable, match="500"):
        read_instance(config(server))


def test_nothing_listening_is_unavailable():
    with CloudServer() as server:
        url = server.url
    cfg = Config(
        provider="alibaba",
        metadata_url=url,
        metadata_timeout=0.5,
        metadata_deadline=2.0,
        metadata_retries=0,
    ).validate()
    with pytest.raises(MetadataUnavailable):
        read_instance(cfg)


# ---------------------------------------------------------------- "aliyun": another name for it


def show_with(server: CloudServer, tmp_path: Path, how: str, *extra: str) -> str:
    """`eni-guest show` naming the provider aliyun on the command line, in the settings file or
    in the environment; every other setting the same."""
    settings = tmp_path / "eni-guest.toml"
    settings.write_text('provider = "aliyun"\n' if how == "file" else "")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENI_GUEST_")}
    env["ENI_GUEST_STATIC_FILE"] = str(tmp_path / "absent.toml")
    if how == "env":
        env["ENI_GUEST_PROVIDER"] = "aliyun"
    args = ["show", "--config", str(settings), "--metadata-url", server.url, *extra]
    if how == "cli":
        args += ["--provider", "aliyun"]
    proc = subprocess.run(
        [sys.executable, "-m", "eni_guest", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("how", ["cli", "file", "env"])
def test_aliyun_is_alibaba_and_shown_as_alibaba(cloud, tmp_path, how):
    server = cloud()
    out = json.loads(show_with(server, tmp_path, how, "--json"))
    assert out["provider"] == "alibaba" and out["provider_chosen_by"] == "configuration"
    assert {e["mac"] for e in out["enis"]} == {MAC_P, MAC_S}
    text = show_with(server, tmp_path, how)
    assert "provider: alibaba (set in the configuration)" in text
    assert "aliyun" not in text


def test_aliyun_gets_the_alibaba_provider(cloud):
    provider = get_provider(config(cloud(), provider="aliyun"))
    try:
        assert provider.name == "alibaba"
        assert provider.read().provider == "alibaba"
    finally:
        provider.close()

"""The simulator's clouds: one scenario, served in every provider's format.

Each format is checked against the vendor's documented shape (docs/metadata.md), including
its token rules, and then read back through the agent's own provider class and
`build_instance`: what the simulator serves is what the providers parse, so the end-to-end
tests of each cloud rest on both sides agreeing.  Everything listens on 127.0.0.1 port 0.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
import requests

from eni_guest.config import Config, normalize_mac
from eni_guest.model import Instance, build_instance
from eni_guest.providers import _make, detect
from eni_guest.providers.jdcloud import JdcloudProvider
from eni_guest.providers.static import load_static
from eni_guest.scope import decide
from eni_guest.state import Link
from eni_guest_lab.sim.render import render, render_static
from eni_guest_lab.sim.scenario import METADATA_ADDRESSES, parse_scenario
from eni_guest_lab.sim.server import MetadataSimulator, default_listen
from eni_guest_lab.sim.tree import ipv4_gateway, ipv6_gateway

PRIMARY = "0e:00:00:00:00:c3"  # device 0
SECOND = "0e:00:00:00:00:b2"  # device 1, in the primary's subnet
THIRD = "0e:00:00:00:00:a1"  # device 2, another subnet, dual-stack
TIMEOUT = 5
AWS_TTL, AWS_TOKEN = "X-aws-ec2-metadata-token-ttl-seconds", "X-aws-ec2-metadata-token"
ALI_TTL, ALI_TOKEN = "X-aliyun-ecs-metadata-token-ttl-seconds", "X-aliyun-ecs-metadata-token"
CLOUDS = ("aws", "alibaba", "tencent", "jdcloud", "openstack")

BASE: dict[str, Any] = {
    "primary_mac": PRIMARY,
    "instance_id": "i-0000000000000001",
    # File order differs from MAC order and from device-number order.
    "enis": [
        {
            "mac": THIRD,
            "interface-id": "eni-000000000000000c",
            "device-number": 2,
            "local-ipv4s": ["10.0.2.30", "10.0.2.31"],
            "subnet-ipv4-cidr-block": "10.0.2.0/24",
            "ipv6s": ["2001:db8:2::30"],
            "subnet-ipv6-cidr-blocks": ["2001:db8:2::/64"],
        },
        {
            "mac": PRIMARY,
            "interface-id": "eni-000000000000000a",
            "device-number": 0,
            "local-ipv4s": ["10.0.1.10", "10.0.1.11"],
            "subnet-ipv4-cidr-block": "10.0.1.0/24",
            "ipv4-associations": {"203.0.113.10": "10.0.1.10"},
        },
        {
            "mac": SECOND,
            "interface-id": "eni-000000000000000b",
            "device-number": 1,
            "local-ipv4s": ["10.0.1.20", "10.0.1.21"],
            "subnet-ipv4-cidr-block": "10.0.1.0/24",
        },
    ],
    "control": {"imdsv2": "required"},
}


def scenario(provider: str, **control: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["provider"] = provider
    data["control"].update(control)
    return data


class Cloud:
    """An in-process simulator of one cloud on 127.0.0.1 and a plain HTTP session."""

    def __init__(self, tmp_path: Path, data: dict[str, Any]) -> None:
        self.path = tmp_path / "scenario.json"
        self.write(data)
        self.sim = MetadataSimulator(self.path, listen=["127.0.0.1:0"])
        ((host, port),) = self.sim.start()
        self.url = f"http://{host}:{port}"
        self.session = requests.Session()

    def write(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_name("scenario.json.new")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.path)

    def close(self) -> None:
        self.session.close()
        self.sim.stop()

    def put(self, path: str, **headers: str) -> requests.Response:
        return self.session.put(self.url + path, headers=headers, timeout=TIMEOUT)

    def get(self, path: str, **headers: str) -> requests.Response:
        return self.session.get(self.url + path, headers=headers, timeout=TIMEOUT)


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Any]:
    made: list[Cloud] = []

    def start(provider: str, **control: Any) -> Cloud:
        where = tmp_path / f"cloud{len(made)}"
        where.mkdir()
        c = Cloud(where, scenario(provider, **control))
        made.append(c)
        return c

    yield start
    for c in made:
        c.close()


# ---------------------------------------------------------------------------------------------
# Formats


def test_alibaba_format_and_tokens(cloud: Any) -> None:
    c = cloud("alibaba")
    assert c.get("/latest/meta-data/mac").status_code == 401  # hardened mode enforced
    assert c.put("/latest/api/token", **{AWS_TTL: "60"}).status_code == 400  # AWS's header
    assert c.put("/latest/api/token", **{ALI_TTL: "60", "X-Forwarded-For": "1.2.3.4"}).status_code
    token = c.put("/latest/api/token", **{ALI_TTL: "60"})
    assert token.status_code == 200 and token.headers[ALI_TTL] == "60"
    assert c.get("/latest/meta-data/mac", **{AWS_TOKEN: token.text}).status_code == 401
    assert c.get("/latest/meta-data/mac", **{ALI_TOKEN: "forged"}).status_code == 401

    def get(path: str) -> str:
        r = c.get("/latest/meta-data/" + path, **{ALI_TOKEN: token.text})
        assert r.status_code == 200, path
        return r.text

    assert get("mac") == PRIMARY
    assert get("network/interfaces/macs/").split() == [f"{m}/" for m in (THIRD, PRIMARY, SECOND)]
    d = f"network/interfaces/macs/{PRIMARY}/"
    assert get(d + "private-ipv4s") == '["10.0.1.10","10.0.1.11"]'
    assert get(d + "primary-ip-address") == "10.0.1.10"
    assert get(d + "gateway") == "10.0.1.253"  # the vSwitch gateway is not .1
    assert get(d + "netmask") == "255.255.255.0"
    assert get(d + "vswitch-cidr-block") == "10.0.1.0/24"
    assert get(d + "network-interface-id") == "eni-000000000000000a"
    t = f"network/interfaces/macs/{THIRD}/"
    assert get(t + "ipv6s") == "[2001:db8:2::30]"  # documented without quotes
    assert get(t + "ipv6-gateway") == "2001:db8:2::1"
    assert get(t + "vswitch-ipv6-cidr-block") == "2001:db8:2::/64"


def test_alibaba_tokens_optional_and_expired(cloud: Any) -> None:
    c = cloud("alibaba", imdsv2="optional")
    assert c.get("/latest/meta-data/mac").text == PRIMARY
    token = c.put("/latest/api/token", **{ALI_TTL: "60"}).text
    data = scenario("alibaba", imdsv2="optional", expire_tokens_before=4102444800)
    c.write(data)
    assert c.get("/latest/meta-data/mac", **{ALI_TOKEN: token}).status_code == 401


def test_aws_refuses_the_alibaba_token_headers(cloud: Any) -> None:
    c = cloud("aws")
    assert c.put("/latest/api/token", **{ALI_TTL: "60"}).status_code == 400
    aws = c.put("/latest/api/token", **{AWS_TTL: "60"}).text
    assert c.get("/latest/meta-data/mac", **{ALI_TOKEN: aws}).status_code == 401
    assert c.get("/latest/meta-data/mac", **{AWS_TOKEN: aws}).text == PRIMARY
    # AWS never shows the keys only other clouds publish.
    data = scenario("aws")
    data["enis"][1].update(gateway="10.0.1.254", netmask="255.255.255.0")
    c.write(data)
    keys = c.get(f"/latest/meta-data/network/interfaces/macs/{PRIMARY}/", **{AWS_TOKEN: aws})
    assert "gateway" not in keys.text.split() and "netmask" not in keys.text.split()


def test_tencent_format(cloud: Any) -> None:
    c = cloud("tencent")
    assert c.put("/latest/api/token", **{AWS_TTL: "60"}).status_code == 405  # no tokens
    base = "/latest/meta-data/"
    assert c.get(base + "mac").text == PRIMARY.upper()
    listing = c.get(base + "network/interfaces/macs/").text.split()
    assert listing == [f"{m.upper()}/" for m in (THIRD, PRIMARY, SECOND)]
    assert c.get(f"{base}network/interfaces/macs/{PRIMARY}/mac").status_code == 404  # lower
    d = f"{base}network/interfaces/macs/{PRIMARY.upper()}/"
    assert c.get(d + "primary-local-ipv4").text == "10.0.1.10"
    assert c.get(d + "local-ipv4s/").text.split() == ["10.0.1.10/", "10.0.1.11/"]
    ip = d + "local-ipv4s/10.0.1.10/"
    assert c.get(ip + "gateway").text == "10.0.1.1"
    assert c.get(ip + "subnet-mask").text == "255.255.255.0"
    assert c.get(ip + "public-ipv4").text == "203.0.113.10"
    assert c.get(ip + "public-ipv4-mode").text == "NAT"
    assert c.get(d + "local-ipv4s/10.0.1.11/public-ipv4").status_code == 404
    assert c.get(f"{base}network/interfaces/macs/{THIRD.upper()}/ipv6s").status_code == 404


def test_jdcloud_format(cloud: Any) -> None:
    c = cloud("jdcloud")
    assert c.put("/latest/api/token", **{AWS_TTL: "60"}).status_code == 405
    base = "/metadata/latest/"
    assert "network/" in json.loads(c.get(base).text)
    assert json.loads(c.get(base + "network/").text) == ["1/", "2/", "3/"]
    one = base + "network/1/"
    keys = json.loads(c.get(one).text)
    assert {"mac", "local-ipv4", "network-interface-id", "floating-ipv4"} <= set(keys)
    assert c.get(one + "mac").text == json.dumps(PRIMARY)
    assert c.get(one + "local-ipv4").text == '"10.0.1.10"'  # the primary IP only
    assert c.get(one + "floating-ipv4").text == '"203.0.113.10"'
    assert json.loads(c.get(one + "security-group-ids").text)
    assert c.get(base + "network/3/mac").text == json.dumps(THIRD)
    assert c.get(base + "network/3/floating-ipv4").status_code == 404
    for path in ("network/1/netmask", "network/1/gateway", "network/0/"):
        assert c.get(base + path).status_code == 404


def test_openstack_format(cloud: Any) -> None:
    c = cloud("openstack")
    doc = c.get("/openstack/latest/network_data.json").json()
    assert [link["ethernet_mac_address"] for link in doc["links"]] == [PRIMARY, SECOND, THIRD]
    ips = [(n["link"], n["ip_address"], n["netmask"]) for n in doc["networks"]]
    assert ips[:2] == [
        ("eni-000000000000000a", "10.0.1.10", "255.255.255.0"),
        ("eni-000000000000000a", "10.0.1.11", "255.255.255.0"),
    ]
    v6 = [n for n in doc["networks"] if n["type"] == "ipv6"]
    assert [(n["ip_address"], n["netmask"]) for n in v6] == [
        ("2001:db8:2::30", "ffff:ffff:ffff:ffff::")
    ]
    assert v6[0]["routes"] == [{"network": "::", "netmask": "::", "gateway": "2001:db8:2::1"}]
    assert doc["networks"][0]["routes"][0] == {
        "network": "0.0.0.0",
        "netmask": "0.0.0.0",
        "gateway": "10.0.1.1",
    }
    assert c.get("/openstack/latest/meta_data.json").json()["uuid"] == "i-0000000000000001"
    assert c.get("/latest/meta-data/mac").status_code == 404


def test_static_renders_a_file_and_is_not_served(tmp_path: Path) -> None:
    parsed = parse_scenario(scenario("static"))
    path = tmp_path / "enis.toml"
    path.write_text(render_static(parsed))
    static = load_static(path)
    assert static.primary_mac == PRIMARY
    assert [(e.mac, e.ipv4s, e.subnet, e.gateway) for e in static.enis][0] == (
        PRIMARY,
        ["10.0.1.10", "10.0.1.11"],
        "10.0.1.0/24",
        "10.0.1.1",
    )
    assert static.enis[2].ipv6_gateway == "2001:db8:2::1"
    with pytest.raises(ValueError, match="render_static"):
        render(parsed)
    (tmp_path / "s.json").write_text(json.dumps(scenario("static")))
    with pytest.raises(ValueError, match="no metadata service"):
        MetadataSimulator(tmp_path / "s.json", listen=["127.0.0.1:0"])


def test_cli_print_static(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(scenario("aws")))
    cp = subprocess.run(
        [sys.executable, "-m", "eni_guest_lab.sim", "--scenario", str(path), "--print-static"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert f'primary_mac = "{PRIMARY}"' in cp.stdout


def test_jd_overlay_carries_the_secondary_ips(tmp_path: Path) -> None:
    path = tmp_path / "enis.toml"
    path.write_text(render_static(parse_scenario(scenario("jdcloud")), overlay=True, subnets=False))
    static = load_static(path, need_primary=False)
    assert static.primary_mac is None
    assert [(e.mac, e.ipv4s, e.subnet, e.gateway) for e in static.enis][1] == (
        SECOND,
        ["10.0.1.20", "10.0.1.21"],
        None,
        None,
    )


def test_gateways() -> None:
    eni = {"subnet-ipv4-cidr-block": "10.0.4.0/22", "subnet-ipv6-cidr-blocks": ["2001:db8::/64"]}
    assert ipv4_gateway("aws", eni) == "10.0.4.1"
    assert ipv4_gateway("alibaba", eni) == "10.0.7.253"
    assert ipv4_gateway("tencent", {**eni, "gateway": "10.0.4.9"}) == "10.0.4.9"
    assert ipv4_gateway("aws", {}) is None
    assert ipv6_gateway(eni) == "2001:db8::1"
    assert ipv6_gateway({**eni, "ipv6-gateway": "2001:db8::fff7"}) == "2001:db8::fff7"


def test_default_listen() -> None:
    assert default_listen("aws") == ["169.254.169.254:80"]
    assert default_listen("alibaba") == ["100.100.100.200:80"]
    assert default_listen("tencent") == ["169.254.0.23:80"]
    assert default_listen("jdcloud") == default_listen("openstack") == ["169.254.169.254:80"]
    assert METADATA_ADDRESSES["aws"] == ("169.254.169.254", "fd00:ec2::254")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.update(provider="azure"), "provider"),
        (lambda d: d["enis"][0].update(netmask="255.0.255.0"), "enis[0].netmask"),
        (lambda d: d["enis"][0].update(gateway="10.0.2"), "enis[0].gateway"),
        (lambda d: d["enis"][0].update({"ipv6-gateway": "10.0.2.1"}), "enis[0].ipv6-gateway"),
        (lambda d: d["enis"][0].update({"device-number": 1}), "enis[2].device-number"),
        (lambda d: d["enis"][1].update({"device-number": 3}), "enis[1].device-number"),
    ],
)
def test_validation(change: Any, expected: str) -> None:
    data = scenario("jdcloud")
    change(data)
    with pytest.raises(ValueError) as info:
        parse_scenario(data)
    assert expected in str(info.value)


# ---------------------------------------------------------------------------------------------
# Faults and lag, for every cloud

PROBE_PATH = {
    "aws": "/latest/meta-data/mac",
    "alibaba": "/latest/meta-data/mac",
    "tencent": "/latest/meta-data/mac",
    "jdcloud": "/metadata/latest/network/",
    "openstack": "/openstack/latest/network_data.json",
}


def _get(c: Cloud, provider: str, path: str) -> requests.Response:
    headers = {}
    if provider in ("aws", "alibaba"):
        ttl, name = (AWS_TTL, AWS_TOKEN) if provider == "aws" else (ALI_TTL, ALI_TOKEN)
        headers[name] = c.put("/latest/api/token", **{ttl: "60"}).text
    return c.get(path, **headers)


@pytest.mark.parametrize("provider", CLOUDS)
def test_faults_apply_to_every_cloud(cloud: Any, provider: str) -> None:
    c = cloud(provider)
    path = PROBE_PATH[provider]
    assert _get(c, provider, path).status_code == 200
    for control, status in (
        ({"fail": 503}, 503),
        ({"fail": 500, "fail_paths": [path]}, 500),
        ({"disabled": True}, 403),
        ({"redirect_paths": [path]}, 301),
    ):
        c.write(scenario(provider, **control))
        r = c.session.get(c.url + path, allow_redirects=False, timeout=TIMEOUT)
        assert r.status_code == status, (control, r.status_code)
    c.write(scenario(provider, delay=0.3))
    r = _get(c, provider, path)
    assert r.status_code == 200 and r.elapsed.total_seconds() >= 0.3
    assert c.sim.stats()["requests"] >= 6


@pytest.mark.parametrize("provider", CLOUDS)
def test_lag_hides_the_ips_of_a_new_eni(cloud: Any, provider: str) -> None:
    c = cloud(provider)
    data = scenario(provider)
    data["enis"].append(
        {
            "mac": "0e:00:00:00:00:d4",
            "device-number": 3,
            "local-ipv4s": ["10.0.3.40"],
            "subnet-ipv4-cidr-block": "10.0.3.0/24",
            "lag": 60,
        }
    )
    c.write(data)
    instance = read(provider, c.url, c.path.parent)
    assert "0e:00:00:00:00:d4" not in {e.mac for e in instance.enis}
    if provider != "openstack":  # OpenStack leaves a port without addresses alone
        assert [u.mac for u in instance.unsettled] == ["0e:00:00:00:00:d4"]


# ---------------------------------------------------------------------------------------------
# What the simulator serves is what the agent's providers parse


def config(provider: str, url: str, static_file: Path) -> Config:
    return Config(
        provider=provider,
        metadata_url=url,
        metadata_timeout=2.0,
        metadata_deadline=10.0,
        metadata_retries=0,
        static_file=str(static_file),
    ).validate()


def fake_dhcp(mac: str) -> tuple[str, str]:
    """What the VPC's DHCP service would answer on the ENI with this MAC."""
    eni = next(e for e in BASE["enis"] if e["mac"] == mac)
    return eni["subnet-ipv4-cidr-block"], ipv4_gateway("jdcloud", eni) or ""


def read(provider: str, url: str, tmp: Path) -> Instance:
    static = tmp / "enis.toml"
    if provider == "jdcloud":
        static.write_text(
            render_static(parse_scenario(scenario("jdcloud")), overlay=True, subnets=False)
        )
    if provider == "static":
        static.write_text(render_static(parse_scenario(scenario("static"))))
    cfg = config(provider, url, static)
    p = (
        JdcloudProvider(cfg, dhcp_probe=lambda link: fake_dhcp(link.mac))
        if provider == "jdcloud"
        else _make(provider, cfg)
    )
    try:
        raw = p.read()
        # every listed ENI's NIC is in the VM (JD Cloud asks DHCP on it)
        links = [
            Link(i + 2, f"eth{i}", normalize_mac(r.mac), 0, True, 1500)
            for i, r in enumerate(raw.enis)
        ]
        scope = decide(raw, cfg, links)
        if provider == "jdcloud":
            raw = p.complete(raw, scope)
        return build_instance(raw, cfg, scope)
    finally:
        p.close()


@pytest.mark.parametrize("provider", (*CLOUDS, "static"))
def test_providers_parse_what_the_simulator_serves(
    cloud: Any, tmp_path: Path, provider: str
) -> None:
    url = cloud(provider).url if provider != "static" else ""
    instance = read(provider, url, tmp_path)
    assert instance.provider == provider and instance.primary_mac == PRIMARY
    assert instance.complete
    by_mac = {e.mac: e for e in instance.enis}
    assert set(by_mac) == {PRIMARY, SECOND, THIRD}
    primary, second, third = by_mac[PRIMARY], by_mac[SECOND], by_mac[THIRD]
    assert primary.primary and primary.slot == 0
    gateway = "10.0.1.253" if provider == "alibaba" else "10.0.1.1"
    for eni, ips in ((primary, ["10.0.1.10", "10.0.1.11"]), (second, ["10.0.1.20", "10.0.1.21"])):
        assert eni.ipv4s == tuple(ip_address(a) for a in ips)  # the ENI's primary IP first
        assert eni.ipv4_subnets == (ip_network("10.0.1.0/24"),)
        assert eni.ipv4_gateway == ip_address(gateway)
    assert third.ipv4s == (ip_address("10.0.2.30"), ip_address("10.0.2.31"))
    assert third.ipv4_subnets == (ip_network("10.0.2.0/24"),)
    if provider in ("aws", "alibaba", "openstack", "static"):
        assert third.ipv6s == (ip_address("2001:db8:2::30"),)
        assert third.ipv6_gateway == ip_address("2001:db8:2::1")
    else:  # Tencent and JD Cloud publish no IPv6
        assert third.ipv6s == ()
    if provider in ("aws", "jdcloud"):
        assert (second.slot, third.slot) == (1, 2)  # device numbers
        assert primary.eni_id == "eni-000000000000000a"
    else:
        assert len({e.slot for e in instance.enis}) == 3  # MAC-derived slots
    if provider in ("aws", "jdcloud"):  # the others' providers do not read Elastic IPs
        assert primary.elastic_ip(ip_address("10.0.1.10")) == ip_address("203.0.113.10")


@pytest.mark.parametrize("provider", CLOUDS)
def test_detect_finds_each_simulated_cloud(cloud: Any, tmp_path: Path, provider: str) -> None:
    """Auto-detection against each cloud on its own address (others: nothing listens)."""
    c = cloud(provider)
    dead = cloud("aws")
    dead_url = dead.url
    dead.close()
    endpoints = {name: dead_url for name in detect.PROBES}
    if provider in ("aws", "jdcloud", "openstack"):  # they share 169.254.169.254
        for name in ("aws", "jdcloud", "openstack"):
            endpoints[name] = c.url
    else:
        endpoints[provider] = c.url
    empty = tmp_path / "no-dmi"
    empty.mkdir()
    cfg = Config(provider="auto", static_file=str(tmp_path / "none.toml")).validate()
    name, why = detect.detect(cfg, dmi_dir=empty, endpoints=endpoints)
    assert name == provider, why
    assert why.startswith("metadata probe: ")

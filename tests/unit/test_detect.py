"""`--provider auto`: DMI from a fake directory, probes against fake services on 127.0.0.1.

Nothing here reads the host's DMI or sends a packet beyond 127.0.0.1: every test passes its
own DMI directory and endpoints (or patches the module defaults that `get_provider` uses).
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest
from cloud_http import CloudServer, TokenRule

from eni_guest.config import Config
from eni_guest.errors import MetadataUnavailable
from eni_guest.providers import chosen_because, detect, get_provider

AWS_TTL = "X-aws-ec2-metadata-token-ttl-seconds"
ALI_TTL = "X-aliyun-ecs-metadata-token-ttl-seconds"


def dmi(tmp_path: Path, **fields: str) -> Path:
    d = tmp_path / "dmi"
    d.mkdir(exist_ok=True)
    for name, value in fields.items():
        (d / name).write_text(value + "\n")
    return d


QEMU = {"sys_vendor": "QEMU", "product_name": "Standard PC (i440FX + PIIX, 1996)"}


def cfg(tmp_path: Path, **kw: str) -> Config:
    lock = str(tmp_path / "eni-guest.lock")  # what choose() keeps goes beside it, not to /run
    return Config(
        provider="auto", static_file=str(tmp_path / "enis.toml"), lock_file=lock, **kw
    ).validate()


@pytest.fixture
def dead_url() -> str:
    """A port where nothing listens: connections are refused at once."""
    with CloudServer() as s:
        return s.url


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A port that accepts connections and never answers: probes must time out."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def endpoints(default: str, **by_name: str) -> dict[str, str]:
    return {name: by_name.get(name, default) for name in detect.PROBES}


@pytest.mark.parametrize(
    "fields, provider, reason",
    [
        (
            {"sys_vendor": "Amazon EC2", "product_name": "m6i.large"},
            "aws",
            "DMI sys_vendor 'Amazon EC2'",
        ),
        (
            {"sys_vendor": "Xen", "chassis_asset_tag": "Amazon EC2"},
            "aws",
            "DMI chassis_asset_tag 'Amazon EC2'",
        ),
        (
            {"sys_vendor": "Alibaba Cloud", "product_name": "Alibaba Cloud ECS"},
            "alibaba",
            "DMI sys_vendor 'Alibaba Cloud'",
        ),
        (
            {"sys_vendor": "QEMU", "product_name": "Alibaba Cloud ECS"},
            "alibaba",
            "DMI product_name 'Alibaba Cloud ECS'",
        ),
        (
            {"sys_vendor": "Tencent Cloud", "product_name": "CVM"},
            "tencent",
            "DMI sys_vendor 'Tencent Cloud'",
        ),
        (
            {"sys_vendor": "OpenStack Foundation", "product_name": "OpenStack Nova"},
            "openstack",
            "DMI product_name 'OpenStack Nova'",
        ),
        (
            {"sys_vendor": "JDCloud", "product_name": "OpenStack Nova"},
            "jdcloud",
            "DMI sys_vendor 'JDCloud'",
        ),
    ],
)
def test_dmi_decides_without_a_packet(tmp_path, dead_url, fields, provider, reason):
    start = time.monotonic()
    found = detect.detect(cfg(tmp_path), dmi(tmp_path, **fields), endpoints(dead_url))
    assert found == (provider, reason)
    assert time.monotonic() - start < 0.2


def test_unknown_dmi_then_the_service_that_answers(tmp_path, dead_url):
    with CloudServer({"/latest/meta-data/": (200, "instance-id\nmac\nnetwork/\n")}) as tencent:
        name, reason = detect.detect(
            cfg(tmp_path), dmi(tmp_path, **QEMU), endpoints(dead_url, tencent=tencent.url)
        )
    assert name == "tencent"
    assert reason == f"metadata probe: GET {tencent.url}/latest/meta-data/ answered 200"


def test_most_specific_answer_wins(tmp_path, dead_url):
    """OpenStack serves an EC2-like tree too: its network_data.json decides."""
    doc = json.dumps({"links": [], "networks": []})
    with (
        CloudServer({"/openstack/latest/network_data.json": (200, doc)}) as openstack,
        CloudServer(token=TokenRule(AWS_TTL, "X-aws-ec2-metadata-token")) as aws,
    ):
        name, _ = detect.detect(
            cfg(tmp_path), dmi(tmp_path), endpoints(dead_url, openstack=openstack.url, aws=aws.url)
        )
    assert name == "openstack"


def test_aws_by_its_token(tmp_path, dead_url):
    with CloudServer(token=TokenRule(AWS_TTL, "X-aws-ec2-metadata-token")) as aws:
        name, reason = detect.detect(cfg(tmp_path), dmi(tmp_path), endpoints(dead_url, aws=aws.url))
    assert name == "aws" and "PUT" in reason and "api/token answered 200" in reason


def test_alibaba_without_hardened_mode(tmp_path, dead_url):
    rule = TokenRule(ALI_TTL, "X-aliyun-ecs-metadata-token", mode="unsupported", put_status=405)
    with CloudServer({"/latest/meta-data/": (200, "mac\n")}, rule) as ali:
        name, reason = detect.detect(
            cfg(tmp_path), dmi(tmp_path), endpoints(dead_url, alibaba=ali.url)
        )
    assert name == "alibaba" and "405" in reason


def test_jdcloud_by_its_tree(tmp_path, dead_url):
    with CloudServer({"/metadata/latest/": (200, '["network/","instance-id"]')}) as jd:
        name, _ = detect.detect(cfg(tmp_path), dmi(tmp_path), endpoints(dead_url, jdcloud=jd.url))
    assert name == "jdcloud"


def test_nothing_answering_fails_fast_listing_what_was_tried(tmp_path, silent_url, dead_url):
    start = time.monotonic()
    with pytest.raises(MetadataUnavailable) as info:
        detect.detect(cfg(tmp_path), dmi(tmp_path, **QEMU), endpoints(silent_url, tencent=dead_url))
    elapsed = time.monotonic() - start
    assert elapsed < 3.5
    message = str(info.value)
    assert "\n" not in message
    for name in ("openstack", "jdcloud", "aws", "alibaba", "tencent", "--provider"):
        assert name in message
    assert "'QEMU'" in message and "timed out" in message and "connection failed" in message


def test_no_dmi_at_all_is_said(tmp_path, dead_url):
    with pytest.raises(MetadataUnavailable, match="nothing readable"):
        detect.detect(cfg(tmp_path), tmp_path / "no-dmi", endpoints(dead_url))


def test_static_file_when_no_service_answers(tmp_path, dead_url):
    (tmp_path / "enis.toml").write_text('primary_mac = "52:54:00:00:00:01"\n')
    name, reason = detect.detect(cfg(tmp_path), dmi(tmp_path, **QEMU), endpoints(dead_url))
    assert name == "static" and "enis.toml exists" in reason


def test_metadata_url_is_where_every_probe_goes(tmp_path):
    with CloudServer(token=TokenRule(AWS_TTL, "X-aws-ec2-metadata-token")) as sim:
        name, _ = detect.detect(cfg(tmp_path, metadata_url=sim.url), dmi(tmp_path))
        assert {r.path for r in sim.requests} >= {
            "/openstack/latest/network_data.json",
            "/metadata/latest/",
            "/latest/api/token",
        }
    assert name == "aws"


def test_get_provider_auto_records_why(tmp_path, monkeypatch, dead_url):
    monkeypatch.setattr(detect, "DMI_DIR", dmi(tmp_path, sys_vendor="Tencent Cloud"))
    monkeypatch.setattr(detect, "DEFAULT_ENDPOINTS", endpoints(dead_url))
    provider = get_provider(cfg(tmp_path))
    try:
        assert provider.name == "tencent"
        assert chosen_because(provider) == "DMI sys_vendor 'Tencent Cloud'"
    finally:
        provider.close()


def test_forced_provider_wins_over_dmi(tmp_path, monkeypatch):
    monkeypatch.setattr(detect, "DMI_DIR", dmi(tmp_path, sys_vendor="Amazon EC2"))
    provider = get_provider(Config(provider="openstack").validate())
    try:
        assert provider.name == "openstack" and chosen_because(provider) is None
    finally:
        provider.close()

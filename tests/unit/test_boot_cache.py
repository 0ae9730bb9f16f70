"""The answer of `--provider auto` kept for the boot (providers/boot_cache.py, detect.choose).

Nothing here touches the host's /run or its boot id: every test keeps the file beside a lock
file in its tmp_path and fakes /proc/sys/kernel/random/boot_id; probes are faked too.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from eni_guest.agent import Result
from eni_guest.config import Config
from eni_guest.errors import MetadataUnavailable
from eni_guest.model import Instance
from eni_guest.plan import plan
from eni_guest.providers import boot_cache, chosen_because, detect, get_provider
from eni_guest.show import provider_line, render_json
from eni_guest.state import KernelState

BOOT = "3f1e2d4c-0000-4000-8000-000000000001"
OTHER_BOOT = "3f1e2d4c-0000-4000-8000-000000000002"


@pytest.fixture
def boot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake boot_id file holding BOOT."""
    path = tmp_path / "boot_id"
    path.write_text(BOOT + "\n")
    monkeypatch.setattr(boot_cache, "BOOT_ID", path)
    return path


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return Config(
        provider="auto", lock_file=str(tmp_path / "eni-guest.lock"), static_file=str(tmp_path / "x")
    ).validate()


@pytest.fixture
def probes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """No DMI; the probes find AWS.  The list records each probing's window."""
    calls: list[float] = []
    empty = tmp_path / "no-dmi"
    empty.mkdir()
    monkeypatch.setattr(detect, "DMI_DIR", empty)

    def probe_all(endpoints: Any, window: float = detect.TOTAL_TIMEOUT) -> dict[str, Any]:
        calls.append(window)
        results = {name: (False, "connection failed") for name in detect.PROBES}
        results["aws"] = (True, "IMDSv2 token")
        return results

    monkeypatch.setattr(detect, "probe_all", probe_all)
    return calls


def where(cfg: Config) -> Path:
    path = boot_cache.path_for(cfg)
    assert path is not None
    return path


def kept(cfg: Config) -> dict[str, Any]:
    return json.loads(where(cfg).read_text())


# ------------------------------------------------------------------ the file


def test_the_file_sits_beside_the_lock_file() -> None:
    assert boot_cache.path_for(Config()) == Path("/run/eni-guest.provider")
    assert boot_cache.path_for(Config(lock_file="/tmp/vm1/lock")) == Path("/tmp/vm1/lock.provider")
    assert boot_cache.path_for(Config(lock_file="")) is None
    assert not boot_cache.store(Config(lock_file=""), BOOT, "aws", "why")
    assert boot_cache.load(Config(lock_file=""), BOOT) is None


def test_kept_then_read_back_in_the_same_boot(cfg: Config, boot: Path) -> None:
    assert boot_cache.store(cfg, BOOT, "aws", "metadata probe: IMDSv2 token")
    assert kept(cfg) == {
        "boot_id": BOOT,
        "provider": "aws",
        "why": "metadata probe: IMDSv2 token",
        "metadata_url": "",
    }
    assert boot_cache.load(cfg, BOOT) == ("aws", "metadata probe: IMDSv2 token")
    assert oct(where(cfg).stat().st_mode & 0o777) == "0o644"


def test_another_boots_answer_is_ignored(cfg: Config) -> None:
    boot_cache.store(cfg, OTHER_BOOT, "aws", "metadata probe: IMDSv2 token")
    assert boot_cache.load(cfg, BOOT) is None


def test_another_metadata_urls_answer_is_ignored(cfg: Config) -> None:
    boot_cache.store(cfg, BOOT, "aws", "metadata probe: IMDSv2 token")
    assert boot_cache.load(replace(cfg, metadata_url="http://127.0.0.1:8080"), BOOT) is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        '{"boot_id": "' + BOOT + '", "provider": "aws", "why": "x", "metadata_url": ""',  # cut
        "[]",
        "null",
        json.dumps({"boot_id": BOOT, "provider": "aws", "why": "x"}),  # a field missing
        json.dumps({"boot_id": BOOT, "provider": "aws", "why": "x", "metadata_url": "", "y": 1}),
        json.dumps({"boot_id": BOOT, "provider": "aws", "why": 1, "metadata_url": ""}),
        json.dumps({"boot_id": BOOT, "provider": "nosuchcloud", "why": "x", "metadata_url": ""}),
        json.dumps({"boot_id": BOOT, "provider": "auto", "why": "x", "metadata_url": ""}),
    ],
)
def test_a_malformed_file_is_never_trusted(cfg: Config, text: str) -> None:
    where(cfg).write_text(text)
    assert boot_cache.load(cfg, BOOT) is None


def test_a_file_someone_else_could_have_written_is_not_trusted(cfg: Config, tmp_path: Path) -> None:
    boot_cache.store(cfg, BOOT, "aws", "why")
    os.chmod(where(cfg), 0o666)
    assert boot_cache.load(cfg, BOOT) is None
    os.chmod(where(cfg), 0o644)
    assert boot_cache.load(cfg, BOOT) == ("aws", "why")
    planted = tmp_path / "planted"
    where(cfg).rename(planted)
    where(cfg).symlink_to(planted)  # a symlink is never followed
    assert boot_cache.load(cfg, BOOT) is None
    where(cfg).unlink()
    where(cfg).mkdir()
    assert boot_cache.load(cfg, BOOT) is None


def test_not_utf8_is_not_trusted(cfg: Config) -> None:
    where(cfg).write_bytes(b"\xff\xfe{}")
    assert boot_cache.load(cfg, BOOT) is None


def test_without_a_boot_id_nothing_is_kept_or_read(cfg: Config, tmp_path: Path) -> None:
    assert boot_cache.boot_id(tmp_path / "missing") is None
    assert not boot_cache.store(cfg, None, "aws", "why")
    assert not where(cfg).exists()
    boot_cache.store(cfg, BOOT, "aws", "why")
    assert boot_cache.load(cfg, None) is None


def test_the_write_is_atomic(cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    """A temporary file renamed over the old one: a failed write leaves the old file whole
    and no temporary file behind; a good one replaces it whole."""
    boot_cache.store(cfg, BOOT, "aws", "first")
    before = where(cfg).read_text()
    renamed: list[tuple[str, str]] = []

    def failing_replace(src: str, dst: str) -> None:
        renamed.append((src, dst))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    assert not boot_cache.store(cfg, BOOT, "tencent", "second")
    assert where(cfg).read_text() == before
    ((src, dst),) = renamed
    assert Path(src).parent == Path(dst).parent and Path(dst) == where(cfg)
    monkeypatch.undo()
    assert sorted(p.name for p in where(cfg).parent.iterdir()) == ["eni-guest.provider"]
    assert boot_cache.store(cfg, BOOT, "tencent", "second")
    assert boot_cache.load(cfg, BOOT) == ("tencent", "second")


def test_an_unwritable_place_only_costs_a_new_detection(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    cfg = Config(lock_file=str(tmp_path / "file" / "lock"))  # its directory is a file
    assert not boot_cache.store(cfg, BOOT, "aws", "why")


# ------------------------------------------------------------------ choose


def test_probes_answer_is_kept_and_used_by_every_later_run(
    cfg: Config, boot: Path, probes: list[float]
) -> None:
    assert detect.choose(cfg) == ("aws", "metadata probe: IMDSv2 token")
    assert kept(cfg)["provider"] == "aws" and kept(cfg)["boot_id"] == BOOT
    again = detect.choose(cfg)
    assert again == ("aws", "earlier this boot: metadata probe: IMDSv2 token")
    assert probes == [3.0]  # the second run did not probe


def test_a_new_boot_probes_again(cfg: Config, boot: Path, probes: list[float]) -> None:
    detect.choose(cfg)
    boot.write_text(OTHER_BOOT + "\n")
    assert detect.choose(cfg) == ("aws", "metadata probe: IMDSv2 token")
    assert probes == [3.0, 3.0] and kept(cfg)["boot_id"] == OTHER_BOOT


def test_a_malformed_file_means_detect_again_and_rewrite(
    cfg: Config, boot: Path, probes: list[float]
) -> None:
    where(cfg).write_text('{"boot_id": "' + BOOT + '", "provider": "tencent"')
    assert detect.choose(cfg, window=6.0) == ("aws", "metadata probe: IMDSv2 token")
    assert probes == [6.0] and kept(cfg)["provider"] == "aws"


def test_dmi_needs_no_file(
    cfg: Config, boot: Path, probes: list[float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dmi = tmp_path / "dmi"
    dmi.mkdir()
    (dmi / "sys_vendor").write_text("Alibaba Cloud\n")
    boot_cache.store(cfg, BOOT, "aws", "metadata probe: IMDSv2 token")
    monkeypatch.setattr(detect, "DMI_DIR", dmi)
    assert detect.choose(cfg) == ("alibaba", "DMI sys_vendor 'Alibaba Cloud'")
    assert probes == [] and kept(cfg)["provider"] == "aws"  # DMI first, instant, not kept


def test_the_static_fallback_is_not_kept(
    cfg: Config, boot: Path, monkeypatch: pytest.MonkeyPatch, probes: list[float]
) -> None:
    """A metadata service that was only late must get its chance at the next run."""
    Path(cfg.static_file).write_text('primary_mac = "52:54:00:00:00:01"\n')
    silent = {name: (False, "timed out") for name in detect.PROBES}
    monkeypatch.setattr(detect, "probe_all", lambda endpoints, window: silent)
    assert detect.choose(cfg)[0] == "static"
    assert not where(cfg).exists()


def test_nothing_answering_keeps_nothing(
    cfg: Config, boot: Path, monkeypatch: pytest.MonkeyPatch, probes: list[float]
) -> None:
    silent = {name: (False, "timed out") for name in detect.PROBES}
    monkeypatch.setattr(detect, "probe_all", lambda endpoints, window: silent)
    with pytest.raises(MetadataUnavailable, match="no cloud recognised"):
        detect.choose(cfg)
    assert not where(cfg).exists()


def test_an_explicit_provider_wins_over_the_kept_answer(cfg: Config, boot: Path) -> None:
    boot_cache.store(cfg, BOOT, "aws", "metadata probe: IMDSv2 token")
    provider = get_provider(replace(cfg, provider="openstack"))
    try:
        assert provider.name == "openstack" and chosen_because(provider) is None
    finally:
        provider.close()


def test_get_provider_and_show_say_it_was_detected_earlier(cfg: Config, boot: Path) -> None:
    boot_cache.store(cfg, BOOT, "tencent", "metadata probe: /latest/meta-data/")
    provider = get_provider(cfg)
    try:
        assert provider.name == "tencent"
        why = chosen_because(provider)
        assert why == "earlier this boot: metadata probe: /latest/meta-data/"
    finally:
        provider.close()
    instance = Instance("tencent", "i-1", "0e:00:00:00:00:01", (), chosen_because=why)
    res = Result(instance, plan(instance, cfg, KernelState()), KernelState())
    assert provider_line(res) == (
        "tencent (auto-detected earlier this boot: metadata probe: /latest/meta-data/)"
    )
    doc = json.loads(render_json(res))
    assert doc["provider_chosen_by"] == "auto" and doc["provider_chosen_because"] == why
    fresh = replace(instance, chosen_because="DMI sys_vendor 'Tencent Cloud'")
    res = Result(fresh, res.plan, res.state)
    assert provider_line(res) == "tencent (auto-detected: DMI sys_vendor 'Tencent Cloud')"

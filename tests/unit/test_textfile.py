"""The Prometheus text file (textfile.py): the format node_exporter reads, written atomically,
counters that only grow across processes, and a failed reconcile keeping what it cannot know.

The results are built by hand (show.py's rows); the file lives in tmp_path.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from test_show import MAC1, MAC2, MAC3, STATE, eni, result

from eni_guest import metrics, textfile
from eni_guest.agent import Result
from eni_guest.config import Config, load
from eni_guest.errors import ConfigError, KernelError, MetadataUnavailable
from eni_guest.model import Instance, Unsettled
from eni_guest.plan import plan

SAMPLE = re.compile(r'[a-z_]+(\{([a-z_]+="(?:[^"\\]|\\.)*",?)*\})? [0-9.]+')


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    """metrics_file in tmp_path; this process's counts start from nothing."""
    monkeypatch.setattr(textfile, "_flushed", {})
    monkeypatch.setattr(textfile, "_warned", set())
    monkeypatch.setattr(metrics, "_counts", dict.fromkeys(metrics.NAMES, 0))
    return Config(metrics_file=str(tmp_path / "eni_guest.prom")).validate()


def ids(n: int, mac: str) -> str:
    return f'eni_id="eni-{n}",interface="eth{n}",mac="{mac}"'


def scrape(path: Path) -> dict[str, float]:
    out = {}
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            out[series] = float(value)
    return out


def test_the_file_is_in_the_text_format_with_help_and_type(cfg: Config) -> None:
    metrics.count("metadata_requests", 7)
    metrics.count("netlink_requests", 3)
    assert textfile.record(cfg, result(Config(exclude_interfaces=("eth1",))), clock=lambda: 1e9)
    path = Path(cfg.metrics_file)
    text = path.read_text()
    seen: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            seen[name] = kind
            assert kind in ("gauge", "counter") and name.endswith("_total") == (kind == "counter")
        elif not line.startswith("# HELP "):
            assert SAMPLE.fullmatch(line), line
            assert line.split("{")[0].split()[0] in seen, f"{line}: sample before its TYPE"
    assert scrape(path) == {
        f'eni_guest_eni_in_sync{{{ids(0, MAC1)},reason="in_sync"}}': 1,
        f'eni_guest_eni_in_sync{{{ids(1, MAC2)},reason="excluded"}}': 0,
        f'eni_guest_eni_in_sync{{{ids(2, MAC3)},reason="excluded"}}': 0,
        f"eni_guest_eni_ips{{{ids(0, MAC1)}}}": 1,
        f"eni_guest_eni_ips{{{ids(1, MAC2)}}}": 0,
        f"eni_guest_eni_ips{{{ids(2, MAC3)}}}": 0,
        "eni_guest_last_reconcile_timestamp_seconds": 1e9,
        "eni_guest_last_reconcile_success": 1,
        "eni_guest_last_success_timestamp_seconds": 1e9,
        'eni_guest_reconciles_total{result="success"}': 1,
        "eni_guest_changes_applied_total": 0,
        "eni_guest_metadata_requests_total": 7,
        "eni_guest_metadata_failures_total": 0,
        "eni_guest_netlink_requests_total": 3,
        "eni_guest_dhcp_probes_total": 0,
    }
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert sorted(os.listdir(path.parent)) == ["eni_guest.prom"]  # the temporary was renamed


def test_counters_grow_across_processes_and_failures_keep_what_they_cannot_know(
    cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = Path(cfg.metrics_file)
    metrics.count("metadata_requests", 5)
    textfile.record(cfg, result(Config()), clock=lambda: 1000.0)
    enis = {k: v for k, v in scrape(path).items() if k.startswith("eni_guest_eni_")}
    metrics.count("metadata_requests", 2)  # the same process: only what is new is added
    metrics.count("metadata_failures")
    textfile.record(cfg, error=MetadataUnavailable("timed out"), clock=lambda: 1060.0)
    monkeypatch.setattr(textfile, "_flushed", {})  # another process: `apply` after the daemon
    monkeypatch.setattr(metrics, "_counts", dict.fromkeys(metrics.NAMES, 0))
    metrics.count("metadata_requests", 4)
    textfile.record(cfg, error=KernelError("refused"), clock=lambda: 1120.0)
    after = scrape(path)
    assert {k: v for k, v in after.items() if k.startswith("eni_guest_eni_")} == enis
    assert after["eni_guest_metadata_requests_total"] == 5 + 2 + 4
    assert after["eni_guest_metadata_failures_total"] == 1
    assert after['eni_guest_reconciles_total{result="success"}'] == 1
    assert after['eni_guest_reconciles_total{result="metadata_unavailable"}'] == 1
    assert after['eni_guest_reconciles_total{result="kernel_refused"}'] == 1
    assert after["eni_guest_last_reconcile_success"] == 0
    assert after["eni_guest_last_reconcile_timestamp_seconds"] == 1120
    assert after["eni_guest_last_success_timestamp_seconds"] == 1000


def test_why_an_eni_is_not_in_sync(cfg: Config) -> None:
    instance = Instance(
        "aws",
        "i-1",
        MAC1,
        (eni(MAC1, 0, ["10.0.1.10", "10.0.1.11"]),),
        unsettled=(Unsettled(MAC2, "no local-ipv4s yet"),),
    )
    res = Result(instance, plan(instance, Config(), STATE), STATE)
    pending = textfile.eni_samples(res, applied=False)
    done = textfile.eni_samples(res, applied=True)  # applied and verified: in sync now
    key = ("eni_id", "eni-0"), ("interface", "eth0"), ("mac", MAC1)
    assert pending[("eni_guest_eni_in_sync", (*key, ("reason", "pending")))] == 0
    assert done[("eni_guest_eni_in_sync", (*key, ("reason", "in_sync")))] == 1
    assert done[("eni_guest_eni_ips", key)] == 2
    gone = ("eni_id", ""), ("interface", ""), ("mac", MAC2)
    assert done[("eni_guest_eni_in_sync", (*gone, ("reason", "unsettled")))] == 0


def test_what_is_read_back_is_checked_like_input(cfg: Config) -> None:
    path = Path(cfg.metrics_file)
    path.write_text(
        "eni_guest_metadata_requests_total 40\n"
        "eni_guest_netlink_requests_total -5\n"  # negative: dropped
        "eni_guest_dhcp_probes_total nan\n"  # not a number: dropped
        "other_exporter_metric 3\n"  # not ours: dropped
        'eni_guest_eni_ips{mac="a\\"b"} 3\n'  # escaped label values survive
        "garbage line\n"
    )
    assert textfile.read(path) == {
        ("eni_guest_metadata_requests_total", ()): 40,
        ("eni_guest_eni_ips", (("mac", 'a"b'),)): 3,
    }
    textfile.record(cfg, error=MetadataUnavailable("x"), clock=lambda: 1.0)
    assert 'eni_guest_eni_ips{mac="a\\"b"} 3' in path.read_text()  # escaped again
    assert scrape(path)["eni_guest_metadata_requests_total"] == 40
    os.chmod(path, 0o666)  # anyone could have written it: not read back
    assert textfile.read(path) == {}


def test_a_symlink_or_a_missing_directory_is_not_written_and_said_once(
    cfg: Config, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = Path(cfg.metrics_file)
    path.symlink_to(tmp_path / "elsewhere.prom")
    assert not textfile.record(cfg, result(Config()))
    assert not textfile.record(cfg, result(Config()))
    assert not (tmp_path / "elsewhere.prom").exists()
    assert len([r for r in caplog.records if "not written" in r.getMessage()]) == 1
    missing = Config(metrics_file=str(tmp_path / "absent" / "x.prom")).validate()
    assert not textfile.record(missing, result(Config()))
    assert not (tmp_path / "absent").exists()
    assert not textfile.record(Config(), result(Config()))  # none configured: nothing at all


@pytest.mark.parametrize("value", ["relative.prom", "/var/lib/x.txt", "/a/b\n.prom"])
def test_metrics_file_must_be_an_absolute_prom_path(value: str) -> None:
    with pytest.raises(ConfigError, match="metrics_file"):
        load(environ={"ENI_GUEST_METRICS_FILE": value})
    assert load(environ={"ENI_GUEST_METRICS_FILE": "/x/eni_guest.prom"}).metrics_file


def test_an_eni_whose_change_the_kernel_refused_is_pending(cfg: Config) -> None:
    err = KernelError("addr add 10.0.1.20/32 dev eth1: File exists")
    err.result = result(Config())  # type: ignore[attr-defined]  # as agent.reconcile attaches it
    assert textfile.record(cfg, error=err, clock=lambda: 5.0)
    after = scrape(Path(cfg.metrics_file))
    assert after[f'eni_guest_eni_in_sync{{{ids(0, MAC1)},reason="pending"}}'] == 0
    assert after['eni_guest_reconciles_total{result="kernel_refused"}'] == 1
    assert "eni_guest_last_success_timestamp_seconds" not in after

"""keep_off: NetworkManager and systemd-networkd drop-ins for secondary ENIs, in a temp root.

Every test writes under tmp_path; the reload path is tested with a fake runner, so nothing here
can reach this machine's NetworkManager, networkd or /run.
"""

from __future__ import annotations

import configparser
import stat
from pathlib import Path

import pytest

from eni_guest import distro
from eni_guest.distro import NETWORKD_FILE, NETWORKD_FOREIGN, NM_DROPIN, keep_off, reload_managers

# nothing reaches this machine's NetworkManager, networkd or /run (conftest.py)
pytestmark = pytest.mark.usefixtures("no_real_runner", "pending_in_tmp")

PRIMARY = "0e:00:00:00:00:c3"
SECOND = "0e:00:00:00:00:b2"
THIRD = "0e:00:00:00:00:a1"


def _nm(root: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True)
    parser.read_string((root / NM_DROPIN).read_text())
    return parser


def test_writes_both_drop_ins_for_secondaries_only(tmp_path: Path) -> None:
    changed = keep_off([THIRD, PRIMARY, SECOND.upper()], PRIMARY, tmp_path)
    ours = [NM_DROPIN, NETWORKD_FILE, NETWORKD_FOREIGN]
    assert sorted(changed) == sorted(str(tmp_path / p) for p in ours)
    nm = _nm(tmp_path)
    assert nm["keyfile"]["unmanaged-devices+"] == f"mac:{THIRD};mac:{SECOND}"
    networkd = (tmp_path / NETWORKD_FILE).read_text()
    assert f"MACAddress={THIRD} {SECOND}\n" in networkd
    assert "[Link]\nUnmanaged=yes\n" in networkd
    assert "Type=ether" in networkd
    for text in ((tmp_path / NM_DROPIN).read_text(), networkd):
        assert PRIMARY not in text


def test_files_are_world_readable(tmp_path: Path) -> None:
    """networkd reads .network files as systemd-network, and our units run with UMask=0077."""
    keep_off([SECOND], PRIMARY, tmp_path)
    for rel in (NM_DROPIN, NETWORKD_FILE, NETWORKD_FOREIGN):
        assert stat.S_IMODE((tmp_path / rel).stat().st_mode) == 0o644
        assert stat.S_IMODE((tmp_path / rel).parent.stat().st_mode) == 0o755


def test_second_call_changes_nothing(tmp_path: Path) -> None:
    keep_off([SECOND, THIRD], PRIMARY, tmp_path)
    before = {p: (tmp_path / p).stat().st_mtime_ns for p in (NM_DROPIN, NETWORKD_FILE)}
    assert keep_off([THIRD, SECOND], PRIMARY, tmp_path) == []
    assert before == {p: (tmp_path / p).stat().st_mtime_ns for p in (NM_DROPIN, NETWORKD_FILE)}


def test_detached_eni_loses_its_stanza(tmp_path: Path) -> None:
    keep_off([SECOND, THIRD], PRIMARY, tmp_path)
    assert len(keep_off([SECOND], PRIMARY, tmp_path)) == 2
    assert THIRD not in (tmp_path / NM_DROPIN).read_text()
    assert THIRD not in (tmp_path / NETWORKD_FILE).read_text()
    assert SECOND in (tmp_path / NETWORKD_FILE).read_text()


def test_no_secondaries_left_removes_the_files(tmp_path: Path) -> None:
    keep_off([SECOND], PRIMARY, tmp_path)
    assert len(keep_off([PRIMARY], PRIMARY, tmp_path)) == 2
    assert not (tmp_path / NM_DROPIN).exists()
    assert not (tmp_path / NETWORKD_FILE).exists()
    assert keep_off([], PRIMARY, tmp_path) == []
    assert (tmp_path / NETWORKD_FOREIGN).exists()  # the primary has rules and a table too


def test_opt_out_removes_our_files(tmp_path: Path) -> None:
    keep_off([SECOND], PRIMARY, tmp_path)
    assert len(keep_off([SECOND], PRIMARY, tmp_path, enabled=False)) == 3
    assert not (tmp_path / NM_DROPIN).exists()
    assert not (tmp_path / NETWORKD_FOREIGN).exists()
    assert keep_off([SECOND], PRIMARY, tmp_path, enabled=False) == []


def test_other_files_in_the_directories_are_left_alone(tmp_path: Path) -> None:
    other = tmp_path / "run/systemd/network/10-netplan-eth0.network"
    other.parent.mkdir(parents=True)
    other.write_text("[Match]\nName=eth0\n")
    keep_off([SECOND], PRIMARY, tmp_path)
    keep_off([], PRIMARY, tmp_path)
    assert other.read_text() == "[Match]\nName=eth0\n"
    # and ours sorts first, so networkd picks it over netplan's and cloud-init's
    names = [NETWORKD_FILE.name, "10-netplan-eth0.network", "10-cloud-init-eth1.network"]
    assert min(names) == NETWORKD_FILE.name


def test_networkd_keeps_foreign_rules_and_routes_without_any_secondary(tmp_path: Path) -> None:
    """networkd deletes rules and routes it did not create when it configures a link: the
    drop-in turns that off in networkd.conf's [Network] section, for every set of ENIs."""
    assert keep_off([], PRIMARY, tmp_path) == [str(tmp_path / NETWORKD_FOREIGN)]
    parser = configparser.ConfigParser(strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((tmp_path / NETWORKD_FOREIGN).read_text())
    assert dict(parser["Network"]) == {
        "ManageForeignRoutingPolicyRules": "no",
        "ManageForeignRoutes": "no",
    }
    assert NETWORKD_FOREIGN.parent == Path("run/systemd/networkd.conf.d")
    assert keep_off([SECOND], PRIMARY, tmp_path) == [
        str(tmp_path / NM_DROPIN),
        str(tmp_path / NETWORKD_FILE),
    ]


def test_networkd_conf_drop_in_never_reloads_networkd() -> None:
    """networkd reads networkd.conf when it starts: the drop-in is no reason to reload it (a
    reload reconfigures links) and certainly not to restart it (DHCP again on the primary)."""
    calls: list[list[str]] = []

    def fake(argv: list[str]) -> tuple[int, str]:
        calls.append(argv)
        return 0, ""

    reload_managers([NETWORKD_FOREIGN], run=fake)
    assert calls == []


def test_bad_mac_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a MAC"):
        keep_off([SECOND, "eth1"], PRIMARY, tmp_path)
    assert not (tmp_path / "run").exists()


def test_reload_asks_only_running_managers_whose_file_changed() -> None:
    calls: list[list[str]] = []
    active = {"NetworkManager.service"}

    def fake(argv: list[str]) -> tuple[int, str]:
        calls.append(argv)
        if argv[:3] == ["systemctl", "is-active", "--quiet"]:
            return (0 if argv[3] in active else 3), ""
        return 0, ""

    reload_managers([NM_DROPIN, NETWORKD_FILE], run=fake)
    assert ["nmcli", "general", "reload", "conf"] in calls
    assert ["networkctl", "reload"] not in calls  # networkd is not running: never D-Bus start it

    calls.clear()
    active = {"NetworkManager.service", "systemd-networkd.service"}
    reload_managers([NETWORKD_FILE], run=fake)
    assert calls[-1] == ["networkctl", "reload"]
    assert ["nmcli", "general", "reload", "conf"] not in calls


def test_reload_failure_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:

    def fake(argv: list[str]) -> tuple[int, str]:
        return (0, "") if argv[0] == "systemctl" else (1, "Error: NetworkManager is not running.")

    reload_managers([NM_DROPIN], run=fake)
    assert "nmcli general reload conf failed" in caplog.text


def test_non_root_tree_never_reloads(tmp_path: Path) -> None:
    # the autouse fixture makes any subprocess call fail the test
    keep_off([SECOND], PRIMARY, tmp_path)
    keep_off([], PRIMARY, tmp_path)


def test_wait_released_polls_networkmanager_until_it_lets_go() -> None:
    """After a reload NetworkManager deactivates the devices one by one (and takes their links
    down): the run waits for that before it plans, instead of meeting "Network is down"."""
    answers = iter(
        [
            "ens16:connected\nens17:connected\nens18:deactivating\n",
            "ens16:connected\nens17:unmanaged\nens18:deactivating\n",
            "ens16:connected\nens17:unmanaged\nens18:unmanaged\n",
        ]
    )
    calls: list[list[str]] = []

    def runner(argv: list[str]) -> tuple[int, str]:
        calls.append(argv)
        if argv[0] == "systemctl":
            return 0, ""
        return 0, next(answers)

    assert distro.wait_released(["ens17", "ens18", "ens99"], runner) == []
    assert sum(1 for c in calls if c[0] == "nmcli") == 3  # ens99 unknown to NM: released


def test_wait_released_gives_up_and_names_what_is_still_held() -> None:
    def runner(argv: list[str]) -> tuple[int, str]:
        return (0, "") if argv[0] == "systemctl" else (0, "ens17:connected\n")

    assert distro.wait_released(["ens17"], runner, timeout=0.3) == ["ens17"]


def test_wait_released_asks_nothing_when_networkmanager_is_not_running() -> None:
    calls: list[list[str]] = []

    def runner(argv: list[str]) -> tuple[int, str]:
        calls.append(argv)
        return 3, ""  # systemctl is-active: inactive

    assert distro.wait_released(["ens17"], runner) == []
    assert [c[0] for c in calls] == ["systemctl"]


def test_a_failed_reload_is_retried_by_the_next_run_even_with_nothing_changed(
    pending_in_tmp: Path,
) -> None:
    """In cloud-init's init stage D-Bus is not up yet and `networkctl reload` fails; the
    drop-ins do not change again afterwards, so a later run must still reload networkd."""
    calls: list[list[str]] = []
    answers = {"networkctl": 1}

    def runner(argv: list[str]) -> tuple[int, str]:
        calls.append(argv)
        if argv[0] == "systemctl":
            return 0, ""
        return answers[argv[0]], "Failed to connect to system bus"

    distro.reload_managers([NETWORKD_FILE], run=runner)
    assert (pending_in_tmp / "systemd-networkd.service").exists()
    answers["networkctl"] = 0
    calls.clear()
    distro.reload_managers([], run=runner)  # nothing changed this time
    assert ["networkctl", "reload"] in calls
    assert not (pending_in_tmp / "systemd-networkd.service").exists()
    calls.clear()
    distro.reload_managers([], run=runner)
    assert calls == []  # retried once, then nothing more to do


def test_before_dbus_the_reload_is_left_to_the_next_run_without_a_warning(
    pending_in_tmp: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """cloud-init's init stage runs before D-Bus: no nmcli/networkctl call, no warning."""
    calls: list[list[str]] = []

    def runner(argv: list[str]) -> tuple[int, str]:
        calls.append(argv)
        return 0, ""

    distro.reload_managers([NETWORKD_FILE], run=runner, bus=tmp_path / "no-bus-yet")
    assert calls == []
    assert (pending_in_tmp / "systemd-networkd.service").exists()
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    distro.reload_managers([], run=runner)  # D-Bus up now
    assert ["networkctl", "reload"] in calls

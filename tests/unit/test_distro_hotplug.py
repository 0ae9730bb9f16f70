"""mark_new_nics: the /run files that make eni-guest's udev rule mark hot-plugged ENIs unmanaged
(the rule itself runs under the real `udevadm test` in tests/e2e/test_udev.py).  Everything
is written under tmp_path; the reload path refuses to run anything."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from eni_guest import distro
from eni_guest.distro_hotplug import (
    DISTRO_KEEPS,
    DISTRO_NICS,
    MARKER,
    NETWORKD_HOTPLUG,
    mark_new_nics,
)

# nothing reaches this machine's NetworkManager, networkd or /run (conftest.py)
pytestmark = pytest.mark.usefixtures("no_real_runner", "pending_in_tmp")

PRIMARY = "0e:00:00:00:00:c3"
EXCLUDED = "0e:00:00:00:00:b2"


def test_marker_and_the_nics_left_to_the_distro(tmp_path: Path) -> None:
    changed = mark_new_nics(PRIMARY.upper(), [EXCLUDED], tmp_path)
    assert changed[-1] == str(tmp_path / MARKER)  # written last: see the next test
    assert sorted(p.name for p in (tmp_path / DISTRO_NICS).iterdir()) == [EXCLUDED, PRIMARY]
    assert (tmp_path / DISTRO_NICS / PRIMARY).read_text() == "the primary ENI\n"
    network = configparser.ConfigParser()
    network.optionxform = str  # type: ignore[assignment,method-assign]
    network.read_string((tmp_path / NETWORKD_HOTPLUG).read_text())
    assert dict(network["Match"]) == {"Property": "ENI_GUEST_UNMANAGED=1"}
    assert dict(network["Link"]) == {"Unmanaged": "yes"}
    assert mark_new_nics(PRIMARY, [EXCLUDED], tmp_path) == []  # nothing changed: no write


def test_the_marker_never_exists_without_the_primarys_exception(tmp_path: Path) -> None:
    """A udev event between two writes must never find the marker and no primary file: the
    primary's exception is written before the marker and outlives it on removal."""
    on = mark_new_nics(PRIMARY, [], tmp_path)
    assert on.index(str(tmp_path / DISTRO_NICS / PRIMARY)) < on.index(str(tmp_path / MARKER))
    off = mark_new_nics(PRIMARY, [], tmp_path, enabled=False)
    assert off.index(str(tmp_path / MARKER)) < off.index(str(tmp_path / DISTRO_NICS / PRIMARY))
    assert not (tmp_path / MARKER).exists()
    assert not (tmp_path / NETWORKD_HOTPLUG).exists()
    assert list((tmp_path / DISTRO_NICS).iterdir()) == []


def test_switched_off_the_boot_time_marking_stays_off_for_nics_appearing_later(
    tmp_path: Path,
) -> None:
    """manage_distro_network = false: the udev rule's boot-time clause (every cloud NIC but the
    first, before any run) is off once a run wrote DISTRO_KEEPS; switched on again, it goes."""
    mark_new_nics(PRIMARY, [], tmp_path, enabled=False)
    assert (tmp_path / DISTRO_KEEPS).exists() and not (tmp_path / MARKER).exists()
    mark_new_nics(PRIMARY, [], tmp_path)
    assert not (tmp_path / DISTRO_KEEPS).exists() and (tmp_path / MARKER).exists()


def test_an_eni_no_longer_excluded_loses_its_exception(tmp_path: Path) -> None:
    mark_new_nics(PRIMARY, [EXCLUDED], tmp_path)
    changed = mark_new_nics(PRIMARY, [], tmp_path)
    assert changed == [str(tmp_path / DISTRO_NICS / EXCLUDED)]
    assert not (tmp_path / DISTRO_NICS / EXCLUDED).exists()
    assert (tmp_path / MARKER).exists()


def test_networkd_is_reloaded_when_its_file_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def runner(argv: list[str]) -> tuple[int, str]:
        calls.append(argv)
        return 0, ""

    distro.reload_managers([Path("/") / NETWORKD_HOTPLUG, Path("/") / MARKER], runner)
    assert ["networkctl", "reload"] in calls
    assert not any(argv[0] == "nmcli" for argv in calls)  # NM reads the udev property itself

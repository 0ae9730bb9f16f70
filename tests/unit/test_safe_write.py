"""Drop-ins are written atomically and never through a planted symbolic link.

A local user who could plant a link where eni-guest (root) writes - at the drop-in's own path
or in place of a directory on the way - must not get a file of their choosing created,
replaced or removed.  Every test plants its link in a temp root and checks that the refusal
names the path, that it is a configuration error (exit 2), and that the link's target is
untouched.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from eni_guest import distro
from eni_guest.distro import NETWORKD_FILE, NM_DROPIN, keep_off, write_if_changed
from eni_guest.errors import EXIT_USAGE, ConfigError
from eni_guest.safe_write import UnsafePath

PRIMARY, SECOND = "0e:00:00:00:00:c3", "0e:00:00:00:00:b2"


@pytest.fixture(autouse=True)
def no_real_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(argv: list[str]) -> tuple[int, str]:
        raise AssertionError(f"a test tried to run {argv}")

    monkeypatch.setattr(distro, "_run", refuse)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file a local attacker would like root to overwrite."""
    path = tmp_path / "victim" / "shadow"
    path.parent.mkdir()
    path.write_text("precious\n")
    return path


def _refused(root: Path, planted: Path) -> UnsafePath:
    with pytest.raises(UnsafePath) as info:
        keep_off([SECOND], PRIMARY, root)
    e = info.value
    assert isinstance(e, ConfigError) and e.exit_code == EXIT_USAGE
    assert str(e).startswith(f"{planted}: ") and "\n" not in str(e)
    return e


def test_a_link_planted_at_the_drop_in_is_refused(tmp_path: Path, victim: Path) -> None:
    root = tmp_path / "root"
    link = root / NETWORKD_FILE
    link.parent.mkdir(parents=True)
    link.symlink_to(victim)
    e = _refused(root, link)
    assert "symbolic link" in str(e)
    assert link.is_symlink() and victim.read_text() == "precious\n"


def test_a_link_planted_for_a_directory_is_refused(tmp_path: Path, victim: Path) -> None:
    """/run/systemd/network -> somewhere else: nothing is created over there."""
    root = tmp_path / "root"
    (root / "run/systemd").mkdir(parents=True)
    (root / "run/systemd/network").symlink_to(victim.parent)
    _refused(root, root / "run/systemd/network")
    assert sorted(p.name for p in victim.parent.iterdir()) == ["shadow"]


def test_a_link_planted_higher_up_is_refused(tmp_path: Path, victim: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "run").symlink_to(victim.parent)
    _refused(root, root / "run")
    assert sorted(p.name for p in victim.parent.iterdir()) == ["shadow"]


def test_removing_a_drop_in_never_removes_a_links_target(tmp_path: Path, victim: Path) -> None:
    root = tmp_path / "root"
    link = root / NM_DROPIN
    link.parent.mkdir(parents=True)
    link.symlink_to(victim)
    with pytest.raises(UnsafePath):
        keep_off([], PRIMARY, root)  # no secondary ENI: the NetworkManager drop-in must go
    assert link.is_symlink() and victim.read_text() == "precious\n"


def test_a_fifo_at_the_drop_in_is_refused_without_blocking(tmp_path: Path) -> None:
    root = tmp_path / "root"
    fifo = root / NETWORKD_FILE
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    result: list[BaseException] = []

    def run() -> None:
        try:
            keep_off([SECOND], PRIMARY, root)
        except BaseException as e:
            result.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "opening the FIFO blocked"
    assert isinstance(result[0], UnsafePath) and "not a regular file" in str(result[0])


def test_a_directory_at_the_drop_in_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / NETWORKD_FILE).mkdir(parents=True)
    e = _refused(root, root / NETWORKD_FILE)
    assert "not a regular file" in str(e)


def test_the_file_is_replaced_whole_not_written_in_place(tmp_path: Path) -> None:
    """Atomic: a new inode renamed over the old one (a reader never sees half a file), and
    no temporary file is left behind."""
    path = tmp_path / "d" / "f.conf"
    assert write_if_changed(path, "one\n")
    before = path.stat().st_ino
    keep = path.open()  # a reader holding the old file still reads the old content
    assert write_if_changed(path, "two\n")
    assert keep.read() == "one\n" and path.read_text() == "two\n"
    keep.close()
    assert path.stat().st_ino != before
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.conf"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_file_that_is_not_utf8_is_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "f.conf"
    path.write_bytes(b"\xff\xfe garbage")
    assert write_if_changed(path, "ok\n") and path.read_text() == "ok\n"


def test_without_a_root_only_the_file_itself_is_checked(tmp_path: Path, victim: Path) -> None:
    """install's files (image roots): the file's own directory is where checking starts."""
    (tmp_path / "etc").symlink_to(victim.parent)
    assert write_if_changed(tmp_path / "etc" / "new.conf", "x\n")
    link = tmp_path / "etc" / "linked.conf"
    link.symlink_to(victim)
    with pytest.raises(UnsafePath):
        write_if_changed(link, "y\n")
    assert victim.read_text() == "precious\n"

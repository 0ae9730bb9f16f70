"""One run at a time: udev, the boot unit, the timer and a person can start us together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from eni_guest.errors import EXIT_LOCKED, EXIT_USAGE, ConfigError, LockTimeout
from eni_guest.lock import run_lock

# Takes the lock, says so, and holds it until a line arrives on stdin (or it is killed).
HOLDER = """
import sys
from eni_guest.lock import run_lock
with run_lock(sys.argv[1], 5):
    print("held", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


@pytest.fixture
def holder(tmp_path: Path):
    """Start another process holding the lock; yields (process, lock path)."""
    path = tmp_path / "lock"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
        yield proc, path
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def release_after(proc: subprocess.Popen, seconds: float) -> threading.Timer:
    def release() -> None:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()

    timer = threading.Timer(seconds, release)
    timer.start()
    return timer


def test_free_lock_is_taken_at_once_and_names_its_holder(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    start = time.monotonic()
    with run_lock(str(path), 0):
        assert time.monotonic() - start < 0.5
        assert path.read_text().strip() == str(os.getpid())
    # released: the next run gets it at once too
    with run_lock(str(path), 0):
        pass


def test_second_run_waits_for_the_first_to_release(holder) -> None:
    proc, path = holder
    timer = release_after(proc, 0.5)
    start = time.monotonic()
    try:
        with run_lock(str(path), 10):
            waited = time.monotonic() - start
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "released"
            assert path.read_text().strip() == str(os.getpid())
    finally:
        timer.cancel()
    assert 0.4 <= waited < 5


def test_timeout_raises_lock_timeout_naming_the_file(holder) -> None:
    proc, path = holder
    start = time.monotonic()
    with pytest.raises(LockTimeout) as err, run_lock(str(path), 0.3):
        pytest.fail("got a lock another process holds")
    elapsed = time.monotonic() - start
    assert 0.3 <= elapsed < 2
    assert str(path) in str(err.value)
    assert err.value.exit_code == EXIT_LOCKED
    assert proc.poll() is None  # the holder was not disturbed


def test_zero_timeout_fails_at_once_when_held(holder) -> None:
    _, path = holder
    start = time.monotonic()
    with pytest.raises(LockTimeout), run_lock(str(path), 0):
        pass
    assert time.monotonic() - start < 0.5


def test_holder_killed_while_holding_does_not_block_the_next_run(holder) -> None:
    proc, path = holder
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    start = time.monotonic()
    with run_lock(str(path), 5):
        assert time.monotonic() - start < 1
        assert path.read_text().strip() == str(os.getpid())


# ---------------------------------------------------------------- a lock file planted by someone


def refused(path: Path, words: str) -> None:
    with pytest.raises(ConfigError) as err, run_lock(str(path), 0):
        pass
    assert err.value.exit_code == EXIT_USAGE
    assert words in str(err.value) and str(path) in str(err.value)


def test_a_planted_symlink_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("do not truncate me\n")
    (tmp_path / "lock").symlink_to(target)
    refused(tmp_path / "lock", "is a symbolic link")
    assert target.read_text() == "do not truncate me\n"


def test_a_lock_file_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "lock").mkdir()
    refused(tmp_path / "lock", "Is a directory")
    os.mkfifo(tmp_path / "fifo")
    refused(tmp_path / "fifo", "not a regular file")


def test_a_missing_directory_is_a_configuration_error(tmp_path: Path) -> None:
    refused(tmp_path / "no-such-dir" / "lock", "does not exist")


def test_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    refused(shared / "lock", "writable by others")
    shared.chmod(0o1777)  # sticky, like /tmp: others cannot replace our file
    with run_lock(str(shared / "lock"), 0):
        pass


def test_an_existing_lock_file_is_never_truncated(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    path.write_text("x" * 100)
    with run_lock(str(path), 0):
        pass
    assert len(path.read_text()) == 100 and path.read_text().split()[0] == str(os.getpid())

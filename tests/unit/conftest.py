"""Fixtures shared by unit tests.

For the tests of distro.py and distro_hotplug.py (their ``pytestmark`` uses the two below):
nothing may reach this machine's NetworkManager, networkd or /run."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from eni_guest import distro
from eni_guest.log import log
from eni_guest.providers import memo


@pytest.fixture(autouse=True)
def fresh_memo() -> Iterator[None]:
    """Every test starts as a new process does: nothing kept of an earlier metadata read."""
    yield
    memo.forget()
    memo._on = False


@pytest.fixture(autouse=True)
def log_as_library() -> Iterator[None]:
    """A command line run in-process (CliRunner) writes the log to stderr from then on
    (log.setup): every test starts with it handed to the standard library's logging (caplog)."""
    log.as_library()
    yield
    log.as_library()


@pytest.fixture
def no_real_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(argv: list[str]) -> tuple[int, str]:
        raise AssertionError(f"a test tried to run {argv}")

    monkeypatch.setattr(distro, "_run", refuse)


@pytest.fixture
def pending_in_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Failed reloads are remembered under /run: never this machine's."""
    pending = tmp_path / "reload-pending"
    monkeypatch.setattr(distro, "PENDING_DIR", pending)
    bus = tmp_path / "system_bus_socket"  # D-Bus is up (the reload tests' premise)
    bus.touch()
    monkeypatch.setattr(distro, "SYSTEM_BUS", bus)
    return pending

"""`hotplug add` behind a busy run lock: a NIC another run configures needs no run of its own.

At boot udev starts a hot-plug unit for every NIC present while the boot apply (or cloud-init's
module) configures them all under the lock; under a slow guest that apply holds the lock longer
than lock_timeout.  The units must then exit 0 (the NIC is configured), not 5.
"""

from __future__ import annotations

import fcntl
import os
from ipaddress import ip_network
from pathlib import Path
from typing import Iterator

import pytest

from eni_guest import agent, hotplug
from eni_guest.config import Config
from eni_guest.errors import LockTimeout
from eni_guest.state import KernelState, Link, Route


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(lock_file=str(tmp_path / "lock"))


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    """The reconciles `hotplug` would run (recorded, not run)."""
    made: list[Config] = []
    monkeypatch.setattr(agent, "reconcile", lambda config, **kw: made.append(config))
    return made


@pytest.fixture
def held(config: Config) -> Iterator[None]:
    """Another run holds the lock for the whole test."""
    fd = os.open(config.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def state(group: int, routed: bool) -> KernelState:
    link = Link(7, "ens17", "0e:00:00:00:00:b2", group, True, 1500)
    route = Route(4, 10001, ip_network("10.0.1.0/24"), 7)
    return KernelState(links=(link,), routes=(route,) if routed else ())


def test_a_nic_is_configured_when_in_eni_guests_group_and_routed_by_its_tables() -> None:
    config = Config()
    assert hotplug.configured(state(config.interface_group, True), 7, config)
    assert not hotplug.configured(state(0, False), 7, config)  # as it appears
    # moved in from another namespace: the group came along, the routes did not
    assert not hotplug.configured(state(config.interface_group, False), 7, config)
    assert not hotplug.configured(state(config.interface_group, True), 8, config)  # gone


def test_free_lock_and_nic_not_yet_configured_reconciles(config: Config, runs: list) -> None:
    hotplug.reconcile_unless_done(config, 1.0, lambda: False, name="ens17")
    assert runs == [config]


def test_free_lock_and_nic_configured_by_the_run_before_does_nothing(
    config: Config, runs: list
) -> None:
    hotplug.reconcile_unless_done(config, 1.0, lambda: True, name="ens17")
    assert runs == []


def test_lock_held_by_a_run_that_configures_the_nic_exits_without_a_run(
    config: Config, runs: list, held: None
) -> None:
    answers = iter([False, False, True])
    hotplug.reconcile_unless_done(config, 30.0, lambda: next(answers), name="ens17", step=0.05)
    assert runs == []


def test_lock_held_past_the_wait_by_a_run_that_leaves_the_nic_alone_is_exit_5(
    config: Config, runs: list, held: None
) -> None:
    with pytest.raises(LockTimeout, match="has not configured ens17"):
        hotplug.reconcile_unless_done(config, 0.3, lambda: False, name="ens17", step=0.05)
    assert runs == []

"""The cloud-init module as installed, without cloud-init: settings, env file, calling conventions.

The module must work under cloud-init's own Python, so it is imported here from its rendered
file (never as part of eni_guest), and ``eni-guest`` is replaced by a small script that
records what it was called with.  tests/e2e/test_cloudinit.py runs it under the real cloud-init.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import stat
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from eni_guest.install_cloudinit import render_module


@pytest.fixture
def fake_eni_guest(tmp_path: Path) -> Path:
    """An executable that records argv and ENI_GUEST_* variables, exiting with $FAKE_EXIT."""
    script = tmp_path / "bin/eni-guest"
    script.parent.mkdir()
    record = tmp_path / "calls.jsonl"
    script.write_text(
        "#!/bin/sh\n"
        f'{sys.executable} -c \'import json, os, sys; print(json.dumps({{"argv": sys.argv[1:], '
        f'"env": {{k: v for k, v in os.environ.items() if k.startswith("ENI_GUEST_")}}}}))\' '
        f'"$@" >> {record}\n'
        'echo "eni-guest: addr add 10.0.2.31/32 dev eth2 noprefixroute (eni-c)" >&2\n'
        'exit "${FAKE_EXIT:-0}"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.fixture
def module(tmp_path: Path, fake_eni_guest: Path) -> ModuleType:
    path = tmp_path / "cc_eni_guest.py"
    path.write_text(render_module([str(fake_eni_guest)]))
    spec = importlib.util.spec_from_file_location("cc_eni_guest", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.ENV_FILE = str(tmp_path / "etc/eni-guest/cloud-init.env")
    mod._restart_watch = lambda: calls_restart.append(1)  # never systemctl in a unit test
    calls_restart.clear()
    return mod


calls_restart: list[int] = []


def _calls(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


CFG = {
    "eni_guest": {
        "provider": "aws",
        "metadata_url": "http://169.254.169.254",
        "ipv6": False,
        "table_base": 20000,
    }
}
EXPECTED_ENV = {
    "ENI_GUEST_PROVIDER": "aws",
    "ENI_GUEST_METADATA_URL": "http://169.254.169.254",
    "ENI_GUEST_IPV6": "false",
    "ENI_GUEST_TABLE_BASE": "20000",
}


def test_meta_is_what_cloud_init_validates(module: ModuleType) -> None:
    assert module.meta["frequency"] == "always"  # PER_ALWAYS: every boot
    assert module.meta["distros"] == ["all"]
    # cloud-init < 22.1 (Debian 11's 20.4) reads the module's attributes instead of meta
    assert module.frequency == "always" and module.distros == ["all"]
    assert module.meta["activate_by_schema_keys"] == []  # runs without an eni_guest key too
    assert not hasattr(module, "schema")  # cloud-init 22.x refuses modules defining one


def test_handle_has_not_five_parameters(module: ModuleType) -> None:
    """cloud-init 23.2+ passes log= (and warns) only to five-parameter handle functions."""
    assert len(inspect.signature(module.handle).parameters) != 5


@pytest.mark.parametrize("convention", ["cloud-init 22.x", "cloud-init 23.2+"])
def test_handle_runs_apply_with_settings(
    module: ModuleType, tmp_path: Path, convention: str
) -> None:
    if convention == "cloud-init 22.x":
        module.handle("eni_guest", CFG, object(), logging.getLogger("x"), [])
    else:
        module.handle(name="eni_guest", cfg=CFG, cloud=object(), args=[])
    (call,) = _calls(tmp_path)
    assert call["argv"] == ["apply"]
    assert {k: v for k, v in call["env"].items() if k in EXPECTED_ENV} == EXPECTED_ENV
    env_file = Path(module.ENV_FILE)
    assert env_file.read_text().splitlines()[1:] == [
        f'{k}="{v}"' for k, v in sorted(EXPECTED_ENV.items())
    ]
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o644
    assert calls_restart == [1]


def test_unchanged_settings_do_not_restart_the_watch_daemon(module: ModuleType) -> None:
    module.handle(name="eni_guest", cfg=CFG, cloud=None, args=[])
    module.handle(name="eni_guest", cfg=CFG, cloud=None, args=[])
    assert calls_restart == [1]


def test_without_settings_apply_still_runs(module: ModuleType, tmp_path: Path) -> None:
    module.handle(name="eni_guest", cfg={}, cloud=None, args=[])
    assert [c["argv"] for c in _calls(tmp_path)] == [["apply"]]
    assert not Path(module.ENV_FILE).exists()


def test_disabled_does_nothing_and_drops_kept_settings(module: ModuleType, tmp_path: Path) -> None:
    module.handle(name="eni_guest", cfg=CFG, cloud=None, args=[])
    module.handle(name="eni_guest", cfg={"eni_guest": {"enabled": False}}, cloud=None, args=[])
    assert len(_calls(tmp_path)) == 1
    assert not Path(module.ENV_FILE).exists()


def test_persist_false_keeps_nothing(module: ModuleType, tmp_path: Path) -> None:
    cfg = {"eni_guest": {**CFG["eni_guest"], "persist": False}}
    module.handle(name="eni_guest", cfg=cfg, cloud=None, args=[])
    assert _calls(tmp_path)[0]["env"]["ENI_GUEST_TABLE_BASE"] == "20000"
    assert not Path(module.ENV_FILE).exists()


def test_failure_raises_with_the_last_line(
    module: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_EXIT", "3")
    with pytest.raises(RuntimeError, match="exit code 3: eni-guest: addr add"):
        module.handle(name="eni_guest", cfg={}, cloud=None, args=[])


@pytest.mark.parametrize(
    "section, message",
    [
        ("aws", "must be a mapping"),
        ({"Provider": "aws"}, "not a setting name"),
        ({"provider": ["aws"]}, "string, number or boolean"),
        ({"metadata_url": "http://a\nENI_GUEST_X=1"}, "one line"),
        ({"enabled": "no"}, "true or false"),
    ],
)
def test_bad_user_data_is_refused(
    module: ModuleType, tmp_path: Path, section: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        module.handle(name="eni_guest", cfg={"eni_guest": section}, cloud=None, args=[])
    assert _calls(tmp_path) == []


def test_env_file_quoting(module: ModuleType) -> None:
    text = module.env_file_text({"ENI_GUEST_X": 'a "b" \\c'})
    assert text.splitlines()[1] == 'ENI_GUEST_X="a \\"b\\" \\\\c"'


def test_command_falls_back_to_path(
    module: ModuleType, fake_eni_guest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module.ENI_GUEST_COMMAND = ["/nonexistent/eni-guest"]
    monkeypatch.setenv("PATH", str(fake_eni_guest.parent))
    assert module.command() == [str(fake_eni_guest)]
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RuntimeError, match="not found"):
        module.command()


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file a local user would like cloud-init (root) to overwrite."""
    path = tmp_path / "victim" / "shadow"
    path.parent.mkdir()
    path.write_text("precious\n")
    return path


def test_a_link_planted_at_the_env_file_is_refused(
    module: ModuleType, tmp_path: Path, victim: Path
) -> None:
    link = Path(module.ENV_FILE)
    link.parent.mkdir(parents=True)
    link.symlink_to(victim)
    with pytest.raises(RuntimeError) as info:
        module.handle(name="eni_guest", cfg=CFG, cloud=None, args=[])
    assert str(info.value) == (
        f"eni_guest: {link}: is a symbolic link: refused (written only by this module)"
    )
    assert victim.read_text() == "precious\n" and link.is_symlink()
    with pytest.raises(RuntimeError, match="symbolic link"):  # nor removed through it
        module.handle(name="eni_guest", cfg={"eni_guest": {"enabled": False}}, cloud=None)
    assert victim.read_text() == "precious\n" and link.is_symlink()
    assert _calls(tmp_path) == []


def test_a_link_planted_for_the_env_files_directory_is_refused(
    module: ModuleType, tmp_path: Path, victim: Path
) -> None:
    directory = Path(module.ENV_FILE).parent  # /etc/eni-guest -> somewhere else
    directory.parent.mkdir(parents=True)
    directory.symlink_to(victim.parent)
    with pytest.raises(RuntimeError) as info:
        module.handle(name="eni_guest", cfg=CFG, cloud=None, args=[])
    assert str(info.value).startswith(f"eni_guest: {directory}: is a symbolic link: refused")
    assert sorted(p.name for p in victim.parent.iterdir()) == ["shadow"]


def test_the_env_file_is_replaced_whole(module: ModuleType) -> None:
    assert module.write_env_file(module.ENV_FILE, {"ENI_GUEST_A": "1"})
    env_file = Path(module.ENV_FILE)
    old = env_file.open()
    inode = env_file.stat().st_ino
    assert module.write_env_file(module.ENV_FILE, {"ENI_GUEST_A": "2"})
    assert 'ENI_GUEST_A="1"' in old.read() and 'ENI_GUEST_A="2"' in env_file.read_text()
    old.close()
    assert env_file.stat().st_ino != inode
    assert [p.name for p in env_file.parent.iterdir()] == ["cloud-init.env"]

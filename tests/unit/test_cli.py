"""The command line as a user meets it: exit codes and one-line errors, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest


def run(*args: str, env: Optional[dict[str, str]] = None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "eni_guest", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )


def test_apply_as_non_root_says_so_in_one_line(tmp_path: Path, monkeypatch) -> None:
    # The root check runs before anything is read; pretend to be uid 1000 in-process (the
    # test machine's Python lives under /root, which an unprivileged user cannot read).
    from click.testing import CliRunner

    from eni_guest import cli

    monkeypatch.setattr(cli.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("ENI_GUEST_LOCK_FILE", str(tmp_path / "lock"))
    r = CliRunner().invoke(cli.main, ["apply", "--metadata-url", "http://127.0.0.1:9"])
    assert r.exit_code == 6
    assert r.output.count("\n") == 1
    assert "must run as root" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "lock").exists()


@pytest.mark.parametrize("command, where", [("install", "into"), ("uninstall", "from")])
def test_install_into_root_as_non_root_says_so(monkeypatch, command: str, where: str) -> None:
    from click.testing import CliRunner

    from eni_guest import cli

    monkeypatch.setattr(cli.os, "geteuid", lambda: 1000)
    r = CliRunner().invoke(cli.main, [command])
    assert r.exit_code == 6
    assert (
        r.output
        == f"eni-guest: eni-guest {command} {where} / must run as root (or use --root DIR)\n"
    )


def test_unknown_config_key_is_a_usage_error(tmp_path: Path) -> None:
    cfg = tmp_path / "eni-guest.toml"
    cfg.write_text("table_bse = 20000\n")
    r = run("apply", "--dry-run", "--config", str(cfg))
    assert r.returncode == 2
    assert "table_bse" in r.stderr and r.stderr.count("\n") == 1


def test_wrong_type_in_environment_is_a_usage_error() -> None:
    r = run("apply", "--dry-run", env={"ENI_GUEST_TABLE_BASE": "ten"})
    assert r.returncode == 2
    assert "table_base" in r.stderr and "'ten'" in r.stderr


def test_unreachable_metadata_is_exit_3_and_fast() -> None:
    r = run(
        "apply",
        "--dry-run",
        "--provider",
        "aws",
        "--metadata-url",
        "http://127.0.0.1:9",
        env={"ENI_GUEST_METADATA_RETRIES": "1", "ENI_GUEST_METADATA_DEADLINE": "3"},
    )
    assert r.returncode == 3
    assert r.stderr.startswith("eni-guest: metadata service") and r.stderr.count("\n") == 1


def test_auto_where_nothing_answers_is_exit_3_within_seconds(tmp_path: Path) -> None:
    """The default provider is auto: DMI (none usable here, or not this cloud), then probes."""
    start = time.monotonic()
    r = run(
        "show",
        "--metadata-url",
        "http://127.0.0.1:9",
        # Detection is retried until metadata_deadline (15 s by default): 5 s here.
        env={
            "ENI_GUEST_STATIC_FILE": str(tmp_path / "absent.toml"),
            "ENI_GUEST_METADATA_DEADLINE": "5",
        },
    )
    assert r.returncode == 3 and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert time.monotonic() - start < 8


def test_version_is_printed_without_loading_the_network_stack() -> None:
    code = (
        "import sys; from click.testing import CliRunner; from eni_guest.cli import main;"
        "r = CliRunner().invoke(main, ['--version']); print(r.output.strip());"
        "print('requests' in sys.modules, 'eni_guest.kernel' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.splitlines() == ["eni-guest, version 0.1.0", "False False"]


@pytest.mark.parametrize("how", ["option", "environment"])
def test_unknown_provider_is_one_line_naming_the_known_ones(how: str) -> None:
    args = ["--provider", "azure"] if how == "option" else []
    env = {"ENI_GUEST_PROVIDER": "azure"} if how == "environment" else {}
    r = run("apply", "--dry-run", *args, env=env)
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert "'azure'" in line and "aws" in line and "aliyun" in line and "Traceback" not in line

"""Every configuration error is exit 2 with one short line: whatever the file, the variable or
the option holds (bytes, nesting, numbers, URLs, paths), never a traceback, and credentials
never printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest


def run(*args: str, env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "eni_guest", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def refused(r: subprocess.CompletedProcess, *words: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert len(line) < 400, line
    for w in words:
        assert w in line, line
    return line


FILES = {
    "not UTF-8": (b'provider = "aws"\nmetadata_url = "http://\xff\xfe"\n', "not UTF-8"),
    "nested very deep": (b"exclude_ips = " + b"[" * 5000 + b"]" * 5000 + b"\n", "config file"),
    "inf": (b"metadata_timeout = inf\n", "must be a finite number"),
    "nan": (b"metadata_deadline = nan\n", "must be a finite number"),
    "huge integer as a float": (b"lock_timeout = " + b"9" * 400 + b"\n", "too large"),
    "host label too long": (
        b'metadata_url = "http://' + b"a" * 64 + b'.example"\n',
        "not a valid host name",
    ),
    "port out of range": (b'metadata_url = "http://169.254.169.254:99999"\n', "not a URL"),
    "a 1 MB value": (b'provider = "' + b"x" * 1_000_000 + b'"\n', "chars)"),
}


@pytest.mark.parametrize("name", list(FILES))
def test_a_hostile_config_file_is_one_line_exit_2(tmp_path: Path, name: str) -> None:
    body, words = FILES[name]
    path = tmp_path / "eni-guest.toml"
    path.write_bytes(body)
    refused(run("show", "--config", str(path)), words)


def test_credentials_in_the_metadata_url_are_refused_and_never_printed() -> None:
    url = "http://user:secret@169.254.169.254"
    for r in (
        run("show", "--metadata-url", url),
        run("show", env={"ENI_GUEST_METADATA_URL": url}),
    ):
        line = refused(r, "must not carry credentials")
        assert "secret" not in line and "user" not in line


@pytest.mark.parametrize("value", ["inf", "-nan", "1e999"])
def test_a_number_from_the_environment_must_be_finite(value: str) -> None:
    refused(run("show", env={"ENI_GUEST_HOTPLUG_TIMEOUT": value}), "finite")


def test_a_lock_file_in_a_missing_directory_is_a_configuration_error(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("run the tests as root (tests/run.sh)")
    lock = tmp_path / "missing" / "eni-guest.lock"
    r = run(
        "apply",
        "--provider",
        "aws",
        "--metadata-url",
        "http://127.0.0.1:9",
        env={"ENI_GUEST_LOCK_FILE": str(lock), "ENI_GUEST_DISTRO_ROOT": str(tmp_path)},
    )
    refused(r, "does not exist", str(lock))

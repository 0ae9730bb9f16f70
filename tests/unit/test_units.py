"""The systemd units as `eni-guest install --root` writes them, checked by systemd-analyze.

`systemd-analyze verify` loads a unit file the way PID 1 would (and checks that ExecStart
exists, so the units point at this checkout's real console script); it exits 0 on mere
warnings, so any output at all fails the test.  `systemd-analyze security --offline=yes` scores
the sandboxing without a running systemd; a threshold keeps the hardening from eroding.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from eni_guest.install import UNITS, find_command, install

ANALYZE = shutil.which("systemd-analyze")
# README "Switching parts off" lists the scores; 1.9 with eni-guest under /usr, 2.0 under /root.
MAX_EXPOSURE = 2.2


@pytest.fixture(scope="module")
def unit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert ANALYZE, "systemd-analyze not found (apt-get install systemd; tests/run.sh does)"
    root = tmp_path_factory.mktemp("root")
    install(root)  # the real console script of this environment
    return root / "etc/systemd/system"


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE
    return subprocess.run(
        [ANALYZE, *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("name", UNITS)
def test_unit_verifies_cleanly(unit_dir: Path, name: str) -> None:
    path = unit_dir / name
    assert find_command()[0] in path.read_text()
    cp = _analyze("verify", "--man=no", str(path))
    assert (cp.returncode, cp.stdout + cp.stderr) == (0, "")


@pytest.mark.parametrize("template", [u for u in UNITS if u.endswith("@.service")])
def test_template_instance_verifies_cleanly(unit_dir: Path, tmp_path: Path, template: str) -> None:
    """An instance, as udev starts it: %i expanded in ExecStart, After= and Conflicts=."""
    instance = tmp_path / template.replace("@.service", "@eth1.service")
    shutil.copy(unit_dir / template, instance)
    cp = _analyze("verify", "--man=no", str(instance))
    assert (cp.returncode, cp.stdout + cp.stderr) == (0, "")


def test_verify_would_catch_a_broken_unit(unit_dir: Path, tmp_path: Path) -> None:
    """Guards the two tests above: a typo and a missing binary do produce output."""
    broken = tmp_path / "eni-guest-boot.service"
    text = (unit_dir / "eni-guest-boot.service").read_text()
    text = text.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes")
    text = re.sub(r"ExecStart=\S+", "ExecStart=/nonexistent/eni-guest", text)
    broken.write_text(text)
    cp = _analyze("verify", "--man=no", str(broken))
    out = cp.stdout + cp.stderr
    assert "NoNewPrivilege" in out and "/nonexistent/eni-guest" in out


@pytest.mark.parametrize("name", UNITS)
def test_unit_exposure_is_low(unit_dir: Path, name: str) -> None:
    cp = _analyze("security", "--offline=yes", "--no-pager", str(unit_dir / name))
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", cp.stdout)
    assert m, cp.stdout + cp.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, cp.stdout


def test_units_call_the_agent_commands(unit_dir: Path) -> None:
    exe = " ".join(find_command())
    expected = {
        "eni-guest-hotplug@.service": f"ExecStart={exe} hotplug add %i",
        "eni-guest-unplug@.service": f"ExecStart={exe} hotplug remove %i",
        "eni-guest-boot.service": f"ExecStart={exe} apply",
        "eni-guest-watch.service": f"ExecStart={exe} watch",
    }
    for name, line in expected.items():
        assert line in (unit_dir / name).read_text().splitlines(), name
    boot = (unit_dir / "eni-guest-boot.service").read_text()
    assert "Before=network-online.target" in boot and "WantedBy=multi-user.target" in boot
    for name in UNITS:
        text = (unit_dir / name).read_text()
        assert "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW" in text
        assert "RestrictAddressFamilies=AF_NETLINK AF_INET AF_INET6 AF_UNIX" in text

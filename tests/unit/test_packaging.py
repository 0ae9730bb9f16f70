"""The Debian package's files (eni_guest.packaging) and its maintainer scripts, without dpkg.

Building the package itself (`dpkg-buildpackage`, lintian) is tools/build-deb.sh, run by
tests/run.sh; installing it, its scenarios and its purge are the real-VM test
tests/realvm/test_realvm_deb.py.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from eni_guest import cli, packaging
from eni_guest.install import RT_PROTOS, render_rule, render_units, unit_context
from eni_guest.install_cloudinit import CLOUD_CFG, CLOUD_DROPIN, CLOUD_ENV_FILE

REPO = Path(__file__).resolve().parents[2]
DEBIAN = REPO / "debian"


def test_the_package_ships_every_file_at_its_packaged_place() -> None:
    files = packaging.package_files()
    assert sorted(files) == sorted(
        [
            "usr/lib/udev/rules.d/90-eni-guest.rules",
            "usr/lib/systemd/system/eni-guest-boot.service",
            "usr/lib/systemd/system/eni-guest-hotplug@.service",
            "usr/lib/systemd/system/eni-guest-unplug@.service",
            "usr/lib/systemd/system/eni-guest-watch.service",
            "usr/lib/python3/dist-packages/cloudinit/config/cc_eni_guest.py",
            RT_PROTOS,
            "etc/eni-guest/eni-guest.toml",
            # the boot-time marking of secondary ENIs (the rule's helper, networkd's side)
            "usr/lib/eni-guest/boot-secondary-nic",
            "usr/lib/systemd/network/04-eni-guest-hotplug.network",
        ]
    )
    assert 'PROGRAM=="/bin/sh /usr/lib/eni-guest/boot-secondary-nic %p"' in files[packaging.RULE]
    unit = files["usr/lib/systemd/system/eni-guest-hotplug@.service"]
    assert "ExecStart=/usr/bin/eni-guest hotplug add %i\n" in unit
    assert "ProtectHome=yes\n" in unit
    rule = files["usr/lib/udev/rules.d/90-eni-guest.rules"]
    assert 'RUN+="/usr/bin/systemctl --no-block start eni-guest-hotplug@$name.service"' in rule
    module = files["usr/lib/python3/dist-packages/cloudinit/config/cc_eni_guest.py"]
    assert 'ENI_GUEST_COMMAND = ["/usr/bin/eni-guest"]\n' in module
    assert "229\teni-guest" in files[RT_PROTOS]


def test_the_package_renders_what_install_renders() -> None:
    """Same templates, same content, for the same command: only the places differ."""
    context = unit_context(["/usr/bin/eni-guest"])
    context["systemctl"] = "/usr/bin/systemctl"
    context["boot_helper"] = "/usr/lib/eni-guest/boot-secondary-nic"  # the package's place
    files = packaging.package_files()
    assert files[packaging.RULE] == render_rule(context)
    for name, text in render_units(context).items():
        assert files[f"{packaging.UNIT_DIR}/{name}"] == text


def test_write_files_and_the_dropin(tmp_path: Path) -> None:
    packaging.write_files(tmp_path)
    assert (tmp_path / "usr/lib/systemd/system/eni-guest-watch.service").is_file()
    assert packaging.write_dropin(tmp_path) == ["cloud-init is not installed: no drop-in"]
    assert not (tmp_path / CLOUD_DROPIN).exists()
    cfg = tmp_path / "etc/cloud/cloud.cfg"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("cloud_init_modules:\n - migrator\n - bootcmd\n\ncloud_config_modules: []\n")
    assert packaging.main(["dropin", str(tmp_path)]) == 0
    dropin = (tmp_path / CLOUD_DROPIN).read_text()
    assert dropin.endswith("cloud_init_modules:\n - migrator\n - bootcmd\n - eni_guest\n")
    assert packaging.main(["nonsense"]) == 2


def test_postrm_removes_every_file_the_agent_writes_outside_the_package() -> None:
    """The postrm is shell (the package's Python is gone when it runs): it must name them all."""
    postrm = (DEBIAN / "eni-guest.postrm").read_text()
    for path in packaging.RUNTIME_FILES:
        assert re.search(rf"(^|\s){re.escape(path)}(\s|$)", postrm, re.M), path
    purge_part = postrm[postrm.index('if [ "$1" = purge ]') :]
    assert CLOUD_ENV_FILE in purge_part  # the user-data settings: kept until purge


def test_debian_rules_and_postinst_call_the_packaging_module() -> None:
    rules = (DEBIAN / "rules").read_text()
    assert "python3 -m eni_guest.packaging files $(PKG)" in rules
    assert "PYBUILD_DISABLE = test" in rules
    postinst = (DEBIAN / "eni-guest.postinst").read_text()
    assert "python3 -m eni_guest.packaging dropin /" in postinst
    assert "#DEBHELPER#" in postinst and "#DEBHELPER#" in (DEBIAN / "eni-guest.postrm").read_text()
    triggers = (DEBIAN / "eni-guest.triggers").read_text()
    assert "interest-noawait /" + CLOUD_CFG in triggers


def test_demo_without_the_lab_says_where_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Debian package ships the agent, not eni_guest_lab: the demo says so, exit 2."""
    monkeypatch.setitem(sys.modules, "eni_guest_lab.demo", None)  # import fails: not found
    result = CliRunner().invoke(cli.main, ["demo"])
    assert result.exit_code == 2, result.output
    assert "run the demo from a checkout" in result.output

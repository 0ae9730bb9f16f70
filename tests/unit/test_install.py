"""`eni-guest install` / `uninstall` into a temporary root (never /).

Also keeps the reference copies in the repository's udev/, systemd/ and cloud-init/ folders in
step with the templates: run ``python tests/unit/test_install.py`` to regenerate them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from eni_guest import install as inst
from eni_guest.cli import main
from eni_guest.errors import ConfigError
from eni_guest.install import (
    BOOT_HELPER,
    CONFIG_FILE,
    NETWORKD_BOOT,
    RT_PROTOS,
    RULE,
    UNITS,
    WANTS_DIR,
    default_config_text,
    find_command,
    install,
    render_rule,
    render_units,
    uninstall,
    unit_context,
)
from eni_guest.install_cloudinit import (
    CLOUD_DROPIN,
    DEFAULT_BINARY,
    cloud_init_dropin,
    render_module,
    set_module_lines,
)
from eni_guest.templating import TEMPLATE_DIR, render_template

REPO = Path(__file__).resolve().parents[2]
BIN = "/opt/eni-guest/bin/eni-guest"

# cloud_init_modules of Debian 12's /etc/cloud/cloud.cfg (cloud-init 22.4).
DEBIAN12_CLOUD_CFG = """\
# The top level settings are used as module
# and base configuration.
users:
   - default

# The modules that run in the 'init' stage
cloud_init_modules:
 - migrator
 - seed_random
 - bootcmd
 - write-files
 - growpart
 - resizefs
 - disk_setup
 - mounts
 - set_hostname
 - update_hostname
 - update_etc_hosts
 - ca-certs
 - rsyslog
 - users-groups
 - ssh

# The modules that run in the 'config' stage
cloud_config_modules:
 - snap
 - runcmd
"""
DEBIAN12_INIT_MODULES = [
    "migrator",
    "seed_random",
    "bootcmd",
    "write-files",
    "growpart",
    "resizefs",
    "disk_setup",
    "mounts",
    "set_hostname",
    "update_hostname",
    "update_etc_hosts",
    "ca-certs",
    "rsyslog",
    "users-groups",
    "ssh",
]


def files_under(root: Path) -> dict[str, str]:
    """Every file and symlink under root: relative path -> content or '-> target'."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = path.read_text()
    return out


def with_cloud_init(root: Path, cloud_cfg: str = DEBIAN12_CLOUD_CFG) -> Path:
    """A root that looks like an image with Debian's cloud-init; returns its module dir."""
    (root / "etc/cloud/cloud.cfg.d").mkdir(parents=True)
    (root / "etc/cloud/cloud.cfg").write_text(cloud_cfg)
    module_dir = root / "usr/lib/python3/dist-packages/cloudinit/config"
    module_dir.mkdir(parents=True)
    return module_dir


def listed_modules(dropin: str) -> list[str]:
    return [line.strip()[2:] for line in dropin.splitlines() if line.strip().startswith("- ")]


# ---------------------------------------------------------------------------------- install


def test_install_places_every_file_with_the_absolute_command(tmp_path: Path) -> None:
    report = install(tmp_path, binary=BIN)
    files = files_under(tmp_path)
    expected = {RULE, RT_PROTOS, CONFIG_FILE} | {f"etc/systemd/system/{u}" for u in UNITS}
    expected |= {f"{WANTS_DIR}/eni-guest-boot.service", f"{WANTS_DIR}/eni-guest-watch.service"}
    expected |= {BOOT_HELPER, NETWORKD_BOOT}
    assert set(files) == expected
    assert len(report.changed) == len(expected)
    for name in UNITS:
        text = files[f"etc/systemd/system/{name}"]
        assert f"ExecStart={BIN} " in text
        assert "{{" not in text and "{%" not in text
    assert files[f"{WANTS_DIR}/eni-guest-boot.service"] == (
        "-> /etc/systemd/system/eni-guest-boot.service"
    )
    assert files[RT_PROTOS].splitlines()[-1] == "229\teni-guest"
    assert files[CONFIG_FILE] == default_config_text()
    assert "eni-guest-hotplug@$name.service" in files[RULE]
    assert any("cloud-init not found" in n for n in report.notes)


def test_boot_marking_is_installed_only_while_the_settings_keep_the_distro_off(
    tmp_path: Path,
) -> None:
    install(tmp_path, binary=BIN)
    rule = (tmp_path / RULE).read_text()
    assert f'PROGRAM=="/bin/sh /{BOOT_HELPER} %p", RESULT=="secondary"' in rule
    assert "Property=ENI_GUEST_UNMANAGED=1" in (tmp_path / NETWORKD_BOOT).read_text()
    (tmp_path / CONFIG_FILE).write_text("manage_distro_network = false\n")
    install(tmp_path, binary=BIN)
    assert "PROGRAM" not in (tmp_path / RULE).read_text()
    # what an earlier install placed stays until uninstall (inert: nothing marks a NIC)
    uninstall(tmp_path)
    assert not (tmp_path / BOOT_HELPER).exists() and not (tmp_path / NETWORKD_BOOT).exists()


def test_second_install_changes_nothing(tmp_path: Path) -> None:
    install(tmp_path, binary=BIN)
    before = {p: p.lstat().st_mtime_ns for p in tmp_path.rglob("*")}
    report = install(tmp_path, binary=BIN)
    assert report.changed == []
    assert report.lines()[-1] == "nothing changed"
    assert before == {p: p.lstat().st_mtime_ns for p in tmp_path.rglob("*")}


def test_install_rewrites_a_changed_unit_and_a_new_binary(tmp_path: Path) -> None:
    install(tmp_path, binary=BIN)
    unit = tmp_path / "etc/systemd/system/eni-guest-boot.service"
    unit.write_text("broken")
    report = install(tmp_path, binary=BIN)
    assert report.changed == [f"wrote {unit}"]
    report = install(tmp_path, binary="/usr/bin/eni-guest")
    assert len(report.changed) == len(UNITS)
    assert "ExecStart=/usr/bin/eni-guest apply" in unit.read_text()


def test_no_enable_creates_no_symlinks(tmp_path: Path) -> None:
    install(tmp_path, binary=BIN, enable=False)
    assert not (tmp_path / WANTS_DIR).exists()
    assert (tmp_path / "etc/systemd/system/eni-guest-watch.service").is_file()


def test_existing_config_is_never_overwritten(tmp_path: Path) -> None:
    config = tmp_path / CONFIG_FILE
    config.parent.mkdir(parents=True)
    config.write_text("protocol = 230\n")
    install(tmp_path, binary=BIN)
    assert config.read_text() == "protocol = 230\n"
    # the protocol name follows the image's configuration
    assert (tmp_path / RT_PROTOS).read_text().splitlines()[-1] == "230\teni-guest"


def test_default_config_is_all_comments_and_valid_toml(tmp_path: Path) -> None:
    from eni_guest.config import Config, load, read_toml

    text = default_config_text()
    assert all(line == "" or line.startswith("#") for line in text.splitlines())
    assert f'# provider = "{Config().provider}"' in text and "# ipv6 = true" in text
    uncommented = tmp_path / "all.toml"
    body = [line[2:] for line in text.splitlines() if line.startswith("# ") and " = " in line]
    uncommented.write_text("\n".join(body) + "\n")
    assert read_toml(uncommented)
    assert load(uncommented, environ={}) == Config()


def test_binary_must_be_absolute_and_plain(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="absolute"):
        install(tmp_path, binary="eni-guest")
    with pytest.raises(ConfigError, match="space"):
        install(tmp_path, binary="/opt/my tools/eni-guest")
    with pytest.raises(ConfigError):
        install(tmp_path, binary="/opt/100%/eni-guest")
    assert not (tmp_path / "etc").exists()


def test_default_command_is_this_environments_console_script() -> None:
    argv = find_command()
    assert os.path.isabs(argv[0]) and os.access(argv[0], os.X_OK)
    assert "/shims/" not in argv[0]
    if argv[0].endswith("/eni-guest"):
        assert Path(argv[0]).parent == Path(sys.executable).parent or argv == [argv[0]]
    else:
        assert argv == [sys.executable, "-m", "eni_guest"]


def test_protect_home_follows_where_eni_guest_lives() -> None:
    assert "ProtectHome=yes" in render_units(unit_context(["/usr/bin/eni-guest"]))[UNITS[0]]
    ctx = unit_context(["/root/.pyenv/versions/3.11.7/bin/eni-guest"])
    assert "ProtectHome=read-only" in render_units(ctx)[UNITS[0]]


def test_live_root_reload_only_when_something_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(inst.os.path, "isdir", lambda p: p == "/run/systemd/system")
    report = inst.Report()
    inst._reload(report, True, True, lambda argv, r: calls.append(argv))
    assert calls == [["systemctl", "daemon-reload"], ["udevadm", "control", "--reload"]]
    calls.clear()
    inst._reload(report, False, False, lambda argv, r: calls.append(argv))
    assert calls == []


# ------------------------------------------------------------------------------ cloud-init


def test_cloud_init_module_and_dropin(tmp_path: Path) -> None:
    module_dir = with_cloud_init(tmp_path)
    install(tmp_path, binary=BIN)
    module = (module_dir / "cc_eni_guest.py").read_text()
    assert f'ENI_GUEST_COMMAND = ["{BIN}"]' in module
    dropin = (tmp_path / CLOUD_DROPIN).read_text()
    assert listed_modules(dropin) == DEBIAN12_INIT_MODULES + ["eni_guest"]
    assert "copied from /etc/cloud/cloud.cfg" in dropin
    assert "snap" not in dropin  # only the init stage's list


def test_module_is_the_shipped_file_with_two_lines_set() -> None:
    shipped = (TEMPLATE_DIR / "cc_eni_guest.py").read_text().splitlines()
    rendered = render_module([BIN, "--flag"]).splitlines()
    assert len(rendered) == len(shipped)
    changed = [(a, b) for a, b in zip(shipped, rendered) if a != b]
    assert changed == [
        (
            'ENI_GUEST_COMMAND = ["/usr/local/bin/eni-guest"]',
            f'ENI_GUEST_COMMAND = ["{BIN}", "--flag"]',
        )
    ]
    assert 'ENV_FILE = "/etc/eni-guest/cloud-init.env"' in rendered
    assert render_module([DEFAULT_BINARY]) == "\n".join(shipped) + "\n"


def test_module_lines_must_be_there_once_as_shipped() -> None:
    source = (TEMPLATE_DIR / "cc_eni_guest.py").read_text()
    values = {"ENI_GUEST_COMMAND": '["/bin/x"]', "ENV_FILE": '"/x.env"'}
    out = set_module_lines(source, values)
    assert 'ENI_GUEST_COMMAND = ["/bin/x"]\n' in out and 'ENV_FILE = "/x.env"\n' in out
    edited = source.replace('ENV_FILE = "/etc/eni-guest/cloud-init.env"', 'ENV_FILE = "/etc/x"')
    with pytest.raises(RuntimeError, match="ENV_FILE = .* is there 0 times"):
        set_module_lines(edited, values)
    twice = source + 'ENI_GUEST_COMMAND = ["/usr/local/bin/eni-guest"]\n'
    with pytest.raises(RuntimeError, match="ENI_GUEST_COMMAND = .* is there 2 times"):
        set_module_lines(twice, values)
    indented = source.replace("ENI_GUEST_COMMAND = [", "    ENI_GUEST_COMMAND = [")
    with pytest.raises(RuntimeError, match="0 times"):
        set_module_lines(indented, values)


def test_dropin_copies_the_list_in_force(tmp_path: Path) -> None:
    with_cloud_init(tmp_path)
    confd = tmp_path / "etc/cloud/cloud.cfg.d"
    (confd / "50-image.cfg").write_text(
        "cloud_init_modules:\n- seed_random\n- [bootcmd, always]\n- ssh\ndatasource_list: [Ec2]\n"
    )
    (confd / "10-early.cfg").write_text("cloud_init_modules:\n - migrator\n")
    dropin, notes = cloud_init_dropin(tmp_path)
    assert dropin is not None and notes == []
    assert listed_modules(dropin) == ["seed_random", "[bootcmd, always]", "ssh", "eni_guest"]
    assert "copied from /etc/cloud/cloud.cfg.d/50-image.cfg" in dropin


def test_dropin_flow_list_and_later_file_note(tmp_path: Path) -> None:
    with_cloud_init(tmp_path, cloud_cfg="cloud_init_modules: [seed_random, ssh]  # short\n")
    dropin, notes = cloud_init_dropin(tmp_path)
    assert dropin is not None and listed_modules(dropin) == ["seed_random", "ssh", "eni_guest"]
    (tmp_path / "etc/cloud/cloud.cfg.d/99-zz-late.cfg").write_text("cloud_init_modules:\n - ssh\n")
    dropin, notes = cloud_init_dropin(tmp_path)
    assert any("99-zz-late.cfg sets cloud_init_modules after 99-eni-guest.cfg" in n for n in notes)


def test_dropin_leaves_a_list_that_already_names_us(tmp_path: Path) -> None:
    with_cloud_init(tmp_path, cloud_cfg="cloud_init_modules:\n - ssh\n - eni_guest\n")
    dropin, _ = cloud_init_dropin(tmp_path)
    assert dropin is not None and listed_modules(dropin) == ["ssh", "eni_guest"]


def test_dropin_refuses_a_nested_flow_list(tmp_path: Path) -> None:
    with_cloud_init(tmp_path, cloud_cfg="cloud_init_modules: [ssh, [bootcmd, always]]\n")
    dropin, notes = cloud_init_dropin(tmp_path)
    assert dropin is None and "by hand" in notes[0]


def test_dropin_without_any_list(tmp_path: Path) -> None:
    with_cloud_init(tmp_path, cloud_cfg="users: [default]\n")
    dropin, _ = cloud_init_dropin(tmp_path)
    assert dropin is not None and listed_modules(dropin) == ["eni_guest"]


# ------------------------------------------------------------------------------- uninstall


def test_uninstall_removes_exactly_what_install_placed(tmp_path: Path) -> None:
    with_cloud_init(tmp_path)
    other = tmp_path / "etc/systemd/system/multi-user.target.wants/ssh.service"
    other.parent.mkdir(parents=True)
    other.symlink_to("/lib/systemd/system/ssh.service")
    before = files_under(tmp_path)
    install(tmp_path, binary=BIN)
    (tmp_path / "etc/eni-guest/cloud-init.env").write_text('ENI_GUEST_PROVIDER="aws"\n')
    report = uninstall(tmp_path)
    assert files_under(tmp_path) == before
    assert not (tmp_path / "etc/eni-guest").exists()
    assert all(line.startswith("removed ") for line in report.changed)
    assert uninstall(tmp_path).lines() == ["nothing changed"]


def test_uninstall_keeps_an_edited_config(tmp_path: Path) -> None:
    install(tmp_path, binary=BIN)
    config = tmp_path / CONFIG_FILE
    config.write_text(default_config_text() + "mtu = 9001\n")
    report = uninstall(tmp_path)
    assert config.read_text().endswith("mtu = 9001\n")
    assert any("kept" in n and "edited" in n for n in report.notes)
    assert set(files_under(tmp_path)) == {CONFIG_FILE}


# ------------------------------------------------------------------------------ command line


def test_cli_install_and_uninstall(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["install", "--root", str(tmp_path), "--binary", BIN])
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / RULE}" in result.output
    result = runner.invoke(main, ["install", "--root", str(tmp_path), "--binary", BIN])
    assert result.exit_code == 0 and result.output.splitlines()[-1] == "nothing changed"
    result = runner.invoke(main, ["install", "--root", str(tmp_path), "--binary", "relative"])
    assert result.exit_code == 2
    result = runner.invoke(main, ["uninstall", "--root", str(tmp_path)])
    assert result.exit_code == 0 and f"removed {tmp_path / RULE}" in result.output
    assert files_under(tmp_path) == {}


# ----------------------------------------------------------------- reference files in the repo


def reference_files() -> dict[str, str]:
    """The repository's udev/, systemd/ and cloud-init/ files: the templates rendered with
    the command of a system-wide ``pip install`` (/usr/local/bin/eni-guest).

    cloud-init/cc_eni_guest.py links to the shipped module itself, which is set up for that
    command: rendering it must give it back unchanged."""
    context = unit_context([DEFAULT_BINARY])
    context["systemctl"] = "/usr/bin/systemctl"
    out = {"udev/90-eni-guest.rules": render_rule(context)}
    out["udev/boot-secondary-nic"] = render_template("boot-secondary-nic.sh.j2", context)
    for name, text in render_units(context).items():
        out[f"systemd/{name}"] = text
    out["cloud-init/cc_eni_guest.py"] = render_module([DEFAULT_BINARY])
    return out


def reference_dropin(tmp_path: Path) -> str:
    with_cloud_init(tmp_path)
    dropin, _ = cloud_init_dropin(tmp_path)
    assert dropin is not None
    return dropin


def test_reference_files_match_the_templates(tmp_path: Path) -> None:
    expected = reference_files()
    expected["cloud-init/99-eni-guest.cfg"] = reference_dropin(tmp_path)
    for rel, text in expected.items():
        assert (REPO / rel).read_text() == text, (
            f"{rel} differs from its template: run `python tests/unit/test_install.py`"
        )


if __name__ == "__main__":  # regenerate the reference files
    import tempfile

    files = reference_files()
    with tempfile.TemporaryDirectory() as tmp:
        files["cloud-init/99-eni-guest.cfg"] = reference_dropin(Path(tmp))
    for rel, text in files.items():
        (REPO / rel).parent.mkdir(exist_ok=True)
        (REPO / rel).write_text(text)
        print(f"wrote {rel}")

"""`eni-guest install` / `uninstall`: place the udev rule, systemd units and cloud-init files.

Image builders run ``eni-guest install --root /mnt/image`` on a mounted image; an operator runs
``eni-guest install`` on a live machine.  Everything is rendered from the jinja2 templates in
``eni_guest/templates`` with the absolute path of the installed ``eni-guest``: udev, systemd
and cloud-init run with a minimal PATH, and pip may have put the command in a virtualenv, under
/usr/local or in a pyenv version.  The cloud-init module and its drop-in are
install_cloudinit.py's part.

Where things go, and why:

* ``/etc/udev/rules.d``, ``/etc/systemd/system``: the administrator's directories.  A tool
  installed by pip or an image builder is local configuration, not a distro package, and
  /usr may be read-only or owned by the package manager.
* Enabling is done by creating the ``multi-user.target.wants`` symlinks ourselves, exactly as
  ``systemctl enable`` would, so it also works on an image that is not running.
* udev and systemd are told to reload only when the root is ``/`` (and systemd is running).

Idempotent: a file is written only when its content differs, so a second run changes (and
reloads) nothing.  ``uninstall`` removes what ``install`` placed: the rule, the units, their
symlinks, the cloud-init module and drop-in, the iproute2 protocol name and the settings file
- the latter only while it is still the untouched default.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from . import distro_hotplug, dropins
from .config import Config, load
from .distro import write_if_changed
from .errors import ConfigError
from .install_cloudinit import (
    CLOUD_DROPIN,
    CLOUD_ENV_FILE,
    CLOUD_MODULE,
    cloud_init_files,
    cloudinit_module_dirs,
)
from .record import field, fields, record
from .templating import render_template

RULE = "etc/udev/rules.d/90-eni-guest.rules"
UNIT_DIR = "etc/systemd/system"
UNITS = (
    "eni-guest-hotplug@.service",
    "eni-guest-unplug@.service",
    "eni-guest-boot.service",
    "eni-guest-watch.service",
)
ENABLED_UNITS = ("eni-guest-boot.service", "eni-guest-watch.service")  # WantedBy=multi-user
WANTS_DIR = "etc/systemd/system/multi-user.target.wants"
RT_PROTOS = "etc/iproute2/rt_protos.d/eni-guest.conf"
CONFIG_FILE = "etc/eni-guest/eni-guest.toml"
# What keeps the distro's network stack off secondary ENIs at boot, before any run
# (distro_hotplug.py): the udev rule's helper, and networkd's side of its mark.
BOOT_HELPER = "etc/eni-guest/boot-secondary-nic"
NETWORKD_BOOT = "etc/systemd/network/" + distro_hotplug.NETWORKD_HOTPLUG.name


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Drivers of the NICs that carry ENIs: AWS (ena; ixgbevf and Xen's netfront "vif" on older
# instance types), Alibaba/Tencent/JD Cloud/OpenStack (virtio_net), GCP (gve), SR-IOV
# virtual functions some OpenStack and bare-metal clouds hand out (iavf, i40evf, mlx5_core,
# mlx4: mlx4_en is the ethtool name, mlx4_core the PCI driver).
NIC_DRIVERS = _words("ena ixgbevf vif virtio_net gve iavf i40evf mlx5_core mlx4_en mlx4_core")
# Names of software interfaces, a guard in addition to the driver match.
EXCLUDED_NAMES = _words(
    "lo veth* docker* br-* virbr* vnet* cni* flannel* cali* cilium* lxc* kube-* "
    "weave* vxlan* tun* tap* wg* tailscale* zt* bond* team* dummy* ifb*"
)
EXCLUDED_DEVTYPES = _words(
    "bridge bond team vlan macvlan macvtap ipvlan vxlan geneve wireguard wlan wwan"
)
_UNSAFE = re.compile(r"[\s\"'\\%$;`]")


@record
class Report:
    """What a run did, one line per path, for the command line and the tests."""

    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = list(self.changed) + [f"note: {n}" for n in self.notes]
        if not self.changed:
            out.append("nothing changed")
        return out


# --------------------------------------------------------------------------- what to write


def find_command(binary: Optional[str] = None) -> list[str]:
    """The absolute command of the installed eni-guest, as argv.

    The console script installed next to this Python (venv, pyenv version, /usr/local) is
    preferred over a PATH lookup, which may find a pyenv shim or another installation.
    Last resort: this Python running the package.
    """
    if binary:
        if not os.path.isabs(binary):
            raise ConfigError(f"--binary {binary!r}: must be an absolute path")
        argv = [binary]
    else:
        script = Path(sysconfig.get_path("scripts")) / "eni-guest"
        found = shutil.which("eni-guest")
        if script.is_file() and os.access(script, os.X_OK):
            argv = [str(script)]
        elif found and "/shims/" not in found:
            argv = [str(Path(found).resolve())]
        else:
            argv = [sys.executable, "-m", "eni_guest"]
    for part in argv:
        if _UNSAFE.search(part):
            raise ConfigError(
                f"eni-guest path {part!r} contains a space, quote, '%', '$' or ';': systemd "
                "and udev would split or expand it; install into a plain path or use --binary"
            )
    return argv


def _systemctl(root: Path) -> str:
    for candidate in ("usr/bin/systemctl", "bin/systemctl"):
        if (root / candidate).exists():
            return "/" + candidate
    return "/usr/bin/systemctl"


def _protect_home(argv: list[str]) -> str:
    """ProtectHome=yes hides /root and /home; read-only keeps an eni-guest installed there."""
    home = ("/home/", "/root/", "/run/user/")
    return "read-only" if any(a.startswith(home) for a in argv) else "yes"


def _config(root: Path) -> Config:
    path = root / CONFIG_FILE
    return load(path, environ={}) if path.is_file() else Config()


def default_config_text() -> str:
    def toml(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(value, tuple):  # the overlay's lists; every default is empty
            return "[" + ", ".join(toml(v) for v in value) + "]"
        return repr(value)

    defaults = Config()
    settings = [(f.name, toml(getattr(defaults, f.name))) for f in fields(Config)]
    return render_template("eni-guest.toml.j2", {"settings": settings})


def unit_context(argv: list[str], root: Path = Path("/")) -> dict[str, Any]:
    return {
        "exec_start": " ".join(argv),
        "protect_home": _protect_home(argv),
        "env_file": CLOUD_ENV_FILE,
        "systemctl": _systemctl(root),
        "drivers": NIC_DRIVERS,
        "excluded_names": EXCLUDED_NAMES,
        "excluded_devtypes": EXCLUDED_DEVTYPES,
        "hotplug_marker": "/" + str(distro_hotplug.MARKER),
        "distro_nics": "/" + str(distro_hotplug.DISTRO_NICS),
        "distro_keeps": "/" + str(distro_hotplug.DISTRO_KEEPS),
        # the boot-time marking only while the settings keep the distro off the ENIs
        "boot_helper": "/" + BOOT_HELPER if _config(root).manage_distro_network else "",
    }


def render_rule(context: dict[str, Any]) -> str:
    return render_template("90-eni-guest.rules.j2", context)


def render_units(context: dict[str, Any]) -> dict[str, str]:
    return {name: render_template(f"{name}.j2", context) for name in UNITS}


# ------------------------------------------------------------------------------- install


def _is_live(root: Path) -> bool:
    return root.resolve() == Path("/")


def _link(path: Path, target: str) -> bool:
    """Make ``path`` a symlink to ``target``; True if it changed."""
    if path.is_symlink() and os.readlink(path) == target:
        return False
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(target)
    return True


def _call(argv: list[str], report: Report) -> None:
    try:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        report.notes.append(f"{' '.join(argv)}: {e}")
        return
    if cp.returncode != 0:
        report.notes.append(f"{' '.join(argv)} failed: {(cp.stderr or cp.stdout).strip()}")


TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:  # only type checkers need it: annotations are never evaluated
    from typing import Any, Callable, Optional

    # Runs a command for install/uninstall (systemctl, udevadm), noting a failure in the report;
    # tests pass one that records instead.
    Caller = Callable[[list[str], Report], None]


def install(
    root: Path = Path("/"),
    *,
    enable: bool = True,
    binary: Optional[str] = None,
    call: Caller = _call,
) -> Report:
    """Place (or refresh) every file under ``root``; see the module docstring."""
    root, report = Path(root), Report()
    argv = find_command(binary)
    if not (root / argv[0].lstrip("/")).exists():
        report.notes.append(
            f"the units call {argv[0]}, which does not exist under {root}: install eni-guest "
            "there too, or pass --binary with its path inside the image"
        )
    written = _write(root, _files(root, argv, report), report)
    config_path = root / CONFIG_FILE
    if config_path.exists():
        report.unchanged.append(str(config_path))
    else:
        write_if_changed(config_path, default_config_text())
        report.changed.append(f"wrote {config_path}")
    units_changed = any(rel.startswith(UNIT_DIR) for rel in written)
    if enable:
        units_changed |= _enable(root, report)
    if _is_live(root):
        _reload(report, units_changed, RULE in written, call)
    return report


def _files(root: Path, argv: list[str], report: Report) -> dict[str, str]:
    """Path under root -> content of every file install places (the settings file aside)."""
    context = unit_context(argv, root)
    files = {RULE: render_rule(context)}
    for name, text in render_units(context).items():
        files[f"{UNIT_DIR}/{name}"] = text
    files[RT_PROTOS] = render_template("rt_protos.conf.j2", {"protocol": _config(root).protocol})
    if context["boot_helper"]:
        files[BOOT_HELPER] = render_template("boot-secondary-nic.sh.j2", context)
        files[NETWORKD_BOOT] = dropins.networkd_hotplug(installed=True)
    cloud_files, notes = cloud_init_files(root, argv)
    report.notes.extend(notes)
    return {**files, **cloud_files}


def _write(root: Path, files: dict[str, str], report: Report) -> set[str]:
    """Write the files whose content differs; the paths (under root) written."""
    written = set()
    for rel, text in files.items():
        path = root / rel
        if write_if_changed(path, text):
            report.changed.append(f"wrote {path}")
            written.add(rel)
        else:
            report.unchanged.append(str(path))
    return written


def _enable(root: Path, report: Report) -> bool:
    """The multi-user.target.wants symlinks, as `systemctl enable` makes them; True if new."""
    changed = False
    for name in ENABLED_UNITS:
        link = root / WANTS_DIR / name
        if _link(link, f"/{UNIT_DIR}/{name}"):
            report.changed.append(f"linked {link} -> /{UNIT_DIR}/{name}")
            changed = True
        else:
            report.unchanged.append(str(link))
    return changed


def _reload(report: Report, units: bool, rules: bool, call: Caller) -> None:
    if not os.path.isdir("/run/systemd/system"):
        if units or rules:
            report.notes.append("systemd is not running: nothing reloaded")
        return
    if units:
        call(["systemctl", "daemon-reload"], report)
    if rules:
        call(["udevadm", "control", "--reload"], report)


# ----------------------------------------------------------------------------- uninstall


def uninstall(root: Path = Path("/"), *, call: Caller = _call) -> Report:
    """Remove what ``install`` placed (a settings file only while it is the default)."""
    root, report = Path(root), Report()
    live = _is_live(root)
    if live and os.path.isdir("/run/systemd/system"):
        call(["systemctl", "stop", *ENABLED_UNITS], report)
    paths = [root / WANTS_DIR / name for name in ENABLED_UNITS]
    paths += [root / RULE, root / RT_PROTOS, root / CLOUD_DROPIN]
    paths += [root / BOOT_HELPER, root / NETWORKD_BOOT]
    paths += [root / UNIT_DIR / name for name in UNITS]
    paths += [d / CLOUD_MODULE for d in cloudinit_module_dirs(root)]
    paths.append(root / CLOUD_ENV_FILE.lstrip("/"))
    units_changed = rules_changed = False
    for path in paths:
        if path.is_symlink() or path.exists():
            path.unlink()
            report.changed.append(f"removed {path}")
            units_changed |= str(path).startswith(str(root / "etc/systemd"))
            rules_changed |= path == root / RULE
    config_path = root / CONFIG_FILE
    if config_path.exists():
        if config_path.read_text() == default_config_text():
            config_path.unlink()
            report.changed.append(f"removed {config_path}")
        else:
            report.notes.append(f"kept {config_path}: it was edited")
    with contextlib.suppress(OSError):  # not empty: someone else's file is in there
        config_path.parent.rmdir()
    if live:
        _reload(report, units_changed, rules_changed, call)
    return report

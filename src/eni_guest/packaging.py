"""The files a distro package ships, and the cloud-init drop-in its maintainer scripts manage.

The Debian package (debian/) is built from the same templates as ``eni-guest install``, but
at the package manager's places and for the packaged command ``/usr/bin/eni-guest``:

* ``/usr/lib/udev/rules.d/90-eni-guest.rules``: the hot-plug rule;
* ``/usr/lib/systemd/system/eni-guest-*.service``: the units (dh_installsystemd enables them);
* ``/usr/lib/python3/dist-packages/cloudinit/config/cc_eni_guest.py``: where Debian's
  cloud-init looks for its modules (as ``eni-guest install`` places it);
* ``/etc/iproute2/rt_protos.d/eni-guest.conf`` (a conffile): ``proto eni-guest`` in ``ip``;
* ``/etc/eni-guest/eni-guest.toml`` (a conffile): the settings, every one at its default.

cloud-init's drop-in (``/etc/cloud/cloud.cfg.d/99-eni-guest.cfg``) is not shipped: it repeats
the init module list of the cloud-init installed (install_cloudinit.cloud_init_dropin), so the
postinst writes it, again whenever cloud-init's cloud.cfg changes (a dpkg trigger), and the
postrm removes it (with the agent's runtime files, RUNTIME_FILES: the package's Python is gone
by then, so the postrm is plain shell and a unit test holds it to this list).  Commands
(debian/rules and the postinst run them)::

    python3 -m eni_guest.packaging files DESTDIR      # write the shipped files under DESTDIR
    python3 -m eni_guest.packaging dropin [ROOT]      # write or refresh the drop-in
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import dhcp_known, dropins
from .config import Config
from .distro import NETWORKD_FILE, NETWORKD_FOREIGN, NM_DROPIN
from .distro_hotplug import NETWORKD_HOTPLUG
from .install import RT_PROTOS, default_config_text, render_rule, render_units, unit_context
from .install_cloudinit import (
    CLOUD_DROPIN,
    CLOUD_ENV_FILE,
    CLOUD_MODULE,
    cloud_init_dropin,
    render_module,
)
from .providers import boot_cache, memo
from .safe_write import write_if_changed
from .templating import render_template

BINARY = "/usr/bin/eni-guest"
RULE = "usr/lib/udev/rules.d/90-eni-guest.rules"
UNIT_DIR = "usr/lib/systemd/system"
CLOUD_MODULE_DIR = "usr/lib/python3/dist-packages/cloudinit/config"
CONFIG_FILE = "etc/eni-guest/eni-guest.toml"
BOOT_HELPER = "usr/lib/eni-guest/boot-secondary-nic"
NETWORKD_BOOT = "usr/lib/systemd/network/" + NETWORKD_HOTPLUG.name
#: What the agent and its cloud-init module write outside the package's file list; the postrm
#: removes them (the settings cloud-init kept, on purge only).
RUNTIME_FILES = (
    "/" + CLOUD_DROPIN,
    "/run/eni-guest",  # the boot's hot-plug state, the detected cloud, pending reloads
    Config().lock_file,
    str(boot_cache.path_for(Config())),  # the cloud auto-detection found, kept for the boot
    str(memo.path_for(Config())),  # the metadata that cannot change, kept for the boot
    str(dhcp_known.directory(Config())),  # JD Cloud's DHCP answers, kept for the boot
    "/" + str(NM_DROPIN),
    "/" + str(NETWORKD_FILE),
    "/" + str(NETWORKD_HOTPLUG),
    "/" + str(NETWORKD_FOREIGN),
    CLOUD_ENV_FILE,
)


def package_files() -> dict[str, str]:
    """Path (relative to the package's root) -> content of every file rendered for it."""
    context = unit_context([BINARY], Path("/nonexistent"))
    context["systemctl"] = "/usr/bin/systemctl"  # not the build machine's
    # Secondary ENIs attached at boot are kept from the distro's DHCP before any run
    # (distro_hotplug.py): the rule's helper, and networkd's side of its mark.
    context["boot_helper"] = "/" + BOOT_HELPER
    files = {RULE: render_rule(context)}
    files[BOOT_HELPER] = render_template("boot-secondary-nic.sh.j2", context)
    files[NETWORKD_BOOT] = dropins.networkd_hotplug(installed=True)
    files.update({f"{UNIT_DIR}/{name}": text for name, text in render_units(context).items()})
    files[f"{CLOUD_MODULE_DIR}/{CLOUD_MODULE}"] = render_module([BINARY])
    files[RT_PROTOS] = render_template("rt_protos.conf.j2", {"protocol": Config().protocol})
    files[CONFIG_FILE] = default_config_text()
    return files


def write_files(destdir: Path) -> list[str]:
    for rel, text in package_files().items():
        write_if_changed(destdir / rel, text, 0o644, root=destdir)
    return sorted(package_files())


def write_dropin(root: Path) -> list[str]:
    """The drop-in for the cloud-init installed under ``root`` (none without cloud-init)."""
    if not (root / "etc/cloud").is_dir():
        return ["cloud-init is not installed: no drop-in"]
    text, notes = cloud_init_dropin(root)
    if text is not None:
        write_if_changed(root / CLOUD_DROPIN, text, 0o644, root=root)
    return notes


def main(argv: list[str]) -> int:
    usage = "usage: python3 -m eni_guest.packaging files DESTDIR | dropin [ROOT]"
    if not argv or argv[0] not in ("files", "dropin") or len(argv) > 2:
        print(usage, file=sys.stderr)
        return 2
    if argv[0] == "files":
        if len(argv) != 2:
            print(usage, file=sys.stderr)
            return 2
        for rel in write_files(Path(argv[1])):
            print(f"wrote {rel}")
        return 0
    for note in write_dropin(Path(argv[1] if len(argv) == 2 else "/")):
        print(f"eni-guest: {note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

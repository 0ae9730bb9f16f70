"""The text of the runtime drop-ins that keep NetworkManager and systemd-networkd off the ENIs.

Every apply and hot-plug writes these (distro.py, distro_hotplug.py), so they are plain
Python rather than jinja2 templates: importing jinja2 and compiling a template cost a first
apply ~40 ms, more than reading the kernel.  The installed files (units, udev rule, settings,
the cloud-init drop-in) stay templates in eni_guest/templates, rendered by `eni-guest
install` and the Debian package's build, where the cost does not matter.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Sequence

#: systemd-networkd's networkd.conf drop-in (run/systemd/networkd.conf.d/60-eni-guest.conf).
NETWORKD_FOREIGN = """\
# Written by eni-guest: systemd-networkd must keep the routing policy rules and routes that
# other programs add (eni-guest's per-ENI rules and tables), instead of deleting them when it
# (re)configures a link: a restart, a package upgrade, `networkctl reconfigure`, netplan apply.
# networkd reads this file when it starts; eni-guest never restarts it (its watch daemon puts
# back within a second what a networkd that has not read it yet deletes).
# ManageForeignRoutingPolicyRules= needs systemd >= 249, ManageForeignRoutes= >= 246; older
# versions ignore the keys they do not know.  Runtime file, gone after a reboot, rewritten by
# the next run.  Switch off: manage_distro_network = false.  A later drop-in (in
# /etc/systemd/networkd.conf.d/, name sorting after this one) overrides it.
[Network]
ManageForeignRoutingPolicyRules=no
ManageForeignRoutes=no
"""

_HOTPLUG_HEAD = """\
# Written by eni-guest: a NIC that eni-guest's udev rule marked ENI_GUEST_UNMANAGED=1 (a
# secondary ENI: one hot-plugged after eni-guest's first run of this boot, or at boot one that
# is not the first cloud NIC) is configured by eni-guest, so systemd-networkd must not run
# DHCP on it, not even before metadata lists it.
"""
_HOTPLUG_INSTALLED = """\
# Installed by `eni-guest install` (networkd reads it at boot, before any eni-guest run); the
# runs write the same file under /run.  Switch off: manage_distro_network = false, then
# `eni-guest install` again.
"""
_HOTPLUG_RUNTIME = """\
# Runtime file, gone after a reboot.  Switch off: manage_distro_network = false.
"""
_HOTPLUG_TAIL = """\
# 04- sorts before every other .network file: the first matching file is the one networkd uses.
[Match]
Property=ENI_GUEST_UNMANAGED=1

[Link]
Unmanaged=yes
"""


def networkd_hotplug(installed: bool) -> str:
    """04-eni-guest-hotplug.network: networkd leaves alone every NIC udev marked for us
    (`installed`: the copy `eni-guest install` and the package put under /usr or /etc)."""
    return _HOTPLUG_HEAD + (_HOTPLUG_INSTALLED if installed else _HOTPLUG_RUNTIME) + _HOTPLUG_TAIL


def networkd_unmanaged(macs: Sequence[str]) -> str:
    """05-eni-guest.network: networkd leaves these secondary ENIs alone."""
    return f"""\
# Written by eni-guest: these secondary ENIs are configured by eni-guest (per-IP source
# routing), so systemd-networkd must not run DHCP on them.  Runtime file: rewritten from
# metadata on every change, gone after a reboot.  Switch off: manage_distro_network = false.
# 05- sorts before netplan's 10-netplan-* and cloud-init's 10-cloud-init-* files: the first
# matching .network file is the one networkd uses.
[Match]
MACAddress={" ".join(macs)}
# Only the NIC itself, not a VLAN or bridge that inherits its MAC.
Type=ether

[Link]
Unmanaged=yes
"""


def networkmanager_unmanaged(macs: Sequence[str]) -> str:
    """90-eni-guest.conf: NetworkManager leaves these secondary ENIs alone."""
    return f"""\
# Written by eni-guest: these secondary ENIs are configured by eni-guest (per-IP source
# routing), so NetworkManager must not run DHCP on them.  Runtime file: rewritten from
# metadata on every change, gone after a reboot.  Switch off: manage_distro_network = false.
# "+=" appends to unmanaged-devices set by earlier files instead of replacing it.
[keyfile]
unmanaged-devices+=mac:{";mac:".join(macs)}
"""

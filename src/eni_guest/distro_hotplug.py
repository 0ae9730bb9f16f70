"""Keep NetworkManager and systemd-networkd off a hot-plugged ENI from its very first moment.

The drop-ins of :mod:`eni_guest.distro` list ENIs by MAC, so they can only be written once
metadata lists the ENI: a second or more after the NIC appears.  NetworkManager does not wait
that long: it activates its DHCP "Wired connection N" on a new NIC about 0.6 s after udev is
done with it, and a catch-all DHCP ``.network`` file makes networkd just as quick.  That DHCP
client puts a second default route in the main table, and taking the NIC away from the manager
afterwards takes it down under eni-guest's feet.

So the decision is made earlier, in udev, before either manager sees the NIC: eni-guest's udev
rule (90-eni-guest.rules) marks a cloud NIC with ``NM_UNMANAGED=1`` (NetworkManager leaves such
a device alone) and ``ENI_GUEST_UNMANAGED=1`` (which :data:`NETWORKD_HOTPLUG`, a ``.network``
file matching that udev property, turns into networkd's ``Unmanaged=yes``) when

* :data:`MARKER` exists: an eni-guest run of this boot has read metadata, so it knows which NIC
  is the primary (until then, early in the boot, the rule judges from sysfs alone: below);
* and ``DISTRO_NICS/<the NIC's MAC>`` does not exist: the NICs eni-guest leaves to the distro,
  the primary ENI and the ENIs in ``exclude_enis`` / ``exclude_interfaces``, each have a file
  there.

A NIC that appears after that moment is a hot-plugged ENI (a cloud never hot-plugs the primary):
unmanaged from its first udev event, whatever its MAC.  The rule applies on ``change`` events
too (udev re-runs the rules and keeps only what they set), so a ``udevadm trigger`` during a
package upgrade does not hand the ENI back.

Before that first run, at boot, the rule cannot know the primary from metadata, yet
NetworkManager, networkd and ifupdown take every NIC present at boot as soon as udev is done
with it.  So until the marker exists the rule asks ``boot-secondary-nic`` (installed beside the
settings file), which judges from sysfs alone: a cloud NIC with another cloud NIC at a lower bus
position (PCI address) is a secondary ENI, marked the same way; the first stays the distro's.
networkd reads the matching ``.network`` file installed under /etc (the same file as the
runtime one below), and a run with ``manage_distro_network = false`` writes
:data:`DISTRO_KEEPS`, which switches that boot-time marking off for NICs appearing later.

Everything else lives in /run: the next boot starts with nothing marked but by that rule.
``manage_distro_network = false`` removes these files, and NICs hot-plugged from then on go to
the distro again.
"""

from __future__ import annotations

from pathlib import Path

from . import dropins
from .distro import reload_managers, write_if_changed

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Iterable, Optional

#: Its existence switches the udev rule's marking on (a path relative to the root).
MARKER = Path("run/eni-guest/hotplug-unmanaged")
#: One empty-ish file per MAC left to the distro.
DISTRO_NICS = Path("run/eni-guest/distro-nics")
#: networkd's side of the udev property; 04- sorts before eni-guest's 05- and netplan's 10-.
NETWORKD_HOTPLUG = Path("run/systemd/network/04-eni-guest-hotplug.network")
#: Written while manage_distro_network is false: the udev rule's boot-time marking (of the NICs
#: that are not the first cloud NIC, before any run has read metadata) stays off for NICs that
#: appear from then on.
DISTRO_KEEPS = Path("run/eni-guest/distro-keeps-new-nics")

_KEEPS_TEXT = """\
Written by eni-guest while manage_distro_network = false: eni-guest's udev rule leaves every
NIC that appears to the distro's network stack.
"""
_MARKER_TEXT = """\
Written by eni-guest (README, "NetworkManager, networkd and hot-plug"): while this file exists,
eni-guest's udev rule marks every cloud NIC that appears with NM_UNMANAGED=1 and
ENI_GUEST_UNMANAGED=1, except those with a file named by their MAC in {distro_nics}/.
"""


def render(left_to_distro: dict[str, str], enabled: bool = True) -> dict[Path, Optional[str]]:
    """The files for these distro-managed NICs (MAC -> why); None: the file must go.

    ``left_to_distro`` always holds at least the primary ENI when ``enabled``; the per-MAC
    files the caller does not list are removed by :func:`mark_new_nics`.
    """
    if not enabled:
        return {MARKER: None, NETWORKD_HOTPLUG: None, DISTRO_KEEPS: _KEEPS_TEXT}
    files: dict[Path, Optional[str]] = {
        DISTRO_NICS / mac: f"{why}\n" for mac, why in sorted(left_to_distro.items())
    }
    # The per-MAC files first: the marker must never exist without the primary's exception.
    files[DISTRO_KEEPS] = None
    files[NETWORKD_HOTPLUG] = dropins.networkd_hotplug(installed=False)
    files[MARKER] = _MARKER_TEXT.format(distro_nics="/" + str(DISTRO_NICS))
    return files


def mark_new_nics(
    primary_mac: str,
    excluded_macs: Iterable[str] = (),
    root: Path = Path("/"),
    *,
    enabled: bool = True,
) -> list[str]:
    """Switch on (or, ``enabled=False``, off) udev's marking of NICs that appear from now on.

    ``primary_mac`` and ``excluded_macs`` are the NICs the distro keeps.  Returns the paths that
    changed; networkd is asked to reload when its file changed and ``root`` is ``/``.
    """
    root = Path(root)
    left = {m.strip().lower(): "excluded from eni-guest" for m in excluded_macs}
    left[primary_mac.strip().lower()] = "the primary ENI"
    # Order matters, for a udev event that comes in between: the marker is written last and
    # removed first, so it never exists without the primary's exception.
    files = render(left if enabled else {}, enabled)
    folder = root / DISTRO_NICS
    gone = {DISTRO_NICS / p.name: None for p in folder.iterdir()} if folder.is_dir() else {}
    for rel in files:
        gone.pop(rel, None)
    files = {**gone, **files} if enabled else {**files, **gone}
    changed = []
    for rel, content in files.items():
        if write_if_changed(root / rel, content, root=root):  # no link followed below root
            changed.append(str(root / rel))
    if changed and root.resolve() == Path("/"):  # (keep_off retries a failed reload)
        reload_managers([Path(p) for p in changed])
    return changed

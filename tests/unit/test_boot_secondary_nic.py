"""The udev rule's boot-time helper: which NICs present at boot are secondary ENIs, from sysfs.

Run with the real /bin/sh against a fake sysfs tree laid out as the kernel's (relative links
from /sys/class/net/IFACE/device to the device, and from the device to its driver).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from eni_guest.install import unit_context
from eni_guest.templating import render_template


@pytest.fixture(scope="module")
def helper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("helper") / "boot-secondary-nic"
    context = unit_context(["/usr/local/bin/eni-guest"])
    path.write_text(render_template("boot-secondary-nic.sh.j2", context))
    return path


def nic(sys: Path, name: str, device: str, driver: str) -> str:
    """A NIC at sysfs device path ``device`` (under devices/) bound to ``driver``; its devpath."""
    dev = sys / "devices" / device
    (dev / "net" / name).mkdir(parents=True)
    drv = sys / "bus/drivers" / driver
    drv.mkdir(parents=True, exist_ok=True)
    (dev / "driver").symlink_to(os.path.relpath(drv, dev))
    (dev / "net" / name / "device").symlink_to(os.path.relpath(dev, dev / "net" / name))
    (sys / "class/net").mkdir(parents=True, exist_ok=True)
    (sys / "class/net" / name).symlink_to(os.path.relpath(dev / "net" / name, sys / "class/net"))
    return f"/devices/{device}/net/{name}"


def soft(sys: Path, name: str) -> str:
    """A software interface: no device link."""
    (sys / "devices/virtual/net" / name).mkdir(parents=True)
    (sys / "class/net").mkdir(parents=True, exist_ok=True)
    (sys / "class/net" / name).symlink_to(f"../../devices/virtual/net/{name}")
    return f"/devices/virtual/net/{name}"


def says(helper: Path, devpath: str, sys: Path) -> str:
    cp = subprocess.run(
        ["/bin/sh", str(helper), devpath, str(sys)], capture_output=True, text=True, timeout=10
    )
    assert cp.returncode == 0 and cp.stderr == "", cp
    return cp.stdout.strip()


def test_the_first_cloud_nic_by_pci_address_is_left_to_the_distro(
    helper: Path, tmp_path: Path
) -> None:
    # virtio: the netdev's device is the virtio device below the PCI function
    primary = nic(tmp_path, "ens16", "pci0000:00/0000:00:10.0/virtio1", "virtio_net")
    second = nic(tmp_path, "ens17", "pci0000:00/0000:00:11.0/virtio2", "virtio_net")
    behind = nic(tmp_path, "ens1f0", "pci0000:00/0000:00:1f.0/0000:01:00.0/virtio3", "virtio_net")
    assert says(helper, primary, tmp_path) == ""
    assert says(helper, second, tmp_path) == "secondary"
    assert says(helper, behind, tmp_path) == "secondary"


def test_only_cloud_nic_drivers_count_and_software_links_are_never_judged(
    helper: Path, tmp_path: Path
) -> None:
    nic(tmp_path, "eth9", "pci0000:00/0000:00:03.0", "e1000")  # not a cloud NIC driver
    ena = nic(tmp_path, "ens5", "pci0000:00/0000:00:05.0", "ena")
    veth = soft(tmp_path, "veth0")
    assert says(helper, ena, tmp_path) == ""  # the e1000 below it does not make it secondary
    assert says(helper, veth, tmp_path) == ""
    assert says(helper, "/devices/pci0000:00/0000:00:09.0/net/gone", tmp_path) == ""


def test_a_lone_nic_is_the_primary(helper: Path, tmp_path: Path) -> None:
    assert says(helper, nic(tmp_path, "ens5", "pci0000:00/0000:00:05.0", "ena"), tmp_path) == ""

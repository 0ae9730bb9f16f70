"""The real-VM bed's image recipes and QEMU command line, without building or booting."""

from __future__ import annotations

from pathlib import Path

from eni_guest_lab.realvm.image import (
    BOOKWORM,
    BULLSEYE,
    FLAVOURS,
    PRIMARY_IFNAME,
    Recipe,
    _pip_system_flag,
)
from eni_guest_lab.realvm.qemu import Nic, qemu_command


def test_pip_flag_only_where_pip_knows_it() -> None:
    assert _pip_system_flag(BOOKWORM) == ["--break-system-packages"]
    assert _pip_system_flag(BULLSEYE) == []  # pip 20.3 would refuse the unknown option


def test_the_cache_key_follows_the_recipe() -> None:
    wheels = {"a.whl": "1"}
    changed = Recipe(**{**BOOKWORM.__dict__, "packages": (*BOOKWORM.packages, "vim")})
    assert BOOKWORM.key(wheels) != changed.key(wheels)
    assert BOOKWORM.key(wheels) != BOOKWORM.key({"a.whl": "2"})
    assert BOOKWORM.key(wheels) == BOOKWORM.key(dict(wheels))


def test_every_flavour_says_how_it_reactivates_the_primary() -> None:
    for f in FLAVOURS.values():
        assert f.reactivate_primary, f.name
        assert f.recipe.name in ("bookworm", "bullseye")
    ifupdown = FLAVOURS["bullseye-ifupdown"].files["/etc/network/interfaces"]
    assert f"allow-hotplug {PRIMARY_IFNAME}\n" in ifupdown  # only the primary, not en*


def test_nics_sit_in_fixed_pci_slots() -> None:
    """The primary's name (ens16) is written into images before boot: its slot must be fixed."""
    nics = [Nic("n0", "tap0", "0e:00:00:00:00:01", 16), Nic("n1", "tap1", "0e:00:00:00:00:02", 17)]
    cmd = " ".join(qemu_command(Path("/r"), Path("/k"), Path("/i"), Path("/d"), nics))
    assert "mac=0e:00:00:00:00:01,id=dev-n0,addr=0x10" in cmd
    assert "mac=0e:00:00:00:00:02,id=dev-n1,addr=0x11" in cmd
    assert nics[0].ifname == PRIMARY_IFNAME
    assert "user" not in cmd.split("-netdev")[1]  # taps only, never user-mode networking


def test_the_deb_image_has_debians_python_packages_and_no_pip() -> None:
    from eni_guest_lab.realvm.image import BOOKWORM_DEB, DEB

    assert DEB.package == "deb" and DEB.recipe is BOOKWORM_DEB
    assert not BOOKWORM_DEB.dependency_wheels and "python3-pip" not in BOOKWORM_DEB.packages
    for dep in ("python3-click", "python3-jinja2"):
        assert dep in BOOKWORM_DEB.packages
    assert "python3-pyroute2" not in BOOKWORM_DEB.packages  # the agent needs no pyroute2
    assert "python3-requests" not in BOOKWORM_DEB.packages  # no HTTP library (providers/http.py)
    assert DEB.name not in FLAVOURS  # its own tests: tests/realvm/test_realvm_deb.py
    # Set away from its default, the field changes the key (at its default it is left out).
    wheels = {"a.whl": "1"}
    with_field = Recipe(**{**BOOKWORM.__dict__, "dependency_wheels": False})
    assert BOOKWORM.key(wheels) != with_field.key(wheels)


def test_a_field_at_its_default_keeps_the_key_images_were_built_under() -> None:
    import hashlib
    import json
    from dataclasses import asdict

    from eni_guest_lab.realvm.image import BUILDER_VERSION

    wheels = {"a.whl": "1"}
    before = {k: v for k, v in asdict(BOOKWORM).items() if k != "dependency_wheels"}
    blob = json.dumps(
        {"recipe": before, "builder": BUILDER_VERSION, "wheels": wheels}, sort_keys=True
    )
    assert BOOKWORM.key(wheels) == hashlib.sha256(blob.encode()).hexdigest()[:16]

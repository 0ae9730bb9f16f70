"""Guest images for the real-VM test bed, built from Debian's packages and cached.

Two steps, because they change at very different rates:

* :func:`base_image` (slow, ~2-3 min, cached): ``debootstrap`` of a :class:`Recipe` (suite,
  packages, the image's own configuration files), then eni-guest's *dependencies* installed from
  wheels with the guest's own Python, in the chroot, and the tree written to an ext4 disk image.
  The result lives under :func:`cache_dir` in a directory named after a hash of the recipe and
  of the dependency wheels, so it is rebuilt only when one of them changes.
* :func:`prepare_disk` (fast, a few seconds, per run): a copy of the cached disk, loop-mounted,
  gets the wheel of the current checkout installed with the guest's pip (``--no-deps``) and then
  ``eni-guest install`` run in the chroot, as a user building an image would.

Nothing here runs pip inside a booted guest: Python under QEMU's software emulation is 5-30x
slower than on the host.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence

from ..shell import SimVMError, run

#: Bump when the build steps below change in a way the recipe does not show.
BUILDER_VERSION = 1
#: Where images are kept (outside the repository); ``ENI_GUEST_LAB_CACHE`` overrides it.
DEFAULT_CACHE = "/var/cache/eni-guest-lab"
#: The checkout this module belongs to (``src/eni_guest_lab/realvm`` -> the repo root).
REPO_ROOT = Path(__file__).resolve().parents[3]

_AUTOLOGIN = """[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,38400,9600 %I $TERM
"""


@dataclass(frozen=True)
class Recipe:
    """Everything that decides an image's content; its hash names the cached image."""

    name: str
    suite: str
    python: str  # the guest's Python, for pip download: "3.11"
    packages: tuple[str, ...]
    files: Mapping[str, str] = field(default_factory=dict)  # path in the image -> content
    disk_size: str = "3G"

    def key(self, wheels: Mapping[str, str]) -> str:
        """Content hash of the recipe, the builder version and the dependency wheels' hashes."""
        blob = json.dumps(
            {"recipe": asdict(self), "builder": BUILDER_VERSION, "wheels": dict(wheels)},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


_COMMON_PACKAGES = (
    "systemd-sysv",
    "udev",
    "dbus",
    "libpam-systemd",  # logind: polkitd, which NetworkManager needs, depends on it
    "kmod",
    "iproute2",
    "iputils-ping",
    "procps",
    "python3",
    "python3-pip",
    "linux-image-amd64",
    "initramfs-tools",
    "qemu-guest-agent",
)

_COMMON_FILES = {
    "/etc/hostname": "eni-vm\n",
    "/etc/hosts": "127.0.0.1 localhost\n127.0.1.1 eni-vm\n",
    "/etc/fstab": "/dev/vda / ext4 rw,errors=remount-ro 0 1\n",
    "/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf": _AUTOLOGIN,
    # The journal survives nothing (a fresh overlay every boot) but is read on failure.
    "/etc/systemd/journald.conf.d/lab.conf": "[Journal]\nStorage=volatile\n",
}

#: Debian 12: NetworkManager (on, as the installer leaves a desktop-less machine: every NIC
#: managed, a DHCP "Wired connection N" auto-created for each new one), and netplan and
#: cloud-init installed but off; the flavours below switch the network stack per run.
BOOKWORM = Recipe(
    name="bookworm",
    suite="bookworm",
    python="3.11",
    # python3-cffi-backend: python3-cryptography (cloud-init's) needs a virtual package it
    # provides, and debootstrap does not resolve virtual packages.
    packages=(
        *_COMMON_PACKAGES,
        "network-manager",
        "netplan.io",
        "cloud-init",
        "python3-cffi-backend",
    ),
    files=dict(_COMMON_FILES),
)

#: Debian 11: kernel 5.10 (before address protocols, Linux 6.3), Python 3.9, ifupdown with
#: dhclient, as Debian's installer and its cloud images set a server up.
BULLSEYE = Recipe(
    name="bullseye",
    suite="bullseye",
    python="3.9",
    packages=(*_COMMON_PACKAGES, "ifupdown", "isc-dhcp-client"),
    files=dict(_COMMON_FILES),
)

RECIPES = {r.name: r for r in (BOOKWORM, BULLSEYE)}

#: The guest's name of the primary ENI (the bed plugs it into PCI slot 16).
PRIMARY_IFNAME = "ens16"

#: A unit of the lab's, not eni-guest's: a service ordered after network-online.target that
#: binds to a secondary ENI's IP, as a user's service would.  ``systemctl show`` tells the test
#: whether the address was there when network-online.target was reached.
BIND_UNIT = """[Unit]
Description=lab: a service binding to a secondary ENI's IP after network-online.target
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/python3 -c "import socket, sys; socket.socket().bind((sys.argv[1], 0))" {ip}

[Install]
WantedBy=multi-user.target
"""


@dataclass(frozen=True)
class Flavour:
    """One image set up for one network stack, per run (no rebuild): files written and units
    switched on or off in the disk copy, and how that stack reactivates the primary NIC."""

    name: str
    recipe: Recipe
    stack: str  # for the "Tested on" table
    files: Mapping[str, str] = field(default_factory=dict)
    enable: tuple[str, ...] = ()
    disable: tuple[str, ...] = ()
    mask: tuple[str, ...] = ()
    reactivate_primary: str = ""  # a command in the guest: the stack re-configures the primary


_NO_CLOUD_INIT = {"/etc/cloud/cloud-init.disabled": ""}
_NETWORKD_ON = ("systemd-networkd.service", "systemd-networkd-wait-online.service")
_NM_OFF = ("NetworkManager.service", "NetworkManager-wait-online.service")

NM = Flavour(
    name="bookworm-nm",
    recipe=BOOKWORM,
    stack="NetworkManager 1.42",
    files=_NO_CLOUD_INIT,
    reactivate_primary=f"nmcli device reapply {PRIMARY_IFNAME}",
)

#: cloud-init with a NoCloud seed whose user-data enables eni-guest's module (which then does
#: the boot apply: eni-guest's own boot unit is off) and sets ``watch_interval`` for the units.
#: cloud-init's network configuration is off: the catch-all .network keeps the primary.
#: (Not with NetworkManager: Debian's cloud-init.service runs before NetworkManager is up and
#: cannot be ordered after it, Before=sysinit.target; RHEL's units differ.)
CLOUD_INIT_USER_DATA = """#cloud-config
eni_guest:
  enabled: true
  persist: true
  watch_interval: 15
"""
NETWORKD = Flavour(
    name="bookworm-networkd",
    recipe=BOOKWORM,
    stack="systemd-networkd 252 with a catch-all DHCP .network; cloud-init 22.4 (NoCloud)"
    " runs eni-guest's module",
    files={
        # What many cloud images ship: DHCP on every Ethernet NIC that appears.
        "/etc/systemd/network/90-dhcp.network": (
            "[Match]\nType=ether\nName=en*\n\n[Network]\nDHCP=yes\n"
        ),
        # locale: the image has no locales package (update-locale would fail the stage); no
        # default user, no ssh: modules for them would fail too.
        "/etc/cloud/cloud.cfg.d/90-lab.cfg": (
            "datasource_list: [NoCloud]\nnetwork: {config: disabled}\nlocale: false\n"
            "users: []\nno_ssh_fingerprints: true\n"
        ),
        "/var/lib/cloud/seed/nocloud/meta-data": "instance-id: i-lab\n",
        "/var/lib/cloud/seed/nocloud/user-data": CLOUD_INIT_USER_DATA,
    },
    enable=_NETWORKD_ON,
    disable=("eni-guest-boot.service",),
    mask=_NM_OFF,
    reactivate_primary=f"networkctl reconfigure {PRIMARY_IFNAME}",
)
NETPLAN = Flavour(
    name="bookworm-netplan",
    recipe=BOOKWORM,
    stack="netplan 0.106 (networkd renderer), DHCP on every en* NIC",
    files={
        **_NO_CLOUD_INIT,
        "/etc/netplan/90-all.yaml": (
            "network:\n  version: 2\n  renderer: networkd\n  ethernets:\n    all-en:\n"
            '      match: {name: "en*"}\n      dhcp4: true\n'
        ),
    },
    enable=_NETWORKD_ON,
    mask=_NM_OFF,
    reactivate_primary="netplan apply",
)
IFUPDOWN = Flavour(
    name="bullseye-ifupdown",
    recipe=BULLSEYE,
    stack="ifupdown 0.8 + dhclient, allow-hotplug for the primary",
    files={
        "/etc/network/interfaces": (
            "auto lo\niface lo inet loopback\n\n"
            f"allow-hotplug {PRIMARY_IFNAME}\niface {PRIMARY_IFNAME} inet dhcp\n"
        ),
    },
    reactivate_primary=f"ifdown {PRIMARY_IFNAME}; ifup {PRIMARY_IFNAME}",
)

FLAVOURS = {f.name: f for f in (NM, NETWORKD, NETPLAN, IFUPDOWN)}


@dataclass(frozen=True)
class BaseImage:
    """A cached image: the ext4 disk (without eni-guest), its kernel and initrd."""

    recipe: Recipe
    dir: Path
    disk: Path
    kernel: Path
    initrd: Path
    built_in: Optional[float]  # seconds, None when it came from the cache


def cache_dir() -> Path:
    return Path(os.environ.get("ENI_GUEST_LAB_CACHE", DEFAULT_CACHE))


def mirror() -> str:
    """The Debian mirror: ``ENI_GUEST_LAB_MIRROR``, else the host's apt source, else Debian's."""
    env = os.environ.get("ENI_GUEST_LAB_MIRROR")
    if env:
        return env
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    return "http://deb.debian.org/debian"


def _log(msg: str) -> None:
    print(f"[realvm] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder per cache entry at a time (concurrent test runs wait for each other)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------- wheels


def dependency_wheels(recipe: Recipe) -> Path:
    """eni-guest's dependencies as wheels for the guest's Python (``pip download``), cached.

    ``pip download --python-version`` evaluates environment markers for the *host's* Python,
    so tomli (needed below 3.11) is asked for explicitly for an older guest.
    """
    dest = cache_dir() / f"wheels-py{recipe.python}"
    stamp = dest / ".complete"
    if stamp.exists():
        return dest
    with _locked(cache_dir() / f".wheels-py{recipe.python}.lock"):
        if stamp.exists():
            return dest
        deps = _project_dependencies()
        if _version(recipe.python) < (3, 11):
            deps.append("tomli>=1.1")
        dest.mkdir(parents=True, exist_ok=True)
        run(
            [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
             "--only-binary=:all:", "--python-version", recipe.python,
             "--implementation", "cp", "--platform", "manylinux2014_x86_64",
             "--platform", "manylinux_2_17_x86_64", "-d", str(dest), *deps],
            timeout=600,
        )  # fmt: skip
        stamp.write_text("")
    return dest


def _project_dependencies() -> list[str]:
    """``[project] dependencies`` of pyproject.toml, markers for the host's Python dropped."""
    try:
        import tomllib  # type: ignore[import-not-found]
    except ImportError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    return [d for d in data["project"]["dependencies"] if ";" not in d]


def _wheel_hashes(wheels: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        for p in sorted(wheels.glob("*.whl"))
    }


def build_checkout_wheel(dest: Path) -> Path:
    """The wheel of this checkout (``pip wheel --no-deps``), as a user would build it."""
    dest.mkdir(parents=True, exist_ok=True)
    run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
 "-w", str(dest), str(REPO_ROOT)],
        timeout=300,
    )  # fmt: skip
    found = sorted(dest.glob("eni_guest-*.whl"))
    if not found:
        raise SimVMError(f"pip wheel wrote no eni_guest wheel into {dest}")
    return found[-1]


# ------------------------------------------------------------------------------ base image


def base_image(recipe: Recipe) -> BaseImage:
    """The cached base image of ``recipe``; built (debootstrap, ~2-3 min) when missing."""
    wheels = dependency_wheels(recipe)
    key = recipe.key(_wheel_hashes(wheels))
    d = cache_dir() / f"{recipe.name}-{key}"
    built_in: Optional[float] = None
    with _locked(cache_dir() / f".{recipe.name}-{key}.lock"):
        if not (d / "disk.raw").exists():
            _remove_stale_builds(recipe)
            t0 = time.monotonic()
            _build(recipe, wheels, d)
            built_in = time.monotonic() - t0
            _log(f"image {d.name} built in {built_in:.0f} s")
    return BaseImage(recipe, d, d / "disk.raw", d / "vmlinuz", d / "initrd.img", built_in)


def _pip_system_flag(recipe: Recipe) -> list[str]:
    """pip >= 23 (Debian 12) refuses to install into the system Python without this flag;
    Debian 11's pip 20.3 does not know it."""
    return ["--break-system-packages"] if _version(recipe.python) >= (3, 11) else []


def _version(python: str) -> tuple[int, ...]:
    return tuple(int(x) for x in python.split("."))


def _remove_tree(path: Path) -> None:
    """Delete a build tree, first unmounting whatever a killed debootstrap left mounted in it
    (its /proc and /sys): never descend into a mounted file system."""
    prefix = str(path.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for m in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], check=False, capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


def _remove_stale_builds(recipe: Recipe) -> None:
    """Build trees of this recipe older than an hour: a killed build's leftovers."""
    for d in cache_dir().glob(f".build-{recipe.name}-*"):
        if d.is_dir() and time.time() - d.stat().st_mtime > 3600:
            _remove_tree(d)


def _build(recipe: Recipe, wheels: Path, dest: Path) -> None:
    """debootstrap, configure, install the dependency wheels, write the ext4 disk."""
    work = Path(tempfile.mkdtemp(prefix=f".build-{recipe.name}-", dir=cache_dir()))
    try:
        root = work / "root"
        debs = cache_dir() / "debs"  # downloaded packages, kept for the next build
        debs.mkdir(exist_ok=True)
        t0 = time.monotonic()
        cp = subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=" + ",".join(recipe.packages),
             f"--cache-dir={debs}",
             recipe.suite, str(root), mirror()],
            capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        if cp.returncode != 0:
            log = root / "debootstrap/debootstrap.log"
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise SimVMError(f"debootstrap failed:\n{cp.stdout[-2000:]}{cp.stderr}\n{tail}")
        _log(f"debootstrap {recipe.suite}: {time.monotonic() - t0:.0f} s")
        for path, text in recipe.files.items():
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        run(["chroot", str(root), "passwd", "-d", "root"])
        shutil.copytree(wheels, root / "tmp/wheels")
        deps = [p.name.split("-")[0] for p in wheels.glob("*.whl")]
        run(
            ["chroot", str(root), "python3", "-m", "pip", "install", "-q", "--no-index",
             *_pip_system_flag(recipe), "--disable-pip-version-check",
             "--no-warn-script-location", "--find-links", "/tmp/wheels", *deps],
            timeout=600,
        )  # fmt: skip
        shutil.rmtree(root / "tmp/wheels")
        for junk in (root / "var/cache/apt/archives").glob("*.deb"):
            junk.unlink()
        work_out = work / "out"
        work_out.mkdir()
        kernel = sorted((root / "boot").glob("vmlinuz-*"))[-1]
        initrd = sorted((root / "boot").glob("initrd.img-*"))[-1]
        shutil.copy2(kernel, work_out / "vmlinuz")
        shutil.copy2(initrd, work_out / "initrd.img")
        t1 = time.monotonic()
        run(
            ["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(root),
             str(work_out / "disk.raw"), recipe.disk_size],
            timeout=600,
        )  # fmt: skip
        _log(f"mkfs.ext4 -d: {time.monotonic() - t1:.0f} s")
        (work_out / "recipe.json").write_text(json.dumps(asdict(recipe), indent=1))
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(work_out, dest)
    finally:
        _remove_tree(work)


# ------------------------------------------------------------------------------- per run


@contextlib.contextmanager
def _mounted(disk: Path) -> Iterator[Path]:
    mnt = Path(tempfile.mkdtemp(prefix="egt-mnt-"))
    try:
        run(["mount", "-o", "loop", str(disk), str(mnt)])
        try:
            yield mnt
        finally:
            run(["umount", str(mnt)], timeout=120)
    finally:
        with contextlib.suppress(OSError):
            mnt.rmdir()


def prepare_disk(
    base: BaseImage,
    wheel: Path,
    dest: Path,
    flavour: Flavour,
    config: Optional[str] = None,
    files: Optional[Mapping[str, str]] = None,
    enable: Sequence[str] = (),
) -> dict[str, float]:
    """A copy of the base disk set up as ``flavour``, with ``wheel`` installed and ``eni-guest
    install`` run.

    ``config`` is written as /etc/eni-guest/eni-guest.toml (``None``: the installed default);
    ``files`` (path -> content) are written too, and the units ``enable`` enabled.  Returns
    the seconds each step took.
    """
    times: dict[str, float] = {}
    t0 = time.monotonic()
    subprocess.run(["cp", "--sparse=always", str(base.disk), str(dest)], check=True)
    times["copy"] = time.monotonic() - t0
    with _mounted(dest) as mnt:
        t1 = time.monotonic()
        shutil.copy2(wheel, mnt / "tmp" / wheel.name)
        run(
            ["chroot", str(mnt), "python3", "-m", "pip", "install", "-q", "--no-index",
             "--no-deps", *_pip_system_flag(base.recipe), "--disable-pip-version-check",
             "--no-warn-script-location", f"/tmp/{wheel.name}"],
            timeout=300,
        )  # fmt: skip
        (mnt / "tmp" / wheel.name).unlink()
        times["pip"] = time.monotonic() - t1
        t2 = time.monotonic()
        # In the chroot /run/systemd/system does not exist: install reloads nothing.
        run(["chroot", str(mnt), "/usr/local/bin/eni-guest", "install"], timeout=300)
        times["install"] = time.monotonic() - t2
        if config is not None:
            (mnt / "etc/eni-guest/eni-guest.toml").write_text(config)
        t3 = time.monotonic()
        _apply_flavour(mnt, flavour, files or {}, enable)  # after install: it may disable ours
        times["flavour"] = time.monotonic() - t3
    return times


def _apply_flavour(
    mnt: Path, flavour: Flavour, files: Mapping[str, str], enable: Sequence[str]
) -> None:
    for path, text in {**flavour.files, **files}.items():
        target = mnt / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    # systemctl in a chroot works on the unit files (no running systemd is needed for it).
    for verb, units in (("disable", flavour.disable), ("mask", flavour.mask),
                        ("enable", (*flavour.enable, *enable))):  # fmt: skip
        if units:
            run(["chroot", str(mnt), "systemctl", verb, "--quiet", *units], timeout=120)

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
    #: eni-guest's dependencies from PyPI's wheels (pip, in the chroot); False: from the
    #: recipe's Debian packages only (the Debian package's image).
    dependency_wheels: bool = True

    def key(self, wheels: Mapping[str, str]) -> str:
        """Content hash of the recipe, the builder version and the dependency wheels' hashes.

        A field added later counts only when set away from its default, so adding one
        rebuilds no existing image."""
        recipe = asdict(self)
        if recipe["dependency_wheels"]:
            del recipe["dependency_wheels"]
        blob = json.dumps(
            {"recipe": recipe, "builder": BUILDER_VERSION, "wheels": dict(wheels)},
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
#: dhclient and cloud-init 20.4, as Debian's cloud images set a server up.
BULLSEYE = Recipe(
    name="bullseye",
    suite="bullseye",
    python="3.9",
    # python3-cffi-backend: as for bookworm (python3-cryptography, cloud-init's, needs it).
    packages=(
        *_COMMON_PACKAGES,
        "ifupdown",
        "isc-dhcp-client",
        "cloud-init",
        "python3-cffi-backend",
    ),
    files=dict(_COMMON_FILES),
)

#: Debian 12 for the Debian package (debian/): eni-guest's dependencies are Debian's own
#: python3 packages (python3-click, python3-jinja2), no pip and no pyroute2 (the agent needs
#: none); the .deb is installed per run.
BOOKWORM_DEB = Recipe(
    name="bookworm-deb",
    suite="bookworm",
    python="3.11",
    packages=(
        *(p for p in BOOKWORM.packages if p != "python3-pip"),
        "python3-click",
        "python3-jinja2",
    ),
    files=dict(_COMMON_FILES),
    dependency_wheels=False,
)

RECIPES = {r.name: r for r in (BOOKWORM, BULLSEYE, BOOKWORM_DEB)}

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
    #: How eni-guest gets in: "wheel" (pip + ``eni-guest install``) or "deb" (``dpkg -i``).
    package: str = "wheel"


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
_CLOUD_INIT_NOCLOUD = {
    # locale: the image has no locales package (update-locale would fail the stage); no
    # default user, no ssh: modules for them would fail too.
    "/etc/cloud/cloud.cfg.d/90-lab.cfg": (
        "datasource_list: [NoCloud]\nnetwork: {config: disabled}\nlocale: false\n"
        "users: []\nno_ssh_fingerprints: true\n"
    ),
    "/var/lib/cloud/seed/nocloud/meta-data": "instance-id: i-lab\n",
    "/var/lib/cloud/seed/nocloud/user-data": CLOUD_INIT_USER_DATA,
}
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
        **_CLOUD_INIT_NOCLOUD,
    },
    enable=_NETWORKD_ON,
    disable=("eni-guest-boot.service",),
    mask=_NM_OFF,
    reactivate_primary=f"networkctl reconfigure {PRIMARY_IFNAME}",
)
#: Netplan as Ubuntu's cloud images have it, with cloud-init; and eni-guest's boot unit left on
#: as `eni-guest install` enables it: both boot applies run (the second finds nothing to do).
NETPLAN = Flavour(
    name="bookworm-netplan",
    recipe=BOOKWORM,
    stack="netplan 0.106 (networkd renderer), DHCP on every en* NIC; cloud-init 22.4 (NoCloud)"
    " runs eni-guest's module and the boot unit runs too",
    files={
        **_CLOUD_INIT_NOCLOUD,
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
    stack="ifupdown 0.8 + dhclient, allow-hotplug for the primary; cloud-init 20.4 (NoCloud)"
    " runs eni-guest's module",
    files={
        "/etc/network/interfaces": (
            "auto lo\niface lo inet loopback\n\n"
            f"allow-hotplug {PRIMARY_IFNAME}\niface {PRIMARY_IFNAME} inet dhcp\n"
        ),
        **_CLOUD_INIT_NOCLOUD,
    },
    disable=("eni-guest-boot.service",),
    reactivate_primary=f"ifdown {PRIMARY_IFNAME}; ifup {PRIMARY_IFNAME}",
)

FLAVOURS = {f.name: f for f in (NM, NETWORKD, NETPLAN, IFUPDOWN)}

#: The Debian package on systemd-networkd with cloud-init running its module, as NETWORKD:
#: the package's units, udev rule and cloud-init module (with the drop-in its postinst wrote)
#: at their packaged places.  Its own tests (tests/realvm/test_realvm_deb.py), not FLAVOURS'.
DEB = Flavour(
    name="bookworm-deb",
    recipe=BOOKWORM_DEB,
    stack=f"Debian package; {NETWORKD.stack}",
    files=NETWORKD.files,
    enable=NETWORKD.enable,
    disable=NETWORKD.disable,
    mask=NETWORKD.mask,
    reactivate_primary=NETWORKD.reactivate_primary,
    package="deb",
)
#: The file listing of a deb image before the package went in (for the purge test).
FILES_BEFORE_DEB = "/var/lib/lab/files-before-deb.txt"


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
    deps = _project_dependencies()
    if _version(recipe.python) < (3, 11):
        deps.append("tomli>=1.1")
    # named after the dependency list: a dependency added or dropped gets a new download
    # (and so new image keys), never the wheels of an older pyproject.toml
    digest = hashlib.sha256("\n".join(sorted(deps)).encode()).hexdigest()[:12]
    dest = cache_dir() / f"wheels-py{recipe.python}-{digest}"
    stamp = dest / ".complete"
    if stamp.exists():
        return dest
    with _locked(cache_dir() / f".wheels-py{recipe.python}-{digest}.lock"):
        if stamp.exists():
            return dest
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


def build_checkout_deb(dest: Path) -> Path:
    """The Debian package of this checkout: ``ENI_GUEST_LAB_DEB`` when it names one
    (tests/run.sh builds it once, in the background), else tools/build-deb.sh into ``dest``
    (dpkg-buildpackage and lintian, about 15 s)."""
    given = os.environ.get("ENI_GUEST_LAB_DEB")
    if given:
        if not Path(given).is_file():
            raise SimVMError(f"ENI_GUEST_LAB_DEB={given}: no such file")
        return Path(given)
    cp = run(["bash", str(REPO_ROOT / "tools/build-deb.sh"), str(dest)], timeout=600)
    return Path(cp.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ base image


def base_image(recipe: Recipe) -> BaseImage:
    """The cached base image of ``recipe``; built (debootstrap, ~2-3 min) when missing."""
    wheels = dependency_wheels(recipe) if recipe.dependency_wheels else None
    key = recipe.key(_wheel_hashes(wheels) if wheels else {})
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


def _build(recipe: Recipe, wheels: Optional[Path], dest: Path) -> None:
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
        if wheels is not None:
            _install_wheels(recipe, wheels, root)
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


def _install_wheels(recipe: Recipe, wheels: Path, root: Path) -> None:
    shutil.copytree(wheels, root / "tmp/wheels")
    deps = [p.name.split("-")[0] for p in wheels.glob("*.whl")]
    run(
        ["chroot", str(root), "python3", "-m", "pip", "install", "-q", "--no-index",
         *_pip_system_flag(recipe), "--disable-pip-version-check",
         "--no-warn-script-location", "--find-links", "/tmp/wheels", *deps],
        timeout=600,
    )  # fmt: skip
    shutil.rmtree(root / "tmp/wheels")


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
    package: Path,
    dest: Path,
    flavour: Flavour,
    config: Optional[str] = None,
    files: Optional[Mapping[str, str]] = None,
    enable: Sequence[str] = (),
) -> dict[str, float]:
    """A copy of the base disk set up as ``flavour``, with eni-guest installed from ``package``:
    a wheel (pip, then ``eni-guest install``) or, for a "deb" flavour, the Debian package
    (``dpkg -i``: its maintainer scripts enable the units and write cloud-init's drop-in).

    ``config`` is written as /etc/eni-guest/eni-guest.toml (``None``: the installed default);
    ``files`` (path -> content) are written too, and the units ``enable`` enabled.  Returns
    the seconds each step took.
    """
    times: dict[str, float] = {}
    t0 = time.monotonic()
    subprocess.run(["cp", "--sparse=always", str(base.disk), str(dest)], check=True)
    times["copy"] = time.monotonic() - t0
    with _mounted(dest) as mnt:
        if flavour.package == "deb":
            _install_deb(mnt, package, times)
        else:
            _install_wheel(mnt, base.recipe, package, times)
        if config is not None:
            (mnt / "etc/eni-guest/eni-guest.toml").write_text(config)
        t3 = time.monotonic()
        _apply_flavour(mnt, flavour, files or {}, enable)  # after install: it may disable ours
        times["flavour"] = time.monotonic() - t3
    return times


def _install_wheel(mnt: Path, recipe: Recipe, wheel: Path, times: dict[str, float]) -> None:
    t1 = time.monotonic()
    shutil.copy2(wheel, mnt / "tmp" / wheel.name)
    run(
        ["chroot", str(mnt), "python3", "-m", "pip", "install", "-q", "--no-index",
         "--no-deps", *_pip_system_flag(recipe), "--disable-pip-version-check",
         "--no-warn-script-location", f"/tmp/{wheel.name}"],
        timeout=300,
    )  # fmt: skip
    (mnt / "tmp" / wheel.name).unlink()
    times["pip"] = time.monotonic() - t1
    t2 = time.monotonic()
    # In the chroot /run/systemd/system does not exist: install reloads nothing.
    run(["chroot", str(mnt), "/usr/local/bin/eni-guest", "install"], timeout=300)
    times["install"] = time.monotonic() - t2


def _install_deb(mnt: Path, deb: Path, times: dict[str, float]) -> None:
    """``dpkg -i`` in the chroot, after writing the image's file list (FILES_BEFORE_DEB).

    Every dependency must already be in the image (the recipe's packages): dpkg fails
    otherwise, which is the check that the package's Depends are Debian's own packages."""
    t1 = time.monotonic()
    listing = mnt / FILES_BEFORE_DEB.lstrip("/")
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("".join(f"{p}\n" for p in file_list(mnt)))
    shutil.copy2(deb, mnt / "tmp" / deb.name)
    run(["chroot", str(mnt), "dpkg", "-i", f"/tmp/{deb.name}"], timeout=300)
    (mnt / "tmp" / deb.name).unlink()
    times["dpkg"] = time.monotonic() - t1


def deb_install_and_purge(base: BaseImage, deb: Path, disk: Path) -> dict[str, list[str]]:
    """The file lists of a copy of ``base``'s disk (at ``disk``, a chroot, nothing booted)
    "before" the package, after ``dpkg -i`` ("installed") and after ``dpkg --purge``
    ("purged")."""
    subprocess.run(["cp", "--sparse=always", str(base.disk), str(disk)], check=True)
    lists: dict[str, list[str]] = {}
    with _mounted(disk) as mnt:
        lists["before"] = file_list(mnt)
        shutil.copy2(deb, mnt / "tmp" / deb.name)
        run(["chroot", str(mnt), "dpkg", "-i", f"/tmp/{deb.name}"], timeout=300)
        (mnt / "tmp" / deb.name).unlink()
        lists["installed"] = file_list(mnt)
        run(["chroot", str(mnt), "dpkg", "--purge", "eni-guest"], timeout=300)
        lists["purged"] = file_list(mnt)
    return lists


#: What changes in a Debian system without any package's doing (logs, caches, dpkg's own
#: books), left out of the purge test's file lists.
UNLISTED = ("tmp", "var/log", "var/cache", "var/lib/dpkg", "var/lib/apt", "var/tmp",
            "proc", "sys", "dev", "run", "var/lib/lab")  # fmt: skip


def file_list(root: Path) -> list[str]:
    """Every path under ``root`` (as "/etc/..."), but for the UNLISTED trees."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        rel = "" if rel == "." else rel
        dirnames[:] = [d for d in dirnames if os.path.join(rel, d) not in UNLISTED]
        for name in (*dirnames, *filenames):
            out.append("/" + os.path.join(rel, name))
    return sorted(out)


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

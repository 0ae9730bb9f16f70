"""A fresh Debian machine's root for the README's set-up commands: a chroot, nothing booted.

README "Set up" promises that its first commands work on a fresh Debian/Ubuntu machine with
Python.  :func:`fresh_root` is that machine's file system: ``debootstrap --variant=minbase``
with only ``python3`` added (no pip, no iproute2, no nftables: what a minimal image or a
container has), cached as a tarball under the image cache (same content-key rule as the guest
images).  :func:`run_fresh` unpacks a copy, puts the checkout at /root/eni-guest and runs a
shell script there with a clean environment, in a mount namespace of its own (``unshare``):
/proc, /sys, /dev and a fresh /run are mounted inside and vanish with it.

The chroot shares the machine's kernel and network (apt and pip reach the package
registries), and so the machine's own certificate authorities (``/usr/local/share/
ca-certificates``, where a site puts the CA of its HTTPS proxy): they are copied in, and Debian's
ca-certificates, once the commands install it, trusts them as it does on the machine.  The demo
it runs builds network namespaces of its own, as on any machine.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ..shell import SimVMError
from .image import REPO_ROOT, _locked, _log, cache_dir, mirror

SUITE = "bookworm"
PACKAGES = ("python3",)
LOCAL_CAS = "/usr/local/share/ca-certificates"
#: Bump when the steps below change in a way SUITE and PACKAGES do not show.
VERSION = 1


def fresh_root() -> Path:
    """The cached tarball of the fresh root (debootstrap, ~1-2 min, when missing)."""
    key = hashlib.sha256(json.dumps([SUITE, PACKAGES, VERSION]).encode()).hexdigest()[:16]
    tarball = cache_dir() / f"fresh-{SUITE}-{key}.tar"
    with _locked(cache_dir() / f".fresh-{SUITE}-{key}.lock"):
        if tarball.exists():
            return tarball
        t0 = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix=f".build-fresh-{SUITE}-", dir=cache_dir()))
        try:
            root = work / "root"
            debs = cache_dir() / "debs"
            debs.mkdir(exist_ok=True)
            cp = subprocess.run(
                ["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
                 f"--cache-dir={debs}", SUITE, str(root), mirror()],
                capture_output=True, text=True, timeout=1800,
            )  # fmt: skip
            if cp.returncode != 0:
                raise SimVMError(f"debootstrap failed:\n{cp.stdout[-2000:]}{cp.stderr}")
            for junk in (root / "var/cache/apt/archives").glob("*.deb"):
                junk.unlink()
            partial = work / "root.tar"
            subprocess.run(["tar", "-C", str(root), "-cf", str(partial), "."], check=True)
            partial.rename(tarball)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        _log(f"fresh root {tarball.name} built in {time.monotonic() - t0:.0f} s")
    return tarball


#: Runs inside ``unshare --mount``: the mounts the chroot needs, then the script, in it.
_INSIDE = """set -e
root=$1; shift
mount --make-rprivate /
# Its own mount point, as a machine's / is (`ip netns` re-mounts / as a slave).
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/run"
cp /etc/resolv.conf "$root/etc/resolv.conf"
exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    /bin/bash -c 'cd /root/eni-guest && exec /bin/bash -e -c "$1"' bash "$1"
"""


def run_fresh(script: str, timeout: float = 1200.0) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (bash -e) in a fresh root with this checkout at /root/eni-guest."""
    tarball = fresh_root()
    work = Path(tempfile.mkdtemp(prefix="egt-fresh-"))
    try:
        root = work / "root"
        root.mkdir()
        subprocess.run(["tar", "-C", str(root), "-xf", str(tarball)], check=True)
        checkout = root / "root/eni-guest"
        checkout.mkdir(parents=True)
        files = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
            capture_output=True, check=True,
        ).stdout  # fmt: skip
        with open(work / "checkout.tar", "wb") as out:
            subprocess.run(
                ["tar", "-C", str(REPO_ROOT), "--null", "--ignore-failed-read", "-T", "-",
                 "-cf", "-"],
                input=files, stdout=out, check=True,
            )  # fmt: skip
        subprocess.run(["tar", "-C", str(checkout), "-xf", str(work / "checkout.tar")], check=True)
        local_cas = root / LOCAL_CAS.lstrip("/")
        local_cas.mkdir(parents=True, exist_ok=True)
        for ca in Path(LOCAL_CAS).glob("*.crt"):
            shutil.copy2(ca, local_cas / ca.name)
        return subprocess.run(
            ["unshare", "--mount", "--", "sh", "-c", _INSIDE, "inside", str(root), script],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    finally:
        _remove(work)


def _remove(work: Path) -> None:
    """Delete the copy; the mounts went with the mount namespace (nothing is followed into
    one that is still there: the check is the same as the image builder's)."""
    prefix = str(work.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    if any(m.startswith(prefix) for m in mounts):
        raise SimVMError(f"{work}: still mounted, not removed")
    shutil.rmtree(work, ignore_errors=True)

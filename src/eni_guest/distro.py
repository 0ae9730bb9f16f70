"""Keep the distro's own network stack (NetworkManager, systemd-networkd) off eni-guest's work.

Left alone, NetworkManager's automatic "Wired connection" or a cloud image's catch-all networkd
file runs DHCP on every NIC that appears: a second default route in the main table, and traffic
flapping between ENIs.  So for every secondary ENI we write, into /run, a NetworkManager
conf.d drop-in listing its MAC under ``unmanaged-devices`` and a systemd-networkd
``.network`` file matching its MAC with ``Unmanaged=yes``.  And, whatever the ENIs, a
networkd.conf drop-in with ``ManageForeignRoutingPolicyRules=no`` and ``ManageForeignRoutes=no``:
by default networkd deletes every rule and route it did not create when it configures a link
(the primary's reconfigure on a restart, an upgrade, netplan apply), eni-guest's included.
networkd reads that file only when it starts, so it is never a reason to reload or restart it.
The addresses eni-guest adds to the primary have no such global switch (README, "The watch
daemon"): the watch daemon puts them back.

* /run, not /etc: the files describe the ENIs attached now.  A detached ENI's stanza must not
  outlive a reboot, and the next boot rewrites the list from metadata anyway.
* Never the primary ENI: it is the distro's (DHCP, the SSH session); unmanaging it would cut
  the machine off.
* Files are rewritten atomically, never through a planted symbolic link (safe_write.py), and
  only when their content changes, and only then is the running manager asked to re-read its
  configuration - a reload, never a restart: restarting a network manager re-runs DHCP and
  flushes connections of every interface.

Which file wins: NetworkManager reads /usr/lib, then /run, then /etc conf.d files; we append
with ``unmanaged-devices+=`` so a distro default such as Ubuntu's
``10-globally-managed-devices.conf`` (``unmanaged-devices=*,except:...``) keeps its meaning
instead of being replaced by our list.  systemd-networkd uses the first ``.network`` file in
lexical order over /etc, /run and /usr/lib: ``05-eni-guest.network`` sorts before netplan's
``10-netplan-*`` and cloud-init's ``10-cloud-init-*``.
"""

from __future__ import annotations

import time
from pathlib import Path

from . import dropins, safe_write
from .config import is_mac
from .log import log

NM_DROPIN = Path("run/NetworkManager/conf.d/90-eni-guest.conf")
NETWORKD_FILE = Path("run/systemd/network/05-eni-guest.network")
# 60-: a "local" drop-in (systemd's advice: 10-40 for /usr, 60-90 for /etc and /run), so an
# administrator's drop-in sorting after it can still turn the switches back on.
NETWORKD_FOREIGN = Path("run/systemd/networkd.conf.d/60-eni-guest.conf")

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:  # only type checkers need it: annotations are never evaluated
    from typing import Callable, Iterable, Optional

    # (argv) -> (exit code, combined output); replaced by tests, which must never reach a real
    # NetworkManager or networkd.
    Runner = Callable[[list[str]], tuple[int, str]]


def _run(argv: list[str]) -> tuple[int, str]:
    import subprocess  # only when NetworkManager or networkd is asked something

    try:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=15, check=False)
    except FileNotFoundError:
        return 127, f"{argv[0]}: not found"
    except subprocess.TimeoutExpired:
        return 124, f"{' '.join(argv)}: timed out after 15 s"
    return cp.returncode, (cp.stdout + cp.stderr).strip()


def _normalise(macs: Iterable[str], primary_mac: str) -> list[str]:
    """Lower-case, validated, de-duplicated, sorted (stable file content), primary removed."""
    primary = primary_mac.strip().lower()
    out = set()
    for mac in macs:
        m = mac.strip().lower()
        if not is_mac(m):
            raise ValueError(f"not a MAC address: {mac!r}")
        if m == primary:
            log.debug("distro network stack: never unmanaging the primary ENI %s", m)
            continue
        out.add(m)
    return sorted(out)


def render(secondary_macs: list[str], enabled: bool = True) -> dict[Path, Optional[str]]:
    """Content of each drop-in (relative to the root) for these MACs; None: the file must go.

    The networkd.conf drop-in does not depend on the MACs: the primary carries eni-guest's
    rules and table too.  It goes only with ``enabled=False``.
    """
    foreign = dropins.NETWORKD_FOREIGN if enabled else None
    if not secondary_macs:
        return {NM_DROPIN: None, NETWORKD_FILE: None, NETWORKD_FOREIGN: foreign}
    return {
        NM_DROPIN: dropins.networkmanager_unmanaged(secondary_macs),
        NETWORKD_FILE: dropins.networkd_unmanaged(secondary_macs),
        NETWORKD_FOREIGN: foreign,
    }


def write_if_changed(
    path: Path, content: Optional[str], mode: int = 0o644, *, root: Optional[Path] = None
) -> bool:
    """Atomically make ``path`` hold ``content`` (None: absent); True if anything changed.

    The mode is set explicitly: systemd-networkd reads its files as the unprivileged
    ``systemd-network`` user, and our units run with ``UMask=0077``.  No symbolic link is
    followed below ``root`` (the file's own directory by default): a planted one is refused
    with a configuration error (exit 2) naming it (safe_write.py).
    """
    return safe_write.write_if_changed(path, content, mode, root=root)


def _active(unit: str, run: Runner) -> bool:
    code, _ = run(["systemctl", "is-active", "--quiet", unit])
    return code == 0


#: The system D-Bus socket: nmcli and networkctl reload through it.
SYSTEM_BUS = Path("/run/dbus/system_bus_socket")
#: A reload that failed leaves a file here named after the manager; every later run retries it.
PENDING_DIR = Path("/run/eni-guest/reload-pending")

_RELOADS = {
    "NetworkManager.service": ["nmcli", "general", "reload", "conf"],
    "systemd-networkd.service": ["networkctl", "reload"],
}


def reload_managers(
    changed: Iterable[Path],
    run: Optional[Runner] = None,
    pending_dir: Optional[Path] = None,
    bus: Optional[Path] = None,
) -> None:
    """Ask each running manager whose file changed, or whose reload failed before, to re-read
    its configuration.

    The networkd.conf drop-in (NETWORKD_FOREIGN) is never a reason: networkd reads it when
    it starts.  Only running managers: NetworkManager and networkd are both D-Bus
    activatable, and asking one that is stopped would start it next to the one the image
    uses.  Failures are logged, never raised, and remembered in ``pending_dir``: a reload can
    fail because the run is too early (cloud-init's init stage runs before D-Bus, and
    `networkctl reload` then cannot connect - seen in a real Debian 12 VM), and the files do
    not change again, so the next run (the watch daemon, a hot-plug) must retry it.
    """
    run = run or _run
    pending_dir = pending_dir or PENDING_DIR
    bus = bus or SYSTEM_BUS
    names = {Path(p).name for p in changed}
    units = set()
    if NM_DROPIN.name in names:
        units.add("NetworkManager.service")
    if any(name.endswith(".network") for name in names):  # ours and the hot-plug one
        units.add("systemd-networkd.service")
    try:  # noqa: SIM105 (contextlib.suppress: ~0.5 ms of imports)
        units |= {p.name for p in pending_dir.iterdir() if p.name in _RELOADS}
    except OSError:
        pass
    for unit in sorted(units):
        stamp = pending_dir / unit
        if not bus.exists():
            # Too early: cloud-init's init stage runs before D-Bus, which nmcli and networkctl
            # need.  Not a warning: the next run (the watch daemon, a hot-plug) reloads.
            log.info("D-Bus is not up yet: %s is asked to reload by the next run", unit)
            _touch(pending_dir, stamp)
            continue
        if not _active(unit, run):
            log.debug("distro network stack: %s is not running, not reloaded", unit)
            try:  # noqa: SIM105 (contextlib.suppress: ~0.5 ms of imports)
                stamp.unlink()  # it reads the files when it starts
            except OSError:
                pass
            continue
        argv = _RELOADS[unit]
        code, out = run(argv)
        if code == 0:
            log.info("%s (eni-guest's drop-in changed)", " ".join(argv))
            try:  # noqa: SIM105 (contextlib.suppress: ~0.5 ms of imports)
                stamp.unlink()
            except OSError:
                pass
            continue
        log.warning(
            "warning: %s failed (exit %d): %s; the ENIs stay managed by %s until it re-reads "
            "its configuration (the next run tries again)",
            " ".join(argv),
            code,
            out or "no output",
            unit.removesuffix(".service"),
        )
        _touch(pending_dir, stamp)


def _touch(directory: Path, stamp: Path) -> None:
    try:  # noqa: SIM105 (contextlib.suppress: ~0.5 ms of imports)
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        stamp.touch()
    except OSError:
        pass


def wait_released(
    ifnames: Iterable[str], run: Optional[Runner] = None, timeout: float = 10.0
) -> list[str]:
    """Wait until NetworkManager has let go of these devices after a reload; the names it
    still manages when ``timeout`` runs out.

    NetworkManager applies a reloaded ``unmanaged-devices`` asynchronously: it deactivates each
    device it managed and takes its link down while it does.  A plan made before that would
    meet "Network is down" halfway (seen in a real Debian 12 VM at boot, where NetworkManager
    had taken every NIC before eni-guest's first run), so the caller waits here and then reads
    the kernel again.  Devices NetworkManager does not know count as released.
    """
    run = run or _run
    wanted = set(ifnames)
    if not wanted or not _active("NetworkManager.service", run):
        return []
    deadline = time.monotonic() + timeout
    while True:
        code, out = run(["nmcli", "-t", "-f", "DEVICE,STATE", "device"])
        if code != 0:
            log.debug("distro network stack: nmcli device failed (%d): %s", code, out)
            return []
        states = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        held = sorted(n for n in wanted if states.get(n, "unmanaged") != "unmanaged")
        if not held or time.monotonic() >= deadline:
            return held
        time.sleep(0.1)


def keep_off(
    secondary_macs: list[str],
    primary_mac: str,
    root: Path = Path("/"),
    *,
    enabled: bool = True,
) -> list[str]:
    """Make NetworkManager and systemd-networkd leave exactly these secondary ENIs alone.

    Writes (or removes) the drop-ins under ``root`` so they list ``secondary_macs`` minus
    ``primary_mac``; ENIs no longer listed lose their stanza.  The networkd.conf drop-in
    (keep foreign rules and routes) is written whatever the ENIs.  ``enabled=False`` (config
    ``manage_distro_network = false``) removes our drop-ins, handing every NIC back to the
    distro.  Returns the paths that changed.  Only when something changed and ``root`` is ``/``
    are the running managers asked to reload; image builders and tests pass another root.
    """
    root = Path(root)
    macs = _normalise(secondary_macs, primary_mac) if enabled else []
    changed = []
    files = render(macs, enabled)
    for rel, content in files.items():
        path = root / rel
        if write_if_changed(path, content, root=root):  # no link followed below root
            changed.append(str(path))
    if root.resolve() == Path("/"):  # also when nothing changed: a failed reload is retried
        reload_managers([Path(p) for p in changed])
    return changed

"""An ENI's subnet and gateway without a DHCP exchange (JD Cloud): known already this boot.

JD Cloud's metadata publishes no subnet and no gateway, and a DHCP probe (dhcp.py) on every
ENI at every reconcile would cost a raw-socket exchange per NIC per minute.  Neither changes
while a NIC stays attached, so:

* the primary ENI is never probed: the distro's DHCP client already holds its lease, and the
  kernel shows it (`from_kernel`): the subnet is the prefix of the link's address that is the
  ENI's primary IP (`10.0.1.10/24`), the gateway the main table's default route through the
  link.  Without either (a static address, no default route yet) it is probed like the others;
* a secondary ENI is probed once, and the answer is kept for the rest of the boot in one small
  file per MAC beside the run lock (`/run/eni-guest.lock` -> `/run/eni-guest.dhcp/0e-..-02`):

      {"boot_id": "...", "mac": "0e:..:02", "ifindex": 4, "subnet": "10.0.2.0/24",
       "gateway": "10.0.2.1"}

  and reused (`cached`) while the same NIC is there: this boot, this MAC, this ifindex.  A NIC
  that leaves and comes back gets a new ifindex, so it is asked again; `forget_departed` (run
  with every unplug clean-up) deletes the files of NICs that left.

A kept answer is input like any other: it is used only if the file is a regular file of root's
(or of the user running eni-guest) that nobody else may write, holds exactly these fields with
the right types, for this boot, MAC and ifindex, and a subnet and gateway that parse (and then
go through validate.py like a fresh answer).  Anything else is ignored and the NIC probed again.
Files are written with safe_write (no symbolic link followed, atomic rename); failing to write
one (not root, /run read-only) only costs a probe next time.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
from pathlib import Path

from . import metrics
from .config import Config
from .log import log
from .providers.boot_cache import boot_id, read_json, read_ours
from .state import Link

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Callable, Optional, Sequence

    from .state import Addr, Route


FIELDS = ("boot_id", "mac", "ifindex", "subnet", "gateway")

if TYPE_CHECKING:  # only type checkers need it: annotations are never evaluated
    Probe = Callable[[Link], "tuple[str, str]"]


def directory(config: Config) -> Optional[Path]:
    """Where the answers are kept: beside the lock file (None: no lock file)."""
    lock = Path(config.lock_file)
    return lock.with_suffix(".dhcp") if lock.name else None


def _path(config: Config, mac: str) -> Optional[Path]:
    where = directory(config)
    return where / mac.replace(":", "-") if where is not None else None


def from_kernel(
    addrs: list[Addr], routes: list[Route], link: Link, ip: str
) -> Optional[tuple[str, str]]:
    """(subnet, gateway) of the primary ENI as its DHCP client configured them, or None."""
    try:
        want = ipaddress.IPv4Address(ip.strip().strip('"'))
    except ValueError:
        return None
    subnet = next(
        (
            ipaddress.IPv4Interface(f"{a.ip}/{a.prefixlen}").network
            for a in addrs
            if a.index == link.index and a.ip == want and a.prefixlen < 32
        ),
        None,
    )
    gateway = next(
        (
            r.gateway
            for r in routes
            if r.oif == link.index and r.dst.prefixlen == 0 and r.gateway is not None
        ),
        None,
    )
    if subnet is None or gateway is None:
        return None
    return str(subnet), str(gateway)


def kernel_lease(config: Config) -> Callable[[Link, str], Optional[tuple[str, str]]]:
    """The JD provider's `kernel_lease`: the primary ENI's NIC and IP -> (subnet, gateway)."""

    def lease(link: Link, ip: str) -> Optional[tuple[str, str]]:
        from .kernel import Kernel

        kernel = Kernel(config)
        try:
            addrs, routes = kernel.read_dhcp_view(link.index)
        finally:
            kernel.close()
        found = from_kernel(addrs, routes, link, ip)
        if found is not None:
            log.debug(
                "dhcp: %s (%s): subnet %s, router %s from the kernel", link.name, link.mac, *found
            )
        return found

    return lease


def load(config: Config, link: Link, boot: Optional[str]) -> Optional[tuple[str, str]]:
    """(subnet, gateway) kept earlier this boot for this very NIC, or None."""
    path = _path(config, link.mac)
    if boot is None or path is None:
        return None
    data = read_json(path)
    if data is None:
        return None
    problem = _problem(data, link, boot)
    if problem is not None:
        log.debug("ignoring %s: %s", path, problem)
        return None
    return data["subnet"], data["gateway"]


def _problem(data: object, link: Link, boot: str) -> Optional[str]:
    """Why `data` is not a trustworthy answer for this NIC in this boot, or None."""
    if not isinstance(data, dict) or set(data) != set(FIELDS):
        return f"not an object with exactly {', '.join(FIELDS)}"
    if not isinstance(data["ifindex"], int) or isinstance(data["ifindex"], bool):
        return "ifindex is not a number"
    if not all(isinstance(data[k], str) for k in FIELDS if k != "ifindex"):
        return "a field is not a string"
    if data["boot_id"] != boot:
        return "written in another boot"
    if (data["mac"], data["ifindex"]) != (link.mac, link.index):
        return f"for {data['mac']} at ifindex {data['ifindex']}, not this NIC (it left since)"
    try:
        subnet = ipaddress.IPv4Network(data["subnet"])
        ipaddress.IPv4Address(data["gateway"])
    except ValueError as e:
        return f"not a subnet and gateway: {e}"
    if subnet.prefixlen == 0:
        return "a default route is not a subnet"
    return None


def store(config: Config, link: Link, boot: Optional[str], answer: tuple[str, str]) -> bool:
    """Keep a probe's answer for this NIC for the rest of the boot; False when not written."""
    from .safe_write import UnsafePath, write_if_changed

    path = _path(config, link.mac)
    if boot is None or path is None:
        return False
    record = dict(zip(FIELDS, (boot, link.mac, link.index, *answer)))
    try:
        write_if_changed(path, json.dumps(record) + "\n", 0o644, root=path.parent.parent)
    except (OSError, UnsafePath) as e:
        log.debug("cannot keep the DHCP answer in %s: %s", path, e)
        return False
    return True


def cached(config: Config, probe: Probe) -> Probe:
    """`probe`, asked only for a NIC whose answer is not kept yet this boot (then kept)."""

    @functools.wraps(probe)
    def dhcp_probe(link: Link) -> tuple[str, str]:
        boot = boot_id()
        kept = load(config, link, boot)
        if kept is not None:
            log.debug(
                "dhcp: %s (%s): subnet %s, router %s kept this boot", link.name, link.mac, *kept
            )
            return kept
        metrics.count("dhcp_probes")
        answer = probe(link)
        store(config, link, boot, answer)
        return answer

    return dhcp_probe


def forget_departed(config: Config, links: Sequence[Link]) -> list[Path]:
    """Delete the kept answers of NICs that are no longer there (run by every unplug)."""
    from .safe_write import UnsafePath, write_if_changed

    where = directory(config)
    if where is None or not where.is_dir():
        return []
    present = {(link.mac.replace(":", "-"), link.index) for link in links}
    gone: list[Path] = []
    for name in sorted(os.listdir(where)):
        if name.startswith("."):  # safe_write's temporary file of a write under way
            continue
        path = where / name
        try:
            data = json.loads(read_ours(path))
            key = (name, data.get("ifindex") if isinstance(data, dict) else None)
        except (OSError, ValueError):
            key = (name, None)  # unreadable: of no use to anyone
        if key in present:
            continue
        try:
            if write_if_changed(path, None, root=where.parent):
                gone.append(path)
        except (OSError, UnsafePath) as e:
            log.debug("cannot delete %s: %s", path, e)
    return gone

"""Naming, creating and deleting the lab's network namespaces, and cleaning up after crashes.

Every object of a simulated VM is created inside namespaces this module created, under a
unique name that embeds the creating process id (``egt<pid hex><4 random hex>-<role>``), so
:func:`cleanup_stale` can delete what a killed run left behind and nothing else. The machine's
own interfaces, addresses, routes and rules are never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Optional

from ..shell import SimVMError, ip_batch, nft, run, sysctl

#: Every namespace and temporary directory this module makes starts with this.
NS_PREFIX = "egt"
# <prefix> = egt<pid in hex><4 random hex digits>; the pid is what cleanup_stale checks.
_NS_RE = re.compile(r"^egt([0-9a-f]{1,8})[0-9a-f]{4}-(vpc|chk|g[0-9]*|c[0-9]*)$")
_TMP_RE = re.compile(r"^egt([0-9a-f]{1,8})[0-9a-f]{4}-[a-z0-9_]+$")


def new_prefix() -> str:
    """A fresh ``egt<pid><random>`` prefix for one simulated VM's namespaces and files."""
    return f"{NS_PREFIX}{os.getpid():x}{secrets.token_hex(2)}"


def list_netns() -> list[str]:
    """Names of every network namespace of the machine (``ip netns list``)."""
    out = run(["ip", "-j", "netns", "list"], check=False).stdout.strip()
    if not out:
        return []
    try:
        return [str(e["name"]) for e in json.loads(out)]
    except (ValueError, KeyError, TypeError):
        return [line.split()[0] for line in out.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a pid we could have written: keep, never guess
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def delete_ns(ns: str) -> None:
    """Kill what still runs inside, then delete the namespace.

    A process left inside would keep the namespace, and so its veths, alive after the delete.
    Everything inside was started by the testbed or by someone who entered a namespace that is
    going away (``ip netns exec ... bash`` during a demo).
    """
    cp = run(["ip", "netns", "pids", ns], check=False, timeout=10)
    for tok in cp.stdout.split():
        if tok.isdigit() and int(tok) != os.getpid():
            with contextlib.suppress(OSError):
                os.kill(int(tok), signal.SIGKILL)
    cp = run(["ip", "netns", "del", ns], check=False, timeout=10)
    if cp.returncode != 0 and ns in list_netns():
        raise SimVMError(f"could not delete namespace {ns}: {cp.stderr.strip()}")


class Namespaces:
    """The namespaces one simulated VM made, deleted in reverse order by :meth:`delete_all`."""

    def __init__(self) -> None:
        self._names: list[str] = []

    def __bool__(self) -> bool:
        return bool(self._names)

    def add(self, ns: str) -> None:
        """Create ``ns`` with its loopback up."""
        self._names.append(ns)  # first: an interrupt right after the add must not leak it
        run(["ip", "netns", "add", ns])
        ip_batch(ns, ["link set lo up"])

    def delete_all(self) -> list[str]:
        """Delete every namespace; returns the errors. Each is forgotten only once deleted, so
        an interrupted delete can simply be called again."""
        errors: list[str] = []
        for ns in list(reversed(self._names)):
            try:
                delete_ns(ns)
            except Exception as e:  # keep cleaning up whatever happens
                errors.append(str(e))
            if ns in self._names:
                self._names.remove(ns)
        return errors


def cleanup_stale() -> list[str]:
    """Delete namespaces (and temp dirs) of testbeds whose creating process is dead.

    Only names of this module's exact pattern (``egt<pid-hex><4 hex>-<role>``) are considered,
    and only when the embedded pid no longer exists, so a concurrent run and anything else on the
    machine are left alone. Returns the names of the deleted namespaces.
    """
    removed = []
    for ns in list_netns():
        m = _NS_RE.match(ns)
        if m is None or _pid_alive(int(m.group(1), 16)):
            continue
        delete_ns(ns)
        removed.append(ns)
    tmp = Path(tempfile.gettempdir())
    try:
        entries = list(tmp.iterdir())
    except OSError:
        entries = []
    for d in entries:
        m = _TMP_RE.match(d.name)
        if m and d.is_dir() and not d.is_symlink() and not _pid_alive(int(m.group(1), 16)):
            shutil.rmtree(d, ignore_errors=True)
    return removed


def check_environment() -> Optional[str]:
    """Why a SimVM cannot be built here (``None`` if it can): root, tools, namespaces, nftables.

    Tries the real thing in a throw-away namespace, so the e2e tests and the demo can fail with
    one clear sentence instead of a stack of ``ip`` errors.
    """
    if os.geteuid() != 0:
        return "building network namespaces needs root"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables"), ("sysctl", "procps")):
        if shutil.which(tool) is None:
            return f"`{tool}` not found (install {package})"
    ns = f"{new_prefix()}-chk"
    try:
        run(["ip", "netns", "add", ns])
    except SimVMError as e:
        return f"cannot create a network namespace: {e}"
    try:
        ip_batch(ns, ["link set lo up", "link add name egtchk0 type veth peer name egtchk1"])
        nft(
            ns,
            "table inet egt_chk {\n chain c {\n type filter hook prerouting priority 0;\n }\n}\n",
        )
        sysctl(ns, {"net.ipv6.conf.all.forwarding": 1})
    except SimVMError as e:
        return f"network namespaces do not work as needed: {e}"
    finally:
        run(["ip", "netns", "del", ns], check=False)
    return None

"""Reachability with real packets, and which ENI they left through.

A probe runs :mod:`eni_guest_lab.netprobe` inside a namespace (the guest or its container) and
reads, before and after, the vpc's per-veth nftables counters of echo requests and TCP SYNs.
Those counters sit before the VPC's source check, so the exit ENI is known even when the cloud
dropped the packets; a separate counter says whether the source check dropped any. A test can
then assert *where* traffic left, not only that it arrived.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional

from .shell import in_ns
from .topology.vpc import NFT_TABLE, RPF_COUNTER, SYN_SUFFIX

#: The helper program, run by path: it needs nothing but the interpreter.
NETPROBE = str(Path(__file__).resolve().parent / "netprobe.py")


def netprobe_command(*args: str) -> list[str]:
    """The command line running netprobe (``-I``: standard library only, no site, no cwd)."""
    return [sys.executable, "-I", NETPROBE, *args]


@dataclass(frozen=True)
class Probe:
    """What a packet probe saw.

    ``exit_iface`` is the guest name of the ENI whose vpc-side veth received the probe packets
    (``None`` if none did), so a test can assert *where* traffic left, not only that it
    arrived. ``bool(probe)`` is ``probe.ok``, so ``assert vm.probe(...)`` means what it reads.
    """

    ok: bool
    exit_iface: Optional[str]
    dropped_by_rpf: bool
    detail: str = field(default="", compare=False)

    def __bool__(self) -> bool:
        return self.ok


class Prober:
    """Probes through one vpc. ``ifname_of_vpc_if`` names the guest link behind a veth."""

    def __init__(self, vpc_ns: str, ifname_of_vpc_if: Callable[[str], Optional[str]]) -> None:
        self.vpc_ns = vpc_ns
        self._ifname_of = ifname_of_vpc_if

    def counters(self) -> dict[str, int]:
        """Packets per counter of the vpc's table (one per veth, and the source check's)."""
        cmd = ["nft", "-j", "list", "counters", "table", "inet", NFT_TABLE]
        out = in_ns(self.vpc_ns, cmd).stdout
        counts: dict[str, int] = {}
        for item in json.loads(out).get("nftables", []):
            c = item.get("counter")
            if c:
                counts[c["name"]] = int(c.get("packets", 0))
        return counts

    def verdict(
        self,
        ok: bool,
        before: Mapping[str, int],
        after: Mapping[str, int],
        detail: str,
        tcp: bool = False,
    ) -> Probe:
        """The veth whose counter (of echo requests, or with tcp of SYNs) grew most is the
        exit; the source check's counter, drops."""
        best, best_delta = None, 0
        for name, n in after.items():
            if name == RPF_COUNTER or name.endswith(SYN_SUFFIX) != tcp:
                continue
            delta = n - before.get(name, 0)
            if delta > best_delta:
                best, best_delta = name, delta
        if best is not None and tcp:
            best = best[: -len(SYN_SUFFIX)]
        exit_iface = self._ifname_of(best) if best is not None else None
        dropped = after.get(RPF_COUNTER, 0) > before.get(RPF_COUNTER, 0)
        return Probe(ok, exit_iface, dropped, detail)

    def ping(self, ns: str, src: Optional[str], dst: str, count: int, timeout: float) -> Probe:
        """Ping ``dst`` from ``src`` inside ``ns`` (see ``SimVM.probe``)."""
        before = self.counters()
        cmd = netprobe_command("ping", src or "-", dst, str(count), str(timeout), "0.1")
        cp = in_ns(ns, cmd, check=False, timeout=count * 0.1 + timeout + 30)
        after = self.counters()
        detail = f"{src or '*'} -> {dst}: {(cp.stdout + cp.stderr).strip()}"
        return self.verdict(cp.returncode == 0, before, after, detail)

    def tcp(self, ns: str, src: Optional[str], dst: str, port: int, timeout: float) -> Probe:
        """Connect from ``src`` inside ``ns`` to an echo server and echo a line."""
        before = self.counters()
        cmd = netprobe_command("tcp", src or "-", dst, str(port), str(timeout))
        cp = in_ns(ns, cmd, check=False, timeout=timeout + 30)
        after = self.counters()
        detail = f"{src or '*'} -> {dst}:{port}: {(cp.stdout + cp.stderr).strip()}"
        return self.verdict(cp.returncode == 0, before, after, detail, tcp=True)

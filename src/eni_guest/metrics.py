"""What this process has done so far, counted: metadata and netlink requests, failures, probes.

One place for every count, so that the Prometheus text file (textfile.py), `apply --json` and
the benchmarks read the same numbers.  A count is added where the work is accounted for, once:

  metadata_requests   HTTP requests to the metadata service (agent.read_instance, per read)
  metadata_failures   metadata reads that failed (unavailable, disabled or refused)
  netlink_requests    netlink change requests sent (kernel.Kernel, when it closes)
  dhcp_probes         DHCP exchanges (JD Cloud, dhcp_known.cached: a kept answer is none)

`count(name, n)` adds; `snapshot()` is a copy of every count.  Counts only grow, for the life
of the process; the watch daemon's two threads both count, hence the lock.
"""

from __future__ import annotations

import _thread  # threading's C core: its Lock, without threading's import (~0.6 ms)

NAMES = ("metadata_requests", "metadata_failures", "netlink_requests", "dhcp_probes")

_lock = _thread.allocate_lock()
_counts = dict.fromkeys(NAMES, 0)


def count(name: str, n: int = 1) -> None:
    """Add n to a count (a name of NAMES: a typo is a bug, so it raises KeyError)."""
    with _lock:
        _counts[name] += n


def snapshot() -> dict[str, int]:
    """Every count as it is now."""
    with _lock:
        return dict(_counts)

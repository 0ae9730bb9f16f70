"""The Prometheus text file: what `apply` and `watch` found and did, for node_exporter.

node_exporter's textfile collector reads every `*.prom` file of one directory at each scrape
(Debian: /var/lib/prometheus/node-exporter).  With `metrics_file` set to a path there, every
reconcile of `apply` and of the watch daemon rewrites it, under the run lock, the way the
collector needs: a temporary file in the same directory (its name starts with a dot and does
not end in .prom, so it is never read half-written), flushed and renamed over the file
(safe_write.py, which also refuses a symbolic link there).  What it holds:

  eni_guest_eni_in_sync{eni_id,mac,interface,reason}   1 or 0, per ENI metadata lists
  eni_guest_eni_ips{eni_id,mac,interface}              IPs eni-guest configures on it
  eni_guest_last_reconcile_timestamp_seconds           when the last reconcile ended
  eni_guest_last_reconcile_success                     1 if it succeeded, else 0
  eni_guest_last_success_timestamp_seconds             when the last successful one ended
  eni_guest_reconciles_total{result}                   success, metadata_unavailable, ...
                                                       (a run that never got the lock
                                                       writes nothing: the holder does)
  eni_guest_changes_applied_total, eni_guest_metadata_requests_total,
  eni_guest_metadata_failures_total, eni_guest_netlink_requests_total,
  eni_guest_dhcp_probes_total                          counts (metrics.py)

`reason` is in_sync, pending (changes were planned for it and the kernel refused one, or
they did not hold: exit 4), no_interface (no NIC with its MAC, or several), captured (a
foreign rule takes an IP's traffic first), excluded, invalid (its metadata was refused) or
unsettled.  When a reconcile
fails before it knows the ENIs (metadata unavailable), their lines stay as the last one that
knew them wrote them: the timestamps and eni_guest_last_reconcile_success say how old.

The counters must only grow, yet `apply` is a process of its own each time: so each write adds
what this process counted since its last write to the counters the file already holds (the
file is read back like any input: only our own metric names, non-negative numbers; anything
else is dropped, which Prometheus sees as a counter reset).
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

from . import metrics
from .config import Config
from .errors import KernelError, LockTimeout, MetadataError, MetadataInvalid
from .log import log

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Callable, Optional

    from .agent import Result


MAX_SIZE = 1024 * 1024  # bytes of the previous file read back
Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs
Samples = dict[tuple[str, Labels], float]

# name -> (type, help), in the order written
METRICS: dict[str, tuple[str, str]] = {
    "eni_guest_eni_in_sync": (
        "gauge",
        "1 if the ENI's addresses, table and rules match metadata, else 0; reason says why "
        "(in_sync, pending, no_interface, captured, excluded, invalid, unsettled)",
    ),
    "eni_guest_eni_ips": ("gauge", "IPs (IPv4 and IPv6) eni-guest configures on the ENI"),
    "eni_guest_last_reconcile_timestamp_seconds": (
        "gauge",
        "Unix time the last reconcile (apply or watch) ended",
    ),
    "eni_guest_last_reconcile_success": ("gauge", "1 if the last reconcile succeeded, else 0"),
    "eni_guest_last_success_timestamp_seconds": (
        "gauge",
        "Unix time the last successful reconcile ended",
    ),
    "eni_guest_reconciles_total": ("counter", "Reconciles by result"),
    "eni_guest_changes_applied_total": ("counter", "Kernel changes applied"),
    "eni_guest_metadata_requests_total": ("counter", "HTTP requests to the metadata service"),
    "eni_guest_metadata_failures_total": ("counter", "Metadata reads that failed"),
    "eni_guest_netlink_requests_total": ("counter", "Netlink change requests sent"),
    "eni_guest_dhcp_probes_total": ("counter", "DHCP exchanges (JD Cloud)"),
}
COUNTED = {  # metrics.py count -> counter
    "metadata_requests": "eni_guest_metadata_requests_total",
    "metadata_failures": "eni_guest_metadata_failures_total",
    "netlink_requests": "eni_guest_netlink_requests_total",
    "dhcp_probes": "eni_guest_dhcp_probes_total",
}
_LINE = re.compile(r"(eni_guest_[a-z_]+)(?:\{(.*)\})? (\S+)")
_LABEL = re.compile(r'([a-z_]+)="((?:[^"\\]|\\.)*)",?')

_flushed: dict[str, int] = {}  # metrics.snapshot() as of this process's last write
_warned: set[str] = set()  # files this process could not write (said once)


def outcome(error: Optional[BaseException]) -> str:
    """The `result` label of eni_guest_reconciles_total."""
    if error is None:
        return "success"
    for kind, name in (
        (MetadataInvalid, "metadata_invalid"),
        (MetadataError, "metadata_unavailable"),
        (KernelError, "kernel_refused"),
        (LockTimeout, "lock_timeout"),
    ):
        if isinstance(error, kind):
            return name
    return "error"


def record(
    config: Config,
    result: Optional[Result] = None,
    error: Optional[BaseException] = None,
    *,
    clock: Callable[[], float] = time.time,
) -> bool:
    """Rewrite metrics_file after one reconcile (result: what it found; error: why it failed;
    MetadataInvalid and KernelError carry the run's result).  False when none
    is configured or it could not be written (said once per process)."""
    if not config.metrics_file:
        return False
    path = Path(config.metrics_file)
    if result is None and error is not None:
        result = getattr(error, "result", None)
    counts = metrics.snapshot()
    samples = samples_after(read(path), result, error, counts, clock())
    if not path.parent.is_dir():
        return _cannot(path, f"its directory {path.parent} does not exist")
    from .safe_write import UnsafePath, write_if_changed

    try:
        write_if_changed(path, render(samples), 0o644, root=path.parent)
    except (OSError, UnsafePath) as e:
        return _cannot(path, str(e))
    _flushed.update(counts)
    _warned.discard(str(path))
    return True


def _cannot(path: Path, why: str) -> bool:
    if str(path) not in _warned:
        _warned.add(str(path))
        log.warning("warning: metrics_file %s not written: %s", path, why)
    return False


def samples_after(
    previous: Samples,
    result: Optional[Result],
    error: Optional[BaseException],
    counts: dict[str, int],
    now: float,
) -> Samples:
    """The file's samples after this reconcile, from what the file held before."""
    ok = error is None
    out: Samples = {}
    if result is not None:  # a refused ENI's error carries the run that configured the
        # others, a kernel error the plan that it could not carry out
        out.update(eni_samples(result, applied=ok or isinstance(error, MetadataInvalid)))
    else:  # the ENIs are not known this time: as the last reconcile that knew them said
        out.update({k: v for k, v in previous.items() if k[0].startswith("eni_guest_eni_")})
    out[("eni_guest_last_reconcile_timestamp_seconds", ())] = now
    out[("eni_guest_last_reconcile_success", ())] = 1 if ok else 0
    last_ok = ("eni_guest_last_success_timestamp_seconds", ())
    if ok:
        out[last_ok] = now
    elif last_ok in previous:
        out[last_ok] = previous[last_ok]
    for key, value in previous.items():
        if METRICS[key[0]][0] == "counter":
            out[key] = value
    _add(out, ("eni_guest_reconciles_total", (("result", outcome(error)),)), 1)
    _add(out, ("eni_guest_changes_applied_total", ()), len(result.applied) if result else 0)
    for name, counter in COUNTED.items():
        _add(out, (counter, ()), counts.get(name, 0) - _flushed.get(name, 0))
    return out


def _add(samples: Samples, key: tuple[str, Labels], n: float) -> None:
    samples[key] = samples.get(key, 0) + n


def eni_samples(result: Result, *, applied: bool) -> Samples:
    """In sync (and why not) and the IP count of every ENI metadata lists.  `applied`: the
    plan's changes were applied and verified, so what was pending is in sync now."""
    from .show import rows

    out: Samples = {}
    for r in rows(result):
        reason = _reason(r, applied)
        ids = (("eni_id", r["eni_id"] or ""), ("interface", r["interface"] or ""))
        ids += (("mac", r["mac"]),)
        out[("eni_guest_eni_in_sync", (*ids, ("reason", reason)))] = 1 if reason == "in_sync" else 0
        managed = r["excluded"] is None and r["invalid"] is None
        count = len([i for i in r["ips"] if not i["excluded"]]) if managed else 0
        out[("eni_guest_eni_ips", ids)] = count
    for u in result.instance.unsettled:
        ids = (("eni_id", ""), ("interface", ""), ("mac", u.mac))
        out[("eni_guest_eni_in_sync", (*ids, ("reason", "unsettled")))] = 0
        out[("eni_guest_eni_ips", ids)] = 0
    return out


def _reason(row: dict, applied: bool) -> str:
    if row["excluded"] is not None:
        return "excluded"
    if row["invalid"] is not None:
        return "invalid"
    if row["interface"] is None:
        return "no_interface"
    if row["captured"]:
        return "captured"
    return "in_sync" if row["in_sync"] or applied else "pending"


def render(samples: Samples) -> str:
    """The text format: HELP and TYPE once per metric, then its samples, sorted."""
    lines: list[str] = []
    for name, (kind, text) in METRICS.items():
        mine = sorted((labels, v) for (n, labels), v in samples.items() if n == name)
        if not mine:
            continue
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for labels, value in mine:
            inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(
                f"{name}{{{inner}}} {_number(value)}" if inner else f"{name} {_number(value)}"
            )
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def read(path: Path) -> Samples:
    """The samples of our own previous file; what is not ours or not well-formed is dropped."""
    from .providers.boot_cache import read_ours

    try:
        text = read_ours(path, MAX_SIZE)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.debug("metrics_file %s not read back: %s", path, e)
        return {}
    out: Samples = {}
    for line in text.splitlines():
        m = _LINE.fullmatch(line)
        if m is None or m.group(1) not in METRICS:
            continue
        labels = tuple(sorted(_unescape(v) for v in _LABEL.findall(m.group(2) or "")))
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        if math.isfinite(value) and value >= 0:
            out[(m.group(1), labels)] = value
    return out


def _unescape(pair: tuple[str, str]) -> tuple[str, str]:
    name, value = pair
    return name, re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)

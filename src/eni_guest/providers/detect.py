"""`--provider auto`: tell which cloud this is, and say why, within a few seconds.

DMI first: it is local, instant and set by the hypervisor, and most clouds sign it
(`Amazon EC2`, `Alibaba Cloud`, `Tencent Cloud`, `OpenStack Nova`).  Where DMI says nothing
useful, every metadata service is probed at once with a short timeout, so a VM where nothing
answers gets a clear error after about a second rather than a hang at boot.  Network
namespaces (the simulated VM, containers) see the host's DMI, so an explicit `--provider`
always wins, and probes honour `metadata_url` so the simulator can be detected too.

Several services answer at 169.254.169.254 (AWS, OpenStack, JD Cloud, and OpenStack also
serves an EC2-compatible tree), so a probe asks for something only that cloud has, and when
several answer the most specific wins: OpenStack's network_data.json, JD Cloud's
/metadata/latest/, an AWS token, an Alibaba token, Tencent's tree.  The DMI rules, the
probes, their addresses and that order are the clouds' entries in providers/registry.py.

A probe's answer is kept for the rest of the boot (providers/boot_cache.py): `choose` is what
the agent calls, and it probes only when DMI says nothing and no answer was kept earlier this
boot.  A caller that waits anyway (`hotplug add`, the watch daemon) retries with a longer
`window` each time, for a guest too slow to be answered within the first few seconds.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..errors import MetadataUnavailable
from . import boot_cache
from .http import HttpClient
from .registry import CLOUDS, DMI_FIELDS, names, probed

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Mapping, Optional

    from .registry import Probe

DMI_DIR = Path("/sys/class/dmi/id")

# Everything below comes from the registry's entries (providers/registry.py).
# (DMI field, case-insensitive substring, provider), first match wins: the registry's order.
DMI_RULES: tuple[tuple[str, str, str], ...] = tuple(
    (field, needle, c.name) for c in CLOUDS for field, needle in c.dmi
)
# The probes, in the order their answers are preferred when several answer.
PROBES: dict[str, Probe] = {c.name: c.probe for c in probed() if c.probe is not None}
PRIORITY = tuple(PROBES)
DEFAULT_ENDPOINTS = {c.name: c.endpoints[0] for c in probed()}  # each probe's own address
PROBE_TIMEOUT = 0.5  # seconds per HTTP request of a probe...
TOTAL_TIMEOUT = 3.0  # ...and for all probes together (they run in parallel): the first window
MAX_WINDOW = 12.0  # seconds: the longest window a retry gets (2 s per request)


def read_dmi(dmi_dir: Path) -> dict[str, str]:
    """The DMI fields that exist and are readable (chassis_asset_tag may need root)."""
    values = {}
    for name in DMI_FIELDS:
        try:
            values[name] = (dmi_dir / name).read_text(errors="replace").strip()
        except OSError:
            continue
    return values


def match_dmi(values: Mapping[str, str]) -> Optional[tuple[str, str]]:
    for field, needle, provider in DMI_RULES:
        value = values.get(field, "")
        if needle in value.lower():
            return provider, f"DMI {field} {value!r}"
    return None


# ---------------------------------------------------------------- probes (all at once)


def _run_probe(name: str, base: str, window: float) -> tuple[bool, str]:
    request_timeout = window * PROBE_TIMEOUT / TOTAL_TIMEOUT
    http = HttpClient(request_timeout, window - 0.2, retries=0)
    try:
        return PROBES[name](http, base)
    except MetadataUnavailable as e:  # timeouts, refused connections, oversized answers
        return False, str(e).replace("metadata service: ", "")
    except Exception as e:  # a strange answer must not stop the other probes
        return False, f"{type(e).__name__}: {e}"
    finally:
        http.close()


def probe_all(
    endpoints: Mapping[str, str], window: float = TOTAL_TIMEOUT
) -> dict[str, tuple[bool, str]]:
    """Every probe at once; a probe still running after `window` seconds counts as no answer.
    Each HTTP request may take a sixth of the window (0.5 s of the first 3 s)."""
    import concurrent.futures  # only when probing, not on every hot-plug

    results: dict[str, tuple[bool, str]] = {}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(PROBES))
    try:
        futures = {pool.submit(_run_probe, n, endpoints[n], window): n for n in PROBES}
        done, _ = concurrent.futures.wait(futures, timeout=window)
        for future, name in futures.items():
            if future in done:
                results[name] = future.result()
            else:
                results[name] = (False, f"no answer within {window:g} s")
    finally:
        pool.shutdown(wait=False)
    return results


# ---------------------------------------------------------------- detect


def choose(
    config: Config, *, window: float = TOTAL_TIMEOUT, dmi_dir: Optional[Path] = None
) -> tuple[str, str]:
    """(provider, why) for `provider = auto`: what the agent calls.

    DMI when it names the cloud (instant, nothing kept); else the answer kept earlier this
    boot (why then starts with boot_cache.EARLIER); else the probes, whose answer is kept for
    the boot.  "static" (no service answered, the static file exists) is not kept: a service
    that was only late gets its chance at the next run.  MetadataUnavailable if none answered.
    """
    dmi_dir = DMI_DIR if dmi_dir is None else dmi_dir
    dmi = read_dmi(dmi_dir)
    found = match_dmi(dmi)
    if found is not None:
        return found
    boot = boot_cache.boot_id()
    kept = boot_cache.load(config, boot)
    if kept is not None:
        return kept[0], boot_cache.EARLIER + kept[1]
    name, why = by_probes(config, dmi, dmi_dir, window=window)
    if name != "static":
        boot_cache.store(config, boot, name, why)
    return name, why


def detect(
    config: Config,
    dmi_dir: Optional[Path] = None,
    endpoints: Optional[Mapping[str, str]] = None,
    *,
    window: float = TOTAL_TIMEOUT,
) -> tuple[str, str]:
    """(provider name, why it was chosen), or MetadataUnavailable listing everything tried.

    DMI, then the probes; if no service answers and the static ENI file exists, "static".
    `metadata_url`, when set, is where every probe goes (one simulated service).  Nothing is
    read from or kept for the boot: that is `choose`.
    """
    dmi_dir = DMI_DIR if dmi_dir is None else dmi_dir
    dmi = read_dmi(dmi_dir)
    found = match_dmi(dmi)
    if found is not None:
        return found
    return by_probes(config, dmi, dmi_dir, endpoints, window=window)


def by_probes(
    config: Config,
    dmi: Mapping[str, str],
    dmi_dir: Path,
    endpoints: Optional[Mapping[str, str]] = None,
    *,
    window: float = TOTAL_TIMEOUT,
) -> tuple[str, str]:
    """The probes' answer (the most specific one), else "static" if its file exists."""
    if endpoints is None:
        if config.metadata_url:
            endpoints = {name: config.metadata_url.rstrip("/") for name in PROBES}
        else:
            endpoints = DEFAULT_ENDPOINTS
    results = probe_all(endpoints, window)
    for name in PRIORITY:
        ok, detail = results[name]
        if ok:
            return name, f"metadata probe: {detail}"
    static = Path(config.static_file)
    if static.exists():
        return "static", f"no metadata service answered; {static} exists"
    seen = ", ".join(f"{k} {v!r}" for k, v in dmi.items()) or f"nothing readable in {dmi_dir}"
    tried = "; ".join(f"{name}: {results[name][1]}" for name in PRIORITY)
    raise MetadataUnavailable(
        f"no cloud recognised: DMI {seen}; probes: {tried}; no {static}. "
        f"Choose one with --provider ({', '.join(names())})"
    )

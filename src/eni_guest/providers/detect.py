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
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Mapping, Optional

from ..config import Config
from ..errors import MetadataUnavailable
from .http import HttpClient
from .registry import CLOUDS, DMI_FIELDS, Probe, names, probed

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
PROBE_TIMEOUT = 0.5  # seconds per HTTP request of a probe
TOTAL_TIMEOUT = 3.0  # seconds for all probes together (they run in parallel)


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


def _run_probe(name: str, base: str) -> tuple[bool, str]:
    http = HttpClient(PROBE_TIMEOUT, TOTAL_TIMEOUT - 0.2, retries=0)
    try:
        return PROBES[name](http, base)
    except MetadataUnavailable as e:  # timeouts, refused connections, oversized answers
        return False, str(e).replace("metadata service: ", "")
    except Exception as e:  # a strange answer must not stop the other probes
        return False, f"{type(e).__name__}: {e}"
    finally:
        http.close()


def probe_all(endpoints: Mapping[str, str]) -> dict[str, tuple[bool, str]]:
    """Every probe at once; a probe still running after TOTAL_TIMEOUT counts as no answer."""
    results: dict[str, tuple[bool, str]] = {}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(PROBES))
    try:
        futures = {pool.submit(_run_probe, name, endpoints[name]): name for name in PROBES}
        done, _ = concurrent.futures.wait(futures, timeout=TOTAL_TIMEOUT)
        for future, name in futures.items():
            if future in done:
                results[name] = future.result()
            else:
                results[name] = (False, f"no answer within {TOTAL_TIMEOUT:g} s")
    finally:
        pool.shutdown(wait=False)
    return results


# ---------------------------------------------------------------- detect


def detect(
    config: Config,
    dmi_dir: Optional[Path] = None,
    endpoints: Optional[Mapping[str, str]] = None,
) -> tuple[str, str]:
    """(provider name, why it was chosen), or MetadataUnavailable listing everything tried.

    DMI, then the probes; if no service answers and the static ENI file exists, "static".
    `metadata_url`, when set, is where every probe goes (one simulated service).
    """
    dmi_dir = DMI_DIR if dmi_dir is None else dmi_dir
    dmi = read_dmi(dmi_dir)
    found = match_dmi(dmi)
    if found is not None:
        return found
    if endpoints is None:
        if config.metadata_url:
            endpoints = {name: config.metadata_url.rstrip("/") for name in PROBES}
        else:
            endpoints = DEFAULT_ENDPOINTS
    results = probe_all(endpoints)
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

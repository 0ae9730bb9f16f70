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
/metadata/latest/, an AWS token, an Alibaba token, Tencent's tree.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Callable, Mapping, Optional

from ..config import Config
from ..errors import MetadataUnavailable
from .http import HttpClient

DMI_DIR = Path("/sys/class/dmi/id")
DMI_FIELDS = ("sys_vendor", "product_name", "board_vendor", "chassis_asset_tag")

# (DMI field, case-insensitive substring, provider), first match wins.  The order puts clouds
# that may run an OpenStack-derived stack (and so also say "OpenStack") before OpenStack.
DMI_RULES: tuple[tuple[str, str, str], ...] = (
    ("sys_vendor", "amazon ec2", "aws"),
    ("chassis_asset_tag", "amazon ec2", "aws"),
    ("board_vendor", "amazon ec2", "aws"),
    ("sys_vendor", "alibaba cloud", "alibaba"),
    ("product_name", "alibaba cloud ecs", "alibaba"),
    ("sys_vendor", "tencent cloud", "tencent"),
    # JD Cloud's DMI strings are not documented publicly: match the names it is known by.
    *((f, s, "jdcloud") for f in DMI_FIELDS for s in ("jdcloud", "jd cloud", "jingdong")),
    ("product_name", "openstack nova", "openstack"),
    ("product_name", "openstack compute", "openstack"),
    ("chassis_asset_tag", "openstack nova", "openstack"),
    ("chassis_asset_tag", "openstack compute", "openstack"),
)

DEFAULT_ENDPOINTS = {
    "openstack": "http://169.254.169.254",
    "jdcloud": "http://169.254.169.254",
    "aws": "http://169.254.169.254",
    "alibaba": "http://100.100.100.200",
    "tencent": "http://169.254.0.23",
}
PRIORITY = ("openstack", "jdcloud", "aws", "alibaba", "tencent")  # when several answer
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


# ---------------------------------------------------------------- probes

Probe = Callable[[HttpClient, str], "tuple[bool, str]"]


def _answer(
    http: HttpClient, method: str, url: str, headers: Optional[dict[str, str]] = None
) -> tuple[int, str]:
    r = http.request(method, url, headers=headers)
    return r.status, r.text


def _probe_openstack(http: HttpClient, base: str) -> tuple[bool, str]:
    url = base + "/openstack/latest/network_data.json"
    status, body = _answer(http, "GET", url)
    ok = status == 200 and body.lstrip().startswith("{")
    return ok, f"GET {url} answered {status}"


def _probe_jdcloud(http: HttpClient, base: str) -> tuple[bool, str]:
    url = base + "/metadata/latest/"
    status, body = _answer(http, "GET", url)
    return status == 200 and "network" in body, f"GET {url} answered {status}"


def _probe_aws(http: HttpClient, base: str) -> tuple[bool, str]:
    url = base + "/latest/api/token"
    status, body = _answer(http, "PUT", url, {"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    return status == 200 and bool(body.strip()), f"PUT {url} answered {status}"


def _probe_alibaba(http: HttpClient, base: str) -> tuple[bool, str]:
    url = base + "/latest/api/token"
    status, body = _answer(http, "PUT", url, {"X-aliyun-ecs-metadata-token-ttl-seconds": "60"})
    if status == 200 and body.strip():
        return True, f"PUT {url} answered {status}"
    if status in (404, 405):  # no hardened mode on this service: the plain tree then
        tree = base + "/latest/meta-data/"
        status2, _ = _answer(http, "GET", tree)
        return status2 == 200, f"PUT {url} answered {status}, GET {tree} answered {status2}"
    return False, f"PUT {url} answered {status}"


def _probe_tencent(http: HttpClient, base: str) -> tuple[bool, str]:
    url = base + "/latest/meta-data/"
    status, _ = _answer(http, "GET", url)
    return status == 200, f"GET {url} answered {status}"


PROBES: dict[str, Probe] = {
    "openstack": _probe_openstack,
    "jdcloud": _probe_jdcloud,
    "aws": _probe_aws,
    "alibaba": _probe_alibaba,
    "tencent": _probe_tencent,
}


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
        "Choose one with --provider (aws, alibaba, tencent, jdcloud, openstack, static)"
    )

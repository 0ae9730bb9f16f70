"""The clouds eni-guest knows: one entry per cloud, and everything else is derived from it.

The command line's `--provider` choices, `--provider auto` (DMI rules, probes, default
endpoints, which probe wins when several answer), `get_provider` and its "not known" error,
the providers' default endpoints and session tokens, and the simulator's format names all read
CLOUDS.  Adding a cloud is: a provider module (providers/<name>.py, a MetadataProvider that
turns the service's answers into RawInstance), one Cloud entry below, and its tests.

An entry's factory imports its provider module only when called, so a run loads only the
cloud it talks to and `eni-guest --version` loads no network code.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..record import record
from .common import TokenRules

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Callable, Optional

    from ..config import Config
    from . import Provider
    from .http import HttpClient

AUTO = "auto"  # not a cloud: detect one (providers/detect.py)

if TYPE_CHECKING:  # only type checkers need it: annotations are never evaluated
    # A detection probe: (HTTP client, the service's base URL) -> (is it this cloud, what it saw).
    Probe = Callable[["HttpClient", str], "tuple[bool, str]"]

# The DMI files detection reads (/sys/class/dmi/id/...); chassis_asset_tag may need root.
DMI_FIELDS = ("sys_vendor", "product_name", "board_vendor", "chassis_asset_tag")
PROBE_TOKEN_TTL = 60  # seconds: a probe's token is never used for a read


@record(frozen=True)
class Cloud:
    """One cloud, as the rest of eni-guest needs to know it."""

    name: str  # what --provider, `provider =` and `show` say
    make: Callable[[Config], Provider]  # builds the provider; imports its module only then
    aliases: tuple[str, ...] = ()  # other names accepted for it (never printed)
    endpoints: tuple[str, ...] = ()  # the metadata service's default base URLs, in order
    tokens: Optional[TokenRules] = None  # IMDSv2-style session tokens, if the service has them
    # (DMI field, lower-case substring) pairs that name this cloud
    dmi: tuple[tuple[str, str], ...] = ()
    probe: Optional[Probe] = None  # asks its service something only this cloud has
    # When several probes answer (they share 169.254.169.254), the lowest number wins: the
    # most specific question first.
    priority: int = 0
    sim_format: Optional[str] = None  # the metadata simulator's name for this cloud's format
    # Addresses of every subnet the cloud keeps for itself and never assigns to an ENI: the
    # first `reserved_head` and the last `reserved_tail` (AWS: network, router, DNS, one for
    # later; and the last).  Beyond these, validation refuses the network and broadcast
    # address and the gateway on every cloud.
    reserved_head: int = 0
    reserved_tail: int = 0


# ---------------------------------------------------------------- probes


def get_probe(path: str, looks_right: Callable[[str], bool] = lambda body: True) -> Probe:
    """A probe that GETs `path` and wants a 200 whose body `looks_right`."""

    def probe(http: HttpClient, base: str) -> tuple[bool, str]:
        url = base + path
        r = http.request("GET", url)
        return r.status == 200 and looks_right(r.text), f"GET {url} answered {r.status}"

    return probe


def token_probe(rules: TokenRules, tree: str) -> Probe:
    """A probe that asks for a session token; where `rules` make tokens optional, a service
    without the token call (404/405) is this cloud if `tree` answers a GET."""

    def probe(http: HttpClient, base: str) -> tuple[bool, str]:
        url = base + rules.path
        r = http.request("PUT", url, headers={rules.ttl_header: str(PROBE_TOKEN_TTL)})
        if r.status == 200 and r.text.strip():
            return True, f"PUT {url} answered {r.status}"
        if rules.optional and r.status in (404, 405):  # no token mode here: the plain tree then
            ok, detail = get_probe(tree)(http, base)
            return ok, f"PUT {url} answered {r.status}, {detail}"
        return False, f"PUT {url} answered {r.status}"

    return probe


# ---------------------------------------------------------------- factories


def _aws(config: Config) -> Provider:
    from .aws import AwsProvider

    return AwsProvider(config)


def _alibaba(config: Config) -> Provider:
    from .alibaba import AlibabaProvider

    return AlibabaProvider(config)


def _tencent(config: Config) -> Provider:
    from .tencent import TencentProvider

    return TencentProvider(config)


def _jdcloud(config: Config) -> Provider:
    from ..dhcp import make_probe
    from ..dhcp_known import cached, kernel_lease
    from .jdcloud import JdcloudProvider

    # JD publishes no subnet or gateway: the VPC's DHCP service on each NIC tells them, within
    # what is left of the read's deadline (the one its metadata HTTP client keeps), once per
    # NIC and boot; the primary's come from its DHCP client's lease in the kernel (dhcp_known).
    provider = JdcloudProvider(config)
    probe = make_probe(config, time_left=provider.service.http.time_left)
    provider.dhcp_probe = cached(config, probe)
    provider.kernel_lease = kernel_lease(config)
    return provider


def _openstack(config: Config) -> Provider:
    from .openstack import OpenstackProvider

    return OpenstackProvider(config)


def _static(config: Config) -> Provider:
    from .static import StaticProvider

    return StaticProvider(config)


# ---------------------------------------------------------------- the clouds

LINK_LOCAL = "http://169.254.169.254"  # AWS, JD Cloud and OpenStack all answer here
AWS_TOKENS = TokenRules(
    "/latest/api/token", "X-aws-ec2-metadata-token-ttl-seconds", "X-aws-ec2-metadata-token"
)
# 404/405 to the token call: an older service without hardened mode, read with plain GETs
ALIBABA_TOKENS = TokenRules(
    "/latest/api/token",
    "X-aliyun-ecs-metadata-token-ttl-seconds",
    "X-aliyun-ecs-metadata-token",
    optional=True,
)

# The order is that of DMI matching (the first rule that matches wins) and of the lists shown
# to users: clouds that may run an OpenStack-derived stack (and so also say "OpenStack" in
# DMI) come before OpenStack.
CLOUDS: tuple[Cloud, ...] = (
    Cloud(
        "aws",
        _aws,
        endpoints=(LINK_LOCAL, "http://[fd00:ec2::254]"),  # IPv4, then the IPv6-only address
        tokens=AWS_TOKENS,
        dmi=tuple((f, "amazon ec2") for f in ("sys_vendor", "chassis_asset_tag", "board_vendor")),
        probe=token_probe(AWS_TOKENS, "/latest/meta-data/"),
        priority=3,
        sim_format="aws",
        reserved_head=4,
        reserved_tail=1,
    ),
    Cloud(
        "alibaba",
        _alibaba,
        aliases=("aliyun",),  # cloud-init's and Alibaba's own tools' name
        endpoints=("http://100.100.100.200",),
        tokens=ALIBABA_TOKENS,
        dmi=(("sys_vendor", "alibaba cloud"), ("product_name", "alibaba cloud ecs")),
        probe=token_probe(ALIBABA_TOKENS, "/latest/meta-data/"),
        priority=4,
        sim_format="alibaba",
    ),
    Cloud(
        "tencent",
        _tencent,
        # metadata.tencentyun.com's address: a boot-time run never waits for DNS
        endpoints=("http://169.254.0.23",),
        dmi=(("sys_vendor", "tencent cloud"),),
        probe=get_probe("/latest/meta-data/"),
        priority=5,
        sim_format="tencent",
    ),
    Cloud(
        "jdcloud",
        _jdcloud,
        endpoints=(LINK_LOCAL,),
        # JD Cloud's DMI strings are not documented publicly: match the names it is known by.
        dmi=tuple((f, s) for f in DMI_FIELDS for s in ("jdcloud", "jd cloud", "jingdong")),
        probe=get_probe("/metadata/latest/", lambda body: "network" in body),
        priority=2,
        sim_format="jdcloud",
    ),
    Cloud(
        "openstack",
        _openstack,
        endpoints=(LINK_LOCAL,),
        dmi=tuple(
            (f, s)
            for f in ("product_name", "chassis_asset_tag")
            for s in ("openstack nova", "openstack compute")
        ),
        probe=get_probe(
            "/openstack/latest/network_data.json", lambda body: body.lstrip().startswith("{")
        ),
        priority=1,  # OpenStack serves an EC2-like tree too: its network_data.json decides
        sim_format="openstack",
    ),
    # A local TOML file (providers/static.py): no service, no DMI; detection falls back to it
    # when no service answers and the file exists.
    Cloud("static", _static, sim_format="static"),
)

# Every accepted name (canonical names and aliases) -> its entry.
BY_NAME: dict[str, Cloud] = {n: c for c in CLOUDS for n in (c.name, *c.aliases)}


def names() -> tuple[str, ...]:
    """The clouds' canonical names, in CLOUDS order."""
    return tuple(c.name for c in CLOUDS)


def choices() -> tuple[str, ...]:
    """What `provider` may be set to: auto, every cloud's name, then the aliases."""
    return (AUTO, *names(), *(a for c in CLOUDS for a in c.aliases))


def probed() -> tuple[Cloud, ...]:
    """The clouds `--provider auto` probes, in the order their answers are preferred."""
    return tuple(sorted((c for c in CLOUDS if c.probe is not None), key=lambda c: c.priority))


def cloud(name: str) -> Cloud:
    """The entry for a name or an alias (the one place aliases are resolved)."""
    try:
        return BY_NAME[name]
    except KeyError:
        from ..config import shown

        known = ", ".join(choices())
        raise ConfigError(f"provider {shown(name)} is not known (known: {known})") from None

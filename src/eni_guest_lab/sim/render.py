"""Each cloud's metadata format, rendered from one scenario; and the static ENI file.

The scenario's ENIs are written once, AWS-style (scenario.py); ``provider`` picks the format:

=========== ==================== ==========================================================
provider    served on            format
=========== ==================== ==========================================================
aws         169.254.169.254,     IMDSv2 tokens (``X-aws-ec2-metadata-token``), one value a
            [fd00:ec2::254]      line, ``/latest/meta-data/network/interfaces/macs/<mac>/``
alibaba     100.100.100.200      hardened-mode tokens (``X-aliyun-ecs-metadata-token``),
                                 ``private-ipv4s`` as a JSON array, ``primary-ip-address``,
                                 ``netmask``, ``gateway``, ``vswitch-cidr-block`` per ENI
tencent     169.254.0.23         no tokens, MACs in UPPER case in listings and paths,
                                 ``local-ipv4s/<ip>/`` holding ``gateway``, ``subnet-mask``
jdcloud     169.254.169.254      no tokens, ``/metadata/latest/network/<n>/`` (n =
                                 device-number + 1, the primary is 1), JSON-array listings,
                                 JSON-quoted values, only MAC and primary IP per ENI
openstack   169.254.169.254      no tokens, ``/openstack/latest/network_data.json``: links in
                                 device-number order (the primary first), one network per IP
static      (nothing served)     ``render_static`` writes the TOML file of provider "static"
=========== ==================== ==========================================================

What a cloud does not publish is simply not served: Tencent and JD Cloud serve no IPv6, JD
Cloud no secondary IPs (those come from the agent's local file, see ``render_static``). The
router of each subnet is where ``tree.ipv4_gateway``/``ipv6_gateway`` say, the functions the
lab's simulated VPC uses too, so the VPC puts its router where metadata says.

Token rules follow each cloud (server.py): AWS and Alibaba issue tokens on
``PUT /latest/api/token`` with their own TTL header only (an Alibaba token call carrying the
AWS header is a 400, and vice versa), enforce them on GETs when ``control.imdsv2`` is
"required" (401), and refuse token calls carrying ``X-Forwarded-For``; the other clouds have no
token call (a PUT is a 405) and ignore token headers.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Optional

from .scenario import Eni, Scenario
from .tree import (
    CLOUD_ONLY_KEYS,
    JD_META,
    LAG_HIDDEN_KEYS,
    MACS_DIR,
    META,
    OPENSTACK_NETWORK_DATA,
    Tree,
    eni_items,
    eni_netmask,
    eni_text,
    finish,
    ipv4_gateway,
    ipv6_gateway,
    is_lagging,
)


def render(
    scenario: Scenario, now: float = 0.0, first_seen: Optional[Mapping[str, float]] = None
) -> Tree:
    """Render ``scenario`` to the tree of metadata paths of its ``provider``.

    ``now`` and ``first_seen`` (MAC -> time, same clock) decide which ENIs are still inside
    their ``lag``; with ``first_seen=None`` every ENI is rendered settled. A "static" scenario
    has no metadata service: ``ValueError`` (use :func:`render_static`).
    """
    renderers: dict[str, Callable[..., Tree]] = {
        "aws": _render_aws,
        "alibaba": _render_alibaba,
        "tencent": _render_tencent,
        "jdcloud": _render_jdcloud,
        "openstack": _render_openstack,
    }
    if scenario.provider not in renderers:
        raise ValueError(
            f"provider {scenario.provider!r} has no metadata service to simulate "
            "(the agent reads a file: see render_static)"
        )
    return renderers[scenario.provider](scenario, now, first_seen)


def _render_aws(scenario: Scenario, now: float, first_seen: Optional[Mapping[str, float]]) -> Tree:
    leaves: dict[str, str] = {
        f"{META}/instance-id": scenario.instance_id,
        f"{META}/instance-type": scenario.instance_type,
    }
    primary = next((eni for eni in scenario.enis if eni.mac == scenario.primary_mac), None)
    if primary is not None:
        primary_ipv4s = primary.values.get("local-ipv4s")
        if primary_ipv4s:
            leaves[f"{META}/local-ipv4"] = primary_ipv4s[0]
    leaves[f"{META}/mac"] = scenario.primary_mac
    for eni in scenario.enis:
        lagging = is_lagging(eni, now, first_seen)
        for key, text in _eni_leaves(eni, lagging):
            leaves[f"{MACS_DIR}/{eni.mac}/{key}"] = text
    leaves[f"{META}/placement/availability-zone"] = scenario.availability_zone
    leaves[f"{META}/placement/region"] = scenario.region
    return finish(leaves, scenario)


def _eni_leaves(eni: Eni, lagging: bool) -> list[tuple[str, str]]:
    items: dict[str, str] = {
        # A hot-attached ENI reads device-number 0 until the attachment propagates.
        "device-number": "0" if lagging else str(eni.device_number),
        "mac": eni.mac,
    }
    if eni.network_card is not None:
        items["network-card"] = str(eni.network_card)
    for key, value in eni.values.items():
        if (lagging and key in LAG_HIDDEN_KEYS) or key in CLOUD_ONLY_KEYS:
            continue
        if isinstance(value, list):
            if not value:
                continue  # AWS answers 404 rather than an empty body
            value = "\n".join(value)
        items[key] = value
    if eni.ipv4_associations:
        items["public-ipv4s"] = "\n".join(public for public, _ in eni.ipv4_associations)
        for public, private in eni.ipv4_associations:
            items[f"ipv4-associations/{public}"] = private
    # AWS lists keys alphabetically; sort on the first component only, so association
    # entries keep file order (stable sort).
    return sorted(items.items(), key=lambda item: item[0].split("/", 1)[0])


def _render_alibaba(
    scenario: Scenario, now: float, first_seen: Optional[Mapping[str, float]]
) -> Tree:
    leaves: dict[str, str] = {
        f"{META}/instance-id": scenario.instance_id,
        f"{META}/instance/instance-type": scenario.instance_type,
        f"{META}/region-id": scenario.region,
        f"{META}/zone-id": scenario.availability_zone,
        f"{META}/network-type": "vpc",
        f"{META}/mac": scenario.primary_mac.lower(),
    }
    for eni in scenario.enis:
        lagging = is_lagging(eni, now, first_seen)
        items = {
            "network-interface-id": eni_text(eni, "interface-id"),
            "vpc-id": eni_text(eni, "vpc-id"),
            "vswitch-id": eni_text(eni, "subnet-id"),
        }
        cidr = eni.values.get("subnet-ipv4-cidr-block")
        if cidr:
            items["vswitch-cidr-block"] = str(cidr)
        mask, gateway = eni_netmask(eni), ipv4_gateway("alibaba", eni.values)
        if mask:
            items["netmask"] = mask
        if gateway:
            items["gateway"] = gateway
        if eni.values.get("vpc-ipv4-cidr-block"):
            items["vpc-cidr-block"] = eni_text(eni, "vpc-ipv4-cidr-block")
        ips = [] if lagging else eni_items(eni, "local-ipv4s")
        if ips:
            items["primary-ip-address"] = ips[0]
            items["private-ipv4s"] = json.dumps(ips, separators=(",", ":"))
            if eni.mac == scenario.primary_mac:
                leaves[f"{META}/private-ipv4"] = ips[0]
        ipv6s = [] if lagging else eni_items(eni, "ipv6s")
        if ipv6s:  # documented without quotes: [2408:4005:3ab::e4e]
            items["ipv6s"] = "[" + ",".join(ipv6s) + "]"
        cidrs6 = eni_items(eni, "subnet-ipv6-cidr-blocks")
        if cidrs6:
            items["vswitch-ipv6-cidr-block"] = cidrs6[0]
            items["ipv6-gateway"] = ipv6_gateway(eni.values) or ""
        prefixes = eni_items(eni, "ipv4-prefix")
        if prefixes and not lagging:
            items["ipv4-prefixes"] = json.dumps(prefixes, separators=(",", ":"))
        for key in sorted(items):
            leaves[f"{MACS_DIR}/{eni.mac}/{key}"] = items[key]
    return finish(leaves, scenario)


def _render_tencent(
    scenario: Scenario, now: float, first_seen: Optional[Mapping[str, float]]
) -> Tree:
    leaves: dict[str, str] = {
        f"{META}/instance-id": scenario.instance_id,
        f"{META}/instance/instance-type": scenario.instance_type,
        f"{META}/placement/region": scenario.region,
        f"{META}/placement/zone": scenario.availability_zone,
        f"{META}/mac": scenario.primary_mac.upper(),
    }
    for eni in scenario.enis:
        lagging = is_lagging(eni, now, first_seen)
        mac = eni.mac.upper()  # listed, and only found, in upper case
        d = f"{MACS_DIR}/{mac}"
        leaves[f"{d}/mac"] = mac
        leaves[f"{d}/vpc-id"] = eni_text(eni, "vpc-id")
        leaves[f"{d}/subnet-id"] = eni_text(eni, "subnet-id")
        ips = [] if lagging else eni_items(eni, "local-ipv4s")
        public = {private: pub for pub, private in eni.ipv4_associations}
        if ips:
            leaves[f"{d}/primary-local-ipv4"] = ips[0]
            if eni.mac == scenario.primary_mac:
                leaves[f"{META}/local-ipv4"] = ips[0]
        if any(ip in public for ip in ips):
            leaves[f"{d}/public-ipv4s"] = "\n".join(public[ip] for ip in ips if ip in public)
        mask, gateway = eni_netmask(eni), ipv4_gateway("tencent", eni.values)
        for ip in ips:
            e = f"{d}/local-ipv4s/{ip}"
            leaves[f"{e}/local-ipv4"] = ip
            if gateway:
                leaves[f"{e}/gateway"] = gateway
            if mask:
                leaves[f"{e}/subnet-mask"] = mask
            if ip in public:
                leaves[f"{e}/public-ipv4"] = public[ip]
                leaves[f"{e}/public-ipv4-mode"] = "NAT"
    return finish(leaves, scenario)


def _render_jdcloud(
    scenario: Scenario, now: float, first_seen: Optional[Mapping[str, float]]
) -> Tree:
    def q(value: str) -> str:
        return json.dumps(value)

    leaves: dict[str, str] = {
        f"{JD_META}/instance-id": q(scenario.instance_id),
        f"{JD_META}/instance-type": q(scenario.instance_type),
        f"{JD_META}/placement/region": q(scenario.region),
        f"{JD_META}/placement/availability-zone": q(scenario.availability_zone),
        f"{JD_META}/attributes/hostname": q(scenario.instance_id),
    }
    for eni in sorted(scenario.enis, key=lambda e: e.device_number):
        d = f"{JD_META}/network/{eni.device_number + 1}"
        ips = [] if is_lagging(eni, now, first_seen) else eni_items(eni, "local-ipv4s")
        items = {
            "mac": q(eni.mac.lower()),
            "network-interface-id": q(eni_text(eni, "interface-id")),
            "subnet-id": q(eni_text(eni, "subnet-id")),
            "security-group-ids": json.dumps(eni_items(eni, "security-group-ids")),
        }
        if ips:  # JD publishes the ENI's primary IP only
            items["local-ipv4"] = q(ips[0])
            for public, private in eni.ipv4_associations:
                if private == ips[0]:
                    items["floating-ipv4"] = q(public)
        for key in sorted(items):
            leaves[f"{d}/{key}"] = items[key]
    return finish(leaves, scenario, json_listings=True)


def _render_openstack(
    scenario: Scenario, now: float, first_seen: Optional[Mapping[str, float]]
) -> Tree:
    links: list[dict[str, Any]] = []
    networks: list[dict[str, Any]] = []
    # Nova lists the ports in attach order and the boot port (the primary) first.
    ordered = sorted(scenario.enis, key=lambda e: (e.mac != scenario.primary_mac, e.device_number))
    for eni in ordered:
        link_id = eni_text(eni, "interface-id")
        links.append(
            {
                "id": link_id,
                "vif_id": link_id,
                "type": "ovs",
                "mtu": eni.mtu,
                "ethernet_mac_address": eni.mac.lower(),
            }
        )
        if not is_lagging(eni, now, first_seen):
            networks += _openstack_networks(eni, link_id, first=len(networks))
    doc = {
        "links": links,
        "networks": networks,
        "services": [{"type": "dns", "address": "10.0.0.2"}],
    }
    meta = {
        "uuid": scenario.instance_id,
        "name": scenario.instance_id,
        "hostname": scenario.instance_id,
        "availability_zone": scenario.availability_zone,
    }
    leaves = {
        OPENSTACK_NETWORK_DATA: json.dumps(doc, indent=2),
        "openstack/latest/meta_data.json": json.dumps(meta, indent=2),
    }
    return finish(leaves, scenario)


def _openstack_networks(eni: Eni, link_id: str, first: int) -> list[dict[str, Any]]:
    """One ``network_data.json`` network per IP of the ENI, numbered from ``first``."""
    networks: list[dict[str, Any]] = []

    def network(family: str, ip: str) -> dict[str, Any]:
        net: dict[str, Any] = {
            "id": f"network{first + len(networks)}",
            "link": link_id,
            "type": family,
            "ip_address": ip,
            "routes": [],
            "network_id": eni_text(eni, "subnet-id"),
            "services": [],
        }
        networks.append(net)
        return net

    mask, gateway = eni_netmask(eni), ipv4_gateway("openstack", eni.values)
    for ip in eni_items(eni, "local-ipv4s"):
        net = network("ipv4", ip)
        if mask:
            net["netmask"] = mask
        if gateway:
            net["routes"].append({"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": gateway})
    cidrs6 = eni_items(eni, "subnet-ipv6-cidr-blocks")
    for ip in eni_items(eni, "ipv6s"):
        cidr = next(
            (c for c in cidrs6 if ipaddress.IPv6Address(ip) in ipaddress.IPv6Network(c)),
            cidrs6[0] if cidrs6 else None,
        )
        net = network("ipv6", ip)
        if cidr:
            net["netmask"] = str(ipaddress.IPv6Network(cidr).netmask)
            gw6 = ipv6_gateway(eni.values, cidr)
            net["routes"].append({"network": "::", "netmask": "::", "gateway": gw6})
    return networks


def render_static(scenario: Scenario, *, overlay: bool = False, subnets: bool = True) -> str:
    """The scenario as the TOML file the agent's "static" provider reads (providers/static.py).

    With ``overlay`` it is the local file a JD Cloud instance needs next to its metadata: no
    ``primary_mac``, and per ENI the MAC and every private IP (JD publishes only the first);
    ``subnets=False`` then leaves out subnet and gateway, so they must come from DHCP.
    """

    def s(value: str) -> str:
        return json.dumps(value)  # a JSON string is a TOML basic string

    def a(values: Iterable[str]) -> str:
        return "[" + ", ".join(s(v) for v in values) + "]"

    provider = "jdcloud" if overlay else "static"
    out = [f"# rendered from a scenario by eni_guest_lab.sim.render_static ({provider})"]
    if not overlay:
        out.append(f"primary_mac = {s(scenario.primary_mac.lower())}")
    for eni in sorted(scenario.enis, key=lambda e: e.device_number):
        out += ["", "[[eni]]", f"mac = {s(eni.mac.lower())}"]
        if not overlay:
            out.append(f"id = {s(eni_text(eni, 'interface-id'))}")
        ips = eni_items(eni, "local-ipv4s")
        if ips:
            out.append(f"ipv4s = {a(ips)}")
        cidr, gateway = eni.values.get("subnet-ipv4-cidr-block"), ipv4_gateway(provider, eni.values)
        if subnets and cidr:
            out.append(f"subnet = {s(str(cidr))}")
        if subnets and gateway and ips:
            out.append(f"gateway = {s(gateway)}")
        ipv6s, cidrs6 = eni_items(eni, "ipv6s"), eni_items(eni, "subnet-ipv6-cidr-blocks")
        if ipv6s and not overlay:
            out.append(f"ipv6s = {a(ipv6s)}")
            if cidrs6:
                out.append(f"ipv6_subnet = {s(cidrs6[0])}")
                out.append(f"ipv6_gateway = {s(ipv6_gateway(eni.values) or '')}")
    return "\n".join(out) + "\n"

"""OpenStack `network_data.json`: HTTP -> RawInstance.  Formats: docs/metadata.md.

One JSON document describes every port: `links[]` are the NICs (id, MAC, type), `networks[]`
the addresses, each pointing at a link, with a netmask (dotted IPv4, IPv6 mask or length)
and routes; several networks on one link are several IPs of that ENI.  The gateway is the
`gateway` of the network's default route (network 0.0.0.0 or ::); a network without one has
no gateway and is refused rather than guessed.

Which link is the primary: OpenStack has no "primary MAC" key.  Nova writes `links[]` in the
order of the instance's ports, and the first port is the one the instance booted with, the
NIC the distro configures by DHCP (eth0 / ens3).  So the first NIC link is the primary.

What is left alone, each with a log line: links that are not NICs (type bond or vlan, or a
link with `vlan_link` / `bond_links`: they are built on top of NICs in the guest), and
networks of type ipv4_dhcp / ipv6_dhcp / ipv6_slaac that publish no address (Nova does this
for subnets with DHCP enabled: the address is only known to the DHCP server).  A secondary
port with no published address is not managed; a primary port without one stops the read.
There are no device numbers: table slots come from the MAC (model.assign_table_slots), and
the ENI id is the link id, and a link's `mtu` (Neutron's network MTU: 1450 on a VXLAN
network, say) is the ENI's link MTU.  Extra (non-default) routes are not used yet.
"""

from __future__ import annotations

import ipaddress
import json

from ..errors import MetadataInvalid, MetadataUnavailable
from ..log import log
from ..model import RawEni, RawInstance
from ..state import VIRTUAL_KINDS  # a bond or VLAN link is built on a NIC, not one
from .base import MetadataProvider
from .common import invalid, missing, prefix_length, subnet_of
from .http import NotFound

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Optional


PATH = "/openstack/latest/network_data.json"
DEFAULT_NETWORKS = {4: "0.0.0.0", 6: "::"}


class OpenstackProvider(MetadataProvider):
    name = "openstack"

    def read(self) -> RawInstance:
        """One GET; anything unreadable in the document stops the run, naming the key."""
        try:
            text = self.get(PATH)
        except NotFound:
            raise MetadataUnavailable(f"metadata service: {PATH} answered 404") from None
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise invalid(PATH, text[:60], f"not JSON ({e})") from None
        if not isinstance(doc, dict):
            raise invalid(PATH, text[:60], "not a JSON object")
        links = _objects(doc, "links")
        networks = _objects(doc, "networks")
        nics: list[tuple[int, dict[str, Any]]] = []
        for i, link in enumerate(links):
            kind = link.get("type")
            if kind is not None and not isinstance(kind, str):
                raise invalid(f"{PATH} links[{i}].type", kind, "not a string")
            if kind in VIRTUAL_KINDS or "vlan_link" in link or "bond_links" in link:
                log.info(
                    "openstack: links[%d] (%s, type %s) is not a NIC: left alone",
                    i,
                    link.get("id"),
                    kind,
                )
                continue
            for key in ("id", "ethernet_mac_address"):
                if not isinstance(link.get(key), str) or not link[key].strip():
                    raise invalid(f"{PATH} links[{i}].{key}", link.get(key), "not a string")
            nics.append((i, link))
        if not nics:
            raise MetadataInvalid(f"metadata {PATH} links: no NIC listed")
        primary_index, primary = nics[0]
        enis = []
        for i, link in nics:
            raw = self._eni(i, link, networks)
            if raw.ipv4s or raw.ipv6s:
                enis.append(raw)
            elif i == primary_index:
                raise MetadataUnavailable(
                    f"openstack: the primary port {PATH} links[{i}] ({link['id']}) has no "
                    "published address (DHCP-only networks): nothing to route by; use "
                    "provider = static to describe it"
                )
            else:
                log.info(
                    "openstack: links[%d] (%s) publishes no address: left alone", i, link["id"]
                )
        return RawInstance(
            provider=self.name,
            primary_mac=primary["ethernet_mac_address"],
            primary_mac_key=f"{PATH} links[{primary_index}].ethernet_mac_address",
            enis=enis,
        )

    def _eni(self, i: int, link: dict[str, Any], networks: list[dict[str, Any]]) -> RawEni:
        link_id = link["id"]
        raw = RawEni(
            source=f"{PATH} ",
            mac=link["ethernet_mac_address"],
            eni_id=link_id,
            has_device_numbers=False,
            keys={"eni_id": f"links[{i}].id"},
        )
        mtu = link.get("mtu")
        if mtu is not None:  # null: the network does not say
            raw.mtu = str(mtu)  # validated with the ENI (validate.py): 68..65535, 1280 for IPv6
            raw.keys["mtu"] = f"links[{i}].mtu"
        gateways: dict[int, Optional[str]] = {4: None, 6: None}
        for j, net in enumerate(networks):
            if net.get("link") != link_id:
                continue
            where = f"{PATH} networks[{j}]."
            address = net.get("ip_address")
            if address is None or address == "":
                log.info(
                    "openstack: networks[%d] (type %s) on %s publishes no address: skipped",
                    j,
                    net.get("type"),
                    link_id,
                )
                continue
            if not isinstance(address, str):
                raise invalid(where + "ip_address", address, "not a string")
            mask = net.get("netmask")
            if "/" in address:  # some deployments write the prefix into the address
                address, mask = address.split("/", 1)
            if not isinstance(mask, (str, int)) or isinstance(mask, bool) or mask == "":
                raise missing(where + "netmask", "the subnet cannot be known")
            subnet = subnet_of(address, where + "ip_address", str(mask), where + "netmask")
            version = 6 if ":" in subnet else 4
            v = str(version)
            getattr(raw, f"ipv{v}s").append(address.strip())
            subnets = getattr(raw, f"ipv{v}_subnets")
            if subnet not in subnets:
                subnets.append(subnet)
            raw.keys[f"ipv{v}s"] = f"networks[{j}].ip_address"
            raw.keys[f"ipv{v}_subnets"] = f"networks[{j}].netmask"
            if gateways[version] is None:
                gateway, key = _default_gateway(net, version, f"networks[{j}]")
                if gateway is not None:
                    gateways[version] = gateway
                    setattr(raw, f"ipv{v}_gateway", gateway)
                    raw.keys[f"ipv{v}_gateway"] = key
        for version in (4, 6):
            if getattr(raw, f"ipv{version}s") and gateways[version] is None:
                raise missing(
                    f"{PATH} networks[link={link_id}].routes",
                    f"no IPv{version} default route (network {DEFAULT_NETWORKS[version]}) gives "
                    "a gateway, and a gateway is never guessed",
                )
        return raw


def _objects(doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise invalid(f"{PATH} {key}", value, "not a list of objects")
    return value


def _default_gateway(net: dict[str, Any], version: int, where: str) -> tuple[Optional[str], str]:
    routes = net.get("routes") or []
    if not isinstance(routes, list):
        raise invalid(f"{PATH} {where}.routes", routes, "not a list")
    for k, route in enumerate(routes):
        if not isinstance(route, dict):
            raise invalid(f"{PATH} {where}.routes[{k}]", route, "not an object")
        try:
            network = ipaddress.ip_address(str(route.get("network", "")).strip())
        except ValueError:
            continue  # not a default route; other routes are not used yet
        netmask = str(route.get("netmask", "0")).strip()
        if (
            network.version == version
            and network.is_unspecified
            and prefix_length(netmask, version) == 0
        ):
            gateway = route.get("gateway")
            if not isinstance(gateway, str) or not gateway.strip():
                raise invalid(f"{PATH} {where}.routes[{k}].gateway", gateway, "not an address")
            return gateway.strip(), f"{where}.routes[{k}].gateway"
    return None, ""

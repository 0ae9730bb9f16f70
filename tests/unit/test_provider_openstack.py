"""OpenStack provider against network_data.json documents over real HTTP on 127.0.0.1.

The documents are shaped like Nova's (nova/virt/netutils.py get_network_metadata): links
named after the tap device, networks `network0`.. pointing at links, IPv6 netmasks in address
form, default routes as network 0.0.0.0 / ::, DHCP networks without an address.
"""

from __future__ import annotations

import copy
import json
from ipaddress import ip_address, ip_network
from typing import Any

import pytest
from cloud_http import CloudServer

from eni_guest.agent import read_instance
from eni_guest.config import Config
from eni_guest.errors import MetadataInvalid, MetadataUnavailable
from eni_guest.model import home_slot

PATH = "/openstack/latest/network_data.json"
MAC_P = "fa:16:3e:f7:c1:47"
MAC_S = "FA:16:3E:22:9B:03"  # some deployments write upper case

DOC: dict[str, Any] = {
    "links": [
        {
            "id": "tap68a9272d-71",
            "vif_id": "68a9272d-7152-4ae7-a138-3ef53af669e7",
            "type": "ovs",
            "mtu": 1450,
            "ethernet_mac_address": MAC_P,
        },
        {
            "id": "tapb2c1e0a4-0f",
            "vif_id": "b2c1e0a4-0f11-4c7e-9a3d-2f6e8d7c1b00",
            "type": "ovs",
            "mtu": None,
            "ethernet_mac_address": MAC_S,
        },
        {
            "id": "vlan0",
            "type": "vlan",
            "vlan_link": "tapb2c1e0a4-0f",
            "vlan_id": 101,
            "vlan_mac_address": "fa:16:3e:00:00:65",
        },
    ],
    "networks": [
        {
            "id": "network0",
            "type": "ipv4",
            "link": "tap68a9272d-71",
            "ip_address": "10.20.0.5",
            "netmask": "255.255.255.0",
            "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.20.0.1"}],
            "network_id": "5c0ad8b1-0e11-4f2f-9d5b-3c7f0a1e2d44",
        },
        {
            "id": "network1",
            "type": "ipv4",
            "link": "tapb2c1e0a4-0f",
            "ip_address": "10.30.4.17",
            "netmask": "255.255.252.0",
            "routes": [
                {"network": "172.16.0.0", "netmask": "255.240.0.0", "gateway": "10.30.4.254"},
                {"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.30.4.1"},
            ],
            "network_id": "0a9e3b2c-1111-4a2b-8c3d-4e5f60718293",
        },
        {
            "id": "network2",
            "type": "ipv4",
            "link": "tapb2c1e0a4-0f",
            "ip_address": "10.30.5.200",
            "netmask": "255.255.252.0",
            "routes": [],
            "network_id": "0a9e3b2c-1111-4a2b-8c3d-4e5f60718293",
        },
        {
            "id": "network3",
            "type": "ipv6",
            "link": "tapb2c1e0a4-0f",
            "ip_address": "2001:db8:30::11",
            "netmask": "ffff:ffff:ffff:ffff::",
            "routes": [{"network": "::", "netmask": "::", "gateway": "fe80::f816:3eff:fe00:1"}],
            "network_id": "0a9e3b2c-1111-4a2b-8c3d-4e5f60718293",
        },
        {
            "id": "network4",
            "type": "ipv4_dhcp",
            "link": "vlan0",
            "network_id": "77777777-0000-4000-8000-000000000000",
        },
    ],
    "services": [{"type": "dns", "address": "10.20.0.2"}],
}


def config(server: CloudServer) -> Config:
    return Config(
        provider="openstack",
        metadata_url=server.url,
        metadata_timeout=1.0,
        metadata_deadline=5.0,
        metadata_retries=0,
    ).validate()


@pytest.fixture
def serve():
    servers: list[CloudServer] = []

    def make(doc: Any, status: int = 200) -> CloudServer:
        body = doc if isinstance(doc, str) else json.dumps(doc)
        servers.append(CloudServer({PATH: (status, body)}))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def test_reads_links_and_their_networks(serve):
    server = serve(DOC)
    instance, requests = read_instance(config(server))
    assert requests == 1
    primary, second = instance.enis
    assert primary.mac == MAC_P and primary.primary and primary.slot == 0
    assert primary.eni_id == "tap68a9272d-71"
    assert primary.ipv4_gateway == ip_address("10.20.0.1")
    assert second.mac == MAC_S.lower() and second.slot == home_slot(MAC_S.lower())
    assert second.ipv4s == (ip_address("10.30.4.17"), ip_address("10.30.5.200"))
    assert second.ipv4_subnets == (ip_network("10.30.4.0/22"),)
    assert second.ipv4_gateway == ip_address("10.30.4.1")  # the default route's, not the other
    assert second.ipv6s == (ip_address("2001:db8:30::11"),)
    assert second.ipv6_subnets == (ip_network("2001:db8:30::/64"),)
    assert second.ipv6_gateway == ip_address("fe80::f816:3eff:fe00:1")


def test_link_mtu_is_the_enis_mtu(serve):
    doc = copy.deepcopy(DOC)
    instance, _ = read_instance(config(serve(doc)))
    assert [e.mtu for e in instance.enis] == [1450, None]  # null: the network does not say
    doc["links"][1]["mtu"] = 9000
    assert read_instance(config(serve(doc)))[0].enis[1].mtu == 9000
    doc["links"][1]["mtu"] = 1000  # this port has IPv6: at least 1280
    (refused,) = read_instance(config(serve(doc)))[0].invalid  # the others are configured
    assert refused.reason == (
        f"metadata {PATH} links[1].mtu = '1000': not an MTU in 1280..65535 (the ENI has IPv6)"
    )


def test_vlan_and_bond_links_are_left_alone(serve, caplog):
    doc = copy.deepcopy(DOC)
    doc["links"].append(
        {
            "id": "bond0",
            "type": "bond",
            "bond_links": ["tap68a9272d-71"],
            "ethernet_mac_address": "fa:16:3e:00:00:bb",
        }
    )
    with caplog.at_level("INFO", logger="eni_guest"):
        instance, _ = read_instance(config(serve(doc)))
    assert [e.eni_id for e in instance.enis] == ["tap68a9272d-71", "tapb2c1e0a4-0f"]
    assert "vlan0" in caplog.text and "bond0" in caplog.text


def test_primary_is_the_first_nic_link(serve):
    doc = copy.deepcopy(DOC)
    doc["links"] = [doc["links"][2], doc["links"][1], doc["links"][0]]  # vlan first: skipped
    instance, _ = read_instance(config(serve(doc)))
    assert instance.primary_mac == MAC_S.lower()


def test_secondary_port_with_only_dhcp_is_not_managed(serve):
    doc = copy.deepcopy(DOC)
    doc["networks"] = [n for n in doc["networks"] if n["link"] != "tapb2c1e0a4-0f"]
    doc["networks"].append({"id": "network9", "type": "ipv4_dhcp", "link": "tapb2c1e0a4-0f"})
    instance, _ = read_instance(config(serve(doc)))
    assert [e.mac for e in instance.enis] == [MAC_P] and instance.complete


def test_primary_port_with_only_dhcp_stops_the_read(serve):
    doc = copy.deepcopy(DOC)
    doc["networks"][0] = {"id": "network0", "type": "ipv4_dhcp", "link": "tap68a9272d-71"}
    with pytest.raises(MetadataUnavailable, match="tap68a9272d-71"):
        read_instance(config(serve(doc)))


def test_prefix_length_forms_are_accepted(serve):
    doc = copy.deepcopy(DOC)
    doc["networks"][1]["netmask"] = "22"
    doc["networks"][2].pop("netmask")
    doc["networks"][2]["ip_address"] = "10.30.5.200/22"
    instance, _ = read_instance(config(serve(doc)))
    assert instance.enis[1].ipv4_subnets == (ip_network("10.30.4.0/22"),)


# ------------------------------------------------------------------ malformed documents


def error_of(server: CloudServer, exc: type = MetadataInvalid) -> str:
    with pytest.raises(exc) as info:
        read_instance(config(server))
    assert "\n" not in str(info.value)
    return str(info.value)


def test_not_json(serve):
    assert "not JSON" in error_of(serve('{"links": ['))


def test_bad_netmask_names_key_and_value(serve):
    doc = copy.deepcopy(DOC)
    doc["networks"][1]["netmask"] = "255.255.0.252"
    message = error_of(serve(doc))
    assert "networks[1].netmask" in message and "255.255.0.252" in message


def test_missing_default_route_is_refused_not_guessed(serve):
    doc = copy.deepcopy(DOC)
    doc["networks"][0]["routes"] = []
    message = error_of(serve(doc))
    assert "tap68a9272d-71" in message and "default route" in message


def test_bad_ip_names_key_and_value(serve):
    doc = copy.deepcopy(DOC)
    doc["networks"][2]["ip_address"] = "10.30.5.256"
    message = error_of(serve(doc))
    assert "networks[2].ip_address" in message and "10.30.5.256" in message


def test_gateway_outside_subnet_names_it(serve):
    doc = copy.deepcopy(DOC)
    doc["networks"][0]["routes"][0]["gateway"] = "10.99.0.1"
    message = error_of(serve(doc))
    assert "networks[0].routes[0].gateway" in message and "10.99.0.1" in message


def test_link_without_mac_names_it(serve):
    doc = copy.deepcopy(DOC)
    doc["links"][1]["ethernet_mac_address"] = None
    assert "links[1].ethernet_mac_address" in error_of(serve(doc))


@pytest.mark.parametrize("kind", [[], {"a": 1}, 7])
def test_link_type_that_is_not_a_string_names_it(serve, kind):
    """Found by tests/unit/test_fuzz.py: a list as a link's type ended in a traceback."""
    doc = copy.deepcopy(DOC)
    doc["links"][0]["type"] = kind
    message = error_of(serve(doc))
    assert message.startswith(f"metadata {PATH} links[0].type = {kind!r}: not a string")


def test_document_absent_is_unavailable(serve):
    error_of(serve("Not Found", status=404), MetadataUnavailable)

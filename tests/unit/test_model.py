"""build_instance: which metadata is safe to act on, and what it means."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

import pytest

from eni_guest.errors import EXIT_METADATA, MetadataInvalid
from eni_guest.model import Instance, RawEni, RawInstance, build_instance

META = "/latest/meta-data/"
MACS = META + "network/interfaces/macs/"
MAC1, MAC2, MAC3 = "0e:00:00:00:00:01", "0e:00:00:00:00:02", "0e:00:00:00:00:03"

# field -> metadata key, as the AWS provider records them
AWS_KEYS = {
    "device_number": "device-number",
    "network_card": "network-card",
    "eni_id": "interface-id",
    "ipv4s": "local-ipv4s",
    "ipv4_subnets": "subnet-ipv4-cidr-block",
    "ipv6s": "ipv6s",
    "ipv6_subnets": "subnet-ipv6-cidr-blocks",
    "ipv4_prefixes": "ipv4-prefix",
    "ipv6_prefixes": "ipv6-prefix",
    "elastic_ips": "ipv4-associations/",
}


def raw_eni(
    mac: str,
    device: str | None,
    ipv4s: list[str] | None = None,
    subnet: str | None = "10.0.1.0/24",
    **kw: Any,
) -> RawEni:
    source = f"{MACS}{mac}/"
    defaults: dict[str, Any] = {
        "eni_id": "eni-" + mac.replace(":", "").replace('"', "").lower(),
        "ipv4s": ipv4s if ipv4s is not None else [],
        "ipv4_subnets": [subnet] if subnet else [],
    }
    defaults.update(kw)
    return RawEni(source=source, mac=mac, device_number=device, keys=dict(AWS_KEYS), **defaults)


def instance(*enis: RawEni, primary: str = MAC1) -> Instance:
    return build_instance(RawInstance("aws", primary, META + "mac", list(enis)))


def primary(**kw: Any) -> RawEni:
    kw.setdefault("ipv4s", ["10.0.1.10"])
    return raw_eni(MAC1, "0", **kw)


def invalid(*enis: RawEni, primary_mac: str = MAC1) -> str:
    with pytest.raises(MetadataInvalid) as err:
        instance(*enis, primary=primary_mac)
    assert err.value.exit_code == EXIT_METADATA
    message = str(err.value)
    assert "\n" not in message  # reported as one line
    return message


# ---------------------------------------------------------------- valid shapes


def test_single_primary_eni() -> None:
    inst = instance(primary(ipv4s=["10.0.1.10", "10.0.1.20"]))
    assert inst.complete and inst.primary_mac == MAC1
    (eni,) = inst.enis
    assert eni.primary and eni.slot == 0 and eni.eni_id == "eni-0e0000000001"
    assert eni.ipv4s == (IPv4Address("10.0.1.10"), IPv4Address("10.0.1.20"))
    assert eni.ipv4_subnets == (IPv4Network("10.0.1.0/24"),)


def test_mac_is_normalised_from_upper_case_and_quotes() -> None:
    raw = raw_eni('"0E:00:00:00:00:01"', "0", ["10.0.1.10"])
    inst = instance(raw, primary=" 0E:00:00:00:00:01\n")
    assert inst.primary_mac == MAC1
    assert inst.enis[0].mac == MAC1
    assert inst.by_mac(MAC1) is inst.enis[0]


def test_json_quoted_values_are_accepted() -> None:
    raw = raw_eni(
        MAC2,
        '"1"',
        ['"10.0.2.10"', '"10.0.2.11"'],
        subnet='"10.0.2.0/24"',
        eni_id='"eni-abc"',
        network_card='"0"',
    )
    inst = instance(primary(), raw)
    eni = inst.by_mac(MAC2)
    assert eni is not None
    assert eni.eni_id == "eni-abc" and eni.device_number == 1
    assert eni.ipv4s == (IPv4Address("10.0.2.10"), IPv4Address("10.0.2.11"))
    assert eni.ipv4_subnets == (IPv4Network("10.0.2.0/24"),)


def test_gateway_is_the_subnets_first_host() -> None:
    raw = raw_eni(
        MAC2,
        "1",
        ["10.0.2.10"],
        subnet="10.0.2.0/24",
        ipv6s=["2600:1f18:1:2::10"],
        ipv6_subnets=["2600:1f18:1:2::/64"],
    )
    eni = instance(primary(subnet="172.31.16.0/20", ipv4s=["172.31.20.5"]), raw).by_mac(MAC2)
    assert eni is not None
    assert eni.ipv4_gateway == IPv4Address("10.0.2.1")
    assert eni.ipv6_gateway == IPv6Address("2600:1f18:1:2::1")
    p = instance(primary(subnet="172.31.16.0/20", ipv4s=["172.31.20.5"])).enis[0]
    assert p.ipv4_gateway == IPv4Address("172.31.16.1")


def test_enis_are_sorted_by_slot_not_by_mac() -> None:
    # MACs sort opposite to device numbers (as in cloud-init's EC2 tests).
    eni_a = raw_eni("0e:ff:00:00:00:01", "0", ["10.0.1.10"])
    eni_b = raw_eni("0e:aa:00:00:00:02", "2", ["10.0.1.30"])
    eni_c = raw_eni("0e:bb:00:00:00:03", "1", ["10.0.1.20"])
    inst = instance(eni_b, eni_c, eni_a, primary="0e:ff:00:00:00:01")
    assert [e.device_number for e in inst.enis] == [0, 1, 2]
    assert [e.mac for e in inst.enis] == [
        "0e:ff:00:00:00:01",
        "0e:bb:00:00:00:03",
        "0e:aa:00:00:00:02",
    ]
    assert inst.enis[0].primary and not any(e.primary for e in inst.enis[1:])


def test_slot_is_card_times_64_plus_device_so_cards_never_collide() -> None:
    eni_b = raw_eni(MAC2, "1", ["10.0.1.20"], network_card="0")
    eni_c = raw_eni(MAC3, "1", ["10.0.1.30"], network_card="1")
    inst = instance(primary(network_card="0"), eni_c, eni_b)
    assert [(e.network_card, e.device_number, e.slot) for e in inst.enis] == [
        (0, 0, 0),
        (0, 1, 1),
        (1, 1, 65),
    ]


def test_primary_with_device_zero_is_fine() -> None:
    inst = instance(primary())
    assert inst.complete and inst.enis[0].device_number == 0


def test_just_attached_secondary_reading_device_zero_is_unsettled() -> None:
    inst = instance(primary(), raw_eni(MAC2, "0", ["10.0.1.20"]))
    assert not inst.complete
    assert [e.mac for e in inst.enis] == [MAC1]
    (u,) = inst.unsettled
    assert u.mac == MAC2 and "device-number" in u.reason


def test_eni_without_ips_is_unsettled() -> None:
    inst = instance(primary(), raw_eni(MAC2, "1", []))
    assert not inst.complete
    assert [u.mac for u in inst.unsettled] == [MAC2]
    assert inst.by_mac(MAC2) is None


def test_eni_without_interface_id_or_device_number_is_unsettled() -> None:
    # What the AWS provider returns when the ENI's directory vanished between two requests.
    gone = RawEni(source=f"{MACS}{MAC2}/", mac=MAC2)
    inst = instance(primary(), gone, raw_eni(MAC3, None, ["10.0.1.30"]))
    assert {u.mac for u in inst.unsettled} == {MAC2, MAC3}
    assert [e.mac for e in inst.enis] == [MAC1]


def test_incomplete_primary_is_invalid_not_unsettled() -> None:
    message = invalid(primary(ipv4s=[]))
    assert MAC1 in message


def test_ipv6_only_eni_is_valid() -> None:
    raw = raw_eni(
        MAC2,
        "1",
        [],
        subnet=None,
        ipv6s=["2600:1f18:1:2::10", "2600:1f18:1:2::11"],
        ipv6_subnets=["2600:1f18:1:2::/64"],
    )
    inst = instance(primary(), raw)
    assert inst.complete
    eni = inst.by_mac(MAC2)
    assert eni is not None
    assert eni.ipv4s == () and eni.ipv4_gateway is None
    assert eni.ipv6s == (IPv6Address("2600:1f18:1:2::10"), IPv6Address("2600:1f18:1:2::11"))
    assert eni.ipv6_subnets == (IPv6Network("2600:1f18:1:2::/64"),)


def test_prefixes_and_elastic_ips() -> None:
    raw = raw_eni(
        MAC2,
        "1",
        ["10.0.2.10", "10.0.2.11"],
        subnet="10.0.2.0/24",
        ipv4_prefixes=["10.0.2.48/28"],
        elastic_ips={"203.0.113.7": "10.0.2.11"},
    )
    eni = instance(primary(), raw).by_mac(MAC2)
    assert eni is not None
    assert eni.ipv4_prefixes == (IPv4Network("10.0.2.48/28"),)
    assert eni.elastic_ip(IPv4Address("10.0.2.11")) == IPv4Address("203.0.113.7")
    assert eni.elastic_ip(IPv4Address("10.0.2.10")) is None


def test_same_ip_twice_on_one_eni_is_kept_once() -> None:
    eni = instance(primary(ipv4s=["10.0.1.10", "10.0.1.20", "10.0.1.20"])).enis[0]
    assert eni.ipv4s == (IPv4Address("10.0.1.10"), IPv4Address("10.0.1.20"))


def test_two_enis_in_the_same_subnet_are_valid() -> None:
    inst = instance(primary(), raw_eni(MAC2, "1", ["10.0.1.30"]))
    assert inst.complete and len(inst.enis) == 2


# ---------------------------------------------------------------- invalid metadata


def assert_names(message: str, key: str, value: str) -> None:
    assert key in message, f"{key!r} not named in {message!r}"
    assert value in message, f"{value!r} not named in {message!r}"


@pytest.mark.parametrize("bad", ["0e:00:00:00:00", "zz:00:00:00:00:02", "", "0e00.0000.0002"])
def test_bad_mac(bad: str) -> None:
    message = invalid(primary(), raw_eni(bad, "1", ["10.0.1.20"]))
    assert_names(message, MACS, repr(bad))


def test_bad_primary_mac() -> None:
    message = invalid(primary(), primary_mac="not-a-mac")
    assert_names(message, META + "mac", "not-a-mac")


@pytest.mark.parametrize(
    ("field", "value", "key"),
    [
        ("ipv4s", ["10.0.5.300"], "local-ipv4s"),
        ("ipv4s", ["2600::1"], "local-ipv4s"),
        ("ipv4s", ["224.0.0.1"], "local-ipv4s"),
        ("ipv4s", ["10.0.9.9"], "local-ipv4s"),  # outside 10.0.1.0/24
        ("ipv4_subnets", ["10.0.1.0/33"], "subnet-ipv4-cidr-block"),
        ("ipv4_subnets", ["10.0.1.5/24"], "subnet-ipv4-cidr-block"),  # host bits set
        ("ipv4_subnets", ["0.0.0.0/0"], "subnet-ipv4-cidr-block"),
        ("ipv4_prefixes", ["10.9.0.48/28"], "ipv4-prefix"),  # outside the subnet
    ],
)
def test_bad_address_values_name_key_and_value(field: str, value: list[str], key: str) -> None:
    kw: dict[str, Any] = {"ipv4s": ["10.0.1.20"], field: value}
    if field == "ipv4_subnets":
        kw["subnet"] = None
    message = invalid(primary(), raw_eni(MAC2, "1", **kw))
    assert_names(message, f"{MACS}{MAC2}/{key}", value[0])


@pytest.mark.parametrize("device", ["abc", "99", "64", "-1", "1.0", "", "²"])
def test_bad_device_number_names_key_and_value(device: str) -> None:
    message = invalid(primary(), raw_eni(MAC2, device, ["10.0.1.20"]))
    assert_names(message, f"{MACS}{MAC2}/device-number", repr(device))


def test_bad_network_card_names_key_and_value() -> None:
    message = invalid(primary(), raw_eni(MAC2, "1", ["10.0.1.20"], network_card="32"))
    assert_names(message, f"{MACS}{MAC2}/network-card", "'32'")


def test_bad_interface_id() -> None:
    message = invalid(primary(), raw_eni(MAC2, "1", ["10.0.1.20"], eni_id="eni 1; rm"))
    assert_names(message, f"{MACS}{MAC2}/interface-id", "eni 1; rm")


def test_duplicate_ip_across_two_enis() -> None:
    message = invalid(primary(ipv4s=["10.0.1.10", "10.0.1.20"]), raw_eni(MAC2, "1", ["10.0.1.20"]))
    # which key of which ENI: the second ENI's local-ipv4s, and the IP itself
    assert_names(message, f"{MACS}{MAC2}/local-ipv4s", "10.0.1.20")
    assert MAC1 in message


def test_duplicate_mac() -> None:
    message = invalid(primary(), raw_eni(MAC1.upper(), "1", ["10.0.1.20"]))
    assert_names(message, f"{MACS}{MAC1.upper()}/", MAC1)
    assert "twice" in message


def test_two_enis_on_the_same_card_and_device_number() -> None:
    message = invalid(
        primary(),
        raw_eni(MAC2, "1", ["10.0.1.20"], network_card="0"),
        raw_eni(MAC3, "1", ["10.0.1.30"]),
    )
    assert_names(message, f"{MACS}{MAC3}/device-number", "1")
    assert MAC2 in message


def test_primary_mac_not_listed() -> None:
    message = invalid(raw_eni(MAC2, "1", ["10.0.1.20"]), primary_mac=MAC3)
    assert_names(message, META + "mac", MAC3)


def test_elastic_ip_mapping_to_an_ip_not_on_the_eni_is_left_out() -> None:
    # The mapping is only shown; when it lags an IP that was just unassigned (or moved), the
    # mapping is dropped instead of refusing the whole metadata read.
    raw = raw_eni(
        MAC2,
        "1",
        ["10.0.2.10"],
        subnet="10.0.2.0/24",
        elastic_ips={"203.0.113.7": "10.0.1.10", "203.0.113.8": "10.0.2.10"},
    )
    inst = build_instance(RawInstance("aws", MAC1, META + "mac", [primary(), raw]))
    eni = inst.by_mac(MAC2)
    assert eni is not None
    assert [(str(a), str(b)) for a, b in eni.elastic_ips] == [("10.0.2.10", "203.0.113.8")]


def test_bad_elastic_ip_value() -> None:
    raw = raw_eni(MAC2, "1", ["10.0.2.10"], subnet="10.0.2.0/24", elastic_ips={"x": "10.0.2.10"})
    message = invalid(primary(), raw)
    assert_names(message, f"{MACS}{MAC2}/ipv4-associations/", "'x'")


def test_ips_without_a_subnet() -> None:
    message = invalid(primary(), raw_eni(MAC2, "1", ["10.0.2.10"], subnet=None))
    assert_names(message, f"{MACS}{MAC2}/subnet-ipv4-cidr-block", "subnet")

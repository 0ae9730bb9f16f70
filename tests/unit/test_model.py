"""build_instance: which metadata is safe to act on, and what it means."""

from __future__ import annotations

import copy
import logging
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

import pytest

from eni_guest.config import Config, load
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
    """The one-line refusal: of the whole read (the primary ENI, a value two ENIs dispute),
    or of the one secondary ENI it concerns, which is then left as it is (Instance.invalid)
    while the others are built."""
    try:
        inst = instance(*enis, primary=primary_mac)
    except MetadataInvalid as err:
        assert err.exit_code == EXIT_METADATA
        message = str(err)
    else:
        assert len(inst.invalid) == 1, f"expected one refused ENI, got {inst.invalid}"
        bad = inst.invalid[0]
        assert inst.by_mac(bad.mac) is None  # nothing of it is configured
        message = bad.reason
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


# Texts around every edge of IPv4's text form: validation parses IPv4 with the C library's
# inet_pton (a fifth of ipaddress's cost), which must take exactly what ipaddress takes.
IPV4_TEXTS = [
    "10.0.1.20",
    "010.0.1.20",
    "10.0.1.020",
    "10.0.1.0020",
    "10.0.1",
    "10.0.1.20.5",
    "10.0.1.256",
    "10.0.1.-1",
    "+10.0.1.20",
    "0x0a.0.1.20",
    "10..1.20",
    "10.0.1.",
    ".10.0.1.20",
    "10.0.1.20/32",
    "10.0.1.20\n",
    "10.0.1.20\0",
    "10.0.1.2 0",
    "١٠.0.1.20",
    "10.0.1.٢٠",
    "\udc80",
    "",
    '"10.0.1.20"',
    " 10.0.1.20 ",
    "::ffff:10.0.1.20",
    "10.0.1.20%eth0",
    "4294967295",
    "10.0.1.00",
]


@pytest.mark.parametrize("text", IPV4_TEXTS)
def test_an_ipv4_text_is_taken_exactly_when_ipaddress_takes_it(text: str) -> None:
    stripped = text.strip().strip('"')  # as validation reads every value (JSON-quoted too)
    try:
        IPv4Address(stripped)
        takes = True
    except ValueError:
        takes = False
    raw = [primary(), raw_eni(MAC2, "1", [text])]
    if takes:
        assert instance(*raw).by_mac(MAC2).ipv4s == (IPv4Address(stripped),)
    else:
        message = invalid(*raw)
        assert_names(message, f"{MACS}{MAC2}/local-ipv4s", repr(text))
        assert "not an IPv4 address" in message


@pytest.mark.parametrize(
    "ip",
    # each side of 0.0.0.0, 127.0.0.0/8 and 224.0.0.0/4 (the integer tests validation makes)
    [
        "0.0.0.0",
        "0.0.0.1",
        "126.255.255.255",
        "127.0.0.0",
        "127.255.255.255",
        "128.0.0.0",
        "223.255.255.255",
        "224.0.0.0",
        "239.255.255.255",
        "240.0.0.0",
    ],
)
def test_an_ipv4_is_refused_as_not_unicast_exactly_where_ipaddress_says_so(ip: str) -> None:
    a = IPv4Address(ip)
    refused = a.is_multicast or a.is_unspecified or a.is_loopback
    net = str(IPv4Network(f"{ip}/30", strict=False))
    inst = instance(primary(), raw_eni(MAC2, "1", [ip], subnet=net))
    if refused:
        assert inst.by_mac(MAC2) is None
        assert "not a unicast address" in inst.invalid[0].reason
        assert repr(ip) in inst.invalid[0].reason
    else:
        # a /30's network and broadcast addresses are refused for another reason
        eni = inst.by_mac(MAC2)
        if eni is None:
            assert "not a unicast" not in inst.invalid[0].reason, inst.invalid[0].reason
        else:
            assert eni.ipv4s == (a,)


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


# ---------------------------------------------------------------- the configuration's overlay


def overlay_config(tmp_path: Path, text: str) -> tuple[Config, str]:
    """A Config loaded from a real file, and the file's prefix in error messages."""
    path = tmp_path / "eni-guest.toml"
    path.write_text(text)
    return load(path, environ={}), f"config {path}"


def with_overlay(config: Config, *enis: RawEni, primary_mac: str = MAC1) -> Instance:
    return build_instance(RawInstance("aws", primary_mac, META + "mac", list(enis)), config)


def overlay_invalid(config: Config, *enis: RawEni) -> str:
    """As `invalid`, for a value the configuration's overlay supplied."""
    try:
        inst = with_overlay(config, *enis)
    except MetadataInvalid as err:
        assert err.exit_code == EXIT_METADATA
        message = str(err)
    else:
        assert len(inst.invalid) == 1, f"expected one refused ENI, got {inst.invalid}"
        message = inst.invalid[0].reason
    assert "\n" not in message
    return message


def third(ipv4s: list[str] | None = None, **kw: Any) -> RawEni:
    return raw_eni(MAC3, "2", ipv4s or ["10.0.2.30", "10.0.2.31"], subnet="10.0.2.0/24", **kw)


def test_without_overlay_settings_the_raw_data_is_passed_through() -> None:
    raw = RawInstance("aws", MAC1, META + "mac", [primary()])
    before = copy.deepcopy(raw)
    build_instance(raw, Config())
    assert raw == before


def test_overlay_does_not_change_what_the_provider_returned(tmp_path: Path) -> None:
    config, _ = overlay_config(
        tmp_path,
        'exclude_ips = ["10.0.2.31"]\n'
        '[[eni]]\nmatch = "eni-0e0000000003"\nadd_ipv4s = ["10.0.2.40"]\n',
    )
    raw = RawInstance("aws", MAC1, META + "mac", [primary(), third()])
    build_instance(raw, config)
    assert raw.enis[1].ipv4s == ["10.0.2.30", "10.0.2.31"] and not hasattr(raw.enis[1], "origins")


def test_added_ips_follow_the_listed_ones_by_id_or_by_mac(tmp_path: Path) -> None:
    config, _ = overlay_config(
        tmp_path,
        '[[eni]]\nmatch = "eni-0e0000000003"\nadd_ipv4s = ["10.0.2.40", "10.0.2.31"]\n'
        '[[eni]]\nmatch = "0E:00:00:00:00:01"\nadd_ipv4s = ["10.0.1.50"]\n',
    )
    inst = with_overlay(config, primary(), third())
    eni = inst.by_mac(MAC3)
    assert eni is not None
    # listed first (the first stays the primary IP), the one already listed is not doubled
    assert eni.ipv4s == (
        IPv4Address("10.0.2.30"),
        IPv4Address("10.0.2.31"),
        IPv4Address("10.0.2.40"),
    )
    assert inst.enis[0].ipv4s == (IPv4Address("10.0.1.10"), IPv4Address("10.0.1.50"))


def test_added_ip_outside_the_subnet_is_refused_naming_the_config_key(tmp_path: Path) -> None:
    config, where = overlay_config(
        tmp_path, '[[eni]]\nmatch = "eni-0e0000000003"\nadd_ipv4s = ["10.0.9.9"]\n'
    )
    message = overlay_invalid(config, primary(), third())
    assert (
        message == f"{where}: eni[1].add_ipv4s = '10.0.9.9': outside the ENI's subnets 10.0.2.0/24"
    )


def test_added_ip_listed_on_another_eni_is_refused_naming_the_config_key(tmp_path: Path) -> None:
    config, where = overlay_config(
        tmp_path, '[[eni]]\nmatch = "eni-0e0000000003"\nadd_ipv4s = ["10.0.2.50"]\n'
    )
    other = raw_eni(MAC2, "1", ["10.0.2.50"], subnet="10.0.2.0/24")
    message = overlay_invalid(config, primary(), other, third())
    assert message.startswith(f"{where}: eni[1].add_ipv4s = '10.0.2.50': also listed on")
    assert MAC2 in message


def test_overridden_prefix_admits_added_ips_and_keeps_the_implied_gateway(tmp_path: Path) -> None:
    config, _ = overlay_config(
        tmp_path,
        '[[eni]]\nmatch = "eni-0e0000000003"\n'
        'ipv4_subnet = "10.0.2.0/23"\nadd_ipv4s = ["10.0.3.7"]\n',
    )
    eni = with_overlay(config, primary(), third()).by_mac(MAC3)
    assert eni is not None
    assert eni.ipv4_subnets == (IPv4Network("10.0.2.0/23"),)
    assert IPv4Address("10.0.3.7") in eni.ipv4s
    # a wider prefix does not move the router: still the listed subnet's .1
    assert eni.ipv4_gateway == IPv4Address("10.0.2.1")


def test_overridden_gateway_replaces_the_derived_one(tmp_path: Path) -> None:
    config, _ = overlay_config(
        tmp_path,
        '[[eni]]\nmatch = "eni-0e0000000003"\nipv4_gateway = "10.0.2.254"\n'
        'ipv6_subnet = "2001:db8:2::/56"\nipv6_gateway = "fe80::1"\n',
    )
    raw = third(ipv6s=["2001:db8:2::30"], ipv6_subnets=["2001:db8:2::/64"])
    eni = with_overlay(config, primary(), raw).by_mac(MAC3)
    assert eni is not None
    assert eni.ipv4_gateway == IPv4Address("10.0.2.254")
    assert eni.ipv6_subnets == (IPv6Network("2001:db8:2::/56"),)
    assert eni.ipv6_gateway == IPv6Address("fe80::1")  # link-local routers are fine


def test_overridden_gateway_outside_the_subnet_names_the_config_key(tmp_path: Path) -> None:
    config, where = overlay_config(
        tmp_path, '[[eni]]\nmatch = "eni-0e0000000003"\nipv4_gateway = "10.0.9.1"\n'
    )
    message = overlay_invalid(config, primary(), third())
    assert (
        message
        == f"{where}: eni[1].ipv4_gateway = '10.0.9.1': outside the ENI's subnets 10.0.2.0/24"
    )


def test_overridden_subnet_that_leaves_a_listed_ip_out_says_so(tmp_path: Path) -> None:
    config, where = overlay_config(
        tmp_path,
        '[[eni]]\nmatch = "eni-0e0000000003"\n'
        'ipv4_subnet = "10.0.2.0/28"\nipv4_gateway = "10.0.2.1"\n',
    )
    message = overlay_invalid(config, primary(), third())
    # the metadata key of the IP, and where the subnet came from
    assert message.startswith(f"metadata {MACS}{MAC3}/local-ipv4s = '10.0.2.30': outside")
    assert f"10.0.2.0/28 (from {where}: eni[1].ipv4_subnet)" in message


def test_narrower_subnet_that_loses_the_implied_gateway_says_what_to_set(tmp_path: Path) -> None:
    config, where = overlay_config(
        tmp_path, '[[eni]]\nmatch = "eni-0e0000000003"\nipv4_subnet = "10.0.2.16/28"\n'
    )
    message = overlay_invalid(config, primary(), third(["10.0.2.20"]))
    assert "'10.0.2.1': outside the ENI's subnets 10.0.2.16/28" in message
    assert message.startswith(
        f"{where}: eni[1].ipv4_gateway (unset: the router of the listed subnet 10.0.2.0/24) = "
    )


def test_overlay_naming_no_listed_eni_is_a_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, where = overlay_config(
        tmp_path, '[[eni]]\nmatch = "eni-detached"\nadd_ipv4s = ["10.0.2.40"]\n'
    )
    with caplog.at_level(logging.DEBUG, logger="eni_guest"):
        inst = with_overlay(config, primary(), third())
    assert inst.complete and len(inst.enis) == 2
    assert any(f"{where}: eni[1].match = 'eni-detached'" in r.getMessage() for r in caplog.records)


def test_two_tables_naming_one_eni_by_mac_and_by_id_are_refused(tmp_path: Path) -> None:
    config, where = overlay_config(
        tmp_path,
        f'[[eni]]\nmatch = "{MAC3}"\nadd_ipv4s = ["10.0.2.40"]\n'
        '[[eni]]\nmatch = "eni-0e0000000003"\nadd_ipv4s = ["10.0.2.41"]\n',
    )
    message = overlay_invalid(config, primary(), third())
    assert message.startswith(f"{where}: eni[2].match = 'eni-0e0000000003': names ENI {MAC3}")
    assert "eni[1].match" in message


def test_nothing_is_added_to_an_eni_that_lists_no_ip_yet(tmp_path: Path) -> None:
    # just attached: the ENI must stay unsettled, or removals would go ahead on partial data
    config, _ = overlay_config(
        tmp_path, '[[eni]]\nmatch = "eni-0e0000000003"\nadd_ipv4s = ["10.0.2.40"]\n'
    )
    inst = with_overlay(config, primary(), raw_eni(MAC3, "2", [], subnet="10.0.2.0/24"))
    assert not inst.complete and [u.mac for u in inst.unsettled] == [MAC3]


def test_excluded_enis_are_kept_apart_unvalidated(tmp_path: Path) -> None:
    config, _ = overlay_config(tmp_path, f'exclude_enis = ["eni-0e0000000002", "{MAC3.upper()}"]\n')
    broken = raw_eni(MAC2, "1", ["10.0.1.20", "not-an-ip"], subnet="bad", network_card="0")
    pending = raw_eni(MAC3, "0", [])  # would be unsettled (device-number 0): excluded instead
    inst = with_overlay(config, primary(), broken, pending)
    assert [e.mac for e in inst.enis] == [MAC1]
    assert inst.complete  # an excluded ENI never holds back removals
    b, c = inst.excluded
    assert (b.mac, b.eni_id, b.reason) == (
        MAC2,
        "eni-0e0000000002",
        "exclude_enis 'eni-0e0000000002'",
    )
    assert b.ips == (IPv4Address("10.0.1.20"),) and b.slot == 1
    assert (c.mac, c.reason, c.slot) == (MAC3, f"exclude_enis '{MAC3}'", None)


def test_excluding_the_primary_eni_is_allowed(tmp_path: Path) -> None:
    config, _ = overlay_config(tmp_path, f'exclude_enis = ["{MAC1}"]\n')
    inst = with_overlay(config, primary(), third())
    assert [e.mac for e in inst.enis] == [MAC3]
    assert inst.primary_mac == MAC1 and inst.excluded[0].slot == 0


def test_excluding_an_eni_never_moves_another_to_a_new_table(tmp_path: Path) -> None:
    # without device numbers slots come from the set of MACs: excluded ones still take part
    def raw(mac: str, ip: str) -> RawEni:
        r = raw_eni(mac, None, [ip], subnet="10.0.1.0/24")
        r.has_device_numbers = False
        return r

    enis = [raw(MAC1, "10.0.1.10"), raw(MAC2, "10.0.1.20"), raw(MAC3, "10.0.1.30")]
    before = build_instance(RawInstance("alibaba", MAC1, "mac", copy.deepcopy(enis)))
    config, _ = overlay_config(tmp_path, f'exclude_enis = ["{MAC2}"]\n')
    after = with_overlay(config, *copy.deepcopy(enis))
    assert [(e.mac, e.slot) for e in after.enis] == [
        (e.mac, e.slot) for e in before.enis if e.mac != MAC2
    ]
    assert after.excluded[0].slot == before.by_mac(MAC2).slot  # type: ignore[union-attr]


def test_excluded_ips_are_taken_off_their_eni_with_their_elastic_ip(tmp_path: Path) -> None:
    config, _ = overlay_config(
        tmp_path, 'exclude_ips = ["10.0.2.31", "10.0.2.64/26", "2001:db8:2::/120"]\n'
    )
    raw = third(
        ["10.0.2.30", "10.0.2.31", "10.0.2.70"],
        ipv4_prefixes=["10.0.2.96/28", "10.0.2.128/28"],
        ipv6s=["2001:db8:2::30", "2001:db8:2::1:30"],
        ipv6_subnets=["2001:db8:2::/64"],
        elastic_ips={"203.0.113.7": "10.0.2.31", "203.0.113.8": "10.0.2.30"},
    )
    inst = with_overlay(config, primary(), raw)
    eni = inst.by_mac(MAC3)
    assert eni is not None
    assert eni.ipv4s == (IPv4Address("10.0.2.30"),)
    assert eni.ipv6s == (IPv6Address("2001:db8:2::1:30"),)
    assert eni.ipv4_prefixes == (IPv4Network("10.0.2.128/28"),)  # the other overlaps 10.0.2.64/26
    assert [str(x) for x in eni.excluded_ips] == [
        "10.0.2.31",
        "10.0.2.70",
        "2001:db8:2::30",
        "10.0.2.96/28",
    ]
    assert [(str(a), str(b)) for a, b in eni.elastic_ips] == [("10.0.2.30", "203.0.113.8")]
    assert [str(n) for n in inst.excluded_ips] == [
        "10.0.2.31/32",
        "10.0.2.64/26",
        "2001:db8:2::/120",
    ]
    assert not eni.ipv4s_lack_primary_ip


def test_an_eni_whose_every_ip_is_excluded_is_settled_and_empty(tmp_path: Path) -> None:
    config, _ = overlay_config(tmp_path, 'exclude_ips = ["10.0.2.0/24"]\n')
    inst = with_overlay(config, primary(), third())
    eni = inst.by_mac(MAC3)
    assert inst.complete and eni is not None
    assert eni.ips == () and eni.ipv4_gateway is None and eni.ipv4s_lack_primary_ip


def test_excluding_the_primary_ip_is_recorded_for_the_planner(tmp_path: Path) -> None:
    config, _ = overlay_config(tmp_path, 'exclude_ips = ["10.0.1.10"]\n')
    p = with_overlay(config, primary(ipv4s=["10.0.1.10", "10.0.1.11"])).enis[0]
    assert p.ipv4s == (IPv4Address("10.0.1.11"),) and p.ipv4s_lack_primary_ip


def test_an_unparseable_listed_ip_is_still_refused_with_exclusions(tmp_path: Path) -> None:
    config, _ = overlay_config(tmp_path, 'exclude_ips = ["10.0.2.0/24"]\n')
    message = overlay_invalid(config, primary(), third(["10.0.2.30", "10.0.2.999"]))
    assert_names(message, f"{MACS}{MAC3}/local-ipv4s", "10.0.2.999")


# ---------------------------------------------------------------- addresses no ENI can have


@pytest.mark.parametrize(
    "ip,why",
    [
        ("10.0.2.0", "the network address of subnet 10.0.2.0/24"),
        ("10.0.2.255", "the broadcast address of subnet 10.0.2.0/24"),
        ("10.0.2.1", "the gateway of subnet 10.0.2.0/24"),
        ("10.0.2.2", "reserved by aws in subnet 10.0.2.0/24 (the first 4 and the last 1"),
        ("10.0.2.3", "reserved by aws in subnet 10.0.2.0/24"),
    ],
)
def test_an_address_the_subnet_keeps_is_refused_naming_key_and_value(ip: str, why: str) -> None:
    message = invalid(primary(), raw_eni(MAC2, "1", ["10.0.2.30", ip], subnet="10.0.2.0/24"))
    assert f"local-ipv4s = '{ip}': {why}" in message


def test_an_address_next_to_the_reserved_ones_is_fine() -> None:
    inst = instance(primary(), raw_eni(MAC2, "1", ["10.0.2.4", "10.0.2.254"], subnet="10.0.2.0/24"))
    assert [str(ip) for ip in inst.enis[1].ipv4s] == ["10.0.2.4", "10.0.2.254"]


def test_the_gateway_metadata_names_is_refused_as_an_ip_and_other_clouds_keep_less() -> None:
    raw = RawInstance(
        "alibaba",
        MAC1,
        META + "mac",
        [
            primary(ipv4s=["10.0.1.10", "10.0.1.2"], ipv4_gateway="10.0.1.253"),
            raw_eni(MAC2, "1", ["10.0.1.253"], ipv4_gateway="10.0.1.253"),
        ],
    )
    (bad,) = build_instance(raw).invalid
    assert "'10.0.1.253': the gateway of subnet 10.0.1.0/24" in bad.reason
    raw.enis.pop()
    assert build_instance(raw).enis[0].ipv4s[1] == IPv4Address("10.0.1.2")  # AWS's, not Alibaba's


# ---------------------------------------------------------------- per-ENI MTU


def test_eni_table_mtu_beats_metadata_and_ipv6_needs_1280(tmp_path: Path) -> None:
    config, where = overlay_config(tmp_path, '[[eni]]\nmatch = "eni-0e0000000003"\nmtu = 9001\n')
    eni = with_overlay(config, primary(), third(mtu="1500")).by_mac(MAC3)
    assert eni is not None and eni.mtu == 9001
    assert with_overlay(Config(), primary(), third(mtu="1450")).enis[1].mtu == 1450
    assert with_overlay(Config(), primary(), third()).enis[1].mtu is None
    config, where = overlay_config(tmp_path, '[[eni]]\nmatch = "eni-0e0000000003"\nmtu = 1000\n')
    v6 = {"ipv6s": ["2600:1f18:1:2::10"], "ipv6_subnets": ["2600:1f18:1:2::/64"]}
    assert with_overlay(config, primary(), third()).enis[1].mtu == 1000  # IPv4 only: fine
    assert overlay_invalid(config, primary(), third(**v6)) == (
        f"{where}: eni[1].mtu = '1000': not an MTU in 1280..65535 (the ENI has IPv6)"
    )


@pytest.mark.parametrize("mtu", ["67", "65536", "15OO", "", "-1"])
def test_metadata_mtu_out_of_range_refuses_the_eni_naming_the_key(mtu: str) -> None:
    message = invalid(primary(), third(mtu=mtu))
    assert message == f"metadata {MACS}{MAC3}/mtu = {mtu!r}: not an MTU in 68..65535"

"""The static ENI file provider, and the MAC-derived table slots of clouds without device numbers.

No network at all: the provider reads a TOML file from tmp_path.
"""

from __future__ import annotations

import hashlib
import itertools
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest
from refusal import refusal

from eni_guest.agent import read_instance
from eni_guest.config import SLOTS, Config
from eni_guest.errors import MetadataInvalid, MetadataUnavailable
from eni_guest.model import (
    RawEni,
    RawInstance,
    assign_table_slots,
    build_instance,
    home_slot,
)

MAC_P, MAC_A, MAC_B = "52:54:00:12:34:01", "52:54:00:12:34:0a", "52:54:00:12:34:0b"
HOME_0A, HOME_01 = 5, 409  # home_slot of 52:54:00:12:34:0a and 02:00:00:00:00:01

GOOD = f"""
primary_mac = "{MAC_P}"

[[eni]]
mac = "{MAC_B}"
id = "uplink-b"
ipv4s = ["10.2.0.20", "10.2.0.21"]
subnet = "10.2.0.0/24"
gateway = "10.2.0.254"
ipv6s = ["2001:db8:2::20"]
ipv6_subnet = "2001:db8:2::/64"
ipv6_gateway = "fe80::1"

[[eni]]
mac = "{MAC_P.upper()}"
ipv4s = ["10.1.0.10"]
subnet = "10.1.0.0/24"
gateway = "10.1.0.1"

[[eni]]
mac = "{MAC_A}"
ipv4s = ["10.1.0.30"]     # same subnet as the primary
subnet = "10.1.0.0/24"
gateway = "10.1.0.1"
"""


def config(path: Path) -> Config:
    return Config(provider="static", static_file=str(path)).validate()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "enis.toml"
    path.write_text(text)
    return path


def test_reads_the_file(tmp_path):
    instance, requests = read_instance(config(write(tmp_path, GOOD)))
    assert requests == 0 and instance.provider == "static" and instance.complete
    by_mac = {e.mac: e for e in instance.enis}
    primary, a, b = by_mac[MAC_P], by_mac[MAC_A], by_mac[MAC_B]
    assert primary.primary and primary.slot == 0 and primary.eni_id == MAC_P.upper()
    assert b.eni_id == "uplink-b" and b.ipv4_gateway == ip_address("10.2.0.254")
    assert b.ipv4s == (ip_address("10.2.0.20"), ip_address("10.2.0.21"))
    assert b.ipv6_subnets == (ip_network("2001:db8:2::/64"),)
    assert a.ipv4_subnets == primary.ipv4_subnets
    assert {a.slot, b.slot} == {home_slot(MAC_A), home_slot(MAC_B)}


def test_device_numbers_when_given_for_all(tmp_path):
    text = GOOD.replace('id = "uplink-b"', 'id = "uplink-b"\ndevice_number = 2')
    text = text.replace('gateway = "10.1.0.1"\n\n', 'gateway = "10.1.0.1"\ndevice_number = 0\n\n')
    text = text.rstrip() + "\ndevice_number = 1\n"
    instance, _ = read_instance(config(write(tmp_path, text)))
    assert {e.mac: e.slot for e in instance.enis} == {MAC_P: 0, MAC_A: 1, MAC_B: 2}


def error_of(tmp_path: Path, text: str, exc: type = MetadataInvalid) -> str:
    path = write(tmp_path, text)
    message = refusal(lambda: read_instance(config(path))[0], exc)
    assert str(path) in message
    return message


@pytest.mark.parametrize(
    "old, new, key, value",
    [
        ('subnet = "10.2.0.0/24"', 'subnet = "10.2.0.0/33"', "subnet", "10.2.0.0/33"),
        ('"10.2.0.21"', '"10.3.0.21"', "ipv4s", "10.3.0.21"),
        ('gateway = "10.2.0.254"', 'gatway = "10.2.0.254"', "gatway", "gatway"),
        ('ipv4s = ["10.2.0.20", "10.2.0.21"]', 'ipv4s = "10.2.0.20"', "ipv4s", "10.2.0.20"),
        ('id = "uplink-b"', 'id = "uplink b!"', "id", "uplink b!"),
        (f'primary_mac = "{MAC_P}"', 'primary_mac = "52:54:00"', "primary_mac", "52:54:00"),
    ],
)
def test_errors_name_file_key_and_value(tmp_path, old, new, key, value):
    assert old in GOOD
    message = error_of(tmp_path, GOOD.replace(old, new))
    assert key in message and value in message


def test_missing_gateway_is_refused(tmp_path):
    message = error_of(tmp_path, GOOD.replace('gateway = "10.2.0.254"\n', ""))
    assert "[[eni]] #1" in message and "gateway" in message and "missing" in message


def test_device_number_for_some_only_is_refused(tmp_path):
    message = error_of(
        tmp_path, GOOD.replace('id = "uplink-b"', 'id = "uplink-b"\ndevice_number = 2')
    )
    assert "device_number" in message


def test_eni_described_twice_is_refused(tmp_path):
    message = error_of(tmp_path, GOOD.replace(MAC_A, MAC_B))
    assert MAC_B in message and "also described" in message


def test_toml_syntax_error_names_file(tmp_path):
    error_of(tmp_path, GOOD + "\n[[eni]\n")


@pytest.mark.parametrize(
    "data,words",
    [(b"\x80", "not UTF-8 text"), (b"ipv4s = " + b"[" * 5000 + b"]" * 5000, "nested too deeply")],
    ids=["not UTF-8", "nested very deep"],
)
def test_a_file_that_is_not_toml_text_is_refused_in_one_line(tmp_path, data, words):
    """Found by tests/unit/test_fuzz.py: a static file that is not UTF-8 (or nests arrays
    thousands deep) ended the run in a traceback."""
    path = tmp_path / "enis.toml"
    path.write_bytes(data)
    with pytest.raises(MetadataInvalid) as e:
        read_instance(config(path))
    assert str(e.value) == f"static ENI file {path}: {words}"


def test_missing_file_is_unavailable(tmp_path):
    with pytest.raises(MetadataUnavailable, match="not found"):
        read_instance(config(tmp_path / "absent.toml"))


# ------------------------------------------------------------------ MAC-derived table slots


def raw_eni(mac: str, n: int) -> RawEni:
    return RawEni(
        source=f"test eni {mac} ",
        mac=mac,
        eni_id=f"eni-{n}",
        ipv4s=[f"10.0.{n}.10"],
        ipv4_subnets=[f"10.0.{n}.0/24"],
        ipv4_gateway=f"10.0.{n}.1",
        has_device_numbers=False,
    )


def slots_of(macs: list[str], primary: str) -> dict[str, int]:
    raws = [raw_eni(mac, n) for n, mac in enumerate(macs)]
    instance = build_instance(RawInstance("test", primary, "primary", raws))
    return {e.mac: e.slot for e in instance.enis}


def colliding_pair() -> tuple[str, str]:
    """Two MACs with the same home slot, found the same way on every run."""
    seen: dict[int, str] = {}
    for a, b in itertools.product(range(256), repeat=2):
        mac = f"02:00:00:00:{a:02x}:{b:02x}"
        slot = home_slot(mac)
        if slot in seen:
            return seen[slot], mac
        seen[slot] = mac
    raise AssertionError("no collision among 65536 MACs")


def test_home_slot_is_sha256_of_the_mac_and_never_changes():
    # Pinned: a change here would move every ENI of every upgraded host to another table.
    assert home_slot("52:54:00:12:34:0a") == HOME_0A
    assert home_slot("02:00:00:00:00:01") == HOME_01
    for i in range(256):
        mac = f"02:00:00:00:00:{i:02x}"
        digest = hashlib.sha256(mac.encode()).hexdigest()
        assert home_slot(mac) == 1 + int(digest, 16) % 2047
        assert 1 <= home_slot(mac) < SLOTS


def test_same_macs_same_slots_whatever_the_listing_order():
    macs = [MAC_P, MAC_A, MAC_B, "0e:00:00:00:00:01", "fa:16:3e:00:00:07"]
    expected = slots_of(macs, MAC_P)
    for order in itertools.permutations(macs):
        assert slots_of(list(order), MAC_P) == expected
    assert expected[MAC_P] == 0
    assert len(set(expected.values())) == len(macs)


def test_collision_lower_mac_keeps_its_slot_other_probes_upwards():
    low, high = colliding_pair()
    assert low < high and home_slot(low) == home_slot(high)
    for order in ([MAC_P, low, high], [high, MAC_P, low], [low, high, MAC_P]):
        slots = slots_of(order, MAC_P)
        assert slots[low] == home_slot(low)
        assert slots[high] == home_slot(low) % (SLOTS - 1) + 1
        assert slots[MAC_P] == 0


def test_probing_wraps_past_2047_and_skips_slot_0():
    # every slot but 1 taken: the ENI's home is taken, probing runs up to 2047 and wraps to 1
    slots = assign_table_slots(["02:aa", "02:bb"], "02:aa", taken=range(2, SLOTS))
    assert slots == {"02:aa": 0, "02:bb": 1}
    with pytest.raises(MetadataInvalid, match="table slots"):
        assign_table_slots(["02:aa", "02:bb"], "02:aa", taken=range(1, SLOTS))


def test_other_enis_keep_their_slots_when_one_detaches():
    low, high = colliding_pair()
    macs = [MAC_P, MAC_A, MAC_B, low, high]
    before = slots_of(macs, MAC_P)
    after = slots_of([MAC_P, MAC_A, low, high], MAC_P)  # MAC_B detached
    assert all(after[m] == before[m] for m in after)


def test_unsettled_enis_take_part_in_slot_choice():
    """An ENI whose IPs are not listed yet already holds its slot: settling moves no one."""
    low, high = colliding_pair()
    raws = [raw_eni(MAC_P, 0), raw_eni(high, 1), raw_eni(low, 2)]
    raws[2].ipv4s = []  # low: just attached, no IP yet
    instance = build_instance(RawInstance("test", MAC_P, "primary", raws))
    assert [u.mac for u in instance.unsettled] == [low]
    assert instance.by_mac(high).slot == home_slot(low) % (SLOTS - 1) + 1  # type: ignore[union-attr]


def test_no_two_enis_share_a_slot_among_many():
    macs = [f"02:00:00:00:{i // 256:02x}:{i % 256:02x}" for i in range(300)]
    slots = assign_table_slots(macs, macs[0])
    assert len(set(slots.values())) == 300 and slots[macs[0]] == 0
    assert all(0 < s < SLOTS for m, s in slots.items() if m != macs[0])


def test_aws_style_enis_keep_device_number_slots():
    raw = RawEni(
        source="x/",
        mac=MAC_A,
        eni_id="eni-1",
        device_number="3",
        network_card="1",
        ipv4s=["10.0.1.10"],
        ipv4_subnets=["10.0.1.0/24"],
    )
    primary = RawEni(
        source="y/",
        mac=MAC_P,
        eni_id="eni-0",
        device_number="0",
        ipv4s=["10.0.0.10"],
        ipv4_subnets=["10.0.0.0/24"],
    )
    instance = build_instance(RawInstance("aws", MAC_P, "mac", [raw, primary]))
    assert instance.by_mac(MAC_A).slot == 64 + 3  # type: ignore[union-attr]
    assert instance.by_mac(MAC_A).table_slot is None  # type: ignore[union-attr]

"""DHCP on the wire (dhcp_wire.py): the DISCOVER's bytes and the OFFER's parsing, on packets
built here byte by byte as RFC 2131/2132 lay them out.  tests/e2e/test_clouds.py runs the
exchange against dnsmasq in a simulated VPC."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eni_guest import dhcp
from eni_guest.dhcp_wire import Offer, _checksum, discover, parse_offer, parse_options
from eni_guest.errors import MetadataUnavailable

MAC = bytes.fromhex("0e00000000b2")
XID = 0x1234ABCD


def test_the_discover_is_a_broadcast_from_port_68_asking_for_mask_and_router() -> None:
    p = discover(MAC, XID)
    assert p[0] == 0x45 and p[9] == 17 and p[8] == 64  # IPv4, no options, UDP, TTL 64
    assert p[12:16] == bytes(4) and p[16:20] == b"\xff" * 4  # 0.0.0.0 -> 255.255.255.255
    assert struct.unpack("!H", p[2:4])[0] == len(p)
    assert _checksum(p[:20]) == 0  # the header checksum is right
    sport, dport, length, _ = struct.unpack("!HHHH", p[20:28])
    assert (sport, dport, length) == (68, 67, len(p) - 20)
    bootp = p[28:]
    assert len(bootp) >= 300  # padded to BOOTP's minimum
    assert bootp[0] == 1 and bootp[1:3] == b"\x01\x06"  # BOOTREQUEST, Ethernet, 6-byte MAC
    assert struct.unpack("!I", bootp[4:8])[0] == XID
    assert struct.unpack("!H", bootp[10:12])[0] == 0x8000  # answer by broadcast: no IP yet
    assert bootp[28:34] == MAC and bootp[34:44] == bytes(10)
    assert bootp[236:240] == b"\x63\x82\x53\x63"
    options = parse_options(bootp[240:])
    assert options[53] == b"\x01" and options[55] == b"\x01\x03"  # DISCOVER; mask, router


def offer(
    *,
    xid: int = XID,
    mac: bytes = MAC,
    op: int = 2,
    kind: int = 2,
    options: bytes = b"\x01\x04\xff\xff\xf0\x00\x03\x08\x0a\x00\x00\x01\x0a\x00\x00\x02",
    ihl: int = 5,
) -> bytes:
    """An OFFER of 10.0.2.30 from 10.0.0.1 as a server sends it (IP options when ihl > 5)."""
    bootp = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        op, 1, 6, 0, xid, 0, 0x8000,
        bytes(4), bytes([10, 0, 2, 30]), bytes([10, 0, 0, 1]), bytes(4), mac, b"", b"",
    )  # fmt: skip
    payload = bootp + b"\x63\x82\x53\x63" + bytes([53, 1, kind]) + options + b"\xff"
    udp = struct.pack("!HHHH", 67, 68, 8 + len(payload), 0) + payload
    ip_options = bytes(4 * (ihl - 5))
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + len(ip_options) + len(udp), 0, 0, 64, 17, 0,
        bytes([10, 0, 0, 1]), b"\xff" * 4,
    )  # fmt: skip
    return header + ip_options + udp


def test_an_offer_gives_address_mask_and_routers() -> None:
    got = parse_offer(offer(), XID, MAC)
    assert got is not None
    assert (got.ip, got.subnet_mask, got.routers) == (
        "10.0.2.30",
        "255.255.240.0",
        ["10.0.0.1", "10.0.0.2"],
    )
    assert dhcp._subnet_and_router(got, "eth1", "0e:00:00:00:00:b2") == ("10.0.0.0/20", "10.0.0.1")
    assert parse_offer(offer(ihl=6), XID, MAC) == got  # an IP header with options


@pytest.mark.parametrize(
    "packet",
    [
        offer(xid=XID + 1),  # an answer to someone else's DISCOVER
        offer(mac=bytes.fromhex("0e00000000c3")),  # for another NIC
        offer(op=1),  # a request (our own DISCOVER, or another client's)
        offer(kind=5),  # an ACK, not an OFFER
        offer()[:100],  # truncated
        b"",
        b"\x60" + bytes(60),  # IPv6
    ],
    ids=["xid", "mac", "request", "ack", "truncated", "empty", "ipv6"],
)
def test_what_is_not_our_offer_is_skipped(packet: bytes) -> None:
    assert parse_offer(packet, XID, MAC) is None


def test_options_split_in_two_are_joined_and_a_truncated_one_ends_them() -> None:
    joined = parse_options(b"\x00\x03\x04\x0a\x00\x00\x01\x03\x04\x0a\x00\x00\x02\x01\x04\xff")
    assert joined == {3: b"\x0a\x00\x00\x01\x0a\x00\x00\x02"}  # RFC 3396; option 1 truncated


def test_an_offer_without_mask_or_router_is_unusable_in_one_line() -> None:
    for options in ({3: b"\x0a\x00\x00\x01"}, {1: b"\xff\xff\xff\x00"}, {1: b"\xff", 3: b"ab"}):
        with pytest.raises(MetadataUnavailable) as info:
            dhcp._subnet_and_router(Offer("10.0.2.30", options), "eth1", "0e:00:00:00:00:b2")
        assert "eth1" in str(info.value) and "\n" not in str(info.value)


@settings(max_examples=2000, derandomize=True, database=None, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 590), st.binary(max_size=40))
def test_any_bytes_on_the_wire_are_an_offer_or_nothing(noise: bytes, at: int, cut: bytes) -> None:
    """Random bytes, and a real OFFER with a stretch overwritten: never an exception; whatever
    parses gives one line or an answer through _subnet_and_router."""
    for packet in (noise, (offer()[:at] + cut + offer()[at + len(cut) :])):
        got = parse_offer(packet, XID, MAC)
        if got is not None:
            try:
                dhcp._subnet_and_router(got, "eth1", "0e:00:00:00:00:b2")
            except MetadataUnavailable as e:
                assert "\n" not in str(e)

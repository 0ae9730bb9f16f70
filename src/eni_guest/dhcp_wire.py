"""DHCPv4 on the wire, just enough to ask a VPC's DHCP server for an ENI's subnet and router.

One DISCOVER goes out of the NIC (retransmitted until the deadline) and the first OFFER for it
comes back (RFC 2131; options RFC 2132).  That is all JD Cloud's provider needs: the OFFER
carries the subnet mask (option 1) and the routers (option 3) for the ENI's fixed address.  No
REQUEST follows, so no lease is taken and nothing is ever to be released: the distro's own DHCP
client keeps the primary's lease, and a secondary ENI's address is the agent's to add.

The socket is an AF_PACKET datagram socket on that one NIC (the kernel adds and strips the
Ethernet header): the NIC has no address yet, so the DISCOVER leaves from 0.0.0.0 to the
broadcast address, and the OFFER (broadcast, the DISCOVER asks for it) is read whatever the
NIC's IP configuration.  The packets are built and parsed here with ``struct``.
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import struct
import time

from .record import field, record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Callable, Iterator, Optional

ETH_P_IP = 0x0800
PACKET_OUTGOING = 4  # what a packet socket calls the copies of our own packets
CLIENT_PORT, SERVER_PORT = 68, 67
MAGIC_COOKIE = b"\x63\x82\x53\x63"
BROADCAST_FLAG = 0x8000
# options (RFC 2132)
PAD, SUBNET_MASK, ROUTER, MESSAGE_TYPE, PARAMETER_LIST, END = 0, 1, 3, 53, 55, 255
DHCPDISCOVER, DHCPOFFER = 1, 2
BOOTREQUEST, BOOTREPLY = 1, 2
# op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname, file
_BOOTP = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
_BOOTP_MIN = 300  # the minimum BOOTP message some servers insist on (RFC 951), padded to it


@record(frozen=True)
class Offer:
    """What an OFFER said: the address offered and the options, by code."""

    ip: str
    options: dict[int, bytes] = field(default_factory=dict)

    @property
    def subnet_mask(self) -> str:
        value = self.options.get(SUBNET_MASK)
        if value is None:
            raise LookupError("no subnet mask (option 1)")
        return str(ipaddress.IPv4Address(value)) if len(value) == 4 else value.hex()

    @property
    def routers(self) -> list[str]:
        value = self.options.get(ROUTER, b"")
        return [str(ipaddress.IPv4Address(value[i : i + 4])) for i in range(0, len(value) - 3, 4)]


def discover(mac: bytes, xid: int) -> bytes:
    """The DISCOVER, as an IPv4 packet from 0.0.0.0:68 to 255.255.255.255:67."""
    zero = bytes(4)
    bootp = _BOOTP.pack(
        BOOTREQUEST, 1, len(mac), 0, xid, 0, BROADCAST_FLAG, zero, zero, zero, zero, mac, b"", b""
    )
    options = bytes([MESSAGE_TYPE, 1, DHCPDISCOVER, PARAMETER_LIST, 2, SUBNET_MASK, ROUTER, END])
    payload = (bootp + MAGIC_COOKIE + options).ljust(_BOOTP_MIN, bytes([PAD]))
    udp = struct.pack("!HHHH", CLIENT_PORT, SERVER_PORT, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0, zero, b"\xff" * 4
    )
    return header[:10] + struct.pack("!H", _checksum(header)) + header[12:] + udp


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def parse_offer(packet: bytes, xid: int, mac: bytes) -> Optional[Offer]:
    """The OFFER in an IPv4 packet, if it is one for this DISCOVER (xid and MAC); else None.
    Anything short, truncated or of another kind is not an answer and is skipped."""
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_UDP:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 8:
        return None
    _sport, dport, length = struct.unpack_from("!HHH", packet, ihl)
    bootp = packet[ihl + 8 : ihl + length]
    if dport != CLIENT_PORT or len(bootp) < _BOOTP.size + 4:
        return None
    fields = _BOOTP.unpack_from(bootp)
    op, rxid, yiaddr, chaddr = fields[0], fields[4], fields[8], fields[11]
    if op != BOOTREPLY or rxid != xid or chaddr[: len(mac)] != mac:
        return None
    if bootp[_BOOTP.size : _BOOTP.size + 4] != MAGIC_COOKIE:
        return None
    options = parse_options(bootp[_BOOTP.size + 4 :])
    if options.get(MESSAGE_TYPE) != bytes([DHCPOFFER]):
        return None
    return Offer(str(ipaddress.IPv4Address(yiaddr)), options)


def parse_options(data: bytes) -> dict[int, bytes]:
    """Options by code; a code given twice is concatenated (RFC 3396); a truncated one ends it."""
    options: dict[int, bytes] = {}
    i = 0
    while i < len(data):
        code = data[i]
        if code == PAD:
            i += 1
            continue
        if code == END or i + 1 >= len(data):
            break
        length = data[i + 1]
        value = data[i + 2 : i + 2 + length]
        if len(value) < length:
            break
        options[code] = options.get(code, b"") + value
        i += 2 + length
    return options


def exchange(
    ifname: str, mac: str, timeout: float, retries: Callable[[], Iterator[float]]
) -> Offer:
    """DISCOVER on `ifname` (resent after each of `retries()`'s delays) until an OFFER for it
    arrives: that OFFER.  TimeoutError after `timeout` seconds; OSError from the socket (a
    PermissionError without CAP_NET_RAW)."""
    hw = bytes.fromhex(mac.replace(":", ""))
    xid = int.from_bytes(os.urandom(4), "big")
    packet = discover(hw, xid)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    try:
        sock.bind((ifname, ETH_P_IP))
        deadline = time.monotonic() + timeout
        delays = retries()
        resend = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError(f"no OFFER on {ifname} within {timeout:g} s")
            if now >= resend:
                sock.sendto(packet, (ifname, ETH_P_IP, 0, 0, b"\xff" * 6))
                resend = now + next(delays)
            ready, _, _ = select.select([sock], [], [], max(0.0, min(deadline, resend) - now))
            if not ready:
                continue
            data, address = sock.recvfrom(4096)
            if address[2] == PACKET_OUTGOING:
                continue  # our own DISCOVER, seen on the way out
            offer = parse_offer(data, xid, hw)
            if offer is not None:
                return offer
    finally:
        sock.close()

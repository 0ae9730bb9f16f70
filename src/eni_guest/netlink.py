"""The NETLINK_ROUTE socket: rtnetlink numbers, dumps, batches of change requests.

Every message is packed and read with `struct`, no pyroute2: dump requests are a few packed
bytes, netlink_decode.py reads the answers and netlink_encode.py packs the change requests.
pyroute2's generic encoder and decoder cost ~75 us and ~200 us a message, and importing its
message classes ~30-60 ms of a first apply.  We drive the socket ourselves for two reasons
measured in benchmarks/: pyroute2's synchronous IPRoute waits for each acknowledgement in turn
(about 0.5 ms a message: 1.2 s for 15 ENIs x 50 IPs against 0.15 s for `ip -batch`), while one
send of many messages lets the kernel work through them in one go; and importing the top-level
`pyroute2` package loads every netlink family it knows (~200 ms), which every hot-plug would
pay.

What the messages mean is elsewhere: netlink_decode.py turns the kernel's messages into the
planner's state values, netlink_encode.py turns planned changes into requests, and kernel.py
decides what to read and in which order changes go out.
"""

from __future__ import annotations

import _socket  # socket.py's C core; socket.py's enums and selectors cost ~3 ms a start
import errno
import os
import struct
import sys

from .errors import KernelError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Iterator

# netlink header flags (linux/netlink.h)
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
# rtnetlink message types (linux/rtnetlink.h)
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
# rtnetlink multicast groups (linux/rtnetlink.h RTNLGRP_*): links, and IPv4/IPv6 addresses,
# routes and rules.  Bound as a bit mask (bit g-1 for group g, all below 32).
RTNLGRP_LINK = 1
OBJECT_GROUPS = (5, 7, 8, 9, 11, 19)  # IPV4_IFADDR, IPV4_ROUTE, IPV4_RULE, IPV6_{IFADDR,ROUTE,RULE}
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWRULE, RTM_DELRULE, RTM_GETRULE = 32, 33, 34
NLMSG_ERROR, NLMSG_DONE = 2, 3
SOL_NETLINK, NETLINK_GET_STRICT_CHK = 270, 12
SO_ATTACH_FILTER, SO_RCVBUFFORCE = 26, 33  # asm-generic/socket.h (x86, arm64); not in _socket
IFF_UP = 1
NLMSGHDR_LEN = 16
_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence number, port id
CHUNK = 32 * 1024  # bytes of requests per send(); acks for them always fit the receive buffer


def messages(buf: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, sequence number, message bytes) of each netlink message in one received buffer."""
    offset = 0
    while offset + NLMSGHDR_LEN <= len(buf):
        length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", buf, offset)
        if length < NLMSGHDR_LEN:
            return
        yield kind, seq, buf[offset : offset + length]
        offset += (length + 3) & ~3


def error_of(msg: bytes) -> int:
    """The errno an NLMSG_ERROR message reports (0: an acknowledgement)."""
    return -struct.unpack_from("=i", msg, NLMSGHDR_LEN)[0]


class Netlink:
    """One NETLINK_ROUTE socket: dumps, and batches of requests with their acks."""

    def __init__(self) -> None:
        self.sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, _socket.NETLINK_ROUTE)
        self.sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, 1 << 20)
        # strict dump checking lets the kernel filter route dumps by protocol for us
        self.sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
        self.sock.bind((0, 0))
        self.seq = 0
        self.requests_sent = 0  # change requests (not dumps): the benchmark's netlink count

    def close(self) -> None:
        self.sock.close()

    @property
    def port(self) -> int:
        """The socket's netlink port id: the kernel's events for our requests carry it."""
        return int(self.sock.getsockname()[0])

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def pack(self, payload: bytes, mtype: int, flags: int) -> bytes:
        """A request of this type from its payload (header and attributes, already packed)."""
        header = _NLMSGHDR.pack(NLMSGHDR_LEN + len(payload), mtype, flags, self.next_seq(), 0)
        return header + payload

    def _answers(self, payload: bytes, mtype: int, flags: int) -> Iterator[tuple[int, bytes]]:
        """Send one request; yield (type, bytes) of each message answering it, as they come.

        Endless: the caller stops at the answer it waits for (the dump's end, the one reply).
        """
        self.sock.send(self.pack(payload, mtype, flags))
        seq = self.seq
        while True:
            for kind, rseq, data in messages(self.sock.recv(1 << 20)):
                if rseq == seq:
                    yield kind, data

    def dump(self, payload: bytes, mtype: int, parse: Callable) -> list:
        """Every object of a dump request (its packed payload), parsed (objects `parse` returns
        None for left out)."""
        out: list = []
        for kind, data in self._answers(payload, mtype, NLM_F_REQUEST | NLM_F_DUMP):
            if kind == NLMSG_DONE:
                return out
            if kind == NLMSG_ERROR:
                raise KernelError(f"netlink dump failed: {os.strerror(error_of(data))}")
            parsed = parse(data)
            if parsed is not None:
                out.append(parsed)

    def get(self, payload: bytes, mtype: int, parse: Callable) -> Any:
        """One non-dump request and its single answer; None when the object does not exist."""
        for kind, data in self._answers(payload, mtype, NLM_F_REQUEST):
            if kind == NLMSG_ERROR:
                err = error_of(data)
                if err in (errno.ENODEV, errno.ENOENT):
                    return None
                raise KernelError(f"netlink request failed: {os.strerror(err)}")
            return parse(data)

    def batch(self, requests: list[tuple[bytes, str]]) -> list[tuple[str, int]]:
        """Send (data, op) requests in as few send() calls as fit; return (op, errno) each.

        Only the last request of each send() asks for an acknowledgement: the kernel handles
        the requests of one send() in order and reports every failure anyway, so when that
        last ack arrives, every request without an error report has succeeded.  This saves one
        recv() per request (a third of the time of a large apply).
        """
        results: list[tuple[str, int]] = []
        i = 0
        while i < len(requests):
            chunk, size = [], 0
            while i < len(requests) and (not chunk or size + len(requests[i][0]) <= CHUNK):
                chunk.append(requests[i])
                size += len(requests[i][0])
                i += 1
            errs = self._send_chunk([data for data, _ in chunk])
            results += [(op, errs.get(n, 0)) for n, (_, op) in enumerate(chunk)]
        return results

    def _send_chunk(self, chunk: list[bytes]) -> dict[int, int]:
        """Send requests at once, only the last asking for an ack; {position: errno} of errors."""
        first = struct.unpack_from("=I", chunk[0], 8)[0]
        last = first + len(chunk) - 1
        data = bytearray(b"".join(chunk))
        offset = 0
        for request in chunk[:-1]:
            flags = struct.unpack_from("=H", data, offset + 6)[0]
            struct.pack_into("=H", data, offset + 6, flags & ~NLM_F_ACK)
            offset += len(request)
        self.sock.send(data)
        self.requests_sent += len(chunk)
        errs: dict[int, int] = {}
        while last - first not in errs:
            for kind, rseq, msg in messages(self.sock.recv(1 << 20)):
                if kind == NLMSG_ERROR and first <= rseq <= last:
                    errs[rseq - first] = error_of(msg)
        return errs


# ------------------------------------------------------------ event sockets

# Classic BPF (linux/filter.h), as the kernel runs it on each event before queueing it on a
# socket: loads of the message's bytes, equality jumps, and the verdict (0 drops the event).
_BPF_INSN = struct.Struct("=HBBI")  # code, jump if true, jump if false, constant
BPF_LD_W, BPF_LD_H, BPF_LD_B = 0x20, 0x28, 0x30  # load a word, half-word or byte (at k)
BPF_JEQ, BPF_RET = 0x15, 0x06
ACCEPT, DROP = 0xFFFFFFFF, 0


def host_order(value: int, size: int) -> int:
    """`value` as BPF reads a netlink header field of `size` bytes: BPF loads in network
    byte order, the netlink header is in the host's (little-endian on x86 and arm64)."""
    return int.from_bytes(value.to_bytes(size, sys.byteorder), "big")


def bpf(program: list) -> bytes:
    """Assemble a classic BPF program.  A step is (code, constant), or for a jump (BPF_JEQ,
    constant, where to if equal, where to if not), where is a label or None for the next
    step; a label is a string among the steps, naming the step after it.  (The kernel counts
    a jump in steps skipped: computed here.)"""
    at: dict = {}
    steps: list[tuple] = []
    for step in program:
        if isinstance(step, str):
            at[step] = len(steps)
        else:
            steps.append(step)
    out = []
    for n, step in enumerate(steps):
        if step[0] == BPF_JEQ:
            _, k, yes, no = step
            skip = [0 if to is None else at[to] - n - 1 for to in (yes, no)]
            out.append(_BPF_INSN.pack(BPF_JEQ, skip[0], skip[1], k))
        else:
            out.append(_BPF_INSN.pack(step[0], 0, 0, step[1]))
    return b"".join(out)


def event_socket(
    groups: Iterable[int], program: bytes = b"", rcvbuf: int = 1 << 20, force: bool = True
) -> Any:
    """A non-blocking NETLINK_ROUTE socket bound to these multicast groups (RTNLGRP_*
    numbers), with `program` (bpf()) as its filter: the kernel runs it on each event and
    queues only those it accepts.  `force`: a queue of `rcvbuf` even above
    net.core.rmem_max, where the process may (CAP_NET_ADMIN).  Raises OSError where the
    kernel refuses one of them."""
    sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, _socket.NETLINK_ROUTE)
    try:
        try:  # root may exceed net.core.rmem_max: nothing is lost on a burst of events
            option = SO_RCVBUFFORCE if force else _socket.SO_RCVBUF
            sock.setsockopt(_socket.SOL_SOCKET, option, rcvbuf)
        except OSError:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, rcvbuf)
        if program:
            from array import array  # buffer_info(): the program's address, for the kernel

            code = array("B", program)
            fprog = struct.pack("@HP", len(program) // _BPF_INSN.size, code.buffer_info()[0])
            sock.setsockopt(_socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        sock.bind((0, sum(1 << (g - 1) for g in groups)))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def drain(sock: Any) -> list[tuple[int, bytes]]:
    """Every message queued on a non-blocking socket (event_socket()), as (type, message),
    in the order the kernel sent them.  Raises OSError: ENOBUFS where the kernel had to
    drop some (the queue overflowed)."""
    queued: list[tuple[int, bytes]] = []
    while True:
        try:
            buf = sock.recv(1 << 20)
        except BlockingIOError:
            return queued
        queued += ((kind, data) for kind, _seq, data in messages(buf))

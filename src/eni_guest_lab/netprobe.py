"""Traffic helper run inside the lab's namespaces: ping, TCP echo check, held connection, server.

    python -I netprobe.py ping SRC DST COUNT TIMEOUT INTERVAL   # SRC "-": the kernel chooses
    python -I netprobe.py tcp SRC DST PORT TIMEOUT
    python -I netprobe.py hold SRC DST PORT TIMEOUT             # stdin lines out, echoes back
    python -I netprobe.py serve ADDR PORT                       # TCP echo server
    python -I netprobe.py serve-peer ADDR PORT                  # answers "PEER_IP\n", closes
    python -I netprobe.py whoami DST PORT TIMEOUT MARK UID      # unbound; MARK/UID "-": none

Run by path with nothing but the interpreter (standard library only), so it works in every
namespace, the container's included. Raw ICMP sockets instead of ping(8): iputils may be missing
(containers, minimal images) and its options and exit codes differ between implementations;
this gives exact counts, an exact timeout and the same behaviour everywhere. Exit status 0 means
the probe got an answer.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import select
import socket
import struct
import sys
import threading
import time
from typing import Optional


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ping(src: Optional[str], dst: str, count: int, timeout: float, interval: float) -> int:
    """ICMP echo requests from ``src``; prints ``N/COUNT replies``; 0 if any reply came back."""
    v6 = _family(dst) == socket.AF_INET6
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    sock = socket.socket(_family(dst), socket.SOCK_RAW, proto)
    if src:
        try:
            sock.bind((src, 0))
        except OSError as e:
            print(f"bind {src}: {e}")
            return 2
    ident = int.from_bytes(os.urandom(2), "big")
    request, reply = (128, 129) if v6 else (8, 0)
    want = ipaddress.ip_address(dst)
    got: set[int] = set()
    errors = []
    for seq in range(count):
        payload = b"eni-guest-testbed-probe"
        pkt = struct.pack("!BBHHH", request, 0, 0, ident, seq) + payload
        if not v6:
            pkt = struct.pack("!BBHHH", request, 0, _csum(pkt), ident, seq) + payload
        try:
            sock.sendto(pkt, (dst, 0))
        except OSError as e:
            errors.append(str(e))
        end = time.monotonic() + (interval if seq < count - 1 else timeout)
        while len(got) < count:
            left = end - time.monotonic()
            if left <= 0:
                break
            if not select.select([sock], [], [], left)[0]:
                break
            data, addr = sock.recvfrom(65535)
            if not v6:
                data = data[(data[0] & 0x0F) * 4 :]
            if len(data) < 8:
                continue
            typ, _code, _sum, rid, rseq = struct.unpack("!BBHHH", data[:8])
            if typ != reply or rid != ident:
                continue
            try:
                if ipaddress.ip_address(addr[0].split("%")[0]) != want:
                    continue
            except ValueError:
                continue
            got.add(rseq)
    why = f" ({'; '.join(errors)})" if errors else ""
    print(f"{len(got)}/{count} replies{why}")
    return 0 if got else 1


def _connect(src: Optional[str], dst: str, port: int, timeout: float) -> socket.socket:
    return socket.create_connection(
        (dst, port), timeout=timeout, source_address=(src, 0) if src else None
    )


def tcp(src: Optional[str], dst: str, port: int, timeout: float) -> int:
    """Connect, send one line and expect it echoed back."""
    try:
        with _connect(src, dst, port, timeout) as s:
            s.sendall(b"eni-guest-testbed\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        print(f"connect {src or '*'} -> {dst}:{port}: {e}")
        return 1
    print(f"echo {data!r}")
    return 0 if data == b"eni-guest-testbed\n" else 1


def hold(src: Optional[str], dst: str, port: int, timeout: float) -> int:
    """Keep a connection open: stdin lines go out, echoed lines come back on stdout."""
    try:
        s = _connect(src, dst, port, timeout)
    except OSError as e:
        print(f"failed: {e}", flush=True)
        return 1
    s.settimeout(None)
    print("connected", flush=True)

    def pump() -> None:
        for line in sys.stdin.buffer:
            try:
                s.sendall(line)
            except OSError:
                break
        os._exit(0)

    threading.Thread(target=pump, daemon=True).start()
    buf = b""
    while True:
        try:
            chunk = s.recv(65536)
        except OSError as e:
            print(f"closed: {e}", flush=True)
            return 1
        if not chunk:
            print("closed: eof", flush=True)
            return 1
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            sys.stdout.buffer.write(line + b"\n")
            sys.stdout.flush()


def _echo(conn: socket.socket) -> None:
    with conn:
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            conn.sendall(data)


def serve(addr: str, port: int) -> int:
    """A TCP echo server; prints ``ready`` once it listens, then serves until killed."""
    srv = socket.socket(_family(addr), socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(64)
    print("ready", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=_echo, args=(conn,), daemon=True).start()


def serve_peer(addr: str, port: int) -> int:
    """A TCP server that tells every client the source address it saw, then closes."""
    srv = socket.socket(_family(addr), socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(64)
    print("ready", flush=True)
    while True:
        conn, peer = srv.accept()
        with conn, contextlib.suppress(OSError):
            conn.sendall(f"{peer[0]}\n".encode())


def whoami(dst: str, port: int, timeout: float, mark: Optional[int], uid: Optional[int]) -> int:
    """An unbound TCP connect (with SO_MARK, as another uid): prints "LOCAL SEEN_BY_PEER"."""
    if uid is not None:
        os.setgid(uid)
        os.setuid(uid)
    try:
        with socket.socket(_family(dst), socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            if mark is not None:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
            s.connect((dst, port))
            seen = s.makefile().readline().strip()
            print(f"{s.getsockname()[0]} {seen}")
    except OSError as e:
        print(f"connect * -> {dst}:{port}: {e}")
        return 1
    return 0


def main(argv: list[str]) -> int:
    cmd = argv[0]
    src = None if argv[1] == "-" else argv[1]
    if cmd == "ping":
        return ping(src, argv[2], int(argv[3]), float(argv[4]), float(argv[5]))
    if cmd == "tcp":
        return tcp(src, argv[2], int(argv[3]), float(argv[4]))
    if cmd == "hold":
        return hold(src, argv[2], int(argv[3]), float(argv[4]))
    if cmd == "serve":
        return serve(argv[1], int(argv[2]))
    if cmd == "serve-peer":
        return serve_peer(argv[1], int(argv[2]))
    if cmd == "whoami":
        mark, uid = (None if v == "-" else int(v, 0) for v in argv[4:6])
        return whoami(argv[1], int(argv[2]), float(argv[3]), mark, uid)
    print(f"unknown command {cmd!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

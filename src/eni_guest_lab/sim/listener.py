"""The sockets of the metadata simulator: listening, keep-alive, and replies on the wire.

What to answer is decided by :class:`~.server.MetadataSimulator` (a :class:`Responder`); this
module turns its :class:`Reply` into bytes, a connection reset or a hung connection, parses
``--listen`` addresses, and keeps track of open connections so a stop can cut idle keep-alive
connections. Standard library only.
"""

from __future__ import annotations

import contextlib
import re
import socket
import socketserver
import struct
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional, Protocol

_DIGITS = re.compile(r"^[0-9]+$")
Address = tuple[str, int]


def parse_listen(text: str) -> Address:
    """Parse ``HOST:PORT`` or ``[IPV6]:PORT`` (port defaults to 80)."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"bad listen address {text!r}: expected [IPV6]:PORT")
        port_text = rest[1:] if rest else "80"
    else:
        if text.count(":") > 1:
            raise ValueError(f"bad listen address {text!r}: write IPv6 addresses as [ADDR]:PORT")
        host, colon, port_text = text.partition(":")
        if not colon:
            port_text = "80"
    if not host or not _DIGITS.match(port_text) or int(port_text) > 65535:
        raise ValueError(f"bad listen address {text!r}: expected HOST:PORT")
    return host, int(port_text)


def format_address(host: str, port: int) -> str:
    """The inverse of :func:`parse_listen`, used for the ``listening on`` readiness line."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Reply:
    """What to do with one request; the handler turns it into bytes on the wire.

    ``action`` is ``"reset"`` (abort the connection) or ``"hang"`` (hold it, then close it)
    for the faults that have no HTTP answer at all.
    """

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    action: Optional[str] = None

    @property
    def stats_key(self) -> str:
        return self.action or str(self.status)


class Responder(Protocol):
    """What a :class:`Listener` asks of the simulator behind it."""

    log_requests: bool

    def respond(self, method: str, path: str, headers: Any) -> Reply:
        """The answer to one request (``path`` without query string)."""

    def record(self, method: str, path: str, reply: Reply) -> None:
        """Count a request in the statistics (before it is answered)."""

    def hang(self) -> None:
        """Hold a connection that gets no answer (``fail: "hang"``), until stopped."""


class Listener(ThreadingHTTPServer):
    """One listening socket. Tracks open connections so :meth:`MetadataSimulator.stop` can cut
    idle keep-alive connections instead of leaving their threads blocked in ``recv``."""

    daemon_threads = True
    # The default joins every handler thread on close, including a 30 s "hang": don't.
    block_on_close = False

    def __init__(self, address: Address, family: int, sim: Responder) -> None:
        self.address_family = family
        self.sim = sim
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        # HTTPServer.server_bind would call socket.getfqdn(), a reverse DNS lookup that can
        # stall start-up for seconds in a namespace without DNS.
        socketserver.TCPServer.server_bind(self)
        # Non-blocking accept: a client that connects and resets before serve_forever's
        # accept() (a client's deadline cutting its connection) otherwise leaves accept()
        # blocked for good, and shutdown() waiting for it.
        self.socket.setblocking(False)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client going away mid-answer (the agent capping an oversize body) is expected.
        if isinstance(sys.exc_info()[1], (ConnectionError, socket.timeout)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the agent reuses one session per run
    server_version = "EC2ws"
    timeout = 60  # drop idle keep-alive connections eventually
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's
    # delayed ACK and every request costs ~40 ms.
    disable_nagle_algorithm = True
    server: Listener

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.sim.log_requests:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_OPTIONS(self) -> None:
        self._serve("OPTIONS")

    def _drain_body(self) -> None:
        # Unread request bodies would be parsed as the next request on a kept-alive connection.
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            return
        length = self.headers.get("Content-Length", "0").strip() or "0"
        if not _DIGITS.match(length) or int(length) > 1024 * 1024:
            self.close_connection = True
            return
        if int(length):
            self.rfile.read(int(length))

    def _serve(self, method: str) -> None:
        sim = self.server.sim
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        self._drain_body()
        reply = sim.respond(method, path, self.headers)
        # Counted before answering, so a client that reads the stats right after its own
        # request always sees it.
        sim.record(method, path, reply)
        try:
            if reply.action == "reset":
                self.log_message('"%s" reset', self.requestline)
                self._reset()
            elif reply.action == "hang":
                self.log_message('"%s" hang', self.requestline)
                self.close_connection = True
                sim.hang()
            else:
                self._write(method, reply)
        except (ConnectionError, socket.timeout):
            self.close_connection = True

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout turns close() into a TCP RST: a "connection reset".
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    def _write(self, method: str, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        if method != "HEAD" and reply.body:
            self.wfile.write(reply.body)

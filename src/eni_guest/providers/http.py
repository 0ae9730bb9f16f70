"""A careful HTTP client for instance metadata services, on a plain socket.

Metadata services are rate limited per ENI and sometimes slow or absent at boot, and what they
return decides which addresses get removed.  So: one TCP connection per run (kept alive), a
timeout on every request, a few retries with backoff but an overall deadline, no redirects
(a redirect would mean something other than the metadata service is answering), and a cap on
the body size.  A 404 is an answer ("no such key"), not an error: callers decide what it means.

The deadline covers the whole exchange, not only the wait between attempts: a service that
drips its status line, its headers or its body one byte a second cannot keep a run (and the run
lock) alive past `metadata_deadline`.  On a plain connection every read is one system call,
bounded by what is left of the deadline, and the deadline is checked between reads: that is
enough.  A TLS read is not one system call (a record may come in many pieces), so for an
`https` metadata_url a watchdog (one thread per client, asleep until the deadline) shuts
down every connection the client still has open when the deadline passes: whatever the run
was waiting for then fails at once.  A plain read starts no thread and imports no
`threading` (~1 ms of every run).  Whatever goes wrong inside a response (a
stall, a body cut short, an encoding that was not asked for, something that is not HTTP) is
the service being unavailable: the request is retried under the deadline, and at worst the
run ends with exit 3, changing nothing.

HTTP/1.1 as a metadata service speaks it: GET and PUT without a body, Content-Length,
chunked or until-close bodies, keep-alive.  Not `requests` (~110 ms of imports, urllib3,
charset_normalizer, certifi and idna included) nor `http.client` (the email package's header
parser, ~25 ms): a metadata answer needs neither (README, Dependencies).
"""

from __future__ import annotations

import _socket  # socket.py's C core; socket.py's enums and selectors cost ~3 ms a start
import time
from urllib.parse import urlsplit

from ..errors import MetadataUnavailable
from ..record import record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

MAX_BODY = 256 * 1024  # metadata leaves are tiny; anything bigger is not a metadata service
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_HEAD = 64 * 1024  # status line and headers
READ = 64 * 1024  # bytes asked of one recv()


@record
class Response:
    status: int
    text: str
    url: str


class NotFound(MetadataUnavailable):
    """The service answered 404: the key does not exist (for now).

    A provider asking for an optional key catches it; one that escapes the read (a key the
    read cannot do without, such as `mac`) is the service not publishing what the run needs:
    "metadata unavailable" (exit 3), never a traceback.
    """


class _BadBody(Exception):
    """Something went wrong inside a response body: retried like a timeout."""


class HttpClient:
    """One metadata service conversation with the safety rules above; counts requests."""

    def __init__(self, timeout: float, deadline: float, retries: int) -> None:
        self.timeout = timeout
        self.deadline_at = time.monotonic() + deadline
        self.watchdog = _Watchdog(self.deadline_at)
        self.retries = retries
        self.requests_sent = 0
        self._conns: dict[tuple[str, str, int], _Connection] = {}

    def close(self) -> None:
        self.watchdog.stop()
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    def time_left(self) -> float:
        """Seconds left of the whole read (<= 0 once it passed): the DHCP probe's budget."""
        return self.deadline_at - time.monotonic()

    def _remaining(self, url: str) -> float:
        left = self.deadline_at - time.monotonic()
        if left <= 0:
            raise MetadataUnavailable(f"metadata service: deadline exceeded before {url}")
        return left

    def request(
        self,
        method: str,
        url: str,
        headers: Optional[dict[str, str]] = None,
        retry_on: Callable[[int], bool] = RETRY_STATUSES.__contains__,
    ) -> Response:
        """One logical request: retried on timeouts, resets and 5xx, never past the deadline."""
        delay = 0.1
        last = ""
        for attempt in range(self.retries + 1):
            self._remaining(url)
            try:
                self.requests_sent += 1
                status, body = self._exchange(method, url, headers or {})
            except _BadBody as e:
                last = str(e)
            except _TooBig:
                raise MetadataUnavailable(
                    f"metadata service: {url} answered more than {MAX_BODY} bytes"
                ) from None
            except OSError as e:
                last = "the deadline passed" if self.watchdog.fired else _describe(e)
            else:
                if 300 <= status < 400:
                    raise MetadataUnavailable(
                        f"metadata service: {url} answered a redirect ({status}), not followed"
                    )
                if not retry_on(status):
                    return Response(status, body.decode("utf-8", "replace"), url)
                last = f"HTTP {status}"
            if attempt == self.retries:
                break
            pause = min(delay, max(0.0, self.deadline_at - time.monotonic() - 0.05))
            time.sleep(pause)
            delay *= 2
        raise MetadataUnavailable(
            f"metadata service: {method} {url} failed after {self.retries + 1} tries: {last}"
        )

    def _exchange(self, method: str, url: str, headers: dict[str, str]) -> tuple[int, bytes]:
        """Send one request and read its whole answer: (status, body)."""
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        key = (scheme, host, port)
        netloc = f"[{host}]" if ":" in host else host
        if parts.port:
            netloc += f":{parts.port}"
        lines = [f"{method} {parts.path or '/'} HTTP/1.1", f"Host: {netloc}"]
        lines += ["User-Agent: eni-guest", "Accept-Encoding: identity"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if method in ("PUT", "POST"):
            lines.append("Content-Length: 0")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        conn = self._conns.get(key)
        if conn is not None:
            try:  # a kept-alive connection the service may have closed meanwhile
                return self._answer(conn, data, method)
            except _Stale:
                self._drop(key)
        conn = self._connect(key)
        try:
            return self._answer(conn, data, method)
        except _Stale:
            self._drop(key)
            raise _BadBody("the service closed the connection without an answer") from None
        except BaseException:
            self._drop(key)
            raise

    def _answer(self, conn: _Connection, data: bytes, method: str) -> tuple[int, bytes]:
        try:
            conn.sock.sendall(data)
            status, fields, keep = conn.read_head(self)
            body = conn.read_body(self, status, fields, method)
        except BaseException:
            conn.close()
            raise
        if not keep:
            conn.close()
        return status, body

    def _connect(self, key: tuple[str, str, int]) -> _Connection:
        scheme, host, port = key
        timeout = min(self.timeout, self._left())
        # A str host makes getaddrinfo load the idna codec (~3 ms); an address needs none.
        name: Any = host.encode("ascii") if host.isascii() else host
        sock = _open(name, port, timeout)
        if scheme == "https":
            import socket  # only for an https metadata_url: ssl wraps a socket.socket
            import ssl

            plain = socket.socket(fileno=sock.detach())
            sock = ssl.create_default_context().wrap_socket(plain, server_hostname=host)
        conn = _Connection(sock)
        self._conns[key] = conn
        if scheme == "https":  # a plain read is bounded by its own timeout (see above)
            self.watchdog.watch(conn)
        return conn

    def _drop(self, key: tuple[str, str, int]) -> None:
        conn = self._conns.pop(key, None)
        if conn is not None:
            conn.close()

    def _left(self) -> float:
        """Seconds left for the next read; _BadBody once the deadline passed."""
        left = self.deadline_at - time.monotonic()
        if left <= 0 or self.watchdog.fired:
            raise _BadBody("the metadata deadline passed while the answer was being read")
        return left


class _TooBig(Exception):
    """The answer is longer than MAX_BODY: not a metadata service."""


class _Stale(Exception):
    """A kept-alive connection ended before the first byte of an answer: send again."""


class _Connection:
    """One TCP (or TLS) connection and the bytes received on it but not yet used."""

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:  # noqa: SIM105 (contextlib.suppress: an import of ~0.4 ms for this)
                self.sock.close()
            except OSError:
                pass

    def _recv(self, client: HttpClient) -> bytes:
        """One recv(), bounded by the request timeout and what is left of the deadline."""
        self.sock.settimeout(min(client.timeout, client._left()))
        chunk = self.sock.recv(READ)
        if not chunk and client.watchdog.fired:
            raise _BadBody("the metadata deadline passed while the answer was being read")
        return chunk

    def read_head(self, client: HttpClient) -> tuple[int, dict[str, str], bool]:
        """(status, lower-cased header fields, whether the connection stays open)."""
        first = True
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > MAX_HEAD:
                raise _BadBody(f"the response head is longer than {MAX_HEAD} bytes")
            try:
                chunk = self._recv(client)
            except (ConnectionResetError, BrokenPipeError):
                if first and not self.buf:
                    raise _Stale() from None
                raise
            if not chunk:
                if first and not self.buf:
                    raise _Stale()
                raise _BadBody("the connection closed inside the response head")
            first = False
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        words = lines[0].split(None, 2)
        if (
            len(words) < 2
            or not words[0].startswith("HTTP/1.")
            or not (words[1].isascii() and words[1].isdigit())
        ):
            raise _BadBody(f"not an HTTP response: {lines[0][:60]!r}")
        fields: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise _BadBody(f"a malformed header line: {line[:60]!r}")
            name = name.lower()
            if name in fields and name == "content-length" and fields[name] != value.strip():
                raise _BadBody("two different Content-Length headers")
            fields[name] = value.strip()
        connection = fields.get("connection", "").lower()
        keep = words[0] != "HTTP/1.0" and "close" not in connection
        return int(words[1]), fields, keep

    def read_body(
        self, client: HttpClient, status: int, fields: dict[str, str], method: str
    ) -> bytes:
        encoding = fields.get("content-encoding", "identity").lower()
        if encoding not in ("", "identity"):
            raise _BadBody(f"the body came with Content-Encoding {encoding[:40]!r}, not asked for")
        if method == "HEAD" or status < 200 or status in (204, 304):
            return b""
        if "chunked" in fields.get("transfer-encoding", "").lower():
            return self._chunked(client)
        length = fields.get("content-length")
        if length is None:
            return self._until_close(client)
        if not (length.isascii() and length.isdigit()):
            raise _BadBody(f"a Content-Length that is not a number: {length[:20]!r}")
        if int(length) > MAX_BODY:
            raise _TooBig()
        return self._exactly(client, int(length))

    def _exactly(self, client: HttpClient, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self._recv(client)
            if not chunk:
                raise _BadBody(f"the body was cut short ({n - len(self.buf)} bytes missing)")
            self.buf += chunk
        body, self.buf = self.buf[:n], self.buf[n:]
        return body

    def _until_close(self, client: HttpClient) -> bytes:
        body = bytearray(self.buf)
        self.buf = b""
        while len(body) <= MAX_BODY:
            chunk = self._recv(client)
            if not chunk:
                self.close()
                return bytes(body)
            body += chunk
        raise _TooBig()

    def _line(self, client: HttpClient) -> bytes:
        while b"\r\n" not in self.buf:
            if len(self.buf) > 1024:
                raise _BadBody("a chunk size line longer than 1024 bytes")
            chunk = self._recv(client)
            if not chunk:
                raise _BadBody("the body was cut short (inside a chunk size)")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _chunked(self, client: HttpClient) -> bytes:
        body = bytearray()
        while True:
            size_text = self._line(client).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _BadBody(
                    f"a chunk size that is not hexadecimal: {size_text[:20]!r}"
                ) from None
            if size < 0 or len(body) + size > MAX_BODY:
                raise _TooBig()
            if size == 0:
                while self._line(client):  # trailer fields, up to the empty line
                    pass
                return bytes(body)
            body += self._exactly(client, size)
            if self._exactly(client, 2) != b"\r\n":
                raise _BadBody("a chunk not followed by CRLF")


class _Watchdog:
    """Shuts down every TLS connection of one client when its deadline passes (see above).
    Its lock, set and thread are made with the first connection it watches."""

    def __init__(self, deadline_at: float) -> None:
        self.deadline_at = deadline_at
        self.fired = False
        self._connections: Any = None  # a weakref.WeakSet, from the first watch()
        self._lock: Any = None
        self._stopped: Any = None
        self._thread: Any = None

    def watch(self, connection: Any) -> None:
        """A connection just made: shut down with the others at the deadline (now, if past)."""
        import threading
        import weakref

        if self._lock is None:
            self._lock, self._stopped = threading.Lock(), threading.Event()
            self._connections = weakref.WeakSet()
        with self._lock:
            if not self.fired:
                self._connections.add(connection)
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="eni-guest-metadata-deadline", daemon=True
                    )
                    self._thread.start()
                return
        _shut(connection)

    def stop(self) -> None:
        """The client is closed: the thread ends at once (joined, so none outlives it)."""
        thread = self._thread
        if thread is None:
            return
        import threading

        self._stopped.set()
        if thread is not threading.current_thread():
            thread.join(timeout=1.0)

    def _run(self) -> None:
        if self._stopped.wait(max(0.0, self.deadline_at - time.monotonic())):
            return  # the client was closed first
        with self._lock:
            self.fired = True
            connections = list(self._connections)
        for connection in connections:
            _shut(connection)


def _shut(connection: Any) -> None:
    """Shut the connection's socket down under whoever is blocked reading it."""
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    # The plain socket's own shutdown, also for a TLS socket (whose shutdown would unwrap it
    # under the reading thread's feet): the peer's bytes stop, the blocked read returns.
    try:  # noqa: SIM105 (as in _Connection.close)
        _socket.socket.shutdown(sock, _socket.SHUT_RDWR)
    except (OSError, TypeError, ValueError):  # already closed
        pass


def _open(host: Any, port: int, timeout: float) -> _socket.socket:
    """socket.create_connection on the C socket: each address getaddrinfo gives, in order, until
    one connects within `timeout`; the last failure if none does."""
    failure: Optional[OSError] = None
    for family, kind, proto, _name, address in _socket.getaddrinfo(
        host, port, 0, _socket.SOCK_STREAM
    ):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
            return sock
        except OSError as e:
            sock.close()
            failure = e
    raise failure or OSError(f"no address for {host!r}")


def _describe(e: OSError) -> str:
    if isinstance(e, _socket.timeout):
        return "timed out"
    if isinstance(e, (ConnectionError, _socket.gaierror)) or e.errno is not None:
        return f"connection failed ({e.strerror or type(e).__name__})"
    return f"{type(e).__name__}: {e}"

"""A careful HTTP client for instance metadata services.

Metadata services are rate limited per ENI and sometimes slow or absent at boot, and what they
return decides which addresses get removed.  So: one session (one TCP connection) per run, a
timeout on every request, a few retries with backoff but an overall deadline, no redirects
(a redirect would mean something other than the metadata service is answering), and a cap on
the body size.  A 404 is an answer ("no such key"), not an error: callers decide what it means.

The deadline covers the whole exchange, not only the wait between attempts: a service that
drips its status line, its headers or its body one byte a second cannot keep a run (and the run
lock) alive past `metadata_deadline`.  Two things see to it.  The body is read one system call
at a time, each bounded by what is left of the deadline.  And a watchdog (one thread per client,
asleep until the deadline) shuts down every connection the client still has open when the
deadline passes: whatever the run was waiting for then (the status line, a header, a TLS
record) fails at once, where a timeout per socket read would wait for ever on a byte a second.
Whatever goes wrong inside a body (a stall, a body cut short, an encoding that was not asked
for) is the service being unavailable: the request is retried under the deadline, and at worst
the run ends with exit 3, changing nothing.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..errors import MetadataUnavailable

MAX_BODY = 256 * 1024  # metadata leaves are tiny; anything bigger is not a metadata service
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass
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
    """requests.Session with the safety rules above; counts requests for the benchmark."""

    def __init__(self, timeout: float, deadline: float, retries: int) -> None:
        import requests  # deferred: `eni-guest --version` must not pay for it

        self._requests = requests
        self.session = requests.Session()
        self.session.trust_env = False  # never send metadata requests through an HTTP proxy
        self.session.headers.clear()
        self.session.headers["User-Agent"] = "eni-guest"
        self.timeout = timeout
        self.deadline_at = time.monotonic() + deadline
        self.watchdog = _Watchdog(self.deadline_at)
        adapter = _watched_adapter(self.watchdog)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.retries = retries
        self.requests_sent = 0

    def close(self) -> None:
        self.watchdog.stop()
        self.session.close()

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
        requests = self._requests
        delay = 0.1
        last = ""
        for attempt in range(self.retries + 1):
            timeout = min(self.timeout, self._remaining(url))
            try:
                self.requests_sent += 1
                with self.session.request(
                    method,
                    url,
                    headers=headers,
                    timeout=timeout,
                    allow_redirects=False,
                    stream=True,
                ) as r:
                    status = r.status_code
                    body = self._body(r)
            except requests.RequestException as e:
                last = "the deadline passed" if self.watchdog.fired else _describe(e)
            except _BadBody as e:
                last = str(e)
            else:
                if len(body) > MAX_BODY:
                    raise MetadataUnavailable(
                        f"metadata service: {url} answered more than {MAX_BODY} bytes"
                    )
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

    def _body(self, r: Any) -> bytes:
        """The whole body, read one system call at a time under the deadline (see above)."""
        encoding = r.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):  # we never ask for one (no Accept-Encoding)
            raise _BadBody(f"the body came with Content-Encoding {encoding[:40]!r}, not asked for")
        fp = r.raw._fp  # http.client.HTTPResponse: read1 returns after one recv
        sock = _socket_of(fp)
        body = bytearray()
        try:
            while len(body) <= MAX_BODY:
                left = self.deadline_at - time.monotonic()
                if left <= 0:
                    raise _BadBody("the metadata deadline passed while the body was being read")
                if sock is not None:
                    sock.settimeout(min(self.timeout, left))
                chunk = fp.read1(64 * 1024)
                if not chunk:
                    if self.watchdog.fired:  # the end came from the watchdog, not the service
                        raise _BadBody("the metadata deadline passed while the body was being read")
                    if fp.length:  # Content-Length said more was coming
                        raise _BadBody(f"the body was cut short ({fp.length} bytes missing)")
                    # let urllib3 see the end of the body, so the connection is kept alive
                    r.raw.read()
                    return bytes(body)
                body += chunk
        except (OSError, http.client.HTTPException) as e:
            what = "timed out" if isinstance(e, socket.timeout) else type(e).__name__
            raise _BadBody(f"reading the body failed: {what}") from None
        return bytes(body)  # over MAX_BODY: refused by the caller


class _Watchdog:
    """Shuts down every connection of one client when its deadline passes (see above)."""

    def __init__(self, deadline_at: float) -> None:
        self.deadline_at = deadline_at
        self.fired = False
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def watch(self, connection: Any) -> None:
        """A connection just made: shut down with the others at the deadline (now, if past)."""
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
        self._stopped.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
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
    # socket.socket's own shutdown, also for a TLS socket (whose shutdown would unwrap it
    # under the reading thread's feet): the peer's bytes stop, the blocked read returns.
    with contextlib.suppress(OSError, TypeError, ValueError):  # already closed
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _watched_adapter(watchdog: _Watchdog) -> Any:
    """A requests adapter whose connections `watchdog` shuts down at the deadline."""
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class Watched(HTTPConnection):
        def connect(self) -> None:
            super().connect()
            watchdog.watch(self)

    class WatchedTLS(HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            watchdog.watch(self)

    class Pool(HTTPConnectionPool):
        ConnectionCls = Watched

    class PoolTLS(HTTPSConnectionPool):
        ConnectionCls = WatchedTLS

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": Pool, "https": PoolTLS}

    return Adapter()


def _socket_of(fp: Any) -> Optional[socket.socket]:
    """The socket under an http.client response, to bound each read by the deadline."""
    raw = getattr(getattr(fp, "fp", None), "raw", None)
    sock = getattr(raw, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _describe(e: Exception) -> str:
    name = type(e).__name__
    if "Timeout" in name:
        return "timed out"
    if "ConnectionError" in name:
        return "connection failed"
    return f"{name}: {e}"

"""The metadata HTTP client against services that misbehave inside a response.

A real socket server on loopback plays each fault: a body that drips one byte at a time, a
status line and headers that drip one byte at a time (each byte well inside the per-read
timeout), a body cut short, a body that claims gzip and is not.  Each must end as "metadata
unavailable" (exit 3) within the deadline, never as a traceback, and a healthy service keeps
one connection for the whole run.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Callable, Iterator

import pytest

from eni_guest.errors import MetadataUnavailable
from eni_guest.providers.http import HttpClient

Serve = Callable[[socket.socket], None]


class RawServer:
    """Accepts connections on 127.0.0.1 and lets `serve` answer each one; counts them.

    `close` stops the accept thread and every serving thread before the listening socket is
    closed.  Closing the socket alone leaves a thread blocked in accept(2): Linux does not wake
    it, and once its file descriptor number is reused by a later test's socket (the metadata
    simulator's), that stray thread can accept a connection meant for the later test and serve
    it a dripping body.
    """

    def __init__(self, serve: Serve) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self.serve = serve
        self.stopping = False
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._loop, daemon=True)]
        self.threads[0].start()

    def _loop(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                if self.stopping:
                    conn.close()
                    return
                self.connections += 1
                self._open.add(conn)
                thread = threading.Thread(target=self._one, args=(conn,), daemon=True)
                self.threads.append(thread)
            thread.start()

    def _one(self, conn: socket.socket) -> None:
        try:
            self.serve(conn)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(conn)
            conn.close()

    def close(self) -> None:
        with self._lock:
            self.stopping = True
            connections = list(self._open)
        # shutdown() wakes a thread blocked in accept() or recv() (close() does not)
        for sock in [self.sock, *connections]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self.threads:
            thread.join(timeout=5)
        self.sock.close()
        assert not any(t.is_alive() for t in self.threads), "a RawServer thread outlived close"


def requests_of(conn: socket.socket) -> Iterator[bytes]:
    """Each request head on a keep-alive connection."""
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            data = conn.recv(4096)
            if not data:
                return
            buf += data
        head, buf = buf.split(b"\r\n\r\n", 1)
        yield head


def drip(conn: socket.socket) -> None:
    for _ in requests_of(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(1000):
            conn.sendall(b"x")
            time.sleep(0.2)


def drip_head(conn: socket.socket) -> None:
    """The status line, then header after header, one byte every 0.3 s: never a whole head.
    (For 20 s at most, so that a client without a deadline fails the test, not hangs it.)"""
    for _ in requests_of(conn):
        head = b"HTTP/1.1 200 OK\r\n" + b"X-Slow: a\r\n" * 1000
        stop = time.monotonic() + 20
        for byte in head:
            if time.monotonic() > stop:
                return
            conn.sendall(bytes([byte]))
            time.sleep(0.3)


def cut_short(conn: socket.socket) -> None:
    for _ in requests_of(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0e:00:00:00:00:01")
        return  # and close


def fake_gzip(conn: socket.socket) -> None:
    for _ in requests_of(conn):
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!"
        )


def healthy(conn: socket.socket) -> None:
    for _ in requests_of(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n0e:00:00:00:00:01")


@pytest.fixture
def server() -> Iterator[Callable[[Serve], RawServer]]:
    made: list[RawServer] = []

    def make(serve: Serve) -> RawServer:
        made.append(RawServer(serve))
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.fixture
def tls(server, tmp_path, monkeypatch):
    """A healthy service over TLS for `localhost`, with a self-signed certificate which
    SSL_CERT_FILE makes the client trust: its https URL."""
    import ssl

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def tls_healthy(conn: socket.socket) -> None:
        with context.wrap_socket(conn, server_side=True) as wrapped:
            healthy(wrapped)

    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    return server(tls_healthy).url.replace("http://127.0.0.1", "https://localhost")


def test_a_dripping_body_cannot_outlast_the_deadline(server) -> None:
    s = server(drip)
    http = HttpClient(timeout=1.0, deadline=2.0, retries=3)
    start = time.monotonic()
    with pytest.raises(MetadataUnavailable, match="deadline"):
        http.request("GET", s.url + "/latest/meta-data/mac")
    assert time.monotonic() - start < 2.5  # not 1000 bytes x 0.2 s


def test_a_dripping_head_cannot_outlast_the_deadline(server) -> None:
    s = server(drip_head)
    http = HttpClient(timeout=1.0, deadline=2.0, retries=3)
    start = time.monotonic()
    with pytest.raises(MetadataUnavailable, match="deadline"):
        http.request("GET", s.url + "/latest/meta-data/mac")
    assert time.monotonic() - start < 2.5  # each byte came within the 1 s read timeout
    http.close()


def test_a_plain_read_starts_no_thread(server) -> None:
    """Plain HTTP is bounded by each read's own timeout: no watchdog thread is started."""
    s = server(healthy)
    http = HttpClient(timeout=1.0, deadline=5.0, retries=0)
    assert http.request("GET", s.url + "/latest/meta-data/mac").text == "0e:00:00:00:00:01"
    names = [t.name for t in threading.enumerate()]
    assert "eni-guest-metadata-deadline" not in names and http.watchdog._thread is None
    http.close()


def test_the_deadline_watchdog_leaves_a_closed_client_alone(tls) -> None:
    """A TLS read that finished early stops its watchdog: nothing is shut down afterwards."""
    url = tls
    http = HttpClient(timeout=1.0, deadline=0.5, retries=0)
    assert http.request("GET", url + "/latest/meta-data/mac").text == "0e:00:00:00:00:01"
    assert http.watchdog._thread is not None  # it watched the TLS connection
    http.close()
    time.sleep(0.7)
    assert not http.watchdog.fired
    assert not http.watchdog._thread.is_alive()


@pytest.mark.parametrize(
    "serve,words",
    [(cut_short, "cut short"), (fake_gzip, "Content-Encoding 'gzip'")],
    ids=["cut short", "claims gzip"],
)
def test_a_broken_body_is_retried_then_unavailable(server, serve, words: str) -> None:
    s = server(serve)
    http = HttpClient(timeout=1.0, deadline=5.0, retries=2)
    with pytest.raises(MetadataUnavailable, match=words) as e:
        http.request("GET", s.url + "/latest/meta-data/mac")
    assert "failed after 3 tries" in str(e.value)
    assert http.requests_sent == 3


def test_a_healthy_service_keeps_one_connection(server) -> None:
    s = server(healthy)
    http = HttpClient(timeout=1.0, deadline=5.0, retries=0)
    for _ in range(5):
        assert http.request("GET", s.url + "/latest/meta-data/mac").text == "0e:00:00:00:00:01"
    assert s.connections == 1


def test_a_closed_server_leaves_no_thread_behind() -> None:
    # A thread left blocked in accept() once served a later test's connection (to the
    # metadata simulator) with a dripping body: that test then hit its metadata deadline.
    before = set(threading.enumerate())
    s = RawServer(healthy)
    http = HttpClient(timeout=1.0, deadline=5.0, retries=0)
    assert http.request("GET", s.url + "/latest/meta-data/mac").status == 200
    s.close()
    http.close()
    assert [t for t in threading.enumerate() if t not in before and t.is_alive()] == []


@pytest.mark.parametrize("serve", [drip, drip_head], ids=["body", "status line and headers"])
def test_a_dripping_service_is_exit_3_in_one_line_within_the_deadline(server, serve) -> None:
    s = server(serve)
    env = {
        **os.environ,
        "ENI_GUEST_METADATA_DEADLINE": "3",
        "ENI_GUEST_METADATA_TIMEOUT": "1",
    }
    start = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "eni_guest", "show", "--provider", "aws", "--metadata-url", s.url],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert r.returncode == 3, r.stderr
    assert time.monotonic() - start < 6
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert "deadline" in r.stderr


def test_a_required_key_answering_404_is_exit_3_not_a_traceback() -> None:
    """Found by tests/unit/test_fuzz.py: Tencent's `mac` answering 404 escaped the read as the
    providers' internal "no such key" signal, and the run ended in a traceback (exit 1)."""
    from cloud_http import CloudServer

    with CloudServer({}) as s:  # every path answers 404
        r = subprocess.run(
            [sys.executable, "-m", "eni_guest", "show", "--provider", "tencent"]
            + ["--metadata-url", s.url],
            capture_output=True,
            text=True,
            env={**os.environ, "ENI_GUEST_METADATA_RETRIES": "0"},
            timeout=30,
        )
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"eni-guest: metadata service: {s.url}/latest/meta-data/mac answered 404 (not published)"
    ]


def test_a_host_name_is_resolved_and_connected(server) -> None:
    """Tencent's default endpoint is a name (metadata.tencentyun.com): getaddrinfo's answers
    are tried in order; `localhost` stands in for it here."""
    s = server(healthy)
    http = HttpClient(timeout=1.0, deadline=5.0, retries=0)
    url = s.url.replace("127.0.0.1", "localhost")
    assert http.request("GET", url + "/latest/meta-data/mac").text == "0e:00:00:00:00:01"
    http.close()


def test_a_refused_connection_is_unavailable_not_a_traceback() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    http = HttpClient(timeout=1.0, deadline=2.0, retries=1)
    with pytest.raises(MetadataUnavailable, match="connection failed"):
        http.request("GET", f"http://127.0.0.1:{port}/latest/meta-data/mac")


def test_an_https_metadata_url_is_read_over_tls(tls, monkeypatch) -> None:
    """An https metadata_url: the plain connection is wrapped in TLS, the certificate checked
    against the system's trust store (here: SSL_CERT_FILE naming a self-signed one)."""
    url = tls
    http = HttpClient(timeout=2.0, deadline=5.0, retries=0)
    assert http.request("GET", url + "/latest/meta-data/mac").text == "0e:00:00:00:00:01"
    http.close()
    monkeypatch.delenv("SSL_CERT_FILE")
    untrusted = HttpClient(timeout=2.0, deadline=5.0, retries=0)
    with pytest.raises(MetadataUnavailable):
        untrusted.request("GET", url + "/latest/meta-data/mac")

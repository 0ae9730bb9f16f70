"""Request counters of the metadata simulator, for tests and benchmarks.

Two ways to read them from outside the simulator's process:

* ``<stats file>.sock``, a Unix socket beside the ``--stats`` file: connect and read the
  counters as JSON, exact at that moment (a request is counted before it is answered, so a
  client that got its answer is counted).  A path socket is reachable from any network
  namespace, so a test on the host reads a simulator running in the VPC's.  `read` uses it.
* the ``--stats`` file itself (JSON, written then renamed, so a reader never sees a
  half-written file): written at start, on a reset and at stop at once, and otherwise at
  most every FLUSH_EVERY seconds while requests come in.  Rewriting it after every request,
  as before, cost the simulator ~1 ms a request: a benchmark's 78 requests paid ~0.1 s of
  test bed.  Where the socket cannot be made (a path too long for a Unix socket), the file
  is rewritten after every request as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from typing import Any, Optional

FLUSH_EVERY = 0.05  # seconds between two writes of the file while requests come in


class Stats:
    """Request counters, served on a Unix socket and mirrored to a JSON file."""

    def __init__(self, path: Optional[str]) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._dirty = threading.Condition(self._lock)
        self._warned = False
        self._stopping = False
        self._server: Optional[socket.socket] = None
        self._clear()

    def _clear(self) -> None:
        self._requests = 0
        self._by_method: dict[str, int] = {}
        self._by_path: dict[str, int] = {}
        self._by_status: dict[str, int] = {}
        self._unwritten = False

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self._snapshot_locked()

    def _snapshot_locked(self) -> dict[str, Any]:
        return {
            "requests": self._requests,
            "by_method": dict(self._by_method),
            "by_path": dict(self._by_path),
            "by_status": dict(self._by_status),
        }

    def record(self, method: str, path: str, status: str) -> None:
        with self._lock:
            self._requests += 1
            self._by_method[method] = self._by_method.get(method, 0) + 1
            self._by_path[path] = self._by_path.get(path, 0) + 1
            self._by_status[status] = self._by_status.get(status, 0) + 1
            if self._server is None:
                self._write_locked()  # no socket: the file is the only exact reading
            elif not self._unwritten:
                self._unwritten = True
                self._dirty.notify()

    def reset(self) -> None:
        with self._lock:
            self._clear()
            self._write_locked()

    def write(self) -> None:
        with self._lock:
            self._write_locked()

    # -- serving -------------------------------------------------------------------------

    def start(self) -> None:
        """Write the file, serve the socket and start the file's writer (with a path)."""
        self.write()  # a benchmark may read the file before the first request
        if not self.path:
            return
        sock_path = self.path + ".sock"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if os.path.exists(sock_path):
                os.unlink(sock_path)
            server.bind(sock_path)
            server.listen(16)
        except OSError:  # e.g. a path too long for a Unix socket: the file after each request
            server.close()
            return
        self._server = server
        for target, name in ((self._serve, "socket"), (self._flush, "file")):
            threading.Thread(target=target, name=f"eni-guest-sim stats {name}", daemon=True).start()

    def stop(self) -> None:
        """Stop serving; the file is written one last time."""
        with self._lock:
            self._stopping = True
            server, self._server = self._server, None
            self._dirty.notify()
            self._write_locked()
        if server is not None:
            with contextlib.suppress(OSError):
                os.unlink(server.getsockname())
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)
            server.close()

    def _serve(self) -> None:
        server = self._server
        while server is not None:
            try:
                conn, _ = server.accept()
            except OSError:
                return  # stopped
            with conn, contextlib.suppress(OSError):
                conn.sendall(json.dumps(self.snapshot(), sort_keys=True).encode())

    def _flush(self) -> None:
        while True:
            with self._lock:
                while not self._unwritten and not self._stopping:
                    self._dirty.wait()
                if self._stopping:
                    return  # stop() writes the file
            time.sleep(FLUSH_EVERY)  # coalesce a burst of requests into one write
            with self._lock:
                if self._unwritten and not self._stopping:
                    self._write_locked()

    def _write_locked(self) -> None:
        self._unwritten = False
        if not self.path:
            return
        # Write-then-rename so a reader never sees a half-written file.
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump(self._snapshot_locked(), handle, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                print(f"eni-guest-sim: cannot write stats file: {exc}", file=sys.stderr)


def read(path: str) -> dict[str, Any]:
    """The counters of the simulator whose ``--stats`` file is `path`: exact from its socket
    while it runs, else the file's last contents ({} before it wrote any)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2.0)
            s.connect(path + ".sock")
            chunks = []
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return dict(json.loads(b"".join(chunks)))
    except (OSError, ValueError):
        pass
    try:
        with open(path, encoding="utf-8") as handle:
            return dict(json.load(handle))
    except (OSError, ValueError):
        return {}

"""Request counters of the metadata simulator, mirrored to a JSON file for tests and benchmarks.

The ``--stats`` file is rewritten (write, then rename) after every request, so a reader never
sees a half-written file and a test that made N requests can wait for ``requests >= N``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any, Optional


class Stats:
    """Request counters, mirrored to a JSON file after every request for benchmarks."""

    def __init__(self, path: Optional[str]) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._warned = False
        self._clear()

    def _clear(self) -> None:
        self._requests = 0
        self._by_method: dict[str, int] = {}
        self._by_path: dict[str, int] = {}
        self._by_status: dict[str, int] = {}

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
            self._write_locked()

    def reset(self) -> None:
        with self._lock:
            self._clear()
            self._write_locked()

    def write(self) -> None:
        with self._lock:
            self._write_locked()

    def _write_locked(self) -> None:
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

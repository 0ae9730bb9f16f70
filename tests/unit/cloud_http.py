"""A tiny metadata service for provider tests: fixed answers over real HTTP on 127.0.0.1.

`CloudServer(routes)` serves `routes[path] = (status, body)` (404 for anything else), records
every request, and can play a token service (Alibaba's hardened mode, AWS's IMDSv2) with
`TokenRule`.  Real HTTP rather than a mocked session: the providers' HttpClient (timeouts,
no redirects, body cap, one session) is part of what is tested.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

Routes = dict[str, tuple[int, str]]


@dataclass
class TokenRule:
    """Token behaviour: mode "required" (GETs without a valid token: 401), "optional",
    "unsupported" (the token PUT answers `put_status`, e.g. 404 or 405) or "disabled" (403)."""

    ttl_header: str
    token_header: str
    mode: str = "required"
    put_path: str = "/latest/api/token"
    put_status: int = 404
    valid: set[str] = field(default_factory=set)

    def revoke_all(self) -> None:
        self.valid.clear()


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


class CloudServer:
    def __init__(self, routes: Optional[Routes] = None, token: Optional[TokenRule] = None):
        self.routes: Routes = dict(routes or {})
        self.token = token
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._answer(*server.answer("GET", self.path, dict(self.headers)))

            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                self._answer(*server.answer("PUT", self.path, dict(self.headers)))

            def _answer(self, status: int, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> CloudServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def paths(self, method: str = "GET") -> list[str]:
        return [r.path for r in self.requests if r.method == method]

    def answer(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
        with self._lock:
            self.requests.append(Request(method, path, headers))
        rule = self.token
        if rule is not None:
            lower = {k.lower(): v for k, v in headers.items()}
            if method == "PUT" and path == rule.put_path:
                if rule.mode == "disabled":
                    return 403, "Forbidden"
                if rule.mode == "unsupported":
                    return rule.put_status, "no such thing"
                if rule.ttl_header.lower() not in lower:
                    return 400, "Missing or Invalid Parameters"
                token = secrets.token_urlsafe(24)
                rule.valid.add(token)
                return 200, token
            if rule.mode == "disabled":
                return 403, "Forbidden"
            sent = lower.get(rule.token_header.lower())
            if sent is not None and rule.mode != "unsupported" and sent not in rule.valid:
                return 401, "Unauthorized"
            if sent is None and rule.mode == "required":
                return 401, "Unauthorized"
        if method != "GET":
            return 405, "Method Not Allowed"
        return self.routes.get(path, (404, "Not Found"))

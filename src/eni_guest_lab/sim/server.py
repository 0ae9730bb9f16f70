"""The metadata service itself: what to answer, tokens, fault injection, live reload.

The simulator has to behave like the real instance metadata services in the ways the agent
depends on (AWS's IMDSv2 and Alibaba's hardened-mode tokens, each cloud with its own headers,
401 on expired tokens, 404 for absent keys, keep-alive; formats: render.py), and to
misbehave on demand (slow, failing, resetting, hanging, redirecting, oversized answers) so the
agent's defences can be tested. Every knob lives in the scenario file and is re-read whenever
the file changes, so a test changes the "cloud" just by rewriting one file. The sockets are
listener.py's, the request counters stats.py's.

Standard library only: it runs inside network namespaces of freshly built test images and is
shipped to users, so it must start fast and have nothing to install.
"""

from __future__ import annotations

import fnmatch
import os
import re
import secrets
import socket
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Callable, Optional, Protocol, Union

from eni_guest.providers import registry
from eni_guest.providers.common import TokenRules

from .listener import Address, Listener, Reply, format_address, parse_listen
from .render import render
from .scenario import METADATA_ADDRESSES, Control, Scenario, load_scenario
from .stats import Stats
from .tree import TOKEN_PATH, Tree, body_for, is_lagging, update_first_seen

DEFAULT_LISTEN = "169.254.169.254:80"
MAX_TTL = 21600

#: Clouds with session tokens on ``PUT /latest/api/token``, by the simulator's format name:
#: the agent's own rules (providers/registry.py), so simulator and agent cannot drift apart.
#: The token call needs ``ttl_header``, GETs send ``token_header``; each cloud knows only its
#: own headers, the other cloud's are ignored.  The others have no token call.
TOKEN_RULES: dict[str, TokenRules] = {
    c.sim_format: c.tokens for c in registry.CLOUDS if c.sim_format and c.tokens
}
TOKEN_HEADER = TOKEN_RULES["aws"].token_header
TTL_HEADER = TOKEN_RULES["aws"].ttl_header


def default_listen(provider: str) -> list[str]:
    """Where a provider's service answers when ``--listen`` is not given. AWS keeps the one
    IPv4 address it always had (its IPv6 address needs an interface that carries it)."""
    if provider == "aws":
        return [DEFAULT_LISTEN]
    return [f"{host}:80" for host in METADATA_ADDRESSES.get(provider, ())]


#: Where ``redirect_paths`` point: a port nothing listens on, so following it fails loudly.
REDIRECT_TARGET = "http://127.0.0.1:1/"
#: Size of an ``oversize_paths`` answer; far above any sane metadata value.
OVERSIZE_BYTES = 10 * 1024 * 1024
#: How long ``fail: "hang"`` holds a connection before closing it without an answer.
HANG_SECONDS = 30.0

_DIGITS = re.compile(r"^[0-9]+$")


class _Headers(Protocol):
    """What :meth:`MetadataSimulator.respond` needs from request headers (case-insensitive)."""

    def get(self, name: str, default: Any = None) -> Any: ...


def _matches(path: str, globs: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, glob) for glob in globs)


def _error_body(status: int) -> bytes:
    # Mimics the XHTML error page the real service sends; clients must not parse it.
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    title = f"{status} - {phrase}"
    return (
        '<?xml version="1.0" encoding="iso-8859-1"?>\n'
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"\n'
        '\t"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n'
        '<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">\n'
        f" <head>\n  <title>{title}</title>\n </head>\n"
        f" <body>\n  <h1>{title}</h1>\n </body>\n</html>\n"
    ).encode()


def _error(status: int, *headers: tuple[str, str]) -> Reply:
    # 204/304 must not carry a body; everything else gets the HTML-ish page.
    body = b"" if status in (204, 304) else _error_body(status)
    return Reply(status, body, tuple(headers))


class TokenStore:
    """IMDSv2 session tokens with their issue time and TTL.

    Issue times use the wall clock because ``expire_tokens_before`` in the scenario is a unix
    time written by tests.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[float, int]] = {}

    def issue(self, ttl: int) -> str:
        now = self._clock()
        token = secrets.token_urlsafe(42)  # 56 characters, like the real ones
        with self._lock:
            if len(self._tokens) > 1000:
                self._tokens = {
                    key: (issued, life)
                    for key, (issued, life) in self._tokens.items()
                    if issued + life > now
                }
            self._tokens[token] = (now, ttl)
        return token

    def check(self, token: str, not_before: float = 0.0) -> bool:
        """Valid when known, not past its TTL, and issued at or after ``not_before``."""
        with self._lock:
            entry = self._tokens.get(token)
        if entry is None:
            return False
        issued, ttl = entry
        return issued >= not_before and self._clock() < issued + ttl


@dataclass(frozen=True)
class _State:
    """One loaded scenario; replaced as a whole on reload so handlers never see a mix."""

    scenario: Scenario
    first_seen: dict[str, float]
    signature: Optional[tuple[int, ...]]


class MetadataSimulator:
    """An in-process instance metadata service driven by a scenario file.

    ``listen`` takes ``"HOST:PORT"`` strings or ``(host, port)`` tuples; port 0 picks a free
    port (see the return value of :meth:`start`); ``None`` means the scenario's cloud's own
    address (:func:`default_listen`). All sockets share one state: a token issued on one
    address is valid on the others. Not restartable after :meth:`stop`.
    """

    def __init__(
        self,
        scenario_path: Union[str, os.PathLike[str]],
        listen: Optional[Sequence[Union[str, Address]]] = (DEFAULT_LISTEN,),
        stats_path: Union[None, str, os.PathLike[str]] = None,
        *,
        log_requests: bool = False,
    ) -> None:
        self.scenario_path = os.fspath(scenario_path)
        self.log_requests = log_requests
        self._stats = Stats(os.fspath(stats_path) if stats_path is not None else None)
        self._tokens = TokenStore()
        self._stopping = threading.Event()
        self._reload_lock = threading.Lock()
        self._failed_signature: Optional[tuple[int, ...]] = None
        self._servers: list[Listener] = []
        self._threads: list[threading.Thread] = []
        signature = self._signature()
        scenario = _servable(load_scenario(self.scenario_path))  # the caller reports errors
        if listen is None:
            listen = default_listen(scenario.provider)
        self.listen = [
            parse_listen(item) if isinstance(item, str) else (item[0], int(item[1]))
            for item in listen
        ]
        first_seen = update_first_seen({}, (eni.mac for eni in scenario.enis), time.monotonic())
        self._state = _State(scenario, first_seen, signature)
        self._rendered: Optional[tuple[_State, tuple[bool, ...], Tree]] = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> list[Address]:
        """Bind every address and serve in background threads; return the bound addresses."""
        if self._servers:
            raise RuntimeError("simulator already started")
        try:
            for host, port in self.listen:
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                self._servers.append(Listener((host, port), family, self))
        except OSError:
            for server in self._servers:
                server.server_close()
            self._servers = []
            raise
        self._stats.start()  # the file at once (a benchmark may read it before any request)
        for server in self._servers:
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.1},
                name=f"eni-guest-sim {format_address(*self._bound(server))}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        return self.addresses

    def stop(self) -> None:
        """Stop serving, close every socket and wake delayed or hanging handlers."""
        self._stopping.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
            server.close_connections()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers = []
        self._threads = []
        self._stats.stop()

    def __enter__(self) -> MetadataSimulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @staticmethod
    def _bound(server: Listener) -> Address:
        host, port = server.server_address[:2]
        return str(host), int(port)

    @property
    def addresses(self) -> list[Address]:
        """The bound ``(host, port)`` of every listening socket, in ``listen`` order."""
        return [self._bound(server) for server in self._servers]

    # -- state ---------------------------------------------------------------------------

    @property
    def scenario(self) -> Scenario:
        return self._state.scenario

    def stats(self) -> dict[str, Any]:
        """A copy of the request counters (same shape as the ``--stats`` file)."""
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        self._stats.reset()

    def record(self, method: str, path: str, reply: Reply) -> None:
        """Count one request (the listener calls this before it answers)."""
        self._stats.record(method, path, reply.stats_key)

    def hang(self) -> None:
        """Hold a ``fail: "hang"`` connection for HANG_SECONDS, or until :meth:`stop`."""
        self._stopping.wait(HANG_SECONDS)

    def _signature(self) -> Optional[tuple[int, ...]]:
        # Inode + times + size: os.replace() always changes the inode, and an in-place rewrite
        # changes ctime, so same-size edits within one mtime tick are still noticed.
        try:
            st = os.stat(self.scenario_path)
        except OSError:
            return None
        return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def reload(self) -> bool:
        """Re-read the scenario file now (SIGHUP). On error keep the old one; return False."""
        with self._reload_lock:
            return self._load(self._signature(), force=True)

    def _current_state(self) -> _State:
        signature = self._signature()
        state = self._state
        if signature is not None and signature not in (state.signature, self._failed_signature):
            with self._reload_lock:
                if signature != self._state.signature:
                    self._load(signature, force=False)
        return self._state

    def _load(self, signature: Optional[tuple[int, ...]], force: bool) -> bool:
        try:
            scenario = _servable(load_scenario(self.scenario_path))
        except (OSError, ValueError) as exc:
            # Complain once per broken version of the file, not once per request.
            if force or signature != self._failed_signature:
                message = " ".join(str(exc).split())
                print(f"eni-guest-sim: keeping the previous scenario: {message}", file=sys.stderr)
            self._failed_signature = signature
            return False
        old = self._state
        first_seen = update_first_seen(
            old.first_seen, (eni.mac for eni in scenario.enis), time.monotonic()
        )
        if scenario.control.reset_stats != old.scenario.control.reset_stats:
            self._stats.reset()
        self._state = _State(scenario, first_seen, signature)
        self._failed_signature = None
        if self.log_requests:
            print(f"eni-guest-sim: reloaded {self.scenario_path}", file=sys.stderr)
        return True

    # -- requests ------------------------------------------------------------------------

    def respond(self, method: str, path: str, headers: _Headers) -> Reply:
        """Decide the answer to one request (``path`` without query string).

        Order matters and mirrors what a test expects to control: delay first, then injected
        faults (which hit every matching request, the token call included), then the service
        being switched off, then the token call, then IMDSv2 enforcement, then the lookup.
        """
        state = self._current_state()
        control = state.scenario.control
        if control.delay > 0:
            self._stopping.wait(control.delay)
        fault = self._fault(control, path)
        if fault is not None:
            return fault
        if control.disabled:
            return _error(403)
        key = path.strip("/")
        rules = TOKEN_RULES.get(state.scenario.provider)  # None: a cloud without tokens
        if rules is not None and key == TOKEN_PATH:
            if method != "PUT":
                return _error(405, ("Allow", "PUT"))
            return self._token_call(headers, rules)
        if method not in ("GET", "HEAD"):
            return _error(405, ("Allow", "GET, HEAD"))
        if rules is not None:
            token = headers.get(rules.token_header)
            if token is not None:
                # Even when tokens are optional, a token that is sent must be valid.
                if not self._tokens.check(token, control.expire_tokens_before):
                    return _error(401)
            elif control.imdsv2 == "required":
                return _error(401)
        body = body_for(self._tree(state), path)
        if body is None:
            return _error(404)
        return Reply(200, body.encode("utf-8"))

    def _tree(self, state: _State) -> Tree:
        """The rendered tree of ``state`` now, rendered again only when the scenario changed
        or an ENI's lag ran out: rendering 15 ENIs x 50 IPs took ~3 ms, every request."""
        now = time.monotonic()
        lagging = tuple(is_lagging(eni, now, state.first_seen) for eni in state.scenario.enis)
        cached = self._rendered
        if cached is not None and cached[0] is state and cached[1] == lagging:
            return cached[2]
        tree = render(state.scenario, now, state.first_seen)
        self._rendered = (state, lagging, tree)
        return tree

    @staticmethod
    def _fault(control: Control, path: str) -> Optional[Reply]:
        if control.fail is not None and (
            not control.fail_paths or _matches(path, control.fail_paths)
        ):
            if isinstance(control.fail, str):
                return Reply(0, action=control.fail)
            return _error(control.fail)
        if _matches(path, control.redirect_paths):
            return Reply(301, b"Moved Permanently", (("Location", REDIRECT_TARGET),))
        if _matches(path, control.oversize_paths):
            return Reply(200, b"x" * OVERSIZE_BYTES)
        return None

    def _token_call(self, headers: _Headers, rules: TokenRules) -> Reply:
        # The real services refuse token calls that went through a proxy.
        if headers.get("X-Forwarded-For") is not None:
            return _error(403)
        # Only this cloud's TTL header counts: the other cloud's is a missing parameter (400).
        ttl_text = str(headers.get(rules.ttl_header) or "").strip()
        if not _DIGITS.match(ttl_text) or not 1 <= int(ttl_text) <= MAX_TTL:
            return _error(400)
        ttl = int(ttl_text)
        token = self._tokens.issue(ttl)
        return Reply(200, token.encode("ascii"), ((rules.ttl_header, str(ttl)),))


def _servable(scenario: Scenario) -> Scenario:
    """A scenario the server can answer for; "static" has no service (it is a local file)."""
    render(scenario)  # raises ValueError for "static", naming render_static
    return scenario

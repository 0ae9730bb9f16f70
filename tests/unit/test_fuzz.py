"""Property-based fuzzing: whatever metadata, static file or configuration says, no traceback.

Every provider's parser, the static ENI file and the configuration loader are fed random and
mutated documents (bodies replaced, cut short, case-changed, turned into other JSON, status
codes from 200 to 599), and each must end in an answer or in one of eni-guest's own errors
(`EniGuestError`: exit 2, 3, ...), never in any other exception.  A document that survives is
taken all the way: scope, validation, the plan against a kernel holding the ENIs' NICs, and
`show`'s text and JSON.

The providers read through their real code (MetadataService: tokens, status codes, 404 as
"no such key"; the provider's parsing; validation): only the transport under it is an
in-memory tree here, so thousands of documents fit in seconds.  The transport itself (the
HTTP client) is fuzzed separately, with random responses over real sockets on 127.0.0.1.

Fixed seed (`derandomize=True`, no example database) and a budget: a few thousand examples,
well under a minute on a 2-core machine.
"""

from __future__ import annotations

import json
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Optional
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eni_guest.agent import Result, read_from
from eni_guest.config import Config, load
from eni_guest.errors import EniGuestError, MetadataUnavailable
from eni_guest.model import build_instance
from eni_guest.plan import plan
from eni_guest.providers import _make
from eni_guest.providers.http import RETRY_STATUSES, HttpClient, Response
from eni_guest.providers.static import StaticProvider
from eni_guest.scope import decide
from eni_guest.show import render_json, render_text
from eni_guest.state import KernelState, Link
from eni_guest_lab import scenarios
from eni_guest_lab.sim.render import render, render_static
from eni_guest_lab.sim.scenario import parse_scenario
from eni_guest_lab.sim.tree import body_for

ROOT = "http://192.0.2.1"  # never contacted: FakeTransport answers for it
MACS = [e["mac"] for e in scenarios.three_eni()["enis"]]
LINKS = (
    Link(1, "lo", "00:00:00:00:00:00", 0, True, 65536),
    *(Link(2 + i, f"eth{i}", mac, 0, i == 0, 1500) for i, mac in enumerate(MACS)),
)
STATE = KernelState(links=LINKS)


def fuzz_settings(examples: int) -> Any:
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# ---------------------------------------------------------------- what documents are made of

INTERESTING = [
    "",
    " ",
    "\n",
    "[",
    "[]",
    '["',
    '[""]',
    "[1, 2]",
    '["10.0.1.20",',
    "{}",
    "null",
    "true",
    '"',
    '""',
    '"0e:00:00:00:00:b2"',
    "0e:00:00:00:00:b2",
    "0E:00:00:00:00:B2",
    "0e:00:00:00:00",
    "10.0.1.300",
    "10.0.1.0",
    "10.0.1.255",
    "10.0.1.1",
    "0.0.0.0",
    "255.255.255.255",
    "255.0.255.0",
    "255.255.255.0",
    "/24",
    "33",
    "-1",
    "0",
    "99999999999999999999999",
    "1e400",
    "NaN",
    "10.0.1.0/24",
    "10.0.0.0/8",
    "10.0.1.20/33",
    "::",
    "fe80::1",
    "2001:db8:1::/64",
    "2001:db8:1::10",
    "2001:db8:1::/129",
    "ffff:ffff:ffff:ffff::",
    "eni-0000000000000000a",
    "\x00",
    "\ufeff10.0.1.20",
    "é",
    "1,2,3",
    "a\nb\n",
    "x" * 300,
]
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.sampled_from(INTERESTING),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
TEXT = st.one_of(
    st.sampled_from(INTERESTING),
    st.text(max_size=40),
    st.ip_addresses().map(str),
    st.binary(max_size=30).map(lambda b: b.decode("latin-1")),
    JSON.map(lambda v: json.dumps(v, allow_nan=True)),
)
STATUS = st.sampled_from([200, 201, 204, 301, 302, 400, 401, 403, 404, 405, 429, 500, 503, 599])
MUTATION = st.one_of(
    st.tuples(st.just("status"), STATUS),
    st.tuples(st.just("body"), TEXT),
    st.tuples(st.just("append"), TEXT),
    st.tuples(st.just("truncate"), st.integers(0, 120)),
    st.tuples(st.just("case"), st.sampled_from(["upper", "lower", "swapcase"])),
    st.tuples(st.just("lines"), st.sampled_from(["reverse", "double", "first", "blank"])),
    st.tuples(st.just("json"), st.tuples(st.integers(0, 60), JSON)),
)


def _json_replace(text: str, index: int, value: Any) -> str:
    """`text` as JSON with its index-th node (depth first) replaced by `value`; as it was when
    it is not JSON."""
    try:
        doc = json.loads(text)
    except ValueError:
        return text
    nodes: list[tuple[Any, Any]] = [(None, None)]  # (container, key) of each node; the root

    def walk(node: Any) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in list(items):
            nodes.append((node, key))
            if isinstance(child, (dict, list)):
                walk(child)

    if isinstance(doc, (dict, list)):
        walk(doc)
    container, key = nodes[index % len(nodes)]
    if container is None:
        return json.dumps(value)
    container[key] = value
    return json.dumps(doc)


def mutate(text: str, how: str, arg: Any) -> str:
    if how == "body":
        return arg
    if how == "append":
        return text + arg
    if how == "truncate":
        return text[: arg % (len(text) + 1)]
    if how == "case":
        return getattr(text, arg)()
    if how == "lines":
        lines = text.splitlines()
        return {
            "reverse": "\n".join(reversed(lines)),
            "double": "\n".join(line for line in lines for _ in (0, 1)),
            "first": lines[0] if lines else "",
            "blank": "\n\n".join(lines) + "\n\n",
        }[arg]
    return _json_replace(text, *arg)  # "json"


# ---------------------------------------------------------------- the HTTP providers


class FakeTransport:
    """Stands in for HttpClient under the provider's MetadataService: the same answers and
    errors HttpClient gives (3xx and retried statuses are "unavailable", 404 and the rest are
    answers), from an in-memory tree."""

    def __init__(self, routes: dict[str, tuple[int, str]]) -> None:
        self.routes = routes
        self.requests_sent = 0

    def request(
        self,
        method: str,
        url: str,
        headers: Optional[dict[str, str]] = None,
        retry_on: Callable[[int], bool] = RETRY_STATUSES.__contains__,
    ) -> Response:
        self.requests_sent += 1
        status, body = self.routes.get(urlsplit(url).path, (404, "not found"))
        if 300 <= status < 400:
            raise MetadataUnavailable(f"metadata service: {url} answered a redirect ({status})")
        if retry_on(status):
            raise MetadataUnavailable(f"metadata service: {method} {url} failed: HTTP {status}")
        return Response(status, body, url)

    def close(self) -> None:
        pass


def routes_of(provider: str) -> dict[str, tuple[int, str]]:
    tree = render(parse_scenario(scenarios.three_eni(provider)))
    routes: dict[str, tuple[int, str]] = {"/latest/api/token": (200, "a-token")}
    for key in tree:
        body = body_for(tree, key)
        assert body is not None
        routes["/" + key] = routes["/" + key + "/"] = (200, body)  # directories: both
    return routes


HTTP_PROVIDERS = ("aws", "alibaba", "tencent", "jdcloud", "openstack")
ROUTES = {p: routes_of(p) for p in HTTP_PROVIDERS}
DHCP_ANSWER = st.one_of(
    st.just(None),  # no answer
    st.tuples(TEXT, TEXT),
    st.tuples(st.sampled_from(["10.0.1.0/24", "10.0.2.0/24", "10.0.0.0/8"]), TEXT),
)


def survives(instance_of: Callable[[], Any], config: Config, state: KernelState = STATE) -> None:
    """The whole way for a document that reads: plan and `show`.  Only our own errors."""
    try:
        instance = instance_of()
        p = plan(instance, config, state)
        result = Result(instance, p, state)
        render_text(result)
        json.loads(render_json(result))
    except EniGuestError as e:
        assert str(e).strip(), "an error without a message"


def read_http(name: str, routes: dict[str, tuple[int, str]], dhcp: Any, ups: list[bool]) -> None:
    config = Config(provider=name, metadata_url=ROOT, static_file="/nonexistent/enis.toml")
    provider: Any = _make(name, config)
    provider.service.http = FakeTransport(routes)
    if name == "jdcloud":

        def probe(link: Link) -> tuple[str, str]:
            if dhcp is None:
                raise MetadataUnavailable(f"dhcp: no answer on {link.name}")
            return dhcp

        provider.dhcp_probe = probe
    links = tuple(
        Link(x.index, x.name, x.mac, x.group, up, x.mtu) for x, up in zip(LINKS, [True, *ups])
    )
    try:
        survives(lambda: read_from(provider, config, lambda: links), config, KernelState(links))
    finally:
        provider.close()


@pytest.mark.parametrize("name", HTTP_PROVIDERS)
@fuzz_settings(examples=300)
@given(data=st.data())
def test_no_metadata_document_makes_a_traceback(name: str, data: st.DataObject) -> None:
    routes = dict(ROUTES[name])
    paths = sorted(routes)
    for path, (how, arg) in data.draw(
        st.lists(st.tuples(st.sampled_from(paths), MUTATION), max_size=6)
    ):
        status, body = routes[path]
        routes[path] = (arg, body) if how == "status" else (status, mutate(body, how, arg))
    dhcp = data.draw(DHCP_ANSWER) if name == "jdcloud" else None
    ups = data.draw(st.lists(st.booleans(), min_size=3, max_size=3))
    read_http(name, routes, dhcp, ups)


@pytest.mark.parametrize("name", HTTP_PROVIDERS)
@fuzz_settings(examples=40)
@given(bodies=st.dictionaries(st.integers(0, 80), st.tuples(STATUS, TEXT), max_size=20))
def test_no_random_tree_makes_a_traceback(name: str, bodies: dict[int, tuple[int, str]]) -> None:
    """Not a mutated document: every path answering at random."""
    routes = dict(ROUTES[name])
    paths = sorted(routes)
    for index, answer in bodies.items():
        routes[paths[index % len(paths)]] = answer
    read_http(name, routes, ("10.0.1.0/24", "10.0.1.1"), [True, True, True])


# ---------------------------------------------------------------- files


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="eni-guest-fuzz-") as d:
        yield Path(d)


STATIC_TEXT = render_static(parse_scenario(scenarios.three_eni("static")))
LINE_MUTATION = st.one_of(
    MUTATION,
    st.tuples(st.just("value"), st.tuples(st.integers(0, 40), TEXT)),
    st.tuples(st.just("toml"), st.tuples(st.integers(0, 40), JSON)),
    st.tuples(st.just("drop"), st.integers(0, 40)),
)


def mutate_toml(text: str, how: str, arg: Any) -> str:
    """Line-wise for TOML: a value replaced by a string or by any JSON (often valid TOML too),
    a line dropped; else as `mutate`."""
    lines = text.splitlines()
    if how == "status":
        return text  # a file has none
    if how in ("value", "toml", "drop"):
        index = (arg if how == "drop" else arg[0]) % max(1, len(lines))
        if not lines:
            return text
        if how == "drop":
            del lines[index]
        elif "=" in lines[index]:
            key = lines[index].split("=", 1)[0]
            value = json.dumps(arg[1]) if how == "value" else json.dumps(arg[1], allow_nan=True)
            lines[index] = f"{key}= {value}"
        return "\n".join(lines) + "\n"
    return mutate(text, how, arg)


@fuzz_settings(examples=400)
@given(edits=st.lists(LINE_MUTATION, max_size=5), raw=st.none() | st.binary(max_size=80))
def test_no_static_file_makes_a_traceback(workdir: Path, edits: list, raw: Optional[bytes]) -> None:
    text = STATIC_TEXT
    for how, arg in edits:
        text = mutate_toml(text, how, arg)
    path = workdir / "enis.toml"
    path.write_bytes(raw if raw is not None else text.encode("utf-8", "surrogatepass"))
    config = Config(provider="static", static_file=str(path))
    provider = StaticProvider(config)
    survives(lambda: read_from(provider, config, lambda: LINKS), config)


CONFIG_TEXT = """\
provider = "aws"
metadata_url = "http://169.254.169.254"
metadata_timeout = 2.0
metadata_deadline = 15.0
metadata_retries = 3
table_base = 10000
priority_base = 10000
interface_group = 229
protocol = 229
ipv6 = true
mtu = 9001
exclude_enis = ["eni-0000000000000000c"]
exclude_interfaces = ["eth9"]
exclude_ips = ["10.0.1.99/32"]
lock_file = "/run/eni-guest.lock"
lock_timeout = 30
watch_interval = 60

[[eni]]
mac = "0e:00:00:00:00:b2"
ipv4s = ["10.0.1.22"]
ipv4_subnet = "10.0.1.0/24"
ipv4_gateway = "10.0.1.1"
"""
ENV_KEYS = [
    "ENI_GUEST_PROVIDER",
    "ENI_GUEST_METADATA_URL",
    "ENI_GUEST_METADATA_TIMEOUT",
    "ENI_GUEST_METADATA_DEADLINE",
    "ENI_GUEST_TABLE_BASE",
    "ENI_GUEST_IPV6",
    "ENI_GUEST_EXCLUDE_IPS",
    "ENI_GUEST_MTU",
    "ENI_GUEST_NO_SUCH_KEY",
]


def static_raw() -> Any:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "enis.toml"
        path.write_text(STATIC_TEXT)
        return StaticProvider(Config(static_file=str(path))).read()


RAW = static_raw()


@fuzz_settings(examples=400)
@given(
    edits=st.lists(LINE_MUTATION, max_size=5),
    raw=st.none() | st.binary(max_size=80),
    env=st.dictionaries(st.sampled_from(ENV_KEYS), TEXT.filter(lambda t: "\x00" not in t)),
)
def test_no_configuration_makes_a_traceback(
    workdir: Path, edits: list, raw: Optional[bytes], env: dict[str, str]
) -> None:
    """The loader refuses with ConfigError or gives a Config; a Config it gives is then used
    (its [[eni]] tables and exclusions on the static file's ENIs, the plan, show)."""
    text = CONFIG_TEXT
    for how, arg in edits:
        text = mutate_toml(text, how, arg)
    path = workdir / "eni-guest.toml"
    path.write_bytes(raw if raw is not None else text.encode("utf-8", "surrogatepass"))
    try:
        config = load(config_file=path, environ=env)
    except EniGuestError as e:
        assert e.exit_code == 2 and "\n" not in str(e)
        return
    survives(lambda: build_instance(RAW, config, decide(RAW, config, LINKS)), config)


# ---------------------------------------------------------------- the HTTP client itself


class RawReplies:
    """A loopback server that answers each connection with the next reply's bytes, then
    closes it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/latest/meta-data/mac"
        self.reply = b""
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.settimeout(2)
                    conn.recv(65536)
                    conn.sendall(self.reply)
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass


@pytest.fixture(scope="module")
def replies() -> Iterator[RawReplies]:
    server = RawReplies()
    yield server
    server.sock.close()


STATUS_LINE = st.one_of(
    st.sampled_from(
        [
            b"HTTP/1.1 200 OK",
            b"HTTP/1.1 404 Not Found",
            b"HTTP/1.0 500 Oops",
            b"HTTP/1.1 301 Moved",
            b"HTTP/1.1 999 What",
            b"HTTP/1.1 abc",
            b"HTTP/2 200",
            b"ICY 200 OK",
            b"",
        ]
    ),
    st.binary(max_size=20),
)
HEADER = st.one_of(
    st.sampled_from(
        [
            b"Content-Length: 5",
            b"Content-Length: 0",
            b"Content-Length: 999999",
            b"Content-Length: -1",
            b"Content-Length: x",
            b"Content-Length: 3\r\nContent-Length: 4",
            b"Transfer-Encoding: chunked",
            b"Content-Encoding: gzip",
            b"Content-Encoding: identity",
            b"Content-Type: text/plain; charset=utf-16",
            b"Location: http://evil.example/",
            b"Connection: close",
            b"X-Folded: a\r\n b",
        ]
    ),
    st.binary(max_size=30),
)
BODY = st.one_of(
    st.sampled_from(
        [b"", b"0e:00:00:00:00:c3", b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\nx", b"\xff\xfe"]
    ),
    st.binary(max_size=200),
)


@fuzz_settings(examples=120)
@given(status=STATUS_LINE, headers=st.lists(HEADER, max_size=4), body=BODY)
def test_no_http_answer_makes_a_traceback(
    replies: RawReplies, status: bytes, headers: list[bytes], body: bytes
) -> None:
    replies.reply = b"\r\n".join([status, *headers]) + b"\r\n\r\n" + body
    http = HttpClient(timeout=0.5, deadline=2.0, retries=0)
    try:
        r = http.request("GET", replies.url)
        assert isinstance(r.status, int) and isinstance(r.text, str)
    except MetadataUnavailable as e:
        assert str(e).strip() and "\n" not in str(e)
    finally:
        http.close()

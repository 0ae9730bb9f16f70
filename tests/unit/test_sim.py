"""Tests of the metadata simulator (``eni_guest_lab.sim``), in-process and as a subprocess.

Everything listens on 127.0.0.1 port 0 only; no root and no interface changes needed.
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import requests

import eni_guest_lab
from eni_guest_lab.sim.__main__ import resolve_scenario
from eni_guest_lab.sim.listener import parse_listen
from eni_guest_lab.sim.render import render
from eni_guest_lab.sim.scenario import load_scenario, parse_scenario
from eni_guest_lab.sim.server import (
    OVERSIZE_BYTES,
    REDIRECT_TARGET,
    MetadataSimulator,
    TokenStore,
)
from eni_guest_lab.sim.tree import MACS_DIR, body_for, update_first_seen

MAC1 = "0e:00:00:00:00:01"  # primary, device 0
MAC2 = "0e:00:00:00:00:02"  # device 1, same subnet, nothing optional
MAC3 = "0e:00:00:00:00:03"  # device 2, IPv6-only, on network card 1
TIMEOUT = 5

BASE: dict[str, Any] = {
    "provider": "aws",
    "primary_mac": MAC1,
    "instance_id": "i-0000000000000001",
    # File order differs from both MAC order and device-number order.
    "enis": [
        {
            "mac": MAC3,
            "interface-id": "eni-0003",
            "device-number": 2,
            "network-card": 1,
            "ipv6s": ["2001:db8:3::30"],
            "subnet-ipv6-cidr-blocks": ["2001:db8:3::/64"],
            "vpc-id": "vpc-1",
            "subnet-id": "subnet-3",
        },
        {
            "mac": MAC1,
            "interface-id": "eni-0001",
            "device-number": 0,
            "local-ipv4s": ["10.0.1.10", "10.0.1.11"],
            "subnet-ipv4-cidr-block": "10.0.1.0/24",
            "ipv6s": ["2001:db8:1::10"],
            "subnet-ipv6-cidr-blocks": ["2001:db8:1::/64"],
            "ipv4-prefix": ["10.0.1.48/28"],
            "ipv6-prefix": [],
            "ipv4-associations": {"203.0.113.5": "10.0.1.11"},
            "vpc-id": "vpc-1",
            "subnet-id": "subnet-1",
        },
        {
            "mac": MAC2,
            "interface-id": "eni-0002",
            "device-number": 1,
            "local-ipv4s": ["10.0.1.20"],
            "subnet-ipv4-cidr-block": "10.0.1.0/24",
            "vpc-id": "vpc-1",
            "subnet-id": "subnet-1",
        },
    ],
    "control": {"imdsv2": "required"},
}


def eni_path(mac: str, key: str = "") -> str:
    return f"/{MACS_DIR}/{mac}/{key}"


def make_scenario(**control: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["control"].update(control)
    return data


def write_json(path: Path, data: Any) -> None:
    """Atomic rewrite, as the e2e tests do it."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def wait_for(predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def read_stats(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


class Env:
    """A running in-process simulator plus a client session."""

    def __init__(self, tmp_path: Path, data: dict[str, Any], listen: str = "127.0.0.1:0"):
        self.path = tmp_path / "scenario.json"
        self.stats_path = tmp_path / "stats.json"
        write_json(self.path, data)
        self.sim = MetadataSimulator(self.path, listen=[listen], stats_path=self.stats_path)
        ((host, port),) = self.sim.start()
        self.base = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
        self.session = requests.Session()

    def close(self) -> None:
        self.session.close()
        self.sim.stop()

    def rewrite(self, data: dict[str, Any]) -> None:
        write_json(self.path, data)

    def token(self, ttl: Optional[str] = "60", **headers: str) -> requests.Response:
        if ttl is not None:
            headers["X-aws-ec2-metadata-token-ttl-seconds"] = ttl
        return self.session.put(f"{self.base}/latest/api/token", headers=headers, timeout=TIMEOUT)

    def get(self, path: str, token: Optional[str] = None, **kwargs: Any) -> requests.Response:
        headers = {"X-aws-ec2-metadata-token": token} if token is not None else {}
        kwargs.setdefault("timeout", TIMEOUT)
        return self.session.get(f"{self.base}{path}", headers=headers, **kwargs)

    def read(self, path: str) -> requests.Response:
        """GET with a fresh token."""
        return self.get(path, self.token().text)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    environment = Env(tmp_path, make_scenario())
    yield environment
    environment.close()


# ---------------------------------------------------------------------------------------------
# Tokens


def test_token_required_and_response_headers(env: Env) -> None:
    assert env.get("/latest/meta-data/mac").status_code == 401
    reply = env.token("60")
    assert reply.status_code == 200
    assert reply.headers["X-aws-ec2-metadata-token-ttl-seconds"] == "60"
    token = reply.text
    assert len(token) >= 40
    answer = env.get("/latest/meta-data/mac", token)
    assert answer.status_code == 200
    assert answer.text == MAC1
    assert answer.headers["Server"] == "EC2ws"
    assert answer.headers["Content-Type"] == "text/plain"
    assert answer.headers["Content-Length"] == str(len(answer.content))
    assert env.get("/latest/meta-data/mac", "not-a-token").status_code == 401


def test_token_optional_still_rejects_invalid_token(env: Env) -> None:
    env.rewrite(make_scenario(imdsv2="optional"))
    assert env.get("/latest/meta-data/mac").text == MAC1
    assert env.get("/latest/meta-data/mac", "bogus").status_code == 401


@pytest.mark.parametrize(
    ("ttl", "status"),
    [
        ("0", 400),
        ("21601", 400),
        (None, 400),
        ("abc", 400),
        ("-5", 400),
        ("1", 200),
        ("21600", 200),
    ],
)
def test_token_ttl_validation(env: Env, ttl: Optional[str], status: int) -> None:
    assert env.token(ttl).status_code == status


def test_token_call_through_proxy_refused(env: Env) -> None:
    assert env.token("60", **{"X-Forwarded-For": "192.0.2.1"}).status_code == 403


def test_disabled_service_refuses_everything(env: Env) -> None:
    token = env.token().text
    env.rewrite(make_scenario(disabled=True, imdsv2="optional"))
    assert env.token().status_code == 403
    assert env.get("/latest/meta-data/mac", token).status_code == 403
    assert env.get("/latest/meta-data/mac").status_code == 403


def test_wrong_methods(env: Env) -> None:
    assert env.get("/latest/api/token").status_code == 405
    reply = env.session.put(f"{env.base}/latest/meta-data/mac", timeout=TIMEOUT)
    assert reply.status_code == 405


def test_expire_tokens_before_forces_new_token(env: Env) -> None:
    old = env.token().text
    assert env.get("/latest/meta-data/mac", old).status_code == 200
    env.rewrite(make_scenario(expire_tokens_before=time.time()))
    assert env.get("/latest/meta-data/mac", old).status_code == 401
    new = env.token().text
    assert env.get("/latest/meta-data/mac", new).status_code == 200


def test_token_store_ttl_and_not_before() -> None:
    now = [100.0]
    store = TokenStore(clock=lambda: now[0])
    token = store.issue(10)
    assert store.check(token)
    now[0] = 109.9
    assert store.check(token)
    assert not store.check(token, not_before=100.5)
    now[0] = 110.0
    assert not store.check(token)
    assert not store.check("unknown")


# ---------------------------------------------------------------------------------------------
# Rendering over HTTP


def test_listings_and_leaves(env: Env) -> None:
    token = env.token().text

    def get(path: str) -> requests.Response:
        return env.get(path, token)

    macs = get(f"/{MACS_DIR}/")
    assert macs.text == f"{MAC3}/\n{MAC1}/\n{MAC2}/"  # file order, not sorted
    assert get(f"/{MACS_DIR}").text == macs.text

    listing = get(eni_path(MAC1)).text.split("\n")
    assert listing == [
        "device-number",
        "interface-id",
        "ipv4-associations/",
        "ipv4-prefix",
        "ipv6s",
        "local-ipv4s",
        "mac",
        "owner-id",
        "public-ipv4s",
        "security-group-ids",
        "subnet-id",
        "subnet-ipv4-cidr-block",
        "subnet-ipv6-cidr-blocks",
        "vpc-id",
    ]
    assert get(eni_path(MAC1).rstrip("/")).text.split("\n") == listing
    assert get(eni_path(MAC1, "local-ipv4s")).text == "10.0.1.10\n10.0.1.11"
    assert get(eni_path(MAC1, "device-number")).text == "0"
    assert get(eni_path(MAC2, "device-number")).text == "1"
    assert get(eni_path(MAC1, "ipv4-associations/")).text == "203.0.113.5"
    assert get(eni_path(MAC1, "ipv4-associations/203.0.113.5")).text == "10.0.1.11"
    assert get(eni_path(MAC1, "public-ipv4s")).text == "203.0.113.5"
    # Absent or empty optional keys: not listed, and 404.
    assert get(eni_path(MAC1, "ipv6-prefix")).status_code == 404
    assert get(eni_path(MAC1, "network-card")).status_code == 404
    assert get(eni_path(MAC2, "ipv6s")).status_code == 404
    assert get(eni_path(MAC2, "ipv4-prefix")).status_code == 404
    assert get(eni_path(MAC2, "ipv4-associations/")).status_code == 404
    assert "public-ipv4s" not in get(eni_path(MAC2)).text.split("\n")
    # IPv6-only ENI on a second network card.
    listing3 = get(eni_path(MAC3)).text.split("\n")
    assert "local-ipv4s" not in listing3
    assert "network-card" in listing3
    assert get(eni_path(MAC3, "network-card")).text == "1"
    assert get(eni_path(MAC3, "local-ipv4s")).status_code == 404
    assert get(eni_path(MAC3, "ipv6s")).text == "2001:db8:3::30"
    missing = get("/latest/meta-data/nothing-here")
    assert missing.status_code == 404
    assert "Not Found" in missing.text


def test_raw_paths_override_and_null(env: Env) -> None:
    data = make_scenario()
    data["paths"] = {
        f"{MACS_DIR}/{MAC2}/local-ipv4s": "10.0.5.300",
        f"/{MACS_DIR}/{MAC3}/network-card-index": "1",
        f"{MACS_DIR}/{MAC1}/interface-id": None,
        "latest/meta-data/instance-id": None,
    }
    env.rewrite(data)
    assert env.read(eni_path(MAC2, "local-ipv4s")).text == "10.0.5.300"
    assert "network-card-index" in env.read(eni_path(MAC3)).text.split("\n")
    assert env.read(eni_path(MAC3, "network-card-index")).text == "1"
    assert env.read(eni_path(MAC1, "interface-id")).status_code == 404
    assert "interface-id" not in env.read(eni_path(MAC1)).text.split("\n")
    assert env.read("/latest/meta-data/instance-id").status_code == 404
    assert env.read(eni_path(MAC1, "mac")).text == MAC1  # untouched neighbours still served


def test_lag_makes_new_eni_look_just_attached(env: Env) -> None:
    mac4 = "0e:00:00:00:00:04"
    data = make_scenario()
    data["enis"].append({"mac": mac4, "device-number": 3, "local-ipv4s": ["10.0.4.40"], "lag": 0.5})
    env.rewrite(data)
    token = env.token().text  # this request triggers the reload: the lag starts now
    started = time.monotonic()
    assert f"{mac4}/" in env.get(f"/{MACS_DIR}/", token).text.split("\n")
    assert env.get(eni_path(mac4, "device-number"), token).text == "0"
    assert env.get(eni_path(mac4, "local-ipv4s"), token).status_code == 404
    assert "local-ipv4s" not in env.get(eni_path(mac4), token).text.split("\n")
    assert env.get(eni_path(MAC2, "device-number"), token).text == "1"  # no lag elsewhere
    time.sleep(max(0.0, 0.6 - (time.monotonic() - started)))
    assert env.get(eni_path(mac4, "device-number"), token).text == "3"
    assert env.get(eni_path(mac4, "local-ipv4s"), token).text == "10.0.4.40"


def test_lag_render_and_first_seen_tracking() -> None:
    data = make_scenario()
    data["enis"][2]["lag"] = 5
    scenario = parse_scenario(data)
    seen = update_first_seen({}, [MAC3, MAC1, MAC2], now=100.0)
    during = render(scenario, now=104.0, first_seen=seen)
    after = render(scenario, now=105.0, first_seen=seen)
    assert body_for(during, f"{MACS_DIR}/{MAC2}/device-number") == "0"
    assert body_for(during, f"{MACS_DIR}/{MAC2}/local-ipv4s") is None
    assert body_for(after, f"{MACS_DIR}/{MAC2}/device-number") == "1"
    assert body_for(after, f"{MACS_DIR}/{MAC2}/local-ipv4s") == "10.0.1.20"
    # Kept across a reload while present; restarted after disappearing.
    assert update_first_seen(seen, [MAC1, MAC2], now=200.0)[MAC2] == 100.0
    gone = update_first_seen(seen, [MAC1], now=200.0)
    assert update_first_seen(gone, [MAC1, MAC2], now=300.0)[MAC2] == 300.0


# ---------------------------------------------------------------------------------------------
# Fault injection


def test_fail_status_hits_every_request(env: Env) -> None:
    env.rewrite(make_scenario(fail=503))
    assert env.token().status_code == 503
    assert env.get("/latest/meta-data/mac", "x").status_code == 503


def test_fail_paths_limits_the_failure(env: Env) -> None:
    env.rewrite(make_scenario(fail=500, fail_paths=["*/local-ipv4s"]))
    token = env.token().text
    assert env.get(eni_path(MAC1, "local-ipv4s"), token).status_code == 500
    assert env.get(eni_path(MAC1, "mac"), token).text == MAC1


def test_delay(env: Env) -> None:
    token = env.token().text
    env.rewrite(make_scenario(delay=0.3))
    started = time.monotonic()
    assert env.get("/latest/meta-data/mac", token).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_reset_closes_without_answer(env: Env) -> None:
    env.rewrite(make_scenario(fail="reset", imdsv2="optional"))
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{env.base}/latest/meta-data/mac", timeout=TIMEOUT)
    assert wait_for(lambda: read_stats(env.stats_path)["by_status"].get("reset") == 1)


def test_hang_times_out_client_and_stop_is_prompt(env: Env) -> None:
    env.rewrite(make_scenario(fail="hang", fail_paths=["/latest/meta-data/mac"]))
    token = env.token().text
    with pytest.raises(requests.Timeout):
        env.get("/latest/meta-data/mac", token, timeout=0.3)
    started = time.monotonic()
    env.sim.stop()
    assert time.monotonic() - started < 2


def test_redirect_is_not_followed_by_the_server(env: Env) -> None:
    env.rewrite(make_scenario(redirect_paths=["*/mac"]))
    token = env.token().text
    reply = env.get("/latest/meta-data/mac", token, allow_redirects=False)
    assert reply.status_code == 301
    assert reply.headers["Location"] == REDIRECT_TARGET
    assert env.get("/latest/meta-data/instance-id", token).status_code == 200


def test_oversize_body(env: Env) -> None:
    env.rewrite(make_scenario(oversize_paths=["*/mac"]))
    token = env.token().text
    with env.get("/latest/meta-data/mac", token, stream=True) as reply:
        assert reply.status_code == 200
        assert int(reply.headers["Content-Length"]) == OVERSIZE_BYTES
        assert len(reply.raw.read(65536)) == 65536
    # The server survives a client hanging up mid-body.
    assert (
        requests.get(f"{env.base}/latest/meta-data/instance-id", timeout=TIMEOUT).status_code == 401
    )


def test_keep_alive_reuses_connection(env: Env) -> None:
    host, port = env.sim.addresses[0]
    conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        conn.request(
            "PUT", "/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "5"}
        )
        token = conn.getresponse().read().decode()
        sock = conn.sock
        assert sock is not None
        for path in ("/latest/meta-data/mac", "/latest/meta-data/nope", f"/{MACS_DIR}/"):
            conn.request("GET", path, headers={"X-aws-ec2-metadata-token": token})
            conn.getresponse().read()
            assert conn.sock is sock
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# Reload and statistics


def test_live_reload_on_file_replace(env: Env) -> None:
    assert env.read("/latest/meta-data/instance-id").text == "i-0000000000000001"
    data = make_scenario()
    data["instance_id"] = "i-0000000000000002"  # same size: must still be noticed
    env.rewrite(data)
    assert env.read("/latest/meta-data/instance-id").text == "i-0000000000000002"


def test_broken_reload_keeps_old_scenario(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    write_json(env.path, "{not json")
    for _ in range(3):
        assert env.read("/latest/meta-data/mac").text == MAC1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1
    assert "scenario.json" in errors[0]
    data = make_scenario()
    data["instance_id"] = "i-fixed"
    env.rewrite(data)
    assert env.read("/latest/meta-data/instance-id").text == "i-fixed"


def test_stats_file_counts(env: Env) -> None:
    assert read_stats(env.stats_path)["requests"] == 0  # written at start
    token = env.token().text
    env.get("/latest/meta-data/mac", token)
    env.get("/latest/meta-data/mac", token)
    env.get("/latest/meta-data/nope", token)
    assert wait_for(lambda: read_stats(env.stats_path)["requests"] == 4)
    stats = read_stats(env.stats_path)
    assert stats["by_method"] == {"PUT": 1, "GET": 3}
    assert stats["by_path"] == {
        "/latest/api/token": 1,
        "/latest/meta-data/mac": 2,
        "/latest/meta-data/nope": 1,
    }
    assert stats["by_status"] == {"200": 3, "404": 1}
    assert env.sim.stats() == stats


def test_reset_stats_control_value_change(env: Env) -> None:
    env.get("/latest/meta-data/mac")
    env.get("/latest/meta-data/mac")
    assert wait_for(lambda: read_stats(env.stats_path)["requests"] == 2)
    env.rewrite(make_scenario(reset_stats=1))
    env.get("/latest/meta-data/mac")
    assert wait_for(lambda: read_stats(env.stats_path)["requests"] == 1)
    assert read_stats(env.stats_path)["by_status"] == {"401": 1}


def test_stats_socket_exact_at_once_file_written_at_stop(env: Env) -> None:
    """The socket beside the file counts a request as soon as it was answered; the file
    follows within FLUSH_EVERY, and has the final counts once the simulator stopped."""
    from eni_guest_lab.sim import stats

    token = env.token().text
    for _ in range(3):
        env.get("/latest/meta-data/mac", token)
    assert stats.read(str(env.stats_path))["requests"] == 4  # no wait: exact
    assert wait_for(lambda: read_stats(env.stats_path)["requests"] == 4)
    env.get("/latest/meta-data/nope", token)
    env.sim.stop()
    assert not Path(f"{env.stats_path}.sock").exists()
    assert read_stats(env.stats_path)["requests"] == 5
    assert stats.read(str(env.stats_path)) == read_stats(env.stats_path)  # from the file


# ---------------------------------------------------------------------------------------------
# Scenario validation and helpers


def _mutate(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data = make_scenario()
    change(data)
    return data


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.update(instanceid="i-1"), "instanceid"),
        (lambda d: d["enis"][1].update({"local-ipv4s": ["10.0.5.300"]}), "enis[1].local-ipv4s[0]"),
        (lambda d: d["enis"][0].update({"device-number": "1"}), "enis[0].device-number"),
        (lambda d: d["enis"][0].update({"local-ipv4": "10.0.0.1"}), "'local-ipv4'"),
        (lambda d: d["enis"][0].update({"mac": MAC1}), "duplicate"),
        (lambda d: d["enis"][2].update({"lag": -1}), "enis[2].lag"),
        (lambda d: d.update(primary_mac="0e:00:00:00:00:99"), "primary_mac"),
        (lambda d: d["control"].update(fail="boom"), "control.fail"),
        (lambda d: d["control"].update(imdsv2="maybe"), "control.imdsv2"),
        (lambda d: d["control"].update(fail_paths="*"), "control.fail_paths"),
        (lambda d: d.update(paths={"latest/x": 5}), "paths['latest/x']"),
    ],
)
def test_validation_names_offending_key(
    change: Callable[[dict[str, Any]], None], expected: str
) -> None:
    with pytest.raises(ValueError) as info:
        parse_scenario(_mutate(change))
    assert expected in str(info.value)


def test_load_scenario_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json: invalid JSON"):
        load_scenario(path)


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[fd00:ec2::254]:80") == ("fd00:ec2::254", 80)
    assert parse_listen("169.254.169.254") == ("169.254.169.254", 80)
    for bad in ("fd00:ec2::254:80", "[::1", "127.0.0.1:http", "127.0.0.1:70000", ":80"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_ipv6_listener(tmp_path: Path) -> None:
    # AWS's IPv6 endpoint (fd00:ec2::254) is served the same way; the machines this project
    # runs on all have ::1, so a missing one is a failure, not a skip.
    environment = Env(tmp_path, make_scenario(), listen="[::1]:0")
    try:
        assert environment.read("/latest/meta-data/mac").text == MAC1
    finally:
        environment.close()


def test_bundled_example() -> None:
    path = Path(eni_guest_lab.__file__).parent / "scenarios" / "aws-example.json"
    assert resolve_scenario("aws-example") == str(path.resolve())
    scenario = load_scenario(path)
    tree = render(scenario)
    macs = [entry.rstrip("/") for entry in tree[MACS_DIR]]
    numbers = [int(body_for(tree, f"{MACS_DIR}/{mac}/device-number") or "-1") for mac in macs]
    assert numbers == [2, 1, 0]
    assert macs == sorted(macs)  # so MAC order is opposite to device order as well
    primary = f"{MACS_DIR}/{scenario.primary_mac}"
    assert len((body_for(tree, f"{primary}/local-ipv4s") or "").split("\n")) == 2
    assert body_for(tree, f"{primary}/public-ipv4s")
    subnets = [body_for(tree, f"{MACS_DIR}/{mac}/subnet-ipv4-cidr-block") for mac in macs]
    assert subnets[1] == subnets[2] != subnets[0]
    assert body_for(tree, f"{MACS_DIR}/{macs[0]}/ipv6s")


# ---------------------------------------------------------------------------------------------
# Command line, as a subprocess


class LineReader:
    """Reads a pipe in a thread so tests can wait for a line with a timeout."""

    def __init__(self, stream: Any) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def next(self, timeout: float = TIMEOUT) -> str:
        return self.lines.get(timeout=timeout)


def start_cli(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], LineReader, LineReader]:
    path = tmp_path / "scenario.json"
    if not path.exists():
        write_json(path, make_scenario())
    proc = subprocess.Popen(
        [sys.executable, "-m", "eni_guest_lab.sim", "--scenario", str(path), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, LineReader(proc.stdout), LineReader(proc.stderr)


def listening(reader: LineReader) -> str:
    match = re.fullmatch(r"listening on (127\.0\.0\.1):(\d+)", reader.next())
    assert match, "expected a 'listening on HOST:PORT' line"
    assert int(match.group(2)) > 0
    return f"http://{match.group(1)}:{match.group(2)}"


def test_cli_signals_reload_reset_and_stop(tmp_path: Path) -> None:
    stats_path = tmp_path / "stats.json"
    listen = ("--listen", "127.0.0.1:0")
    proc, out, err = start_cli(tmp_path, *listen, *listen, "--stats", str(stats_path))
    try:
        first, second = listening(out), listening(out)
        assert first != second
        ttl = {"X-aws-ec2-metadata-token-ttl-seconds": "60"}
        token = requests.put(f"{first}/latest/api/token", headers=ttl, timeout=TIMEOUT).text
        auth = {"X-aws-ec2-metadata-token": token}

        def instance_id() -> str:
            url = f"{second}/latest/meta-data/instance-id"
            return requests.get(url, headers=auth, timeout=TIMEOUT).text

        assert instance_id() == "i-0000000000000001"  # token shared across listeners

        # SIGHUP reloads by itself (no request needed to notice the broken file).
        write_json(tmp_path / "scenario.json", "{broken")
        proc.send_signal(signal.SIGHUP)
        assert "keeping the previous scenario" in err.next()
        assert instance_id() == "i-0000000000000001"

        data = make_scenario()
        data["instance_id"] = "i-after-sighup"
        write_json(tmp_path / "scenario.json", data)
        proc.send_signal(signal.SIGHUP)
        assert instance_id() == "i-after-sighup"

        assert wait_for(lambda: read_stats(stats_path)["requests"] == 4)
        proc.send_signal(signal.SIGUSR1)
        assert wait_for(lambda: read_stats(stats_path)["requests"] == 0)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_sigint_exits_zero(tmp_path: Path) -> None:
    proc, out, _ = start_cli(tmp_path, "--listen", "127.0.0.1:0")
    try:
        listening(out)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_invalid_scenario_exits_2(tmp_path: Path) -> None:
    write_json(tmp_path / "scenario.json", {"enis": [], "bogus": 1})
    proc, _, err = start_cli(tmp_path, "--listen", "127.0.0.1:0")
    try:
        assert proc.wait(timeout=TIMEOUT) == 2
        assert "bogus" in err.next()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_an_accept_with_nothing_pending_returns_so_stop_never_hangs() -> None:
    """serve_forever accepts after select() said a connection waits; a client that reset it
    in between (its deadline cut the connection) left a blocking accept() waiting for good,
    and MetadataSimulator.stop() with it (seen as a hung CI run).  The listening socket is
    non-blocking: an accept with nothing pending returns at once."""
    import socket

    from eni_guest_lab.sim.listener import Listener

    server = Listener(("127.0.0.1", 0), socket.AF_INET, None)  # type: ignore[arg-type]
    try:
        done = threading.Event()

        def accept_once() -> None:
            server._handle_request_noblock()  # what serve_forever calls after select()
            done.set()

        threading.Thread(target=accept_once, daemon=True).start()
        assert done.wait(2.0), "accept() blocked with no connection pending"
    finally:
        server.server_close()

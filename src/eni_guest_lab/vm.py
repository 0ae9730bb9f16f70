"""A simulated cloud VM built from network namespaces, for ``eni-guest demo`` and the e2e tests.

Why a simulation at all: the properties the agent must keep (ROUTING.md) are about which
interface a packet leaves through and whether the cloud then drops it. Unit tests of the
planner cannot prove that; a real cloud is slow, costly and not available in CI. Network
namespaces give a faithful and cheap stand-in (ROUTING.md, "The simulated VM"):

* ``<prefix>-vpc`` is the cloud. Every ENI is a veth pair whose vpc end carries the subnet
  gateway as a host address, a /32 (/128) route per private IP of the ENI, proxy ARP / proxy NDP
  for the rest of the subnet, and a strict reverse-path check in nftables that drops any packet
  arriving on a veth that does not own its source address, exactly like the VPC's
  source/destination check. The far host, a host in another subnet, a neighbour in every ENI
  subnet and the metadata service are addresses on the vpc's ``lo``.
* ``<prefix>-g`` is the VM. Its primary ENI is configured as a DHCP client would; secondary ENIs
  are present, down and unconfigured, because that is the agent's job.
* ``<prefix>-c`` is a container behind a Docker-like bridge in the guest.

The testbed deliberately shells out to ``ip``/``nft``/``sysctl`` and never uses pyroute2: the
product's kernel layer is pyroute2 code, and the instrument must not share the bugs of the thing
it measures. It never touches the host's own interfaces, addresses, routes or rules: every object
is created inside namespaces this module created, under a unique name that embeds the creating
process id, so :func:`cleanup_stale` can delete what a killed run left behind and nothing else.
"""

from __future__ import annotations

import contextlib
import copy
import ipaddress
import json
import os
import re
import secrets
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from .sim.render import render_static
from .sim.scenario import METADATA_ADDRESSES, parse_scenario
from .sim.tree import ipv4_gateway, ipv6_gateway

__all__ = [
    "CONTAINER_V4",
    "CONTAINER_V6",
    "DOCKER_V4",
    "DOCKER_V6",
    "FAR_V4",
    "FAR_V6",
    "METADATA_V4",
    "METADATA_V6",
    "NEIGHBOUR_HOST",
    "OTHER_SUBNET_V4",
    "OTHER_SUBNET_V6",
    "Guest",
    "HeldConnection",
    "Probe",
    "SimVM",
    "SimVMError",
    "TcpServer",
    "check_environment",
    "cleanup_stale",
    "gateway_of",
    "neighbour_of",
]

#: The cloud's metadata service addresses (AWS). Other clouds' are in
#: ``sim.scenario.METADATA_ADDRESSES`` (Alibaba 100.100.100.200, Tencent 169.254.0.23): the vpc
#: carries those of the scenario's ``provider`` too, and the simulator listens there.
METADATA_V4 = "169.254.169.254"
METADATA_V6 = "fd00:ec2::254"
#: A host on the internet, outside the VPC: reaching it needs the subnet's default route.
FAR_V4 = "198.51.100.10"
FAR_V6 = "2001:db8:ffff::10"
#: A host in a VPC subnet no ENI belongs to (property 3 of ROUTING.md).
OTHER_SUBNET_V4 = "10.0.250.10"
OTHER_SUBNET_V6 = "2001:db8:250::10"
#: Host number of the "neighbour" placed in every ENI subnet: 10.0.1.200, and in IPv6 the same
#: digits (``2001:db8:1::200``, read as hex) so both are recognisable in a trace.
NEIGHBOUR_HOST = 200
#: The Docker-like bridge in the guest and the container behind it.
DOCKER_BRIDGE = "docker0"
DOCKER_V4 = "172.17.0.1"
DOCKER_V4_NET = "172.17.0.0/16"
CONTAINER_V4 = "172.17.0.2"
DOCKER_V6 = "fd00:d0c::1"
CONTAINER_V6 = "fd00:d0c::2"

#: Every namespace and temporary directory this module makes starts with this.
NS_PREFIX = "egt"
# <prefix> = egt<pid in hex><4 random hex digits>; the pid is what cleanup_stale checks.
_NS_RE = re.compile(r"^egt([0-9a-f]{1,8})[0-9a-f]{4}-(vpc|chk|g[0-9]*|c[0-9]*)$")
_TMP_RE = re.compile(r"^egt([0-9a-f]{1,8})[0-9a-f]{4}-[a-z0-9_]+$")

_NFT_TABLE = "egt_vpc"
_RPF_COUNTER = "rpf_drop"
_SRC_DIR = str(Path(__file__).resolve().parent.parent)


class SimVMError(RuntimeError):
    """A testbed step failed; the message names the command and carries its stderr."""

    def __init__(
        self,
        message: str,
        *,
        cmd: Optional[Sequence[str]] = None,
        returncode: Optional[int] = None,
        stdout: str = "",
        stderr: str = "",
    ) -> None:
        super().__init__(message)
        self.cmd = list(cmd) if cmd is not None else None
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


@dataclass(frozen=True)
class Probe:
    """What a packet probe saw.

    ``exit_iface`` is the guest name of the ENI whose vpc-side veth received the probe packets
    (``None`` if none did), so a test can assert *where* traffic left, not only that it
    arrived. ``bool(probe)`` is ``probe.ok``, so ``assert vm.probe(...)`` means what it reads.
    """

    ok: bool
    exit_iface: Optional[str]
    dropped_by_rpf: bool
    detail: str = field(default="", compare=False)

    def __bool__(self) -> bool:
        return self.ok


@dataclass
class Guest:
    """One VM: its namespace, its container namespace and the ENIs attached to it.

    A separate object (rather than fields of :class:`SimVM`) so a second VM can share the same
    vpc for ENI-migration tests.
    """

    name: str
    ns: str
    container_ns: Optional[str] = None
    links: dict[str, str] = field(default_factory=dict)  # mac -> guest ifname
    #: This VM's own metadata (see :meth:`SimVM.add_guest`); ``None``: the SimVM's scenario.
    scenario: Optional[dict[str, Any]] = None
    #: Port of this VM's own metadata simulator on the metadata addresses (``None``: 80).
    metadata_port: Optional[int] = None


@dataclass
class _Port:
    """The veth pair of one ENI and what the vpc side currently carries (for diffing)."""

    mac: str
    vpc_if: str
    park_if: str
    exists: bool = False
    guest: Optional[Guest] = None
    ifname: Optional[str] = None
    addrs: set[str] = field(default_factory=set)
    routes: set[str] = field(default_factory=set)
    proxies: set[str] = field(default_factory=set)


# --------------------------------------------------------------------------------------------
# Running commands


def _run(
    cmd: Sequence[str],
    *,
    input: Optional[str] = None,
    check: bool = True,
    timeout: float = 60.0,
    env: Optional[Mapping[str, str]] = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command, captured; on failure raise with the command line and its stderr.

    Every testbed failure must be diagnosable from the test report alone, so the message always
    shows what was run (and the batch input, when there was one).
    """
    argv = [str(a) for a in cmd]
    try:
        cp = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            check=False,
        )
    except FileNotFoundError as e:
        raise SimVMError(f"{argv[0]}: not found (needed by the testbed)", cmd=argv) from e
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        raise SimVMError(
            f"timed out after {timeout:g} s: {shlex.join(argv)}\n{err.strip()}",
            cmd=argv,
            stdout=out,
            stderr=err,
        ) from e
    if check and cp.returncode != 0:
        msg = f"command failed (exit {cp.returncode}): {shlex.join(argv)}"
        if input:
            msg += "\n--- input ---\n" + input.rstrip()
        msg += "\n--- stderr ---\n" + (cp.stderr.strip() or "(empty)")
        raise SimVMError(
            msg, cmd=argv, returncode=cp.returncode, stdout=cp.stdout, stderr=cp.stderr
        )
    return cp


def _ip_batch(ns: str, lines: Iterable[str], *, force: bool = False) -> None:
    """Apply many ``ip`` commands in one process: the testbed builds dozens of objects."""
    text = "".join(f"{line}\n" for line in lines)
    if not text:
        return
    cmd = ["ip", "-n", ns]
    if force:
        cmd.append("-force")
    _run([*cmd, "-batch", "-"], input=text, check=not force)


def _ip_json(ns: str, args: Sequence[str]) -> list[dict[str, Any]]:
    out = _run(["ip", "-n", ns, "-j", *args]).stdout.strip()
    return json.loads(out) if out else []


def _sysctl(ns: str, settings: Mapping[str, Any]) -> None:
    if settings:
        args = [f"{k}={v}" for k, v in settings.items()]
        _run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", *args])


def _nft(ns: str, script: str) -> None:
    _run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script)


def _child_env(extra: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """Environment for Python children: eni_guest importable even from an uninstalled tree."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = _SRC_DIR + (os.pathsep + path if path else "")
    if extra:
        env.update(extra)
    return env


# --------------------------------------------------------------------------------------------
# Addresses


def gateway_of(cidr: str) -> str:
    """The subnet's router: its first host address (``.1``, ``::1``), as on AWS."""
    return str(ipaddress.ip_network(cidr, strict=False).network_address + 1)


def neighbour_of(cidr: str) -> str:
    """The simulated neighbour host of a subnet (``.200``, ``::200``; last host if too small)."""
    net = ipaddress.ip_network(cidr, strict=False)
    host = NEIGHBOUR_HOST if net.version == 4 else int(str(NEIGHBOUR_HOST), 16)
    if net.num_addresses > host + 1:
        return str(net.network_address + host)
    return str(net.network_address + net.num_addresses - 2)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _subnet_of(addr: str, cidrs: Iterable[str], default_prefix: int) -> str:
    ip = ipaddress.ip_address(addr)
    for c in cidrs:
        net = ipaddress.ip_network(c, strict=False)
        if ip in net:
            return f"{addr}/{net.prefixlen}"
    return f"{addr}/{default_prefix}"


def _normalise(scenario: Mapping[str, Any]) -> dict[str, Any]:
    """A private, lower-cased copy: the caller's dict is never mutated behind its back."""
    scn = copy.deepcopy(dict(scenario))
    if scn.get("primary_mac"):
        scn["primary_mac"] = str(scn["primary_mac"]).lower()
    enis = scn.setdefault("enis", [])
    seen: set[str] = set()
    for eni in enis:
        if "mac" not in eni:
            raise SimVMError(f"scenario ENI without a mac: {eni!r}")
        eni["mac"] = str(eni["mac"]).lower()
        if eni["mac"] in seen:
            raise SimVMError(f"scenario lists MAC {eni['mac']} twice")
        seen.add(eni["mac"])
    return scn


# --------------------------------------------------------------------------------------------
# Namespaces and processes


def _list_netns() -> list[str]:
    out = _run(["ip", "-j", "netns", "list"], check=False).stdout.strip()
    if not out:
        return []
    try:
        return [str(e["name"]) for e in json.loads(out)]
    except (ValueError, KeyError, TypeError):
        return [line.split()[0] for line in out.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a pid we could have written: keep, never guess
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _delete_ns(ns: str) -> None:
    """Kill what still runs inside, then delete the namespace.

    A process left inside would keep the namespace, and so its veths, alive after the delete.
    Everything inside was started by the testbed or by someone who entered a namespace that is
    going away (``ip netns exec ... bash`` during a demo).
    """
    cp = _run(["ip", "netns", "pids", ns], check=False, timeout=10)
    for tok in cp.stdout.split():
        if tok.isdigit() and int(tok) != os.getpid():
            with contextlib.suppress(OSError):
                os.kill(int(tok), signal.SIGKILL)
    cp = _run(["ip", "netns", "del", ns], check=False, timeout=10)
    if cp.returncode != 0 and ns in _list_netns():
        raise SimVMError(f"could not delete namespace {ns}: {cp.stderr.strip()}")


def cleanup_stale() -> list[str]:
    """Delete namespaces (and temp dirs) of testbeds whose creating process is dead.

    Only names of this module's exact pattern (``egt<pid-hex><4 hex>-<role>``) are considered,
    and only when the embedded pid no longer exists, so a concurrent run and anything else on the
    machine are left alone. Returns the names of the deleted namespaces.
    """
    removed = []
    for ns in _list_netns():
        m = _NS_RE.match(ns)
        if m is None or _pid_alive(int(m.group(1), 16)):
            continue
        _delete_ns(ns)
        removed.append(ns)
    tmp = Path(tempfile.gettempdir())
    try:
        entries = list(tmp.iterdir())
    except OSError:
        entries = []
    for d in entries:
        m = _TMP_RE.match(d.name)
        if m and d.is_dir() and not d.is_symlink() and not _pid_alive(int(m.group(1), 16)):
            shutil.rmtree(d, ignore_errors=True)
    return removed


def _new_prefix() -> str:
    return f"{NS_PREFIX}{os.getpid():x}{secrets.token_hex(2)}"


def check_environment() -> Optional[str]:
    """Why a SimVM cannot be built here (``None`` if it can): root, tools, namespaces, nftables.

    Tries the real thing in a throw-away namespace, so the e2e tests and the demo can fail with
    one clear sentence instead of a stack of ``ip`` errors.
    """
    if os.geteuid() != 0:
        return "building network namespaces needs root"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables"), ("sysctl", "procps")):
        if shutil.which(tool) is None:
            return f"`{tool}` not found (install {package})"
    ns = f"{_new_prefix()}-chk"
    try:
        _run(["ip", "netns", "add", ns])
    except SimVMError as e:
        return f"cannot create a network namespace: {e}"
    try:
        _ip_batch(ns, ["link set lo up", "link add name egtchk0 type veth peer name egtchk1"])
        _nft(
            ns,
            "table inet egt_chk {\n chain c {\n type filter hook prerouting priority 0;\n }\n}\n",
        )
        _sysctl(ns, {"net.ipv6.conf.all.forwarding": 1})
    except SimVMError as e:
        return f"network namespaces do not work as needed: {e}"
    finally:
        _run(["ip", "netns", "del", ns], check=False)
    return None


def _stop(proc: subprocess.Popen[Any], grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after ``grace``: the simulator gets a chance to write its stats."""
    if proc.poll() is None:
        try:
            proc.terminate()
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
        except OSError:
            pass
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


class _LineReader:
    """Read lines from a child's stdout with a deadline (pipes have no timeout of their own)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self._fd = proc.stdout.fileno()
        self._buf = b""
        self._eof = False

    def readline(self, timeout: float) -> Optional[str]:
        """One line without its newline; ``None`` on timeout or end of file."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if self._eof or left <= 0:
                return None
            ready, _, _ = select.select([self._fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(self._fd, 65536)
            if not chunk:
                self._eof = True
                continue
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode(errors="replace")


class TcpServer:
    """A TCP echo server in the vpc (started by :meth:`SimVM.start_tcp_server`)."""

    def __init__(self, proc: subprocess.Popen[bytes], addr: str, port: int) -> None:
        self.proc = proc
        self.addr = addr
        self.port = port

    def close(self) -> None:
        _stop(self.proc, grace=1.0)


class HeldConnection:
    """A TCP connection kept open from the guest, like the SSH session of the operator.

    ``alive()`` sends a numbered line and waits for its echo, so a late echo of an earlier,
    timed-out check is never mistaken for a live connection.
    """

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self._reader = _LineReader(proc)
        self._seq = 0

    def alive(self, timeout: float = 2.0) -> bool:
        if self.proc.poll() is not None or self.proc.stdin is None:
            return False
        self._seq += 1
        tag = f"alive-{self._seq}"
        try:
            self.proc.stdin.write(f"{tag}\n".encode())
            self.proc.stdin.flush()
        except OSError:
            return False
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            line = self._reader.readline(left)
            if line is None:
                return False
            if line == tag:
                return True

    def close(self) -> None:
        _stop(self.proc, grace=1.0)


# --------------------------------------------------------------------------------------------
# The helper that generates traffic inside the namespaces.
#
# Raw ICMP sockets instead of ping(8): iputils may be missing (containers, minimal images) and
# its options and exit codes differ between implementations; this gives exact counts, an exact
# timeout and the same behaviour everywhere. Written to the SimVM's tmpdir so it runs with
# nothing but the interpreter.

_HELPER = r'''
"""Traffic helper run inside testbed namespaces (written by eni_guest_lab.vm)."""
import ipaddress
import os
import select
import socket
import struct
import sys
import threading
import time


def _family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ping(src, dst, count, timeout, interval):
    v6 = _family(dst) == socket.AF_INET6
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    sock = socket.socket(_family(dst), socket.SOCK_RAW, proto)
    if src:
        try:
            sock.bind((src, 0))
        except OSError as e:
            print("bind %s: %s" % (src, e))
            return 2
    ident = int.from_bytes(os.urandom(2), "big")
    request, reply = (128, 129) if v6 else (8, 0)
    want = ipaddress.ip_address(dst)
    got = set()
    errors = []
    for seq in range(count):
        payload = b"eni-guest-testbed-probe"
        pkt = struct.pack("!BBHHH", request, 0, 0, ident, seq) + payload
        if not v6:
            pkt = struct.pack("!BBHHH", request, 0, _csum(pkt), ident, seq) + payload
        try:
            sock.sendto(pkt, (dst, 0))
        except OSError as e:
            errors.append(str(e))
        end = time.monotonic() + (interval if seq < count - 1 else timeout)
        while len(got) < count:
            left = end - time.monotonic()
            if left <= 0:
                break
            if not select.select([sock], [], [], left)[0]:
                break
            data, addr = sock.recvfrom(65535)
            if not v6:
                data = data[(data[0] & 0x0F) * 4:]
            if len(data) < 8:
                continue
            typ, _code, _sum, rid, rseq = struct.unpack("!BBHHH", data[:8])
            if typ != reply or rid != ident:
                continue
            try:
                if ipaddress.ip_address(addr[0].split("%")[0]) != want:
                    continue
            except ValueError:
                continue
            got.add(rseq)
    print("%d/%d replies%s" % (len(got), count, (" (" + "; ".join(errors) + ")") if errors else ""))
    return 0 if got else 1


def _connect(src, dst, port, timeout):
    return socket.create_connection(
        (dst, port), timeout=timeout, source_address=(src, 0) if src else None
    )


def tcp(src, dst, port, timeout):
    try:
        with _connect(src, dst, port, timeout) as s:
            s.sendall(b"eni-guest-testbed\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        print("connect %s -> %s:%d: %s" % (src or "*", dst, port, e))
        return 1
    print("echo %r" % data)
    return 0 if data == b"eni-guest-testbed\n" else 1


def hold(src, dst, port, timeout):
    try:
        s = _connect(src, dst, port, timeout)
    except OSError as e:
        print("failed: %s" % e, flush=True)
        return 1
    s.settimeout(None)
    print("connected", flush=True)

    def pump():
        for line in sys.stdin.buffer:
            try:
                s.sendall(line)
            except OSError:
                break
        os._exit(0)

    threading.Thread(target=pump, daemon=True).start()
    buf = b""
    while True:
        try:
            chunk = s.recv(65536)
        except OSError as e:
            print("closed: %s" % e, flush=True)
            return 1
        if not chunk:
            print("closed: eof", flush=True)
            return 1
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            sys.stdout.buffer.write(line + b"\n")
            sys.stdout.flush()


def _echo(conn):
    with conn:
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            conn.sendall(data)


def serve(addr, port):
    srv = socket.socket(_family(addr), socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(64)
    print("ready", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=_echo, args=(conn,), daemon=True).start()


def main(argv):
    cmd = argv[0]
    src = None if argv[1] == "-" else argv[1]
    if cmd == "ping":
        return ping(src, argv[2], int(argv[3]), float(argv[4]), float(argv[5]))
    if cmd == "tcp":
        return tcp(src, argv[2], int(argv[3]), float(argv[4]))
    if cmd == "hold":
        return hold(src, argv[2], int(argv[3]), float(argv[4]))
    if cmd == "serve":
        return serve(argv[1], int(argv[2]))
    print("unknown command %r" % cmd, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
'''


# --------------------------------------------------------------------------------------------
# The simulated VM


class SimVM:
    """A VM with ENIs in a simulated VPC, built from network namespaces.

    ``scenario`` is the metadata simulator's scenario (JSON-like dict); the topology is derived
    from it. ``ifnames`` maps MAC -> guest interface name (default ``eth<device-number>``), so a
    test can name NICs in an order that does not follow device numbers. ``attached`` is the set
    of MACs attached at start (default: all). ``docker`` adds the bridge and container,
    ``metadata`` starts the simulator. ``kernel_rp_filter`` also turns on the kernel's own
    ``rp_filter=1`` on the vpc side; it is off by default because it makes the vpc ignore ARP
    requests from a wrong source, so a mis-routed probe would never even send its packets and the
    test could not see *which* ENI they would have left through. The nftables check drops the same
    IPv4 and IPv6 packets either way.

    The scenario's ``provider`` picks the cloud (``sim/scenario.py``): the simulator serves that
    format on that cloud's address, the vpc's router of each subnet sits where that cloud's
    metadata says (Alibaba: ``.253``), and :meth:`agent` passes ``--provider`` and
    ``--metadata-url`` to match. ``static`` runs no simulator: the scenario is written as the
    agent's static ENI file (:attr:`static_path`); ``jdcloud`` also gets that file, as the
    overlay carrying the secondary IPs JD does not publish. ``dhcp`` starts dnsmasq on every
    ENI's vpc-side veth, answering the ENI's MAC with its primary IP, the subnet's mask and the
    router: JD Cloud's VPC DHCP service, which tells the agent what JD's metadata does not (the
    overlay then leaves subnet and gateway out).

    Use as a context manager, or call :meth:`start` and always :meth:`close`.
    """

    def __init__(
        self,
        scenario: Mapping[str, Any],
        *,
        ifnames: Optional[Mapping[str, str]] = None,
        attached: Optional[Iterable[str]] = None,
        docker: bool = True,
        metadata: bool = True,
        kernel_rp_filter: bool = False,
        sim_command: Optional[Sequence[str]] = None,
        dhcp: bool = False,
    ) -> None:
        self.scenario: dict[str, Any] = _normalise(scenario)
        self.prefix = _new_prefix()
        self.vpc_ns = f"{self.prefix}-vpc"
        self.main_guest = Guest("g", f"{self.prefix}-g", f"{self.prefix}-c" if docker else None)
        self.guests: list[Guest] = [self.main_guest]
        self.docker = docker
        self.tmpdir: Optional[Path] = None
        self._want_metadata = metadata
        self._kernel_rpf = kernel_rp_filter
        self._sim_command = (
            list(sim_command) if sim_command else [sys.executable, "-m", "eni_guest_lab.sim"]
        )
        self._ifnames = {k.lower(): v for k, v in (ifnames or {}).items()}
        self._attached = None if attached is None else {m.lower() for m in attached}
        self._namespaces: list[str] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._sim: Optional[subprocess.Popen[Any]] = None
        self._ports: dict[str, _Port] = {}
        self._known: dict[str, dict[str, Any]] = {e["mac"]: e for e in self.scenario["enis"]}
        self._lo_addrs: set[str] = set()
        self._counters_made: set[str] = set()
        self._mtime_ns: Optional[int] = None
        self._guest_mtimes: dict[str, int] = {}
        self._dhcp = dhcp
        self._dnsmasq: dict[str, tuple[tuple[str, ...], subprocess.Popen[Any]]] = {}
        self._started = False

    def __repr__(self) -> str:
        return f"SimVM(prefix={self.prefix!r}, enis={sorted(self._ports)!r})"

    # ---- names

    @property
    def guest_ns(self) -> str:
        return self.main_guest.ns

    @property
    def container_ns(self) -> Optional[str]:
        return self.main_guest.container_ns

    @property
    def provider(self) -> str:
        """The cloud the scenario simulates (``aws`` unless it says otherwise)."""
        return str(self.scenario.get("provider", "aws"))

    @property
    def static_path(self) -> Path:
        """The agent's static ENI file: all of it for ``static``, the overlay for ``jdcloud``."""
        return self._tmp / "enis.toml"

    @property
    def scenario_path(self) -> Path:
        return self._tmp / "scenario.json"

    @property
    def stats_path(self) -> Path:
        return self._tmp / "stats.json"

    @property
    def lock_file(self) -> Path:
        return self._tmp / "lock"

    def distro_root(self, guest: Optional[Guest] = None) -> Path:
        """Where the agent in this guest writes its NetworkManager/networkd drop-ins."""
        return self._tmp / f"root-{(guest or self.main_guest).name}"

    @property
    def _tmp(self) -> Path:
        if self.tmpdir is None:
            raise SimVMError("the SimVM is not started")
        return self.tmpdir

    def enis(self) -> list[dict[str, Any]]:
        """The scenario's ENIs (live dicts: change them through :meth:`update_scenario`)."""
        return list(self.scenario["enis"])

    def eni(self, mac: str) -> dict[str, Any]:
        mac = mac.lower()
        for scn in self._scenarios():
            for e in scn["enis"]:
                if e["mac"] == mac:
                    return e
        if mac in self._known:
            return self._known[mac]
        raise KeyError(f"no ENI with MAC {mac}")

    def ifname_of(self, mac: str) -> Optional[str]:
        """The guest interface name of an attached ENI, else ``None``."""
        p = self._ports.get(mac.lower())
        return p.ifname if p else None

    def vpc_if_of(self, mac: str) -> str:
        """The vpc-side veth of an ENI (to inspect the cloud side in a test)."""
        return self._ports[mac.lower()].vpc_if

    def _default_ifname(self, mac: str) -> str:
        if mac in self._ifnames:
            return self._ifnames[mac]
        return f"eth{int(self.eni(mac).get('device-number', 0))}"

    def _scenarios(self) -> list[dict[str, Any]]:
        """The metadata of every VM: the SimVM's own, then that of guests that have their own."""
        return [self.scenario] + [g.scenario for g in self.guests if g.scenario is not None]

    def _scenario_of(self, g: Guest) -> dict[str, Any]:
        return g.scenario if g.scenario is not None else self.scenario

    def _write_scenario_of(self, g: Guest) -> None:
        if g.scenario is None:
            self._write_scenario()
        else:
            path = self._tmp / f"scenario-{g.name}.json"
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(g.scenario, indent=2, sort_keys=True))
            os.replace(tmp, path)
            # the simulator reloads on an mtime change: make sure there is one
            mtime = max(os.stat(path).st_mtime_ns, self._guest_mtimes.get(g.name, 0) + 1_000_000)
            os.utime(path, ns=(mtime, mtime))
            self._guest_mtimes[g.name] = mtime

    # ---- lifecycle

    def start(self) -> SimVM:
        """Build the namespaces (and start the metadata simulator); idempotent.

        Anything that fails half-way is torn down before the error propagates, so a failed start
        leaks nothing.
        """
        if self._started:
            return self
        self._started = True
        try:
            cleanup_stale()
            self.tmpdir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
            (self.tmpdir / "egt_helper.py").write_text(_HELPER)
            self._write_scenario()
            self._build_vpc()
            self._build_guest(self.main_guest)
            self._sync_vpc()
            enis = sorted(self.scenario["enis"], key=lambda e: int(e.get("device-number", 0)))
            for e in enis:
                if self._attached is None or e["mac"] in self._attached:
                    self.attach(e["mac"])
            self._configure_primary(self.main_guest)
            if self.docker:
                self._build_docker(self.main_guest)
            if self._want_metadata:
                self.start_metadata()
        except BaseException:
            self.close()
            raise
        return self

    def __enter__(self) -> SimVM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process and delete every namespace and file this SimVM made.

        Idempotent and re-entrant (safe from a signal handler that interrupts a running close):
        each item is removed from the to-do lists only after it is done.
        """
        errors: list[str] = []
        for proc in list(self._procs):
            try:
                _stop(proc)
            except Exception as e:  # keep cleaning up whatever happens
                errors.append(f"stopping {proc.args!r}: {e}")
            if proc in self._procs:
                self._procs.remove(proc)
        self._sim = None
        for ns in list(reversed(self._namespaces)):
            try:
                _delete_ns(ns)
            except Exception as e:
                errors.append(str(e))
            if ns in self._namespaces:
                self._namespaces.remove(ns)
        for p in self._ports.values():
            p.exists = False
            p.guest = None
            p.ifname = None
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        if errors:
            raise SimVMError("cleanup incomplete: " + "; ".join(errors))

    # ---- building

    def _add_ns(self, ns: str) -> None:
        self._namespaces.append(ns)  # first: an interrupt right after the add must not leak it
        _run(["ip", "netns", "add", ns])
        _ip_batch(ns, ["link set lo up"])

    def _build_vpc(self) -> None:
        ns = self.vpc_ns
        self._add_ns(ns)
        rpf = 1 if self._kernel_rpf else 0
        # New namespaces inherit the host's IPv4 defaults: set every knob that matters.
        settings: dict[str, Any] = {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1}
        for scope in ("all", "default"):
            settings.update(
                {
                    f"net.ipv4.conf.{scope}.rp_filter": rpf,
                    f"net.ipv4.conf.{scope}.send_redirects": 0,
                    f"net.ipv4.conf.{scope}.arp_ignore": 0,
                    f"net.ipv4.conf.{scope}.arp_announce": 0,
                    f"net.ipv4.conf.{scope}.arp_filter": 0,
                    f"net.ipv4.conf.{scope}.accept_local": 0,
                    f"net.ipv6.conf.{scope}.accept_dad": 0,
                    f"net.ipv6.conf.{scope}.accept_ra": 0,
                }
            )
        _sysctl(ns, settings)
        # The VPC's source/destination check, for both families: a packet whose source is not
        # routed back through the veth it arrived on is dropped. Neighbour discovery is exempt
        # (the VPC answers ARP/ND itself), so a mis-routed packet still reaches the wrong veth
        # and is counted there: tests can see where it left.
        _nft(
            ns,
            f"""
table inet {_NFT_TABLE} {{
    counter {_RPF_COUNTER} {{ }}
    chain probe {{
        type filter hook prerouting priority -400; policy accept;
    }}
    chain rpf {{
        type filter hook prerouting priority -300; policy accept;
        icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, \
mld-listener-report, mld2-listener-report, mld-listener-done }} accept
        fib saddr . iif oif missing counter name "{_RPF_COUNTER}" drop
    }}
}}
""",
        )

    def _build_guest(self, g: Guest) -> None:
        self._add_ns(g.ns)
        settings: dict[str, Any] = {"net.ipv4.ip_forward": 1}
        for scope in ("all", "default"):
            settings.update(
                {
                    # Like RHEL images: strict reverse-path filtering in the VM too.
                    f"net.ipv4.conf.{scope}.rp_filter": 1,
                    f"net.ipv4.conf.{scope}.arp_ignore": 0,
                    f"net.ipv4.conf.{scope}.arp_announce": 0,
                    f"net.ipv4.conf.{scope}.arp_filter": 0,
                    f"net.ipv4.conf.{scope}.accept_local": 0,
                }
            )
        _sysctl(g.ns, settings)

    def _configure_primary(self, g: Guest) -> None:
        """Configure the primary ENI as the image's DHCP client (and RA) would."""
        mac = self._scenario_of(g).get("primary_mac")
        if not mac or mac not in g.links:
            return
        eni = self.eni(mac)
        ifname = g.links[mac]
        lines = [f"link set {ifname} up"]
        v4s = _as_list(eni.get("local-ipv4s"))
        cidr4 = eni.get("subnet-ipv4-cidr-block")
        if v4s:
            addr = _subnet_of(v4s[0], _as_list(cidr4), 24)
            lines.append(f"addr add {addr} dev {ifname}")
            gw4 = ipv4_gateway(str(self._scenario_of(g).get("provider", "aws")), eni)
            if cidr4 and gw4:
                lines.append(f"route add default via {gw4} dev {ifname} proto dhcp")
        v6s = _as_list(eni.get("ipv6s"))
        cidrs6 = _as_list(eni.get("subnet-ipv6-cidr-blocks"))
        if v6s:
            addr = _subnet_of(v6s[0], cidrs6, 64)
            lines.append(f"addr add {addr} dev {ifname} nodad")
            gw6 = ipv6_gateway(eni, str(ipaddress.ip_interface(addr).network))
            lines.append(f"route add ::/0 via {gw6} dev {ifname} proto ra")
        # A booted VM finished duplicate address detection on its primary link long ago. Without
        # a usable link-local address the kernel cannot send neighbour solicitations for packets
        # whose source lives on another interface, so a mis-routed probe would silently stay in
        # the guest for the first seconds instead of reaching (and being dropped by) the vpc.
        # Skip DAD for this one link-up, then put the setting back: nothing visible remains.
        key = f"net.ipv6.conf.{ifname}.accept_dad"
        dad = self.guest(["sysctl", "-n", key], guest=g).stdout.strip() or "1"
        _sysctl(g.ns, {key: 0})
        _ip_batch(g.ns, lines)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            addrs = self.guest_addrs(ifname, 6, guest=g)
            if any(a.get("scope") == "link" and not a.get("tentative") for a in addrs):
                break
            time.sleep(0.01)
        _sysctl(g.ns, {key: dad})

    def _build_docker(self, g: Guest) -> None:
        assert g.container_ns is not None
        c = g.container_ns
        self._add_ns(c)
        _ip_batch(
            g.ns,
            [
                f"link add name {DOCKER_BRIDGE} type bridge forward_delay 0",
                f"link add name vethegt0 type veth peer name eth0 netns {c}",
                f"link set vethegt0 master {DOCKER_BRIDGE}",
                "link set vethegt0 up",
                f"link set {DOCKER_BRIDGE} up",
                f"addr add {DOCKER_V4}/16 dev {DOCKER_BRIDGE}",
                f"addr add {DOCKER_V6}/64 dev {DOCKER_BRIDGE} nodad",
            ],
        )
        _ip_batch(
            c,
            [
                "link set eth0 up",
                f"addr add {CONTAINER_V4}/16 dev eth0",
                f"addr add {CONTAINER_V6}/64 dev eth0 nodad",
                f"route add default via {DOCKER_V4}",
                f"route add ::/0 via {DOCKER_V6}",
            ],
        )
        _nft(
            g.ns,
            f"""
table ip egt_docker {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {DOCKER_V4_NET} oifname != "{DOCKER_BRIDGE}" masquerade
    }}
}}
""",
        )

    def _create_ports(self, macs: Sequence[str]) -> None:
        """Create the veth pairs of ENIs; the guest ends wait, down, in the vpc ("parked")."""
        if not macs:
            return
        lines = []
        settings: dict[str, Any] = {}
        nft_lines = []
        new = []
        for mac in macs:
            p = self._ports.get(mac)
            if p is None:
                n = len(self._ports)
                p = _Port(mac, f"{NS_PREFIX}v{n}", f"{NS_PREFIX}p{n}")
                self._ports[mac] = p
            v = p.vpc_if
            lines.append(f"link add name {v} type veth peer name {p.park_if} address {mac}")
            lines.append(f"link set {v} up")
            new.append(p)
            settings.update(
                {
                    f"net.ipv4.conf.{v}.proxy_arp": 1,
                    f"net.ipv4.conf.{v}.rp_filter": 1 if self._kernel_rpf else 0,
                    f"net.ipv4.conf.{v}.send_redirects": 0,
                    f"net.ipv4.neigh.{v}.proxy_delay": 0,
                    f"net.ipv6.conf.{v}.proxy_ndp": 1,
                    f"net.ipv6.conf.{v}.accept_dad": 0,
                    f"net.ipv6.conf.{v}.accept_ra": 0,
                    f"net.ipv6.neigh.{v}.proxy_delay": 0,
                }
            )
            if v not in self._counters_made:
                t = f"inet {_NFT_TABLE}"
                nft_lines += [
                    f"add counter {t} {v}",
                    f'add rule {t} probe iifname "{v}" icmp type echo-request counter name "{v}"',
                    f'add rule {t} probe iifname "{v}" icmpv6 type echo-request counter name "{v}"',
                    f'add rule {t} probe iifname "{v}" tcp flags & (syn | ack) == syn '
                    f'counter name "{v}"',
                ]
        _ip_batch(self.vpc_ns, lines)
        for p in new:
            p.exists = True
            p.addrs.clear()
            p.routes.clear()
            p.proxies.clear()
        _sysctl(self.vpc_ns, settings)
        if nft_lines:
            _nft(self.vpc_ns, "\n".join(nft_lines) + "\n")
            self._counters_made.update(p.vpc_if for p in new)

    def _sync_vpc(self) -> None:
        """Make the vpc match the scenario: veths, gateways, routes, proxies, neighbours.

        The cloud routes exactly what metadata lists, so after a scenario change the vpc follows:
        an IP removed from metadata is no longer routed to its ENI. Only the difference is
        applied, in two batches (removals, then additions).
        """
        enis = {e["mac"]: e for scn in self._scenarios() for e in scn["enis"]}
        self._create_ports([m for m in enis if m not in self._ports or not self._ports[m].exists])
        ports = {m: p for m, p in self._ports.items() if p.exists}

        want_addrs: dict[str, set[str]] = {p.vpc_if: set() for p in ports.values()}
        want_routes: dict[str, set[str]] = {p.vpc_if: set() for p in ports.values()}
        want_proxies: dict[str, set[str]] = {p.vpc_if: set() for p in ports.values()}
        route_owner: dict[str, str] = {}
        want_lo = {f"{METADATA_V4}/32", f"{METADATA_V6}/128", f"{FAR_V4}/32", f"{FAR_V6}/128"}
        want_lo |= {f"{OTHER_SUBNET_V4}/32", f"{OTHER_SUBNET_V6}/128"}
        provider_of: dict[str, str] = {}
        for scn in self._scenarios():
            cloud = str(scn.get("provider", "aws"))
            provider_of.update({e["mac"]: cloud for e in scn["enis"]})
            for a in METADATA_ADDRESSES.get(cloud, ()):
                want_lo.add(f"{a}/128" if ":" in a else f"{a}/32")
        v6_by_subnet: dict[str, set[tuple[str, str]]] = {}
        for mac, e in enis.items():
            if mac not in ports:
                continue
            v = ports[mac].vpc_if
            for ip in _as_list(e.get("local-ipv4s")):
                route_owner[f"{ip}/32"] = v
            for ip in _as_list(e.get("ipv6s")):
                route_owner[f"{ip}/128"] = v
                for c in _as_list(e.get("subnet-ipv6-cidr-blocks")):
                    if ipaddress.ip_address(ip) in ipaddress.ip_network(c, strict=False):
                        key = str(ipaddress.ip_network(c, strict=False))
                        v6_by_subnet.setdefault(key, set()).add((ip, v))
            for pfx in _as_list(e.get("ipv4-prefix")) + _as_list(e.get("ipv6-prefix")):
                route_owner[str(ipaddress.ip_network(pfx, strict=False))] = v
            cidr4 = e.get("subnet-ipv4-cidr-block")
            if cidr4:
                want_addrs[v].add(f"{ipv4_gateway(provider_of.get(mac, 'aws'), e)}/32")
                want_lo.add(f"{neighbour_of(cidr4)}/32")
        for r, v in route_owner.items():
            want_routes[v].add(r)
        for mac, e in enis.items():
            if mac not in ports:
                continue
            v = ports[mac].vpc_if
            for c in _as_list(e.get("subnet-ipv6-cidr-blocks")):
                key = str(ipaddress.ip_network(c, strict=False))
                want_addrs[v].add(f"{ipv6_gateway(e, c)}/128")
                want_lo.add(f"{neighbour_of(c)}/128")
                # Guests ND for anything in their own subnet: answer for the neighbour and for
                # the addresses of the other ENIs in it (the vpc then routes them).
                want_proxies[v].add(neighbour_of(c))
                want_proxies[v] |= {ip for ip, owner in v6_by_subnet.get(key, ()) if owner != v}

        dels: list[str] = []
        adds: list[str] = []
        for p in ports.values():
            v = p.vpc_if
            dels += [f"route del {r} dev {v}" for r in sorted(p.routes - want_routes[v])]
            dels += [f"neigh del proxy {a} dev {v}" for a in sorted(p.proxies - want_proxies[v])]
            dels += [f"addr del {a} dev {v}" for a in sorted(p.addrs - want_addrs[v])]
            adds += [
                f"addr replace {a} dev {v}" + (" nodad" if ":" in a else "")
                for a in sorted(want_addrs[v] - p.addrs)
            ]
            adds += [f"route replace {r} dev {v}" for r in sorted(want_routes[v])]
            adds += [f"neigh replace proxy {a} dev {v}" for a in sorted(want_proxies[v])]
        dels += [f"addr del {a} dev lo" for a in sorted(self._lo_addrs - want_lo)]
        adds += [f"addr replace {a} dev lo" for a in sorted(want_lo - self._lo_addrs)]
        _ip_batch(self.vpc_ns, dels, force=True)
        _ip_batch(self.vpc_ns, adds)
        for p in ports.values():
            p.addrs = set(want_addrs[p.vpc_if])
            p.routes = set(want_routes[p.vpc_if])
            p.proxies = set(want_proxies[p.vpc_if])
        self._lo_addrs = want_lo
        if self._dhcp:
            self._sync_dhcp(enis, provider_of)

    def _sync_dhcp(self, enis: Mapping[str, Any], provider_of: Mapping[str, str]) -> None:
        """One dnsmasq per existing ENI veth: the ENI's MAC gets its primary IP, the subnet's
        mask and the router (as the VPC's DHCP service would); restarted when that changes."""
        if shutil.which("dnsmasq") is None:
            raise SimVMError("`dnsmasq` not found (install dnsmasq-base): needed for dhcp=True")
        want: dict[str, tuple[str, ...]] = {}
        for mac, p in self._ports.items():
            e = enis.get(mac)
            ips = _as_list(e.get("local-ipv4s")) if e else []
            cidr = e.get("subnet-ipv4-cidr-block") if e else None
            if not (p.exists and ips and cidr):
                continue
            net = ipaddress.IPv4Network(str(cidr), strict=False)
            router = ipv4_gateway(provider_of.get(mac, "aws"), e) or gateway_of(str(cidr))
            base = self._tmp / f"dnsmasq-{p.vpc_if}"
            want[mac] = (
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--port=0",  # DHCP only, no DNS
                f"--interface={p.vpc_if}",
                "--bind-interfaces",  # one instance per veth, side by side
                f"--dhcp-range={net.network_address},static,{net.netmask}",
                f"--dhcp-host={mac},{ips[0]}",
                f"--dhcp-option=option:router,{router}",
                f"--dhcp-leasefile={base}.leases",
                f"--pid-file={base}.pid",
                f"--log-facility={base}.log",
                "--log-dhcp",
                "--user=root",
                "--no-ping",
                "--dhcp-authoritative",
                "--no-resolv",
                "--no-hosts",
            )
        for mac, (args, proc) in list(self._dnsmasq.items()):
            if want.get(mac) != args or proc.poll() is not None:
                _stop(proc, grace=1.0)
                if proc in self._procs:
                    self._procs.remove(proc)
                del self._dnsmasq[mac]
        for mac, args in want.items():
            if mac not in self._dnsmasq:
                self._start_dnsmasq(mac, args)

    def _start_dnsmasq(self, mac: str, args: tuple[str, ...], timeout: float = 10.0) -> None:
        log = Path(next(a for a in args if a.startswith("--log-facility=")).split("=", 1)[1])
        with contextlib.suppress(FileNotFoundError):
            log.unlink()
        cmd = ["ip", "netns", "exec", self.vpc_ns, "dnsmasq", *args]
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._procs.append(proc)
        self._dnsmasq[mac] = (args, proc)
        deadline = time.monotonic() + timeout
        while True:  # listening once it says which interface its sockets are bound to
            text = log.read_text(errors="replace") if log.exists() else ""
            if "DHCP, sockets bound" in text:
                return
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(proc, grace=1.0)
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise SimVMError(f"dnsmasq did not start: {shlex.join(cmd)}\n{text}{err}")
            time.sleep(0.02)

    # ---- hot-plug

    def attach(
        self, mac: str, ifname: Optional[str] = None, *, guest: Optional[Guest] = None
    ) -> str:
        """Hot-plug the ENI into the guest: its link appears there, down, named ``ifname``.

        An ENI not in the scenario (detached earlier) is put back into it first, as the cloud
        lists an attached ENI in metadata. Returns the guest interface name.
        """
        mac = mac.lower()
        g = guest or self.main_guest
        eni = self.eni(mac)
        scn = self._scenario_of(g)
        if all(e["mac"] != mac for e in scn["enis"]):
            scn["enis"].append(eni)
            self._write_scenario_of(g)
        self._sync_vpc()
        p = self._ports[mac]
        if p.guest is not None:
            raise SimVMError(f"ENI {mac} is already attached as {p.guest.ns}/{p.ifname}")
        name = ifname or self._default_ifname(mac)
        _run(["ip", "-n", self.vpc_ns, "link", "set", p.park_if, "netns", g.ns, "name", name])
        p.guest, p.ifname = g, name
        g.links[mac] = name
        return name

    def detach(self, mac: str, *, keep_in_metadata: bool = False) -> None:
        """Hot-unplug the ENI: its link disappears from the guest (the veth pair is deleted).

        The cloud stops listing a detached ENI, so by default it leaves the scenario too (and
        the vpc stops routing its IPs); ``keep_in_metadata`` simulates metadata lagging behind.
        """
        mac = mac.lower()
        p = self._ports.get(mac)
        if p is not None and p.exists:
            _run(["ip", "-n", self.vpc_ns, "link", "del", p.vpc_if])
            p.exists = False
            p.addrs.clear()
            p.routes.clear()
            p.proxies.clear()
        if p is not None and p.guest is not None:
            p.guest.links.pop(mac, None)
            p.guest, p.ifname = None, None
        if not keep_in_metadata:
            self.scenario["enis"] = [e for e in self.scenario["enis"] if e["mac"] != mac]
            self._write_scenario()
            for g in self.guests:
                if g.scenario is not None and any(e["mac"] == mac for e in g.scenario["enis"]):
                    g.scenario["enis"] = [e for e in g.scenario["enis"] if e["mac"] != mac]
                    self._write_scenario_of(g)
        self._sync_vpc()

    def add_eni(
        self, eni: Mapping[str, Any], *, attach: bool = False, ifname: Optional[str] = None
    ) -> None:
        """Add an ENI to the scenario and create its vpc side (parked until :meth:`attach`)."""
        e = _normalise({"enis": [dict(eni)]})["enis"][0]
        if any(x["mac"] == e["mac"] for x in self.scenario["enis"]):
            raise SimVMError(f"the scenario already has an ENI with MAC {e['mac']}")
        self.scenario["enis"].append(e)
        self._known[e["mac"]] = e
        self._write_scenario()
        self._sync_vpc()
        if attach:
            self.attach(e["mac"], ifname)

    def add_guest(
        self, scenario: Optional[Mapping[str, Any]] = None, *, timeout: float = 10.0
    ) -> Guest:
        """Add a second (third...) VM in the same VPC.

        Without ``scenario`` the VM has no ENIs and shares the SimVM's metadata: attach some
        with ``attach(mac, guest=g)``. With ``scenario`` it is a VM of its own, as the
        ENI-migration tests need: its ENIs are created and attached, its primary configured
        like a DHCP client would, and its own metadata simulator serves ``scenario`` on the
        metadata addresses at ``g.metadata_port`` (:meth:`agent` with ``guest=g`` uses it).
        """
        if not self._namespaces:
            raise SimVMError("start the SimVM before adding guests")
        n = len(self.guests) + 1
        g = Guest(f"g{n}", f"{self.prefix}-g{n}")
        if scenario is not None:
            g.scenario = _normalise(scenario)
            g.metadata_port = 8000 + n
            for e in g.scenario["enis"]:
                if any(e["mac"] == x["mac"] for scn in self._scenarios() for x in scn["enis"]):
                    raise SimVMError(f"ENI {e['mac']} is already listed for another VM")
                self._known[e["mac"]] = e
        self.guests.append(g)
        self._build_guest(g)
        if g.scenario is not None:
            self._write_scenario_of(g)
            self._sync_vpc()
            for e in sorted(g.scenario["enis"], key=lambda e: int(e.get("device-number", 0))):
                self.attach(e["mac"], guest=g)
            self._configure_primary(g)
            self._start_guest_metadata(g, timeout)
        return g

    def _start_guest_metadata(self, g: Guest, timeout: float) -> None:
        """A metadata simulator serving one added VM's scenario (AWS addresses, own port)."""
        path = self._tmp / f"scenario-{g.name}.json"
        out_path, err_path = self._tmp / f"sim-{g.name}.out", self._tmp / f"sim-{g.name}.err"
        cmd = ["ip", "netns", "exec", self.vpc_ns, *self._sim_command, "--scenario", str(path)]
        cmd += ["--listen", f"{METADATA_V4}:{g.metadata_port}"]
        cmd += ["--listen", f"[{METADATA_V6}]:{g.metadata_port}"]
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=_child_env(),
                start_new_session=True,
            )
        self._procs.append(proc)
        deadline = time.monotonic() + timeout
        while out_path.read_text(errors="replace").count("listening on") < 2:
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(proc)
                self._procs.remove(proc)
                raise SimVMError(
                    f"metadata simulator of {g.name} did not start: {shlex.join(cmd)}\n"
                    f"{err_path.read_text(errors='replace')}"
                )
            time.sleep(0.05)

    def move(
        self,
        mac: str,
        guest: Guest,
        ifname: Optional[str] = None,
        *,
        device_number: Optional[int] = None,
    ) -> str:
        """Migrate an attached ENI to another VM: its link leaves the old VM's namespace and
        appears, down, in ``guest`` (the same veth end moves, the cloud side stays), the old
        VM's metadata stops listing it and ``guest``'s lists it at ``device_number`` (default:
        the lowest free one). Returns the new interface name."""
        mac = mac.lower()
        p = self._ports.get(mac)
        if p is None or p.guest is None or p.ifname is None:
            raise SimVMError(f"ENI {mac} is not attached")
        src = p.guest
        if src is guest:
            raise SimVMError(f"ENI {mac} is already attached to {guest.name}")
        eni = copy.deepcopy(self.eni(mac))
        src_scn, dst_scn = self._scenario_of(src), self._scenario_of(guest)
        if device_number is None:
            used = {int(e.get("device-number", 0)) for e in dst_scn["enis"]}
            device_number = min(set(range(1, len(used) + 2)) - used)
        eni["device-number"] = device_number
        src_scn["enis"] = [e for e in src_scn["enis"] if e["mac"] != mac]
        dst_scn["enis"] = [e for e in dst_scn["enis"] if e["mac"] != mac] + [eni]
        self._known[mac] = eni
        self._write_scenario_of(src)
        self._write_scenario_of(guest)
        name = ifname or f"eth{device_number}"
        _run(["ip", "-n", src.ns, "link", "set", "dev", p.ifname, "down"])
        _run(["ip", "-n", src.ns, "link", "set", "dev", p.ifname, "netns", guest.ns, "name", name])
        src.links.pop(mac, None)
        p.guest, p.ifname = guest, name
        guest.links[mac] = name
        self._sync_vpc()
        return name

    # ---- metadata

    def _write_scenario(self) -> None:
        """Replace the scenario file atomically and make sure its mtime changes.

        The simulator reloads on an mtime change; two writes within the filesystem's timestamp
        granularity would otherwise look like one, so the mtime is bumped when needed.
        """
        if self.tmpdir is None:
            return
        path = self.scenario_path
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.scenario, indent=2, sort_keys=True))
        os.replace(tmp, path)
        mtime = os.stat(path).st_mtime_ns
        if self._mtime_ns is not None and mtime <= self._mtime_ns:
            mtime = self._mtime_ns + 1_000_000_000
            os.utime(path, ns=(mtime, mtime))
        self._mtime_ns = mtime
        if self.provider in ("static", "jdcloud"):
            self._write_static()

    def _write_static(self) -> None:
        """The static ENI file follows the scenario as metadata would (a scenario the simulator
        would refuse leaves the file as it was: tests write broken files themselves)."""
        try:
            parsed = parse_scenario(self.scenario)
        except ValueError:
            return
        jd = self.provider == "jdcloud"
        text = render_static(parsed, overlay=jd, subnets=not (jd and self._dhcp))
        tmp = self.static_path.with_name(self.static_path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.static_path)

    def update_scenario(self, scenario: Mapping[str, Any]) -> None:
        """Replace the whole scenario: metadata changes, and the vpc routes follow it.

        ENIs new to the scenario get a parked vpc side; nothing is attached or detached here
        (use :meth:`attach` / :meth:`detach`).
        """
        self.scenario = _normalise(scenario)
        for e in self.scenario["enis"]:
            self._known[e["mac"]] = e
        self._write_scenario()
        if self._namespaces:
            self._sync_vpc()

    def set_control(self, **control: Any) -> None:
        """Change the simulator's fault injection (``delay``, ``fail``, ``fail_paths``...)."""
        self.scenario.setdefault("control", {}).update(control)
        self._write_scenario()

    def start_metadata(self, timeout: float = 10.0) -> None:
        """Start the metadata simulator in the vpc, on the cloud's metadata addresses
        (``static``: only write the file, there is no service)."""
        if self._sim is not None and self._sim.poll() is None:
            return
        self._write_scenario()
        listen = [f"[{a}]:80" if ":" in a else f"{a}:80" for a in METADATA_ADDRESSES[self.provider]]
        if not listen:
            return
        out_path, err_path = self._tmp / "sim.out", self._tmp / "sim.err"
        cmd = [
            "ip",
            "netns",
            "exec",
            self.vpc_ns,
            *self._sim_command,
            "--scenario",
            str(self.scenario_path),
            *(arg for address in listen for arg in ("--listen", address)),
            "--stats",
            str(self.stats_path),
        ]
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=_child_env(),
                start_new_session=True,  # Ctrl-C reaches us; close() stops it in order
            )
        self._procs.append(proc)
        deadline = time.monotonic() + timeout
        while True:
            text = out_path.read_text(errors="replace")
            if text.count("listening on") >= len(listen):
                self._sim = proc
                return
            if proc.poll() is not None or time.monotonic() > deadline:
                why = (
                    f"exited with {proc.returncode}"
                    if proc.poll() is not None
                    else f"not listening after {timeout:g} s"
                )
                _stop(proc)
                self._procs.remove(proc)
                raise SimVMError(
                    f"metadata simulator {why}: {shlex.join(cmd)}\n--- stdout ---\n{text}"
                    f"--- stderr ---\n{err_path.read_text(errors='replace')}"
                )
            time.sleep(0.05)

    def stop_metadata(self) -> None:
        """Stop the simulator (SIGTERM): a metadata outage, or to flush its stats."""
        if self._sim is not None:
            _stop(self._sim)
            if self._sim in self._procs:
                self._procs.remove(self._sim)
            self._sim = None

    def metadata_stats(self, min_requests: int = 0, timeout: float = 2.0) -> dict[str, Any]:
        """The simulator's request statistics (empty before it wrote any).

        The simulator may record a request just after the client got its reply, so a test that
        knows how many requests were made can pass ``min_requests`` to wait (up to ``timeout``)
        for the file to catch up instead of racing it.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                stats: dict[str, Any] = json.loads(self.stats_path.read_text())
            except (FileNotFoundError, ValueError):
                stats = {}
            if stats.get("requests", 0) >= min_requests or time.monotonic() > deadline:
                return stats
            time.sleep(0.02)

    # ---- running commands

    def _exec(
        self,
        ns: str,
        cmd: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        env: Optional[Mapping[str, str]] = None,
    ) -> subprocess.CompletedProcess[str]:
        return _run(["ip", "netns", "exec", ns, *cmd], check=check, timeout=timeout, env=env)

    def guest(
        self,
        cmd: Sequence[str],
        check: bool = True,
        timeout: float = 60.0,
        *,
        guest: Optional[Guest] = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the VM."""
        return self._exec(self._gns(guest), cmd, check=check, timeout=timeout)

    def vpc(
        self, cmd: Sequence[str], check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the cloud."""
        return self._exec(self.vpc_ns, cmd, check=check, timeout=timeout)

    def container(
        self, cmd: Sequence[str], check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the container behind the guest's Docker bridge."""
        if self.container_ns is None:
            raise SimVMError("this SimVM was built with docker=False")
        return self._exec(self.container_ns, cmd, check=check, timeout=timeout)

    def agent(
        self,
        *args: str,
        check: bool = False,
        timeout: float = 120.0,
        defaults: bool = True,
        env: Optional[Mapping[str, str]] = None,
        guest: Optional[Guest] = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -m eni_guest <args>`` in the guest, pointed at the simulated cloud.

        ``--provider aws --metadata-url http://169.254.169.254`` are added right after the
        subcommand (they are subcommand options; nothing is added without a subcommand) unless
        given or ``defaults=False``. The lock file lives in the tmpdir so concurrent test runs
        do not serialise on the host's lock.
        """
        cmd, full_env = self.agent_command(*args, defaults=defaults, env=env, guest=guest)
        return _run(cmd, check=check, timeout=timeout, env=full_env)

    def agent_command(
        self,
        *args: str,
        defaults: bool = True,
        env: Optional[Mapping[str, str]] = None,
        guest: Optional[Guest] = None,
    ) -> tuple[list[str], dict[str, str]]:
        """The command line and environment :meth:`agent` runs, for a long-lived process
        (``eni-guest watch``) that a test starts with ``subprocess.Popen`` itself.

        The defaults go after the subcommand (after ``hotplug add``/``remove`` for the group).
        A guest added with its own scenario gets its own metadata port and lock file.
        """
        g = guest or self.main_guest
        argv = [str(a) for a in args]
        extra: list[str] = []
        at = next((i + 1 for i, a in enumerate(argv) if not a.startswith("-")), None)
        if at is not None and argv[at - 1] == "hotplug" and at < len(argv):
            at += 1  # a command group: its options belong to the subcommand
        cloud = str(self._scenario_of(g).get("provider", "aws"))
        if defaults and at is not None:
            if not any(a == "--provider" or a.startswith("--provider=") for a in argv):
                extra += ["--provider", cloud]
            given = any(a == "--metadata-url" or a.startswith("--metadata-url=") for a in argv)
            if not given and cloud != "static":
                port = f":{g.metadata_port}" if g.metadata_port is not None else ""
                host = METADATA_V4 if g.metadata_port else METADATA_ADDRESSES[cloud][0]
                extra += ["--metadata-url", f"http://{host}{port}"]
            argv[at:at] = extra
        lock = self.lock_file if g.scenario is None else self._tmp / f"lock-{g.name}"
        # The guest shares this machine's /run: the NetworkManager/networkd drop-ins go to the
        # VM's own directory, never to the host's.
        base_env = {
            "ENI_GUEST_LOCK_FILE": str(lock),
            "ENI_GUEST_DISTRO_ROOT": str(self.distro_root(g)),
        }
        if cloud in ("static", "jdcloud"):
            base_env["ENI_GUEST_STATIC_FILE"] = str(self.static_path)
        full_env = _child_env({**base_env, **(env or {})})
        cmd = ["ip", "netns", "exec", g.ns, sys.executable, "-m", "eni_guest", *argv]
        return cmd, full_env

    # ---- traffic

    def _helper(self) -> str:
        return str(self._tmp / "egt_helper.py")

    def _counters(self) -> dict[str, int]:
        out = self.vpc(["nft", "-j", "list", "counters", "table", "inet", _NFT_TABLE]).stdout
        counts: dict[str, int] = {}
        for item in json.loads(out).get("nftables", []):
            c = item.get("counter")
            if c:
                counts[c["name"]] = int(c.get("packets", 0))
        return counts

    def _verdict(
        self, ok: bool, before: Mapping[str, int], after: Mapping[str, int], detail: str
    ) -> Probe:
        best, best_delta = None, 0
        for name, n in after.items():
            if name == _RPF_COUNTER:
                continue
            delta = n - before.get(name, 0)
            if delta > best_delta:
                best, best_delta = name, delta
        exit_iface = None
        if best is not None:
            for p in self._ports.values():
                if p.vpc_if == best:
                    exit_iface = p.ifname
        dropped = after.get(_RPF_COUNTER, 0) > before.get(_RPF_COUNTER, 0)
        return Probe(ok, exit_iface, dropped, detail)

    def _probe_ns(self, guest: Optional[Guest], via_container: bool) -> str:
        g = guest or self.main_guest
        if not via_container:
            return g.ns
        if g.container_ns is None:
            raise SimVMError(f"guest {g.name} has no container (docker=False)")
        return g.container_ns

    def probe(
        self,
        src: Optional[str],
        dst: str,
        *,
        count: int = 2,
        timeout: float = 1.0,
        via_container: bool = False,
        guest: Optional[Guest] = None,
    ) -> Probe:
        """Ping ``dst`` from ``src`` (``None``: let the kernel choose) and report the exit ENI.

        ``exit_iface`` comes from per-veth nftables counters of echo requests in the vpc, taken
        before the reverse-path check, so it is known even when the cloud dropped the packets
        (the ``rx_packets`` of the veths would also count ARP/ND and router solicitations of
        links that just came up). It is ``None`` when no request reached the vpc: the
        destination is local to the guest, or the guest could not resolve its next hop (for
        example a link brought up less than ~2 s ago, whose link-local address is still in DAD,
        when the packet's source lives on another link). ``ok`` is true if any reply came back.
        """
        ns = self._probe_ns(guest, via_container)
        before = self._counters()
        cmd = [sys.executable, self._helper(), "ping", src or "-", dst, str(count)]
        cmd += [str(timeout), "0.1"]
        cp = self._exec(ns, cmd, check=False, timeout=count * 0.1 + timeout + 30)
        after = self._counters()
        detail = f"{src or '*'} -> {dst}: {(cp.stdout + cp.stderr).strip()}"
        return self._verdict(cp.returncode == 0, before, after, detail)

    def tcp_check(
        self,
        src: Optional[str],
        dst: str,
        port: int,
        *,
        timeout: float = 2.0,
        via_container: bool = False,
        guest: Optional[Guest] = None,
    ) -> Probe:
        """Connect from ``src`` to an echo server (see :meth:`start_tcp_server`) and echo a line.

        Returns a :class:`Probe` whose ``exit_iface`` counts the connection's SYNs.
        """
        ns = self._probe_ns(guest, via_container)
        before = self._counters()
        cmd = [sys.executable, self._helper(), "tcp", src or "-", dst, str(port), str(timeout)]
        cp = self._exec(ns, cmd, check=False, timeout=timeout + 30)
        after = self._counters()
        detail = f"{src or '*'} -> {dst}:{port}: {(cp.stdout + cp.stderr).strip()}"
        return self._verdict(cp.returncode == 0, before, after, detail)

    def start_tcp_server(self, addr: str, port: int, timeout: float = 5.0) -> TcpServer:
        """Start a TCP echo server on ``addr`` (an address of the vpc, e.g. FAR_V4)."""
        cmd = ["ip", "netns", "exec", self.vpc_ns, sys.executable, self._helper()]
        cmd += ["serve", addr, str(port)]
        proc, err_path = self._spawn(cmd, f"server-{addr}-{port}", stdin=subprocess.DEVNULL)
        line = _LineReader(proc).readline(timeout)
        if line != "ready":
            _stop(proc, grace=1.0)
            self._procs.remove(proc)
            err = err_path.read_text(errors="replace").strip()
            raise SimVMError(f"TCP server on {addr}:{port} did not start: {line!r} {err}")
        return TcpServer(proc, addr, port)

    def _spawn(
        self, cmd: Sequence[str], label: str, *, stdin: Any
    ) -> tuple[subprocess.Popen[bytes], Path]:
        """Start a long-lived helper; stderr goes to a file (a full pipe would block it)."""
        err_path = self._tmp / f"{label}-{len(self._procs)}.err".replace(":", "_")
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(
                list(cmd),
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,  # Ctrl-C reaches only us; close() stops it in order
            )
        self._procs.append(proc)
        return proc, err_path

    def hold_connection(
        self,
        src: Optional[str],
        dst: str,
        port: int,
        *,
        timeout: float = 5.0,
        guest: Optional[Guest] = None,
    ) -> HeldConnection:
        """Open a long-lived TCP connection from the guest (the operator's SSH session)."""
        cmd = ["ip", "netns", "exec", self._gns(guest), sys.executable, self._helper()]
        cmd += ["hold", src or "-", dst, str(port), str(timeout)]
        proc, err_path = self._spawn(cmd, f"hold-{dst}-{port}", stdin=subprocess.PIPE)
        held = HeldConnection(proc)
        line = held._reader.readline(timeout + 2)
        if line != "connected":
            _stop(proc, grace=1.0)
            self._procs.remove(proc)
            err = err_path.read_text(errors="replace").strip()
            raise SimVMError(f"could not open a connection to {dst}:{port}: {line!r} {err}")
        return held

    # ---- inspection

    def _gns(self, guest: Optional[Guest]) -> str:
        return (guest or self.main_guest).ns

    def guest_links(self, *, guest: Optional[Guest] = None) -> list[dict[str, Any]]:
        """``ip -j link show`` of the guest."""
        return _ip_json(self._gns(guest), ["link", "show"])

    def guest_rules(
        self, family: int = 4, *, guest: Optional[Guest] = None
    ) -> list[dict[str, Any]]:
        """``ip -j rule show`` of the guest, for ``family`` 4 or 6."""
        return _ip_json(self._gns(guest), [f"-{family}", "rule", "show"])

    def guest_routes(
        self, table: str = "main", family: int = 4, *, guest: Optional[Guest] = None
    ) -> list[dict[str, Any]]:
        """``ip -j route show table <table>`` of the guest (``table="all"`` for every table)."""
        args = [f"-{family}", "route", "show", "table", str(table)]
        return _ip_json(self._gns(guest), args)

    def guest_addrs(
        self, ifname: str, family: Optional[int] = None, *, guest: Optional[Guest] = None
    ) -> list[dict[str, Any]]:
        """The ``addr_info`` entries of one guest interface."""
        args = ([f"-{family}"] if family else []) + ["addr", "show", "dev", ifname]
        links = _ip_json(self._gns(guest), args)
        return [a for link in links for a in link.get("addr_info", [])]

    def guest_ips(
        self, ifname: str, family: Optional[int] = None, *, guest: Optional[Guest] = None
    ) -> set[str]:
        """``{"10.0.1.10/24", ...}`` on one guest interface: the short form for assertions."""
        addrs = self.guest_addrs(ifname, family, guest=guest)
        return {f"{a['local']}/{a['prefixlen']}" for a in addrs}

    def snapshot(self, *, guest: Optional[Guest] = None) -> dict[str, Any]:
        """Everything the agent could change in the guest, comparable with ``==``.

        Counters, lifetimes and DAD state are left out: they change without anyone acting.
        """
        ns = self._gns(guest)
        keep_link = ("ifname", "address", "flags", "mtu", "group", "master", "link_type")
        links = sorted(
            ({k: link[k] for k in keep_link if k in link} for link in _ip_json(ns, ["link"])),
            key=lambda d: d["ifname"],
        )
        volatile_addr = {"valid_life_time", "preferred_life_time", "tentative", "optimistic"}
        addrs = {
            link["ifname"]: sorted(
                (
                    {k: v for k, v in a.items() if k not in volatile_addr}
                    for a in link.get("addr_info", [])
                ),
                key=lambda d: json.dumps(d, sort_keys=True),
            )
            for link in _ip_json(ns, ["addr", "show"])
        }

        def _clean(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
            cleaned = [{k: v for k, v in e.items() if k != "expires"} for e in entries]
            return sorted(cleaned, key=lambda d: json.dumps(d, sort_keys=True))

        return {
            "links": links,
            "addrs": addrs,
            "rules4": _clean(_ip_json(ns, ["-4", "rule", "show"])),
            "rules6": _clean(_ip_json(ns, ["-6", "rule", "show"])),
            "routes4": _clean(_ip_json(ns, ["-4", "route", "show", "table", "all"])),
            "routes6": _clean(_ip_json(ns, ["-6", "route", "show", "table", "all"])),
        }

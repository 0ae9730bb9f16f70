"""The processes a simulated cloud runs: metadata simulators, DHCP, and TCP peers for probes.

Everything here runs inside the vpc namespace (the cloud side), except a held connection, which
is the guest's end of an operator's SSH session. Each process is started in a session of its
own (Ctrl-C reaches only the test runner, which stops them in order), its output goes to files
in the SimVM's directory, and :meth:`Services.stop_all` ends every one of them.

* The metadata simulator (``python -m eni_guest_lab.sim``) serves the SimVM's scenario on the
  cloud's metadata addresses; a VM added with a scenario of its own gets one on its own port.
* dnsmasq, one per ENI veth, answers the ENI's MAC with its primary IP, the subnet's mask and
  the router: JD Cloud's VPC DHCP service, which tells the agent what JD's metadata does not.
* TCP echo servers in the vpc and held connections from the guest (netprobe.py).
"""

from __future__ import annotations

import contextlib
import ipaddress
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from .probes import netprobe_command
from .shell import LineReader, SimVMError, child_env, stop
from .sim.tree import ipv4_gateway
from .topology.addresses import METADATA_V4, METADATA_V6, as_list, gateway_of
from .topology.guests import Guest
from .topology.vpc import Port


class TcpServer:
    """A TCP echo server in the vpc (started by ``SimVM.start_tcp_server``)."""

    def __init__(self, proc: subprocess.Popen[bytes], addr: str, port: int) -> None:
        self.proc = proc
        self.addr = addr
        self.port = port

    def close(self) -> None:
        stop(self.proc, grace=1.0)


class HeldConnection:
    """A TCP connection kept open from the guest, like the SSH session of the operator.

    ``alive()`` sends a numbered line and waits for its echo, so a late echo of an earlier,
    timed-out check is never mistaken for a live connection.
    """

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self._reader = LineReader(proc)
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
        stop(self.proc, grace=1.0)


def metadata_stats(path: Path, min_requests: int = 0, timeout: float = 2.0) -> dict[str, Any]:
    """The simulator's request counters (sim/stats.py: exact while it runs, from the socket
    beside its ``--stats`` file), waiting up to ``timeout`` for ``min_requests``."""
    from .sim import stats

    deadline = time.monotonic() + timeout
    while True:
        counters = stats.read(str(path))
        if counters.get("requests", 0) >= min_requests or time.monotonic() > deadline:
            return counters
        time.sleep(0.02)


def _dnsmasq_args(p: Port, eni: Mapping[str, Any], router: str, base: Path) -> tuple[str, ...]:
    ips = as_list(eni.get("local-ipv4s"))
    net = ipaddress.IPv4Network(str(eni["subnet-ipv4-cidr-block"]), strict=False)
    return (
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--port=0",  # DHCP only, no DNS
        f"--interface={p.vpc_if}",
        "--bind-interfaces",  # one instance per veth, side by side
        f"--dhcp-range={net.network_address},static,{net.netmask}",
        f"--dhcp-host={p.mac},{ips[0]}",
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


class Services:
    """The processes of one simulated cloud. ``workdir`` (set when the SimVM starts) holds
    their output files."""

    def __init__(self, vpc_ns: str, sim_command: Sequence[str]) -> None:
        self.vpc_ns = vpc_ns
        self.sim_command = list(sim_command)
        self.workdir: Optional[Path] = None
        self.procs: list[subprocess.Popen[Any]] = []
        self._sim: Optional[subprocess.Popen[Any]] = None
        self._dnsmasq: dict[str, tuple[tuple[str, ...], subprocess.Popen[Any]]] = {}

    @property
    def _dir(self) -> Path:
        if self.workdir is None:
            raise SimVMError("the SimVM is not started")
        return self.workdir

    def _forget(self, proc: subprocess.Popen[Any]) -> None:
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> list[str]:
        """Stop every process; returns the errors (each is forgotten only once stopped)."""
        errors: list[str] = []
        for proc in list(self.procs):
            try:
                stop(proc)
            except Exception as e:  # keep cleaning up whatever happens
                errors.append(f"stopping {proc.args!r}: {e}")
            self._forget(proc)
        self._sim = None
        return errors

    # ---- the metadata service

    @property
    def metadata_running(self) -> bool:
        return self._sim is not None and self._sim.poll() is None

    def start_metadata(
        self, scenario: Path, stats: Path, addresses: Sequence[str], timeout: float = 10.0
    ) -> None:
        """Serve ``scenario`` on port 80 of ``addresses`` (none: nothing to start)."""
        listen = [f"[{a}]:80" if ":" in a else f"{a}:80" for a in addresses]
        if not listen:
            return
        out_path, err_path = self._dir / "sim.out", self._dir / "sim.err"
        cmd = ["ip", "netns", "exec", self.vpc_ns, *self.sim_command, "--scenario", str(scenario)]
        cmd += [arg for address in listen for arg in ("--listen", address)]
        cmd += ["--stats", str(stats)]
        proc = self._start_logged(cmd, out_path, err_path)
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
                stop(proc)
                self._forget(proc)
                raise SimVMError(
                    f"metadata simulator {why}: {shlex.join(cmd)}\n--- stdout ---\n{text}"
                    f"--- stderr ---\n{err_path.read_text(errors='replace')}"
                )
            time.sleep(0.05)

    def stop_metadata(self) -> None:
        """Stop the simulator (SIGTERM): a metadata outage, or to flush its stats."""
        if self._sim is not None:
            stop(self._sim)
            self._forget(self._sim)
            self._sim = None

    def start_guest_metadata(self, g: Guest, scenario: Path, timeout: float) -> None:
        """A metadata simulator serving one added VM's scenario (AWS addresses, own port)."""
        out_path, err_path = self._dir / f"sim-{g.name}.out", self._dir / f"sim-{g.name}.err"
        cmd = ["ip", "netns", "exec", self.vpc_ns, *self.sim_command, "--scenario", str(scenario)]
        cmd += ["--listen", f"{METADATA_V4}:{g.metadata_port}"]
        cmd += ["--listen", f"[{METADATA_V6}]:{g.metadata_port}"]
        proc = self._start_logged(cmd, out_path, err_path)
        deadline = time.monotonic() + timeout
        while out_path.read_text(errors="replace").count("listening on") < 2:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                self._forget(proc)
                raise SimVMError(
                    f"metadata simulator of {g.name} did not start: {shlex.join(cmd)}\n"
                    f"{err_path.read_text(errors='replace')}"
                )
            time.sleep(0.05)

    def _start_logged(self, cmd: Sequence[str], out: Path, err: Path) -> subprocess.Popen[Any]:
        with open(out, "wb") as out_file, open(err, "wb") as err_file:
            proc = subprocess.Popen(
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=out_file,
                stderr=err_file,
                env=child_env(),
                start_new_session=True,  # Ctrl-C reaches us; close() stops it in order
            )
        self.procs.append(proc)
        return proc

    # ---- the VPC's DHCP service

    def sync_dhcp(
        self, ports: Mapping[str, Port], enis: Mapping[str, Any], provider_of: Mapping[str, str]
    ) -> None:
        """One dnsmasq per existing ENI veth: the ENI's MAC gets its primary IP, the subnet's
        mask and the router (as the VPC's DHCP service would); restarted when that changes."""
        if shutil.which("dnsmasq") is None:
            raise SimVMError("`dnsmasq` not found (install dnsmasq-base): needed for dhcp=True")
        want: dict[str, tuple[str, ...]] = {}
        for mac, p in ports.items():
            e = enis.get(mac)
            ips = as_list(e.get("local-ipv4s")) if e else []
            cidr = e.get("subnet-ipv4-cidr-block") if e else None
            if not (p.exists and ips and cidr):
                continue
            router = ipv4_gateway(provider_of.get(mac, "aws"), e) or gateway_of(str(cidr))
            want[mac] = _dnsmasq_args(p, e, router, self._dir / f"dnsmasq-{p.vpc_if}")
        for mac, (args, proc) in list(self._dnsmasq.items()):
            if want.get(mac) != args or proc.poll() is not None:
                stop(proc, grace=1.0)
                self._forget(proc)
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
        self.procs.append(proc)
        self._dnsmasq[mac] = (args, proc)
        deadline = time.monotonic() + timeout
        while True:  # listening once it says which interface its sockets are bound to
            text = log.read_text(errors="replace") if log.exists() else ""
            if "DHCP, sockets bound" in text:
                return
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc, grace=1.0)
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise SimVMError(f"dnsmasq did not start: {shlex.join(cmd)}\n{text}{err}")
            time.sleep(0.02)

    # ---- TCP peers

    def start_tcp_server(self, addr: str, port: int, timeout: float = 5.0) -> TcpServer:
        """Start a TCP echo server on ``addr`` (an address of the vpc, e.g. FAR_V4)."""
        cmd = ["ip", "netns", "exec", self.vpc_ns, *netprobe_command("serve", addr, str(port))]
        proc, err_path = self._spawn(cmd, f"server-{addr}-{port}", stdin=subprocess.DEVNULL)
        line = LineReader(proc).readline(timeout)
        if line != "ready":
            stop(proc, grace=1.0)
            self._forget(proc)
            err = err_path.read_text(errors="replace").strip()
            raise SimVMError(f"TCP server on {addr}:{port} did not start: {line!r} {err}")
        return TcpServer(proc, addr, port)

    def hold_connection(
        self, ns: str, src: Optional[str], dst: str, port: int, timeout: float = 5.0
    ) -> HeldConnection:
        """Open a long-lived TCP connection from ``ns`` (the operator's SSH session)."""
        probe = netprobe_command("hold", src or "-", dst, str(port), str(timeout))
        proc, err_path = self._spawn(
            ["ip", "netns", "exec", ns, *probe], f"hold-{dst}-{port}", stdin=subprocess.PIPE
        )
        held = HeldConnection(proc)
        line = held._reader.readline(timeout + 2)
        if line != "connected":
            stop(proc, grace=1.0)
            self._forget(proc)
            err = err_path.read_text(errors="replace").strip()
            raise SimVMError(f"could not open a connection to {dst}:{port}: {line!r} {err}")
        return held

    def _spawn(
        self, cmd: Sequence[str], label: str, *, stdin: Any
    ) -> tuple[subprocess.Popen[bytes], Path]:
        """Start a long-lived helper; stderr goes to a file (a full pipe would block it)."""
        err_path = self._dir / f"{label}-{len(self.procs)}.err".replace(":", "_")
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(
                list(cmd),
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,  # Ctrl-C reaches only us; close() stops it in order
            )
        self.procs.append(proc)
        return proc, err_path

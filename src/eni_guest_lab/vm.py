"""A simulated cloud VM built from network namespaces, for ``eni-guest demo``, the e2e tests
and the benchmarks.

Why a simulation at all: the properties the agent must keep (docs/routing.md) are about which
interface a packet leaves through and whether the cloud then drops it. Unit tests of the
planner cannot prove that; a real cloud is slow, costly and not available in CI. Network
namespaces give a faithful and cheap stand-in:

* ``<prefix>-vpc`` is the cloud: every ENI a veth pair, the VPC's source/destination check in
  nftables, the far host, another subnet, neighbours and the metadata service (topology/).
* ``<prefix>-g`` is the VM, its primary ENI configured as a DHCP client would, secondary ENIs
  present, down and unconfigured, because that is the agent's job; ``<prefix>-c`` is a container
  behind a Docker-like bridge in the guest (topology/guests.py).
* The cloud's processes, the metadata simulator first, run in the vpc (services.py); probes say
  where packets left (probes.py); snapshots read what the guest has configured (snapshots.py).

:class:`SimVM` composes them; testbed.py names everything a test needs in one place. The lab
never touches the machine's own interfaces, addresses, routes or rules: every object lives in
namespaces it created (topology/namespaces.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from . import snapshots
from .metadata import Metadata
from .probes import Probe, Prober
from .services import HeldConnection, Services, TcpServer, metadata_stats
from .shell import SimVMError, child_env, in_ns, run
from .sim.scenario import METADATA_ADDRESSES
from .topology.addresses import METADATA_V4
from .topology.appliance import Appliance
from .topology.guests import Guest, build_docker, build_guest, configure_primary
from .topology.namespaces import Namespaces, cleanup_stale, new_prefix
from .topology.vpc import Vpc, index_enis


def runtime_dir() -> Optional[str]:
    """Where a simulated VM keeps its files: /dev/shm when it is a tmpfs, else the default
    temporary directory.  The guest's runtime files (run lock, the boot's kept metadata, the
    NetworkManager/networkd drop-ins) live under /run on a real VM, a tmpfs on every systemd
    distro, where writing them costs no disk flush; on a disk they cost a few ms a run."""
    try:
        with open("/proc/self/mounts") as f:
            shm = any(line.split()[1:3] == ["/dev/shm", "tmpfs"] for line in f)
    except OSError:
        return None
    return "/dev/shm" if shm and os.access("/dev/shm", os.W_OK) else None


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

    The scenario's ``provider`` picks the cloud (``sim/render.py``): the simulator serves that
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
        self.prefix = new_prefix()
        self.vpc_ns = f"{self.prefix}-vpc"
        self.main_guest = Guest("g", f"{self.prefix}-g", f"{self.prefix}-c" if docker else None)
        self.guests: list[Guest] = [self.main_guest]
        self.docker = docker
        self.tmpdir: Optional[Path] = None
        self._md = Metadata(scenario, self.guests, dhcp=dhcp)
        self._namespaces = Namespaces()
        self._vpc = Vpc(self.vpc_ns, self._namespaces, kernel_rp_filter=kernel_rp_filter)
        self._services = Services(
            self.vpc_ns, sim_command or [sys.executable, "-m", "eni_guest_lab.sim"]
        )
        self._prober = Prober(self.vpc_ns, self._vpc.ifname_of_vpc_if)
        self._want_metadata = metadata
        self._dhcp = dhcp
        self._ifnames = {k.lower(): v for k, v in (ifnames or {}).items()}
        self._attached = None if attached is None else {m.lower() for m in attached}
        self._started = False
        self.cloud_api: Optional[Any] = None  # sim/cloudapi.CloudApi once started

    def __repr__(self) -> str:
        return f"SimVM(prefix={self.prefix!r}, enis={sorted(self._vpc.ports)!r})"

    # ---- names

    @property
    def scenario(self) -> dict[str, Any]:
        """The SimVM's metadata (live: change it through :meth:`update_scenario`)."""
        return self._md.scenario

    @property
    def guest_ns(self) -> str:
        return self.main_guest.ns

    @property
    def container_ns(self) -> Optional[str]:
        return self.main_guest.container_ns

    @property
    def provider(self) -> str:
        """The cloud the scenario simulates (``aws`` unless it says otherwise)."""
        return self._md.provider

    @property
    def static_path(self) -> Path:
        """The agent's static ENI file: all of it for ``static``, the overlay for ``jdcloud``."""
        return self._md.static_path

    @property
    def scenario_path(self) -> Path:
        return self._md.scenario_path

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
        return self._md.eni(mac)

    def ifname_of(self, mac: str) -> Optional[str]:
        """The guest interface name of an attached ENI, else ``None``."""
        p = self._vpc.ports.get(mac.lower())
        return p.ifname if p else None

    def vpc_if_of(self, mac: str) -> str:
        """The vpc-side veth of an ENI (to inspect the cloud side in a test)."""
        return self._vpc.ports[mac.lower()].vpc_if

    def add_appliance(self, mac: str, address: str) -> Appliance:
        """An inspection appliance at ``address`` (``10.0.2.5/24``) in the subnet of ENI
        ``mac``, the next hop to ``topology.appliance.FAR_NET`` (see that module)."""
        return self._vpc.add_appliance(mac.lower(), address)

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
            self.tmpdir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-", dir=runtime_dir()))
            self._md.workdir = self._services.workdir = self.tmpdir
            self._md.write()
            self._vpc.build()
            build_guest(self._namespaces, self.main_guest)
            self._sync()
            enis = sorted(self.scenario["enis"], key=lambda e: int(e.get("device-number", 0)))
            for e in enis:
                if self._attached is None or e["mac"] in self._attached:
                    self.attach(e["mac"])
            self._configure_primary(self.main_guest)
            if self.docker:
                build_docker(self._namespaces, self.main_guest)
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
        if self.cloud_api is not None:
            self.cloud_api.close()
            self.cloud_api = None
        errors = self._services.stop_all()
        errors += self._namespaces.delete_all()
        self._vpc.forget_links()
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        if errors:
            raise SimVMError("cleanup incomplete: " + "; ".join(errors))

    def _sync(self) -> None:
        """The vpc (and its DHCP service) follow what metadata lists."""
        scenarios = self._md.all()
        self._vpc.sync(scenarios)
        if self._dhcp:
            enis, provider_of = index_enis(scenarios)
            self._services.sync_dhcp(self._vpc.ports, enis, provider_of)

    def _configure_primary(self, g: Guest) -> None:
        scn = self._md.of(g)
        mac = scn.get("primary_mac")
        if mac and mac in g.links:
            configure_primary(g, g.links[mac], self.eni(mac), str(scn.get("provider", "aws")))

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
        self._md.list_on(mac, g)
        self._sync()
        number = int(self.eni(mac).get("device-number", 0))
        name = ifname or self._ifnames.get(mac) or f"eth{number}"
        self._vpc.plug(mac, g, name)
        return name

    def detach(self, mac: str, *, keep_in_metadata: bool = False) -> None:
        """Hot-unplug the ENI: its link disappears from the guest (the veth pair is deleted).

        The cloud stops listing a detached ENI, so by default it leaves the scenario too (and
        the vpc stops routing its IPs); ``keep_in_metadata`` simulates metadata lagging behind.
        """
        mac = mac.lower()
        self._vpc.unplug(mac)
        if not keep_in_metadata:
            self._md.unlist(mac)
        self._sync()

    def add_eni(
        self, eni: Mapping[str, Any], *, attach: bool = False, ifname: Optional[str] = None
    ) -> None:
        """Add an ENI to the scenario and create its vpc side (parked until :meth:`attach`)."""
        e = self._md.add_eni(eni)
        self._sync()
        if attach:
            self.attach(e["mac"], ifname)

    def add_guest(
        self,
        scenario: Optional[Mapping[str, Any]] = None,
        *,
        timeout: float = 10.0,
        attach: bool = True,
    ) -> Guest:
        """Add a second (third...) VM in the same VPC.

        Without ``scenario`` the VM has no ENIs and shares the SimVM's metadata: attach some
        with ``attach(mac, guest=g)``. With ``scenario`` it is a VM of its own, as the
        ENI-migration tests need: its ENIs are created and attached, its primary configured
        like a DHCP client would, and its own metadata simulator serves ``scenario`` on the
        metadata addresses at ``g.metadata_port`` (:meth:`agent` with ``guest=g`` uses it).
        ``attach=False`` leaves its ENIs parked and its primary unconfigured: the real-VM bed
        wires them to a QEMU guest itself (``attach(mac, veth, guest=g)``).
        """
        if not self._namespaces:
            raise SimVMError("start the SimVM before adding guests")
        n = len(self.guests) + 1
        g = Guest(f"g{n}", f"{self.prefix}-g{n}")
        if scenario is not None:
            self._md.adopt(g, scenario, port=8000 + n)
        self.guests.append(g)
        build_guest(self._namespaces, g)
        if g.scenario is not None:
            self._md.write(g)
            self._sync()
            for e in sorted(g.scenario["enis"], key=lambda e: int(e.get("device-number", 0))):
                if attach:
                    self.attach(e["mac"], guest=g)
            if attach:
                self._configure_primary(g)
            self._services.start_guest_metadata(g, self._md.guest_path(g), timeout)
        return g

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
        src = self._vpc.attached(mac).guest
        assert src is not None
        if src is guest:
            raise SimVMError(f"ENI {mac} is already attached to {guest.name}")
        device_number = self._md.move(mac, src, guest, device_number)
        name = ifname or f"eth{device_number}"
        self._vpc.move(mac, guest, name)
        self._sync()
        return name

    # ---- metadata

    def update_scenario(self, scenario: Mapping[str, Any]) -> None:
        """Replace the whole scenario: metadata changes, and the vpc routes follow it.

        ENIs new to the scenario get a parked vpc side; nothing is attached or detached here
        (use :meth:`attach` / :meth:`detach`).
        """
        self._md.replace(scenario)
        if self._namespaces:
            self._sync()

    def set_control(self, **control: Any) -> None:
        """Change the simulator's fault injection (``delay``, ``fail``, ``fail_paths``...)."""
        self._md.set_control(control)

    def start_metadata(self, timeout: float = 10.0) -> None:
        """Start the metadata simulator in the vpc, on the cloud's metadata addresses
        (``static``: only write the file, there is no service)."""
        if self._services.metadata_running:
            return
        self._md.write()
        addresses = METADATA_ADDRESSES[self.provider]
        self._services.start_metadata(self.scenario_path, self.stats_path, addresses, timeout)

    def start_cloud_api(self, lag: float = 0.0) -> Any:
        """The cloud's API (sim/cloudapi.py) in the vpc, on the metadata address: assign and
        unassign private IPs, attach and detach ENIs; the VPC follows at once, metadata after
        ``lag`` seconds.  Returns the CloudApi (its ``url``, its ``calls``)."""
        from .sim.cloudapi import CloudApi

        if self.cloud_api is None:
            self.cloud_api = CloudApi(self, lag=lag)
        self.cloud_api.lag = lag
        return self.cloud_api

    def stop_metadata(self) -> None:
        """Stop the simulator (SIGTERM): a metadata outage, or to flush its stats."""
        self._services.stop_metadata()

    def metadata_stats(self, min_requests: int = 0, timeout: float = 2.0) -> dict[str, Any]:
        """The simulator's request statistics (empty before it wrote any).

        The simulator may record a request just after the client got its reply, so a test that
        knows how many requests were made can pass ``min_requests`` to wait (up to ``timeout``)
        for the file to catch up instead of racing it.
        """
        return metadata_stats(self.stats_path, min_requests, timeout)

    # ---- running commands

    def guest(
        self,
        cmd: Sequence[str],
        check: bool = True,
        timeout: float = 60.0,
        *,
        guest: Optional[Guest] = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the VM."""
        return in_ns(self._gns(guest), cmd, check=check, timeout=timeout)

    def vpc(
        self, cmd: Sequence[str], check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the cloud."""
        return in_ns(self.vpc_ns, cmd, check=check, timeout=timeout)

    def container(
        self, cmd: Sequence[str], check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the container behind the guest's Docker bridge."""
        if self.container_ns is None:
            raise SimVMError("this SimVM was built with docker=False")
        return in_ns(self.container_ns, cmd, check=check, timeout=timeout)

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
        return run(cmd, check=check, timeout=timeout, env=full_env)

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
        cloud = str(self._md.of(g).get("provider", "aws"))
        argv = _with_defaults(args, cloud, g.metadata_port) if defaults else [str(a) for a in args]
        lock = self.lock_file if g.scenario is None else self._tmp / f"lock-{g.name}"
        # The guest shares this machine's /run: the NetworkManager/networkd drop-ins go to the
        # VM's own directory, never to the host's.
        base_env = {
            "ENI_GUEST_LOCK_FILE": str(lock),
            "ENI_GUEST_DISTRO_ROOT": str(self.distro_root(g)),
        }
        if cloud in ("static", "jdcloud"):
            base_env["ENI_GUEST_STATIC_FILE"] = str(self.static_path)
        full_env = child_env({**base_env, **(env or {})})
        cmd = ["ip", "netns", "exec", g.ns, sys.executable, "-m", "eni_guest", *argv]
        return cmd, full_env

    # ---- traffic

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
        return self._prober.ping(ns, src, dst, count, timeout)

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
        return self._prober.tcp(ns, src, dst, port, timeout)

    def start_tcp_server(self, addr: str, port: int, timeout: float = 5.0) -> TcpServer:
        """Start a TCP echo server on ``addr`` (an address of the vpc, e.g. FAR_V4)."""
        return self._services.start_tcp_server(addr, port, timeout)

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
        return self._services.hold_connection(self._gns(guest), src, dst, port, timeout)

    # ---- inspection (snapshots.py)

    def _gns(self, guest: Optional[Guest]) -> str:
        return (guest or self.main_guest).ns

    def guest_links(self, *, guest: Optional[Guest] = None) -> list[dict[str, Any]]:
        """``ip -j link show`` of the guest."""
        return snapshots.guest_links(self._gns(guest))

    def guest_rules(
        self, family: int = 4, *, guest: Optional[Guest] = None
    ) -> list[dict[str, Any]]:
        """``ip -j rule show`` of the guest, for ``family`` 4 or 6."""
        return snapshots.guest_rules(self._gns(guest), family)

    def guest_routes(
        self, table: str = "main", family: int = 4, *, guest: Optional[Guest] = None
    ) -> list[dict[str, Any]]:
        """``ip -j route show table <table>`` of the guest (``table="all"`` for every table)."""
        return snapshots.guest_routes(self._gns(guest), table, family)

    def guest_addrs(
        self, ifname: str, family: Optional[int] = None, *, guest: Optional[Guest] = None
    ) -> list[dict[str, Any]]:
        """The ``addr_info`` entries of one guest interface."""
        return snapshots.guest_addrs(self._gns(guest), ifname, family)

    def guest_ips(
        self, ifname: str, family: Optional[int] = None, *, guest: Optional[Guest] = None
    ) -> set[str]:
        """``{"10.0.1.10/24", ...}`` on one guest interface: the short form for assertions."""
        return snapshots.guest_ips(self._gns(guest), ifname, family)

    def snapshot(self, *, guest: Optional[Guest] = None) -> dict[str, Any]:
        """Everything the agent could change in the guest, comparable with ``==`` (counters,
        lifetimes and DAD state left out: they change without anyone acting)."""
        return snapshots.snapshot(self._gns(guest))


def _with_defaults(args: Sequence[str], cloud: str, port: Optional[int]) -> list[str]:
    """``args`` with ``--provider`` and ``--metadata-url`` of the simulated cloud inserted
    after the subcommand (after ``hotplug add``/``remove`` for the group), unless given."""
    argv = [str(a) for a in args]
    at = next((i + 1 for i, a in enumerate(argv) if not a.startswith("-")), None)
    if at is None:
        return argv  # no subcommand: nothing to add
    if argv[at - 1] == "hotplug" and at < len(argv):
        at += 1  # a command group: its options belong to the subcommand
    extra: list[str] = []
    if not any(a == "--provider" or a.startswith("--provider=") for a in argv):
        extra += ["--provider", cloud]
    given = any(a == "--metadata-url" or a.startswith("--metadata-url=") for a in argv)
    if not given and cloud != "static":
        host = METADATA_V4 if port else METADATA_ADDRESSES[cloud][0]
        extra += ["--metadata-url", f"http://{host}" + (f":{port}" if port is not None else "")]
    argv[at:at] = extra
    return argv

"""A real VM (QEMU, systemd, udev, NetworkManager) in the namespace test bed's simulated VPC.

The cloud is the same as for :class:`~eni_guest_lab.vm.SimVM`, which this bed starts with no ENI
attached: the vpc namespace with the VPC's source check, the metadata simulator and the far
host, and a DHCP server on every ENI (as a VPC has). Its guest namespace ``<prefix>-g`` is not
the VM here but the hypervisor: QEMU runs inside it, and every ENI is wired there as::

    vpc ns: <prefix>v<N>  ==veth==  e<N> -[ bridge br<N> ]- tap<N>  ==QEMU==  guest NIC (ENI MAC)

The veth end on the bridge gets a MAC of its own (the guest NIC carries the ENI's), so the
bridge forwards the guest's frames instead of taking them for itself.

A second VM joins the first one's VPC (``join=``): its hypervisor namespace is another guest of
the same SimVM, with metadata of its own (its simulator listens on a port of its own; the vpc
sends the metadata requests arriving on the VM's primary ENI there), and an ENI can migrate
between the two (:meth:`RealVM.move_eni`: the same MAC and the same veth, as a cloud moves an
ENI). Probes run ``ping`` in
the guest through the guest agent and read the vpc's per-veth counters, which say which ENI
the packets left through, before the source check.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from .. import scenarios
from ..probes import Probe, Prober
from ..shell import SimVMError, ip_batch, nft
from ..topology.addresses import METADATA_V4, METADATA_V6
from ..topology.guests import Guest
from ..vm import SimVM
from .image import (
    NM,
    BaseImage,
    Flavour,
    base_image,
    build_checkout_deb,
    build_checkout_wheel,
    prepare_disk,
)
from .qemu import Exec, Nic, Qemu

#: The PCI slot of the first ENI wired (the primary): the guest calls it ens16.
FIRST_NIC_SLOT = 16


def _log(msg: str) -> None:
    print(f"[realvm] {msg}", file=sys.stderr, flush=True)


@dataclass
class Attached:
    """An ENI wired to the VM: its NIC (tap, QMP ids) and how it was plugged."""

    nic: Nic
    bridge: str
    veth: str
    hotplugged: bool


class RealVM:
    """One booted VM with ENIs of ``scenario`` attached at boot (``boot_macs``; default all).

    ``flavour``: the image and its network stack; ``config``: the image's
    /etc/eni-guest/eni-guest.toml (``None``: as installed); ``files``: more files for the
    image (path -> content), ``enable``: units of those to enable; ``join``: a running
    RealVM whose VPC this one joins, as another instance (``scenario`` is then this VM's own
    metadata). Use as a context manager; :meth:`close` kills QEMU and deletes every namespace
    and temporary file (a joined VM's namespace goes with the VPC it joined).
    """

    def __init__(
        self,
        scenario: Mapping[str, Any],
        *,
        boot_macs: Optional[Sequence[str]] = None,
        flavour: Flavour = NM,
        config: Optional[str] = None,
        files: Optional[Mapping[str, str]] = None,
        enable: Sequence[str] = (),
        join: Optional[RealVM] = None,
    ) -> None:
        self.scenario = scenario
        self.flavour = flavour
        self.config = config
        self.files = dict(files or {})
        self.enable = tuple(enable)
        macs = [e["mac"] for e in scenario["enis"]] if boot_macs is None else list(boot_macs)
        self._boot_macs = [m.lower() for m in macs]
        self._joined = join is not None
        if join is not None:
            self.sim = join.sim
        else:
            self.sim = SimVM(scenario, attached=(), docker=False, dhcp=True)
        self.guest: Optional[Guest] = None  # the namespace QEMU runs in
        self.attached: dict[str, Attached] = {}
        self.timings: dict[str, float] = {}
        self.image: Optional[BaseImage] = None
        self.qemu: Optional[Qemu] = None
        self.run_dir: Optional[Path] = None
        self._n = 0
        self._prober: Optional[Prober] = None

    # ---- lifecycle

    def __enter__(self) -> RealVM:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, boot_timeout: float = 600.0) -> None:
        t0 = time.monotonic()
        self.image = base_image(self.flavour.recipe)
        self.timings["image"] = time.monotonic() - t0
        if self._joined:
            self.guest = self.sim.add_guest(self.scenario, attach=False)
        else:
            self.guest = self.sim.start().main_guest
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"{self.sim.prefix}-vm"))
        t1 = time.monotonic()
        if self.flavour.package == "deb":
            package = build_checkout_deb(self.run_dir / "deb")
        else:
            package = build_checkout_wheel(self.run_dir / "wheel")
        self.timings[self.flavour.package] = time.monotonic() - t1
        disk = self.run_dir / "disk.raw"
        steps = prepare_disk(
            self.image, package, disk, self.flavour, self.config, self.files, self.enable
        )
        self.timings.update({f"prepare_{k}": v for k, v in steps.items()})
        self._prober = Prober(self.sim.vpc_ns, self._mac_of_vpc_if)
        nics = [self._wire(mac, hotplugged=False).nic for mac in self._boot_macs]
        if self._joined:
            self._route_metadata()
        self.qemu = Qemu(self.ns, self.run_dir)
        self.qemu.start(self.image.kernel, self.image.initrd, disk, nics)
        self.timings["boot_to_ready"] = self.qemu.wait_ready(boot_timeout)
        _log(
            "timings (s): "
            + ", ".join(f"{k} {v:.1f}" for k, v in self.timings.items())
            + f" (image {'built' if self.image.built_in else 'cached'}: {self.image.dir})"
        )

    def close(self) -> None:
        if self.qemu is not None:
            self.qemu.stop()
            self.qemu = None
        if not self._joined:
            self.sim.close()
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None

    @property
    def ns(self) -> str:
        """The namespace QEMU runs in (the VM's taps and bridges are there)."""
        assert self.guest is not None, "the RealVM is not started"
        return self.guest.ns

    # ---- wiring ENIs

    def _wire(
        self, mac: str, *, hotplugged: bool, arrive: Optional[Callable[[str], Any]] = None
    ) -> Attached:
        """Attach the ENI in the cloud (metadata lists it, the vpc routes it) and wire its veth
        to a new tap through a bridge in QEMU's namespace.  ``arrive(veth_name)`` brings the
        veth into that namespace (default: a new attach; a migration moves it there)."""
        n = self._n
        self._n += 1
        veth, br, tap = f"e{n}", f"br{n}", f"tap{n}"
        if arrive is None:
            self.sim.attach(mac, veth, guest=self.guest)
        else:
            arrive(veth)
        tag = self.sim.guests.index(self.guest) if self.guest in self.sim.guests else 0
        own_mac = f"02:ee:{tag:02x}:00:{n // 256:02x}:{n % 256:02x}"
        ip_batch(
            self.ns,
            [
                f"link set {veth} address {own_mac}",
                f"link add {br} type bridge stp_state 0 forward_delay 0 mcast_snooping 0",
                f"tuntap add dev {tap} mode tap",
                f"link set {veth} master {br}",
                f"link set {tap} master {br}",
                f"link set {br} up",
                f"link set {veth} up",
                f"link set {tap} up",
            ],
        )
        # PCI slots 16-31: above what QEMU gives the disk and the serial port, one per ENI.
        if n >= 16:
            raise SimVMError("the real-VM bed wires at most 16 ENIs to one VM")
        a = Attached(Nic(f"n{n}", tap, mac, FIRST_NIC_SLOT + n), br, veth, hotplugged)
        self.attached[mac] = a
        return a

    def _unwire(self, mac: str) -> None:
        a = self.attached.pop(mac)
        self.sim.detach(mac)  # the veth pair goes with it
        ip_batch(self.ns, [f"link del {a.nic.tap}", f"link del {a.bridge}"], force=True)

    def _route_metadata(self) -> None:
        """A joined VM asks the cloud's metadata address, port 80, like any instance: the vpc
        sends what arrives on its primary ENI to its own simulator (``guest.metadata_port``)."""
        assert self.guest is not None and self.guest.metadata_port is not None
        v = self.sim.vpc_if_of(scenarios.macs(dict(self.scenario))[0])
        port = self.guest.metadata_port
        nft(
            self.sim.vpc_ns,
            f"""
table inet lab_metadata_{self.guest.name} {{
    chain dstnat {{
        type nat hook prerouting priority -100; policy accept;
        iifname "{v}" ip daddr {METADATA_V4} tcp dport 80 dnat ip to {METADATA_V4}:{port}
        iifname "{v}" ip6 daddr {METADATA_V6} tcp dport 80 dnat ip6 to [{METADATA_V6}]:{port}
    }}
}}
""",
        )

    def hotplug(self, mac: str) -> float:
        """Attach an ENI to the running VM (QMP device_add); returns the device_add time."""
        assert self.qemu is not None
        a = self._wire(mac.lower(), hotplugged=True)
        return self.qemu.hotplug(a.nic)

    def move_eni(self, mac: str, to: RealVM) -> tuple[float, float]:
        """Migrate an ENI to ``to`` (a VM in the same VPC), as a cloud does: ``device_del``
        here until DEVICE_DELETED, then the cloud moves it (this VM's metadata stops listing
        it, ``to``'s lists it; the vpc side stays), then ``device_add`` with the same MAC in
        ``to``.  Returns (seconds the unplug took, ``time.monotonic()`` of the device_add)."""
        mac = mac.lower()
        assert self.qemu is not None and to.qemu is not None and to.sim is self.sim
        a = self.attached[mac]
        took = self.qemu.unplug(a.nic)
        del self.attached[mac]
        ip_batch(self.ns, [f"link del {a.nic.tap}", f"link del {a.bridge}"], force=True)
        b = to._wire(mac, hotplugged=True, arrive=lambda name: self.sim.move(mac, to.guest, name))
        return took, to.qemu.hotplug(b.nic)

    def unplug(self, mac: str) -> float:
        """Detach an ENI (QMP device_del, DEVICE_DELETED); the cloud forgets it. Seconds."""
        assert self.qemu is not None
        took = self.qemu.unplug(self.attached[mac.lower()].nic)
        self._unwire(mac.lower())
        return took

    # ---- the guest

    def sh(self, cmd: str, timeout: float = 60.0, check: bool = True) -> Exec:
        """Run a shell command in the guest (through qemu-guest-agent)."""
        assert self.qemu is not None
        return self.qemu.agent.sh(cmd, timeout=timeout, check=check)

    def ifname_of(self, mac: str) -> Optional[str]:
        """The guest's name of the NIC with ``mac`` (``None`` if it has none)."""
        out = self.sh(f"ip -o link | grep -i 'link/ether {mac} ' || true").stdout
        return out.split(":")[1].strip().split("@")[0] if out.strip() else None

    def journal(self) -> str:
        """The guest's journal of this boot (for failure reports)."""
        try:
            return self.sh("journalctl -b --no-pager -o short-monotonic", timeout=120).stdout
        except SimVMError as e:
            console = self.qemu.console_tail(200) if self.qemu else ""
            return f"(no journal: {e})\nconsole:\n{console}"

    # ---- traffic

    def _mac_of_vpc_if(self, vpc_if: str) -> Optional[str]:
        for mac in self.attached:
            with contextlib.suppress(KeyError):
                if self.sim.vpc_if_of(mac) == vpc_if:
                    return mac
        return None

    def ping(self, src: Optional[str], dst: str, count: int = 2, wait: float = 2.0) -> Probe:
        """Ping ``dst`` from the guest with source ``src``; ``exit_iface`` is the exit ENI's MAC."""
        assert self._prober is not None
        before = self._prober.counters()
        opt = f"-I {src} " if src else ""
        res = self.sh(f"ping -n -c {count} -i 0.2 -W {wait} {opt}{dst}", check=False,
                      timeout=count * wait + 30)  # fmt: skip
        after = self._prober.counters()
        detail = f"{src or '*'} -> {dst}: exit {res.returncode} {res.stdout[-300:]}{res.stderr}"
        return self._prober.verdict(res.returncode == 0, before, after, detail)

    def dhcp_log(self, mac: str) -> str:
        """What the VPC's DHCP server on this ENI saw (its dnsmasq log)."""
        assert self.sim.tmpdir is not None
        p = self.sim.tmpdir / f"dnsmasq-{self.sim.vpc_if_of(mac)}.log"
        return p.read_text(errors="replace") if p.exists() else ""

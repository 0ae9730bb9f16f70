"""Failover on the simulated VPC: two VMs, keepalived with unicast VRRP, a client outside.

The set-up a user of the product builds (docs/ha.md): VM A and VM B in one VPC, each with a
secondary ENI in 10.0.2.0/24; keepalived on both speaks VRRP by unicast between the ENIs'
primary IPs (a VPC has no multicast), and the master holds the virtual IP 10.0.2.100 on its
ENI.  A notify script asks the cloud API (sim/cloudapi.py) to assign the VIP to the new
master's ENI with reassignment; eni-guest's watch daemon (floating_ips = the VIP) gives the
address its source rule the moment keepalived adds it, or the script runs `eni-guest apply`.
A client on the far host (outside the VPC) sends a UDP request to the VIP every 10 ms; a
responder in each VM answers with its VM's name from the VIP, so an answer only arrives when
the VPC routes the VIP to that VM *and* the reply leaves through the right ENI (the VPC's
source check drops it otherwise).

`HaBed.fail_over()` kills the master (keepalived with SIGKILL and its service) and measures:
the outage (last answer from A to first from B), VRRP detection (the death to B's MASTER
notify) and the guest side (MASTER to the first answer from B).  `come_back()` restarts A as
backup and says what it still holds of the VIP.  `move_eni()` moves a whole ENI from A to B
with the cloud API (detach, attach) and measures the same from the detach.

keepalived runs inside the VM namespaces with its own configuration, pid files and log under
the SimVM's temporary directory (-n -l -f), nothing under /etc or /run/keepalived.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from . import nssocket
from .topology.addresses import FAR_V4
from .topology.guests import Guest
from .vm import SimVM

VIP = "10.0.2.100"
MOVING_IP = "10.0.3.30"  # the ENI that moves as a whole
PORT = 7000
A_MAC, A_ENI, MOVING_MAC = "0e:00:00:00:a0:00", "0e:00:00:00:a0:01", "0e:00:00:00:a0:02"
B_MAC, B_ENI = "0e:00:00:00:b0:00", "0e:00:00:00:b0:01"
A_SRC, B_SRC = "10.0.2.10", "10.0.2.20"  # the VRRP peers' unicast addresses


def _eni(mac: str, n: int, device: int, ips: list[str], subnet: str) -> dict[str, Any]:
    return {
        "mac": mac,
        "interface-id": f"eni-0{n:016x}",
        "device-number": device,
        "local-ipv4s": ips,
        "subnet-ipv4-cidr-block": subnet,
    }


def scenarios() -> tuple[dict[str, Any], dict[str, Any]]:
    """VM A (master at first: the cloud assigns it the VIP; it also holds the moving ENI)
    and VM B."""
    a = {
        "provider": "aws",
        "instance_id": "i-0aaaaaaaaaaaaaaa1",
        "primary_mac": A_MAC,
        "enis": [
            _eni(A_MAC, 0xA0, 0, ["10.0.1.10"], "10.0.1.0/24"),
            _eni(A_ENI, 0xA1, 1, [A_SRC, VIP], "10.0.2.0/24"),
            _eni(MOVING_MAC, 0xA2, 2, [MOVING_IP], "10.0.3.0/24"),
        ],
    }
    b = {
        "provider": "aws",
        "instance_id": "i-0bbbbbbbbbbbbbbb2",
        "primary_mac": B_MAC,
        "enis": [
            _eni(B_MAC, 0xB0, 0, ["10.0.1.50"], "10.0.1.0/24"),
            _eni(B_ENI, 0xB1, 1, [B_SRC], "10.0.2.0/24"),
        ],
    }
    return a, b


class Responder:
    """A service in a VM: answers every UDP request on ip:PORT with the VM's name, from ip
    (bound before the address exists there: IP_FREEBIND)."""

    def __init__(self, ns: str, ip: str, name: str) -> None:
        self.sock = nssocket.udp(ns, ip, PORT, freebind=True)
        self.sock.settimeout(0.05)  # so close() is noticed: a blocked recv would keep the port
        self.name = name.encode()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._serve, daemon=True)
        self._t.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(64)
                self.sock.sendto(data + b" " + self.name, peer)
            except OSError:  # a timeout, or the reply had no route yet
                continue

    def close(self) -> None:
        self._stop.set()
        self._t.join(2)
        self.sock.close()


class Client:
    """The far host (outside the VPC) sending a request to ip:PORT every `every` seconds;
    `answers` are (wall time, VM name) of every answer."""

    def __init__(self, vm: SimVM, ip: str, every: float = 0.01) -> None:
        self.sock = nssocket.udp(vm.vpc_ns, FAR_V4, 0)
        self.sock.setblocking(False)
        self.target, self.every = (ip, PORT), every
        self.answers: list[tuple[float, str]] = []
        self.sent = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        next_send = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_send:
                with contextlib.suppress(OSError):  # no route yet: the request is lost
                    self.sock.sendto(str(self.sent).encode(), self.target)
                self.sent += 1
                next_send = now + self.every
            ready, _, _ = select.select([self.sock], [], [], max(0.0, next_send - now))
            while ready:
                try:
                    data = self.sock.recv(64)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                except OSError:
                    return
                self.answers.append((time.time(), data.split()[-1].decode()))

    def first_from(self, name: str, after: float) -> Optional[float]:
        return next((t for t, who in list(self.answers) if who == name and t >= after), None)

    def last_from(self, name: str, before: float) -> Optional[float]:
        times = [t for t, who in list(self.answers) if who == name and t <= before]
        return times[-1] if times else None

    def close(self) -> None:
        self._stop.set()
        self._t.join(2)
        self.sock.close()


KEEPALIVED_CONF = """global_defs {{
    router_id {name}
    script_user root
    vrrp_version 3
}}
vrrp_instance VI_1 {{
    state BACKUP
    nopreempt
    interface {ifname}
    virtual_router_id 51
    priority {priority}
    advert_int {advert}
    unicast_src_ip {src}
    unicast_peer {{
        {peer}
    }}
    virtual_ipaddress {{
        {vip}/32 dev {ifname}
    }}
    notify {notify}
}}
"""

NOTIFY = """#!/bin/sh
# keepalived: notify.sh INSTANCE VI_1 STATE PRIORITY.  On MASTER: take the VIP in the cloud.
log={log}
echo "$3 $(date +%s.%N)" >>"$log"
if [ "$3" = MASTER ]; then
    curl -s -m 3 -X POST "{api}/assign-private-ip?eni={eni}&ip={vip}&allow_reassignment=1" \\
        >>"$log" 2>&1
    echo "ASSIGNED $(date +%s.%N)" >>"$log"
fi
{apply}
"""


@dataclass
class Node:
    """One VM of the pair and what runs in it."""

    name: str
    guest: Guest
    eni_mac: str
    src: str
    peer: str
    priority: int
    dir: Path
    keepalived: Optional[subprocess.Popen] = None
    responders: list[Responder] = field(default_factory=list)
    daemon: Optional[subprocess.Popen] = None
    daemon_since: float = 0.0  # time.monotonic() the watch daemon was started
    starts: int = 0  # keepalived starts so far

    @property
    def notify_log(self) -> Path:
        return self.dir / f"notify-{self.name}.log"

    def notified(self, state: str, after: float = 0.0) -> Optional[float]:
        """When the notify script logged `state` (MASTER, ASSIGNED, APPLIED...) after `after`."""
        try:
            lines = self.notify_log.read_text().splitlines()
        except FileNotFoundError:
            return None
        for line in lines:
            words = line.split()
            if len(words) == 2 and words[0] == state and float(words[1]) >= after:
                return float(words[1])
        return None


@dataclass
class Timeline:
    """What fail_over() measured (wall times, seconds)."""

    killed: float
    last_a: Optional[float]
    master: Optional[float]
    assigned: Optional[float]
    first_b: Optional[float]
    # what the four moments are, for lines()
    labels: tuple[str, ...] = (
        "A killed (keepalived SIGKILL, its service gone)",
        "B's keepalived: MASTER (notify script runs)",
        "cloud API: VIP assigned to B's ENI (VPC routes it to B)",
        "VRRP detection",
    )
    names: tuple[str, str] = ("A", "B")  # the VM that died, the one that took over

    @property
    def outage(self) -> Optional[float]:
        start = self.last_a if self.last_a is not None else self.killed
        return None if self.first_b is None else self.first_b - start

    @property
    def detection(self) -> Optional[float]:
        return None if self.master is None else self.master - self.killed

    @property
    def guest_side(self) -> Optional[float]:
        if self.first_b is None or self.master is None:
            return None
        return self.first_b - self.master

    def lines(self) -> list[str]:
        def at(t: Optional[float]) -> str:
            return "never" if t is None else f"{(t - self.killed) * 1000:+7.0f} ms"

        def ms(x: Optional[float]) -> str:
            return "-" if x is None else f"{x * 1000:.0f} ms"

        return [
            f"  {at(self.last_a)}  last answer from {self.names[0]}",
            f"  {at(self.killed)}  {self.labels[0]}",
            f"  {at(self.master)}  {self.labels[1]}",
            f"  {at(self.assigned)}  {self.labels[2]}",
            f"  {at(self.first_b)}  first answer from {self.names[1]}",
            f"  outage {ms(self.outage)} = {self.labels[3]} {ms(self.detection)}"
            f" + guest side {ms(self.guest_side)}",
        ]


class HaBed:
    """Two VMs in one VPC with keepalived, the cloud API and the client; `close()` undoes it.

    guest_side: "watch" (eni-guest watch in each VM follows the VIP) or "apply" (the notify
    script runs `eni-guest apply`, no daemon).  lag: the cloud's metadata lag in seconds.
    floating: eni-guest's floating_ips in both VMs.
    """

    def __init__(
        self,
        *,
        guest_side: str = "watch",
        lag: float = 2.0,
        advert: float = 0.1,
        floating: tuple[str, ...] = (VIP,),
    ) -> None:
        if shutil.which("keepalived") is None:
            raise RuntimeError("keepalived is not installed (Debian package keepalived)")
        a, b = scenarios()
        self.vm = SimVM(a, docker=False).start()
        self.nodes: list[Node] = []
        self.client: Optional[Client] = None
        self.guest_side, self.advert, self.floating = guest_side, advert, floating
        try:
            self.api = self.vm.start_cloud_api(lag=lag)
            gb = self.vm.add_guest(b)
            tmp = Path(self.vm.tmpdir or "/tmp")
            self.a = Node("A", self.vm.main_guest, A_ENI, A_SRC, B_SRC, 150, tmp)
            self.b = Node("B", gb, B_ENI, B_SRC, A_SRC, 100, tmp)
            self.nodes = [self.a, self.b]
            for n in self.nodes:
                self._agent(n, "apply")
                if guest_side == "watch":
                    self._start_daemon(n)
                n.responders.append(Responder(n.guest.ns, VIP, n.name))
            self.start_keepalived(self.a)
            self._wait(lambda: self.a.notified("ASSIGNED"), 10, "A becomes master")
            self.start_keepalived(self.b)
            self.client = Client(self.vm, VIP)
            self._wait(lambda: self.client and self.client.first_from("A", 0), 5, "A answers")
        except BaseException:
            self.close()
            raise

    # ---- the pieces

    def env(self) -> dict[str, str]:
        return {"ENI_GUEST_FLOATING_IPS": ",".join(self.floating)}

    def _agent(self, n: Node, *args: str) -> None:
        r = self.vm.agent(*args, guest=n.guest, env=self.env())
        if r.returncode != 0:
            raise RuntimeError(f"eni-guest {' '.join(args)} on {n.name}: {r.stderr}")

    def _start_daemon(self, n: Node) -> None:
        cmd, env = self.vm.agent_command("watch", guest=n.guest, env=self.env())
        with open(n.dir / f"watch-{n.name}.log", "ab") as log:
            n.daemon = subprocess.Popen(
                cmd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self._wait(lambda: "watching" in self.watch_log(n), 15, f"watch on {n.name}")
        n.daemon_since = time.monotonic()

    def daemons_settled(self, after: float = 2.0) -> None:
        """Wait until each watch daemon has run `after` seconds: a daemon starts with a full
        reconcile (imports and a metadata read, about a second on a loaded machine) and
        answers address events only after it.  On a VM it has run since boot."""
        for n in self.nodes:
            if n.daemon is not None:
                time.sleep(max(0.0, n.daemon_since + after - time.monotonic()))

    def watch_log(self, n: Node) -> str:
        try:
            return (n.dir / f"watch-{n.name}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _notify_script(self, n: Node) -> Path:
        apply = ""
        if self.guest_side == "apply":
            cmd, env = self.vm.agent_command("apply", guest=n.guest, env=self.env())
            exports = " ".join(f"{k}='{v}'" for k, v in sorted(env.items()) if k != "PWD")
            # on every transition: the rule follows the VIP keepalived just added or removed
            apply = (
                f'env -i {exports} {" ".join(cmd)} >>"$log" 2>&1\n'
                'echo "APPLIED-$3 $(date +%s.%N)" >>"$log"'
            )
        eni = self.vm.eni(n.eni_mac)["interface-id"]
        path = n.dir / f"notify-{n.name}.sh"
        path.write_text(
            NOTIFY.format(log=n.notify_log, api=self.api.url, eni=eni, vip=VIP, apply=apply)
        )
        path.chmod(0o700)
        return path

    def start_keepalived(self, n: Node) -> None:
        conf = n.dir / f"keepalived-{n.name}.conf"
        conf.write_text(
            KEEPALIVED_CONF.format(
                name=f"vm-{n.name}",
                ifname=self.vm.ifname_of(n.eni_mac),
                priority=n.priority,
                advert=self.advert,
                src=n.src,
                peer=n.peer,
                vip=VIP,
                notify=self._notify_script(n),
            )
        )
        # Fresh pid files on every start: a SIGKILLed keepalived's VRRP child may linger as a
        # zombie, and keepalived refuses to start while a pid file names a live process.
        n.starts += 1
        pid = {
            k: n.dir / f"keepalived-{n.name}-{n.starts}-{k}.pid" for k in ("main", "vrrp", "check")
        }
        cmd = ["ip", "netns", "exec", n.guest.ns, "keepalived", "-n", "-l", "-D", "-G", "-P"]
        cmd += ["-f", str(conf), "-p", str(pid["main"]), "-r", str(pid["vrrp"])]
        cmd += ["-c", str(pid["check"])]
        with open(n.dir / f"keepalived-{n.name}.log", "ab") as log:
            n.keepalived = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )

    def keepalived_log(self, n: Node) -> str:
        try:
            return (n.dir / f"keepalived-{n.name}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self, n: Node) -> None:
        """The VM dies: keepalived (and its VRRP child) SIGKILLed, its service gone."""
        if n.keepalived is not None and n.keepalived.poll() is None:
            os.killpg(n.keepalived.pid, signal.SIGKILL)
            n.keepalived.wait()
        n.keepalived = None
        for r in n.responders:
            r.close()
        n.responders = []

    @staticmethod
    def _wait(check: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: not within {timeout:g} s")
            time.sleep(0.01)

    # ---- what is measured

    def fail_over(self, dead: Optional[Node] = None, timeout: float = 10.0) -> Timeline:
        """Kill the master (A unless `dead` says otherwise); wait for the other VM to answer
        from the VIP; the timeline."""
        client = self.client
        assert client is not None
        dead = dead or self.a
        heir = self.b if dead is self.a else self.a
        killed = time.time()
        self.kill(dead)
        first = self._wait(lambda: client.first_from(heir.name, killed), timeout, "answer")
        self._wait(lambda: heir.notified("ASSIGNED", killed), 5, f"{heir.name}'s assign")
        routed = [c["routed_at"] for c in self.api.calls if c["routed_at"] >= killed]
        labels = (
            f"{dead.name} killed (keepalived SIGKILL, its service gone)",
            f"{heir.name}'s keepalived: MASTER (notify script runs)",
            f"cloud API: VIP assigned to {heir.name}'s ENI (VPC routes it there)",
            "VRRP detection",
        )
        return Timeline(
            killed,
            client.last_from(dead.name, killed),
            heir.notified("MASTER", killed),
            routed[0] if routed else None,
            first,
            labels,
            (dead.name, heir.name),
        )

    def come_back(
        self, node: Optional[Node] = None, timeout: float = 10.0, guest_side: str = ""
    ) -> None:
        """A (or `node`) is started again (its service, then keepalived) and must become
        backup.  guest_side="apply": from now on its notify script runs `eni-guest apply` and
        its watch daemon is stopped."""
        n = node or self.a
        if guest_side == "apply":
            self.guest_side = "apply"
            self._stop_daemon(n)
        n.responders.append(Responder(n.guest.ns, VIP, n.name))
        since = time.time()
        self.start_keepalived(n)
        self._wait(lambda: n.notified("BACKUP", since), timeout, f"{n.name} back as backup")

    @staticmethod
    def _stop_daemon(n: Node) -> None:
        if n.daemon is not None and n.daemon.poll() is None:
            n.daemon.terminate()
            try:
                n.daemon.wait(3)
            except subprocess.TimeoutExpired:
                n.daemon.kill()
                n.daemon.wait()
        n.daemon = None

    def holds_vip(self, n: Node) -> dict[str, bool]:
        """Whether a VM has the VIP as an address, and a rule from it."""
        ns = n.guest.ns
        addrs = subprocess.run(["ip", "-n", ns, "-4", "addr"], capture_output=True, text=True)
        rules = subprocess.run(["ip", "-n", ns, "-4", "rule"], capture_output=True, text=True)
        return {
            "address": f" {VIP}/" in addrs.stdout,
            "rule": f"from {VIP} " in rules.stdout,
        }

    def move_eni(self, timeout: float = 15.0) -> Timeline:
        """The moving ENI (MOVING_IP) goes from A to B through the cloud API: its service on A
        dies, the ENI is detached from A and attached to B, where the watch daemon configures
        it.  'master' in the timeline is the attach call."""
        client = Client(self.vm, MOVING_IP)
        try:
            self.a.responders.append(Responder(self.a.guest.ns, MOVING_IP, "A"))
            self.b.responders.append(Responder(self.b.guest.ns, MOVING_IP, "B"))
            self._wait(lambda: client.first_from("A", 0), 5, "A answers on the moving ENI")
            killed = time.time()
            self.a.responders.pop().close()
            self.api.call("detach-eni", {"eni": MOVING_MAC})
            attach = time.time()
            instance = self.vm._md.of(self.b.guest)["instance_id"]
            self.api.call("attach-eni", {"eni": MOVING_MAC, "instance": instance})
            routed = time.time()
            first = self._wait(lambda: client.first_from("B", killed), timeout, "B answers")
            labels = (
                "A's service gone; cloud API: detach the ENI from A",
                "cloud API: attach it to B (its link appears in B)",
                "attach answered (metadata lists it, unsettled for the lag)",
                "detach",
            )
            last = client.last_from("A", killed)
            return Timeline(killed, last, attach, routed, first, labels)
        finally:
            client.close()

    def address_to_rule(self, n: Node, ip: str, add: bool = True) -> float:
        """Seconds from the kernel's event for `ip` appearing on (add) or leaving (not add) the
        node's ENI link to the event for its rule, both read by one netlink listener in the VM:
        the watch daemon's reaction, not the test's polling."""
        return address_to_rule(n.guest.ns, self.vm.ifname_of(n.eni_mac) or "", ip, add)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        for n in self.nodes:
            self.kill(n)
            self._stop_daemon(n)
        self.vm.close()


RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV4_RULE = 5, 8
RTM_NEWADDR, RTM_DELADDR, RTM_NEWRULE, RTM_DELRULE = 20, 21, 32, 33


def address_to_rule(ns: str, ifname: str, ip: str, add: bool = True, timeout: float = 3.0) -> float:
    """`ip addr add` (or del) IP/32 dev IFNAME in `ns`; seconds from the address event to the
    event of a rule from that IP (netlink, stdlib only: the lab never shares eni-guest's
    netlink code)."""
    import socket as so
    import struct

    groups = (1 << (RTNLGRP_IPV4_IFADDR - 1)) | (1 << (RTNLGRP_IPV4_RULE - 1))

    def make() -> so.socket:
        s = so.socket(so.AF_NETLINK, so.SOCK_RAW, so.NETLINK_ROUTE)
        s.bind((0, groups))
        return s

    sock = nssocket.in_namespace(ns, make)
    want_addr, want_rule = (RTM_NEWADDR, RTM_NEWRULE) if add else (RTM_DELADDR, RTM_DELRULE)
    packed = so.inet_aton(ip)
    seen: dict[int, float] = {}
    try:
        op = "add" if add else "del"
        subprocess.run(["ip", "-n", ns, "addr", op, f"{ip}/32", "dev", ifname], check=True)
        deadline = time.monotonic() + timeout
        while want_rule not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                raise RuntimeError(f"no rule event for {ip} within {timeout:g} s")
            buf, now = sock.recv(1 << 16), time.monotonic()
            at = 0
            while at + 16 <= len(buf):
                length, kind = struct.unpack_from("=IH", buf, at)
                if kind in (want_addr, want_rule) and packed in buf[at : at + length]:
                    seen.setdefault(kind, now)
                at += max(16, (length + 3) & ~3)
        if want_addr not in seen:
            raise RuntimeError(f"no address event for {ip}")
        return seen[want_rule] - seen[want_addr]
    finally:
        sock.close()

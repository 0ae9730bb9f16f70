"""One QEMU guest: started inside a network namespace, driven through QMP and the guest agent.

* QMP (the machine's control socket): hot-plug and unplug of virtio NICs, the way a cloud
  attaches an ENI: ``netdev_add tap`` + ``device_add virtio-net-pci,mac=...``; ``device_del``
  then the ``DEVICE_DELETED`` event.
* qemu-guest-agent over virtio-serial: commands in the guest without a login or a network
  (``guest-exec`` + ``guest-exec-status``), so the guest's NICs carry only the test's traffic.
* The serial console goes to ``console.log`` in the run directory.

Software emulation only (``-accel tcg -cpu max``): the nested /dev/kvm of CI machines does not
boot stock kernels. QEMU never gets user-mode networking: every NIC is a tap device in the
namespace QEMU runs in, which the test bed made.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from ..shell import SimVMError, run

QEMU = "qemu-system-x86_64"


class _JsonSocket:
    """A unix socket speaking one JSON object per line (QMP and the guest agent both do)."""

    def __init__(self, path: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise SimVMError(f"cannot connect to {path}") from None
                time.sleep(0.1)
        self._buf = b""

    def send(self, obj: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(obj).encode() + b"\n")

    def recv(self, timeout: float) -> Optional[dict[str, Any]]:
        """The next JSON object, or ``None`` if none arrived within ``timeout``."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            if not chunk:
                raise SimVMError("socket closed by QEMU")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        line = line.strip(b"\xff \r")  # guest-sync-delimited's 0xff
        if not line:
            return self.recv(max(0.0, deadline - time.monotonic()))
        return json.loads(line)

    def close(self) -> None:
        self.sock.close()


class Qmp:
    """QEMU's machine protocol: commands, and the events that arrive between replies."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self._s = _JsonSocket(path, timeout)
        self.events: list[dict[str, Any]] = []
        if self._s.recv(timeout) is None:
            raise SimVMError("QMP sent no greeting")
        self.command("qmp_capabilities")

    def command(self, name: str, timeout: float = 30.0, **arguments: Any) -> Any:
        self._s.send({"execute": name, "arguments": arguments} if arguments else {"execute": name})
        deadline = time.monotonic() + timeout
        while True:
            msg = self._s.recv(max(0.0, deadline - time.monotonic()))
            if msg is None:
                raise SimVMError(f"QMP {name}: no reply in {timeout} s")
            if "event" in msg:
                self.events.append(msg)
                continue
            if "error" in msg:
                raise SimVMError(f"QMP {name} {arguments}: {msg['error']}")
            return msg.get("return")

    def wait_event(self, name: str, timeout: float, **data: Any) -> dict[str, Any]:
        """The first (recorded or new) event ``name`` whose data contains ``data``."""
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == name and all(
                    ev.get("data", {}).get(k) == v for k, v in data.items()
                ):
                    return self.events.pop(i)
            msg = self._s.recv(max(0.0, deadline - time.monotonic()))
            if msg is None:
                raise SimVMError(f"no QMP event {name} {data} within {timeout} s")
            if "event" in msg:
                self.events.append(msg)

    def close(self) -> None:
        self._s.close()


@dataclass(frozen=True)
class Exec:
    """What a command run through the guest agent returned."""

    cmd: str
    returncode: int
    stdout: str
    stderr: str


class GuestAgent:
    """qemu-guest-agent: run a shell command in the guest and wait for it."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._s: Optional[_JsonSocket] = None
        self._sync_id = 0

    def _sock(self, timeout: float) -> _JsonSocket:
        if self._s is None:
            s = _JsonSocket(self._path, timeout)
            self._sync_id += 1
            # Resynchronise: a reply left over from a timed-out request must not be taken
            # for the next one.
            s.send({"execute": "guest-sync-delimited", "arguments": {"id": self._sync_id}})
            deadline = time.monotonic() + timeout
            while True:
                msg = s.recv(max(0.0, deadline - time.monotonic()))
                if msg is None:
                    s.close()
                    raise SimVMError("the guest agent did not answer")
                if msg.get("return") == self._sync_id:
                    break
            self._s = s
        return self._s

    def request(self, name: str, timeout: float = 10.0, **arguments: Any) -> Any:
        s = self._sock(timeout)
        s.send({"execute": name, "arguments": arguments})
        msg = s.recv(timeout)
        if msg is None:
            self.reset()
            raise SimVMError(f"guest agent: no reply to {name} in {timeout} s")
        if "error" in msg:
            raise SimVMError(f"guest agent {name}: {msg['error']}")
        return msg.get("return")

    def reset(self) -> None:
        if self._s is not None:
            self._s.close()
            self._s = None

    def ping(self, timeout: float) -> bool:
        try:
            self.request("guest-ping", timeout=timeout)
            return True
        except SimVMError:
            self.reset()
            return False

    def sh(self, cmd: str, timeout: float = 60.0, check: bool = True) -> Exec:
        """Run ``sh -c cmd`` in the guest; raise on a non-zero exit when ``check``."""
        pid = self.request(
            "guest-exec", path="/bin/sh", arg=["-c", cmd], **{"capture-output": True}
        )["pid"]
        deadline = time.monotonic() + timeout
        while True:
            st = self.request("guest-exec-status", pid=pid)
            if st.get("exited"):
                break
            if time.monotonic() > deadline:
                raise SimVMError(f"guest command timed out after {timeout} s: {cmd}")
            time.sleep(0.05)
        out = base64.b64decode(st.get("out-data", "")).decode(errors="replace")
        err = base64.b64decode(st.get("err-data", "")).decode(errors="replace")
        res = Exec(cmd, int(st.get("exitcode", -1)), out, err)
        if check and res.returncode != 0:
            raise SimVMError(f"in the guest: {cmd}: exit {res.returncode}\n{out}{err}")
        return res


@dataclass(frozen=True)
class Nic:
    """A guest NIC: the tap it is plugged into (in QEMU's namespace), its MAC, and its PCI slot
    (fixed, so the guest's predictable name is known before boot: slot 16 is ``ens16``)."""

    id: str
    tap: str
    mac: str
    slot: int

    @property
    def ifname(self) -> str:
        """The name systemd-udevd gives it in the guest (``ens<slot>``)."""
        return f"ens{self.slot}"


def qemu_command(
    run_dir: Path, kernel: Path, initrd: Path, disk: Path, nics: Sequence[Nic]
) -> list[str]:
    cmd = [
        QEMU, "-accel", "tcg", "-cpu", "max", "-machine", "pc", "-smp", "2", "-m", "1024",
        "-display", "none", "-monitor", "none", "-no-reboot",
        "-kernel", str(kernel), "-initrd", str(initrd),
        "-append", "root=/dev/vda rw console=ttyS0 quiet systemd.show_status=1",
        "-drive", f"file={disk},if=virtio,format=qcow2",
        "-chardev", f"file,id=ser0,path={run_dir / 'console.log'}", "-serial", "chardev:ser0",
        "-qmp", f"unix:{run_dir / 'qmp.sock'},server=on,wait=off",
        "-chardev", f"socket,id=qga,path={run_dir / 'qga.sock'},server=on,wait=off",
        "-device", "virtio-serial",
        "-device", "virtserialport,chardev=qga,name=org.qemu.guest_agent.0",
        "-daemonize", "-pidfile", str(run_dir / "qemu.pid"),
    ]  # fmt: skip
    for n in nics:
        cmd += [
            "-netdev", f"tap,id={n.id},ifname={n.tap},script=no,downscript=no",
            "-device",
            f"virtio-net-pci,netdev={n.id},mac={n.mac},id=dev-{n.id},addr={n.slot:#x}",
        ]  # fmt: skip
    return cmd


class Qemu:
    """A running QEMU (``start``), its QMP and guest agent; ``stop`` kills it."""

    def __init__(self, ns: str, run_dir: Path) -> None:
        self.ns = ns
        self.run_dir = run_dir
        self.pid: Optional[int] = None
        self.qmp: Optional[Qmp] = None
        self.agent = GuestAgent(run_dir / "qga.sock")
        self.started_at = 0.0

    def start(self, kernel: Path, initrd: Path, base_disk: Path, nics: Sequence[Nic]) -> None:
        overlay = self.run_dir / "overlay.qcow2"
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base_disk), "-F", "raw",
             str(overlay)])  # fmt: skip
        cmd = qemu_command(self.run_dir, kernel, initrd, overlay, nics)
        self.started_at = time.monotonic()
        run(["ip", "netns", "exec", self.ns, *cmd], timeout=60)
        self.pid = int((self.run_dir / "qemu.pid").read_text().strip())
        self.qmp = Qmp(self.run_dir / "qmp.sock")

    def wait_ready(self, timeout: float) -> float:
        """Wait for the guest agent, then for systemd's boot to finish; seconds since start."""
        deadline = time.monotonic() + timeout
        while not self.agent.ping(timeout=2.0):
            self._check_alive()
            if time.monotonic() > deadline:
                raise SimVMError(f"the guest agent did not answer within {timeout:.0f} s")
        left = max(5.0, deadline - time.monotonic())
        self.agent.sh("systemctl is-system-running --wait || true", timeout=left)
        return time.monotonic() - self.started_at

    def _check_alive(self) -> None:
        if self.pid is None:
            raise SimVMError("QEMU is not running")
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            raise SimVMError(f"QEMU exited; console:\n{self.console_tail()}") from None

    def console_tail(self, lines: int = 60) -> str:
        p = self.run_dir / "console.log"
        text = p.read_text(errors="replace") if p.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def hotplug(self, nic: Nic) -> float:
        """Plug a virtio NIC into the running guest; returns ``time.monotonic()`` of device_add."""
        assert self.qmp is not None
        self.qmp.command(
            "netdev_add", type="tap", id=nic.id, ifname=nic.tap, script="no", downscript="no"
        )
        t = time.monotonic()
        self.qmp.command("device_add", driver="virtio-net-pci", netdev=nic.id, mac=nic.mac,
                         id=f"dev-{nic.id}", addr=f"{nic.slot:#x}")  # fmt: skip
        return t

    def unplug(self, nic: Nic, timeout: float = 60.0) -> float:
        """Unplug it: ``device_del``, wait for DEVICE_DELETED; returns the seconds that took."""
        assert self.qmp is not None
        t = time.monotonic()
        self.qmp.command("device_del", id=f"dev-{nic.id}")
        self.qmp.wait_event("DEVICE_DELETED", timeout, device=f"dev-{nic.id}")
        took = time.monotonic() - t
        self.qmp.command("netdev_del", id=nic.id)
        return took

    def stop(self) -> None:
        """Kill QEMU (the guest's state is thrown away with its overlay)."""
        if self.qmp is not None:
            with contextlib.suppress(Exception):
                self.qmp.close()
            self.qmp = None
        self.agent.reset()
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            for _ in range(100):
                try:
                    os.kill(self.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            self.pid = None


def tools_missing() -> list[str]:
    """The programs the real-VM bed needs that are not installed."""
    need = (QEMU, "qemu-img", "debootstrap", "mkfs.ext4", "mount", "chroot")
    return [t for t in need if subprocess.run(["which", t], capture_output=True).returncode]

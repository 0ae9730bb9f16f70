"""Helpers shared by the hot-plug, watch-daemon and migration tests (and the benchmark).

The daemon is run as a user would run it: `eni-guest watch` as a process inside the guest
namespace, its stderr (the only thing an operator sees) written to a file the test reads.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from eni_guest_lab.testbed import Guest, SimVM

T = TypeVar("T")


def eni(n: int, device: int, ips: int = 2, *, lag: float = 0.0) -> dict[str, Any]:
    """ENI number `n` (MAC 0e:00:00:00:10:nn) in its own subnet 10.0.(10+n).0/24."""
    out: dict[str, Any] = {
        "mac": f"0e:00:00:00:10:{n:02x}",
        "interface-id": f"eni-{n:017x}",
        "device-number": device,
        "local-ipv4s": [f"10.0.{10 + n}.{10 + i}" for i in range(ips)],
        "subnet-ipv4-cidr-block": f"10.0.{10 + n}.0/24",
    }
    if lag:
        out["lag"] = lag
    return out


def second_vm(primary_mac: str = "0e:00:00:00:01:c3") -> dict[str, Any]:
    """Metadata of another VM in the same VPC: only its primary ENI, 10.0.1.50."""
    return {
        "provider": "aws",
        "primary_mac": primary_mac,
        "instance_id": "i-0fedcba9876543210",
        "enis": [
            {
                "mac": primary_mac,
                "interface-id": "eni-000000000000001b0",
                "device-number": 0,
                "local-ipv4s": ["10.0.1.50"],
                "subnet-ipv4-cidr-block": "10.0.1.0/24",
                "ipv6s": ["2001:db8:1::50"],
                "subnet-ipv6-cidr-blocks": ["2001:db8:1::/64"],
            }
        ],
    }


def wait_for(what: str, check: Callable[[], T], timeout: float, step: float = 0.05) -> T:
    """Poll `check` until it returns something true; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s (last: {value!r})")
        time.sleep(step)


def rules(vm: SimVM, guest: Optional[Guest] = None) -> set[tuple[int, str, str]]:
    """(priority, from, table) of the guest's IPv4 and IPv6 rules of our priority range."""
    out = set()
    for fam in (4, 6):
        for r in vm.guest_rules(fam, guest=guest):
            if 10000 <= r.get("priority", 0) <= 12048:
                out.add((r["priority"], r.get("src", "all"), str(r.get("table"))))
    return out


def sources(vm: SimVM, guest: Optional[Guest] = None) -> set[str]:
    """The source addresses our per-IP rules select in the guest."""
    return {src for _, src, _ in rules(vm, guest)}


class Daemon:
    """`eni-guest watch` running in a guest; its stderr goes to a file."""

    def __init__(
        self,
        vm: SimVM,
        *args: str,
        guest: Optional[Guest] = None,
        env: Optional[dict[str, str]] = None,
    ) -> None:
        cmd, full_env = vm.agent_command("watch", *args, guest=guest, env=env)
        self.log_path = Path(vm.tmpdir or "/tmp") / f"watch-{time.monotonic_ns()}.err"
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(
                cmd,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        self.wait_log("watching link events", 15)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lines(self) -> list[str]:
        return self.log().splitlines()

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines())

    def wait_log(self, text: str, timeout: float = 10.0, times: int = 1) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"watch exited ({self.proc.returncode}):\n{self.log()}")
            return self.count(text) >= times

        wait_for(f"daemon log line {text!r} x{times}\n{self.log()}", seen, timeout)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 1.5) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds it took). Kills it if it does not stop in `timeout`."""
        t = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"watch ignored SIGTERM for {timeout} s:\n{self.log()}") from None
        return code, time.monotonic() - t

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def settled_snapshot(vm: SimVM, guest: Optional[Guest] = None, timeout: float = 8.0) -> Any:
    """`vm.snapshot()` once the kernel stopped changing by itself.

    A link that came up a moment ago is still in IPv6 duplicate address detection; when it
    ends the kernel adds link-local routes of its own, which must not be blamed on the agent.
    """
    deadline = time.monotonic() + timeout
    ns = (guest or vm.main_guest).ns
    while True:
        dad = subprocess.run(["ip", "-n", ns, "-6", "addr"], capture_output=True, text=True)
        if "tentative" not in dad.stdout:
            snap = vm.snapshot(guest=guest)
            time.sleep(0.2)
            if vm.snapshot(guest=guest) == snap:
                return snap
        if time.monotonic() > deadline:
            raise AssertionError(f"the guest {ns} did not settle in {timeout} s")
        time.sleep(0.1)

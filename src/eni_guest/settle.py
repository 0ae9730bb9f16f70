"""Is a new NIC a settled ENI yet?  The one decision behind `hotplug add` and the watch daemon.

A NIC that appears is configured only once metadata lists its MAC as a settled ENI: right
after a hot attach AWS may list it with device-number 0 and no IPs for a few seconds, and
configuring it then would put two ENIs in one table.  So every new NIC is judged, after each
metadata read, to one of:

  CONFIGURE  metadata lists it as a settled ENI: reconcile now;
  WAIT       not yet (metadata failing, the ENI unsettled, or not listed yet): read again;
  IGNORE     nothing to do, ever: not a cloud NIC, excluded by the configuration, or a veth
             (Docker, CNI) whose MAC a complete read does not list;
  GIVE_UP    `hotplug_timeout` passed while waiting: say why it stays unconfigured.

Pure: the callers own the clock, the metadata reads and the logging.  `hotplug add` waits for
one NIC and raises on GIVE_UP; the daemon judges every waiting NIC after each shared read.
"""

from __future__ import annotations

from . import scope
from .config import Config, is_mac
from .log import DEBUG, ERROR, WARNING
from .model import Instance
from .record import record
from .scope import Scope
from .state import Link

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Callable, Optional, Union

CONFIGURE, WAIT, IGNORE, GIVE_UP = "configure", "wait", "ignore", "give up"
SETTLED = "settled"  # a managed ENI in a complete read: what a new NIC waits for
UNSETTLED, UNLISTED, EXCLUDED = scope.UNSETTLED, scope.UNLISTED, scope.EXCLUDED

# IFLA_INFO_KIND of links that may be ENIs: "" is a NIC driver (ena, virtio_net, ixgbevf,
# vif, mlx5...), "veth" is an ENI of the simulated VM.  Every other kind (bridge, bond, vlan,
# vxlan, tun, wireguard, dummy, macvlan, ipvlan, ...) is created by software on the host.
CLOUD_NIC_KINDS = frozenset({"", "veth"})
FIRST_DELAY, MAX_DELAY = 0.2, 3.0  # seconds: backoff between metadata reads while waiting


@record(frozen=True)
class Verdict:
    """What to do about one NIC, and what to tell the operator (`why`, at `level`)."""

    action: str
    why: str = ""
    level: int = DEBUG
    # GIVE_UP only: True when the NIC stays unconfigured because of metadata (an outage, an
    # ENI that never settled): `hotplug add` then fails (exit 3); False for "not an ENI here".
    failed: bool = False


def not_a_nic(link: Link) -> Optional[str]:
    """Why `link` cannot be an ENI, or None when it may be one."""
    if link.kind not in CLOUD_NIC_KINDS:
        return f"{link.name} is a {link.kind} interface, not a cloud NIC"
    if not is_mac(link.mac) or link.mac == "00:00:00:00:00:00":
        return f"{link.name} has no Ethernet address"
    return None


def classify(read: Union[Instance, Scope], mac: str) -> tuple[str, str]:
    """(SETTLED | UNSETTLED | UNLISTED | EXCLUDED, why) for a MAC in one complete metadata read,
    as the run's scope (scope.py) decides it."""
    if isinstance(read, Instance):
        refused = next((x for x in read.invalid if x.mac == mac), None)
        if refused is not None:  # listed, but its metadata is refused: wait for it to be fixed
            return UNSETTLED, refused.reason
    status, why = scope.of(read).status(mac)
    return (SETTLED, why) if status == scope.MANAGED else (status, why)


def first_look(link: Link, config: Config) -> Optional[Verdict]:
    """IGNORE for a link no metadata read can make an ENI of; None when it must be judged."""
    why = not_a_nic(link)
    if why is not None:
        return Verdict(IGNORE, f"{why}: ignored")
    pattern = config.excluded_interface(link.name)
    if pattern is not None:
        return Verdict(IGNORE, f"{link.name} matches exclude_interfaces {pattern!r}: left alone")
    return None


def judge(
    link: Link,
    instance: Optional[Instance],
    *,
    error: object = None,
    time_left: float,
    timeout: float,
) -> Verdict:
    """The verdict on `link` after one metadata read: `instance`, or None when it failed
    with `error`; `time_left` of the `timeout` (hotplug_timeout) the NIC may wait."""
    who = f"{link.name} ({link.mac})"
    if instance is None:
        if time_left > 0:
            return Verdict(WAIT)
        return Verdict(
            GIVE_UP,
            f"{who}: metadata still failing after {timeout:g} s (hotplug_timeout), "
            f"nothing changed: {error}",
            ERROR,
            failed=True,
        )
    state, why = classify(instance, link.mac)
    if state == SETTLED:
        return Verdict(CONFIGURE)
    if state == EXCLUDED:
        return Verdict(IGNORE, f"{who} is excluded ({why}): left alone")
    if state == UNLISTED and link.kind == "veth":
        return Verdict(IGNORE, f"{who} is not an ENI of this instance: ignored")
    if time_left > 0:
        return Verdict(WAIT)
    if state == UNSETTLED:
        return Verdict(
            GIVE_UP,
            f"{who}: metadata lists it but it has not settled after {timeout:g} s "
            f"(hotplug_timeout): {why}; nothing changed",
            ERROR,
            failed=True,
        )
    return Verdict(GIVE_UP, f"interface {who} is not an ENI of this instance", WARNING)


def jitter() -> float:
    """random.random(), with `random` imported only when a wait needs it: most runs never
    wait, and importing it (with hashlib and its C extension) cost each of them ~1 ms."""
    import random

    return random.random()


class Backoff:
    """Exponential backoff with jitter between metadata reads.

    Jitter because hot-plug comes in bursts (eight ENIs at boot, a storm of udev events): the
    waiters must not hit the metadata service, which is rate limited per ENI, in lockstep.
    """

    def __init__(
        self,
        first: float = FIRST_DELAY,
        cap: float = MAX_DELAY,
        rng: Callable[[], float] = jitter,
    ) -> None:
        self.first, self.cap, self.rng = first, cap, rng
        self.delay = first

    def reset(self) -> None:
        self.delay = self.first

    def next(self) -> float:
        """The next pause: between half and all of the current delay, which then doubles."""
        d = self.delay
        self.delay = min(self.cap, d * 2)
        return d / 2 + self.rng() * d / 2

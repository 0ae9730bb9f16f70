"""DHCP probe: an ENI's subnet prefix and gateway, asked of the VPC's DHCP service (JD Cloud).

JD Cloud's metadata publishes each ENI's MAC and primary IP but no netmask and no gateway; the
VPC's DHCP service on that interface knows both.  `probe(mac, config=...)` asks it once and
returns `(subnet CIDR, gateway)`; the JD provider gets it injected (providers.get_provider).

Where this lives, and why: the probe is a *read of the network*, exactly like the provider's
HTTP requests to the metadata service, and it runs in the same phase (before the kernel is
read for planning, under the same "nothing changes unless the whole read succeeded" rule).
It is not provider code, because it needs the kernel side (a raw packet socket on the NIC,
the NIC's link state), which providers never touch so they stay pure HTTP -> RawInstance and
unit-testable without root; and it is not in kernel.py, which reads and changes what the
planner acts on.  It uses kernel.py (the agent's one way to netlink) for the one thing it
needs from netlink: setting the NIC's link up and down (which NIC is the run's scope's
decision, scope.py).  The DHCP protocol itself is dhcp_wire.py: one DISCOVER and its OFFER,
with the standard library (pyroute2 0.7.2, Debian 12's, has no DHCP client, and the one of
pyroute2 0.9 would bring asyncio and threads into a probe of one packet each way).

It leaves nothing behind.  The exchange runs in this process only until the first OFFER (or
the timeout) and takes no lease: no REQUEST, so no RELEASE is ever owed (a RELEASE for the
primary ENI would cancel the lease the distro's own DHCP client holds on it); nothing is
written, no address and no route are added (the offered address is the ENI's primary IP,
which the agent adds itself as usual).  A link that was down (a secondary ENI the agent has
not configured yet) is brought up for the exchange and set down again afterwards, which also
removes the IPv6 link-local address the kernel gave it: a dry run (`show`, `apply --dry-run`)
changes nothing.  Nothing else about the link is touched.
"""

from __future__ import annotations

import ipaddress
import os

from .config import Config
from .errors import MetadataUnavailable, NotPermitted
from .log import log
from .state import Link

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Callable, Iterator, Optional


DHCP_TIMEOUT = 5.0  # seconds for one ENI's exchange; a VPC's DHCP server answers in milliseconds


def make_probe(
    config: Config,
    timeout: float = DHCP_TIMEOUT,
    time_left: Optional[Callable[[], float]] = None,
) -> Callable[[Link], tuple[str, str]]:
    """The `dhcp_probe` the JD Cloud provider takes: NIC -> (subnet CIDR, gateway).

    `time_left` says how many seconds are left of the run's metadata deadline (the metadata
    HTTP client's, providers/registry.py wires it): the probe is part of the metadata read, so
    each exchange waits at most `timeout` and never past that deadline.
    """

    def dhcp_probe(link: Link) -> tuple[str, str]:
        budget = timeout if time_left is None else min(timeout, time_left())
        return probe(link, config=config, timeout=budget)

    return dhcp_probe


def probe(link: Link, *, config: Config, timeout: float = DHCP_TIMEOUT) -> tuple[str, str]:
    """Ask the DHCP service on this NIC for its subnet and router.

    Which NIC, and whether it may be probed at all (not excluded, not enslaved, the only one
    with its MAC), is the run's scope's decision (scope.py): this only does the exchange.
    """
    from .changes import LinkChange
    from .kernel import Kernel

    if os.geteuid() != 0:
        raise NotPermitted(
            "jdcloud: learning an ENI's subnet and gateway by DHCP needs root (a raw socket "
            f"on its NIC); or describe them in {config.static_file} (subnet, gateway)"
        )
    mac = link.mac
    if timeout <= 0:
        raise MetadataUnavailable(
            f"dhcp: the metadata deadline ({config.metadata_deadline:g} s) passed before "
            f"{link.name} ({mac}) could be asked"
        )
    kernel = Kernel(config)
    try:

        def set_up(up: bool) -> None:
            kernel.apply([LinkChange(link.index, link.name, up=up, eni=mac)], lambda _done: None)

        if not link.up:
            set_up(True)
        try:
            lease = _lease(link.name, mac, timeout)
        finally:
            if not link.up:
                set_up(False)  # as it was: the agent brings it up when it applies
    finally:
        kernel.close()
    return _subnet_and_router(lease, link.name, mac)


def _subnet_and_router(lease: Any, ifname: str, mac: str) -> tuple[str, str]:
    where = f"dhcp: the answer on {ifname} ({mac})"
    try:
        mask, routers = lease.subnet_mask, lease.routers
    except LookupError as e:  # the OFFER has no subnet mask
        raise MetadataUnavailable(f"{where} lacks an option: {e}") from None
    try:
        subnet = ipaddress.IPv4Interface(f"{lease.ip}/{mask}").network
        gateway = ipaddress.IPv4Address(routers[0])
    except (ValueError, IndexError, TypeError):
        raise MetadataUnavailable(
            f"{where} is unusable: address {lease.ip!r}, mask {mask!r}, routers {routers!r}"
        ) from None
    log.debug(
        "dhcp: %s (%s): lease %s, subnet %s, router %s", ifname, mac, lease.ip, subnet, gateway
    )
    return str(subnet), str(gateway)


def _retries() -> Iterator[float]:
    """Retransmit soon: the server is one hop away, and the whole exchange has a deadline."""
    yield from (0.5, 1.0, 2.0)
    while True:
        yield 2.0


def _lease(ifname: str, mac: str, timeout: float) -> Any:
    """One DISCOVER/OFFER exchange on `ifname` (dhcp_wire.py): the OFFER."""
    from .dhcp_wire import exchange

    try:
        return exchange(ifname, mac, timeout, _retries)
    except TimeoutError:  # before OSError: on Python 3.9 it is one
        raise MetadataUnavailable(
            f"dhcp: no answer on {ifname} within {round(timeout, 1):g} s (is there a DHCP server?)"
        ) from None
    except PermissionError:
        raise NotPermitted(f"dhcp: a raw socket on {ifname} needs root (CAP_NET_RAW)") from None
    except OSError as e:
        raise MetadataUnavailable(f"dhcp: on {ifname}: {e.strerror or e}") from None

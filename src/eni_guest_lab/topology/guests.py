"""The VMs of the simulated cloud: their namespaces, the primary ENI as the image configures
it, and the Docker-like bridge with a container behind it.

A VM (``<prefix>-g``) comes up as a cloud image boots: its primary ENI configured as a DHCP
client (and IPv6 router advertisements) would, secondary ENIs present, down and unconfigured,
because that is the agent's job. Its sysctls are those of RHEL-like images (strict reverse-path
filtering). ``<prefix>-c`` is a container behind the guest's ``docker0`` bridge, NATed by the
guest, whose traffic must keep leaving through the primary whatever the agent does.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from ..shell import in_ns, ip_batch, nft, sysctl
from ..sim.tree import ipv4_gateway, ipv6_gateway
from ..snapshots import guest_addrs
from .addresses import (
    CONTAINER_V4,
    CONTAINER_V6,
    DOCKER_BRIDGE,
    DOCKER_V4,
    DOCKER_V4_NET,
    DOCKER_V6,
    as_list,
    subnet_of,
)
from .namespaces import Namespaces


@dataclass
class Guest:
    """One VM: its namespace, its container namespace and the ENIs attached to it.

    A separate object (rather than fields of :class:`~eni_guest_lab.vm.SimVM`) so a second VM
    can share the same vpc for ENI-migration tests.
    """

    name: str
    ns: str
    container_ns: Optional[str] = None
    links: dict[str, str] = field(default_factory=dict)  # mac -> guest ifname
    #: This VM's own metadata (see ``SimVM.add_guest``); ``None``: the SimVM's scenario.
    scenario: Optional[dict[str, Any]] = None
    #: Port of this VM's own metadata simulator on the metadata addresses (``None``: 80).
    metadata_port: Optional[int] = None


def build_guest(namespaces: Namespaces, g: Guest) -> None:
    """Create the VM's namespace with the sysctls of a cloud image."""
    namespaces.add(g.ns)
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
    sysctl(g.ns, settings)


def configure_primary(g: Guest, ifname: str, eni: Mapping[str, Any], provider: str) -> None:
    """Configure the primary ENI as the image's DHCP client (and RA) would."""
    lines = [f"link set {ifname} up"]
    v4s = as_list(eni.get("local-ipv4s"))
    cidr4 = eni.get("subnet-ipv4-cidr-block")
    if v4s:
        addr = subnet_of(v4s[0], as_list(cidr4), 24)
        lines.append(f"addr add {addr} dev {ifname}")
        gw4 = ipv4_gateway(provider, eni)
        if cidr4 and gw4:
            lines.append(f"route add default via {gw4} dev {ifname} proto dhcp")
    v6s = as_list(eni.get("ipv6s"))
    cidrs6 = as_list(eni.get("subnet-ipv6-cidr-blocks"))
    if v6s:
        addr = subnet_of(v6s[0], cidrs6, 64)
        lines.append(f"addr add {addr} dev {ifname} nodad")
        gw6 = ipv6_gateway(eni, str(ipaddress.ip_interface(addr).network))
        lines.append(f"route add ::/0 via {gw6} dev {ifname} proto ra")
    # A booted VM finished duplicate address detection on its primary link long ago. Without
    # a usable link-local address the kernel cannot send neighbour solicitations for packets
    # whose source lives on another interface, so a mis-routed probe would silently stay in
    # the guest for the first seconds instead of reaching (and being dropped by) the vpc.
    _up_without_dad(g.ns, [ifname], lines)


def _up_without_dad(ns: str, ifnames: Sequence[str], lines: Sequence[str]) -> None:
    """Run ``lines`` (which bring ``ifnames`` up) with IPv6 duplicate address detection
    skipped on those links, wait (up to 5 s) until each has a usable link-local address, then
    put the setting back: nothing visible remains, and the links look long settled."""
    keys = [f"net.ipv6.conf.{ifname}.accept_dad" for ifname in ifnames]
    saved = {key: in_ns(ns, ["sysctl", "-n", key]).stdout.strip() or "1" for key in keys}
    sysctl(ns, {key: 0 for key in keys})
    ip_batch(ns, lines)
    deadline = time.monotonic() + 5.0
    waiting = list(ifnames)
    while waiting and time.monotonic() < deadline:
        waiting = [
            ifname
            for ifname in waiting
            if not any(
                a.get("scope") == "link" and not a.get("tentative")
                for a in guest_addrs(ns, ifname, 6)
            )
        ]
        if waiting:
            time.sleep(0.01)
    sysctl(ns, saved)


def build_docker(namespaces: Namespaces, g: Guest) -> None:
    """The Docker-like bridge in the guest, a container behind it, and the NAT masquerade."""
    assert g.container_ns is not None
    c = g.container_ns
    namespaces.add(c)
    ip_batch(
        g.ns,
        [
            f"link add name {DOCKER_BRIDGE} type bridge forward_delay 0",
            f"link add name vethegt0 type veth peer name eth0 netns {c}",
            f"link set vethegt0 master {DOCKER_BRIDGE}",
        ],
    )
    ip_batch(
        c,
        [
            "link set eth0 up",
            f"addr add {CONTAINER_V4}/16 dev eth0",
            f"addr add {CONTAINER_V6}/64 dev eth0 nodad",
            f"route add default via {DOCKER_V4}",
            f"route add ::/0 via {DOCKER_V6}",
        ],
    )
    # A VM running containers has had its bridge for long: its links' IPv6 link-local
    # addresses (and their local routes) are there from the start, not a second later, in the
    # middle of a test comparing snapshots.
    _up_without_dad(
        g.ns,
        ["vethegt0", DOCKER_BRIDGE],
        [
            "link set vethegt0 up",
            f"link set {DOCKER_BRIDGE} up",
            f"addr add {DOCKER_V4}/16 dev {DOCKER_BRIDGE}",
            f"addr add {DOCKER_V6}/64 dev {DOCKER_BRIDGE} nodad",
        ],
    )
    nft(
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

"""The addresses of the simulated world, and where a subnet's router and neighbour sit.

Every address here lives inside the lab's namespaces only: the far host, the host in another
subnet, a neighbour in every ENI subnet and the metadata service are addresses on the vpc
namespace's ``lo``; the Docker-like bridge and its container are in the guest.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Iterable

#: The cloud's metadata service addresses (AWS). Other clouds' are in
#: ``sim.scenario.METADATA_ADDRESSES`` (Alibaba 100.100.100.200, Tencent 169.254.0.23): the vpc
#: carries those of the scenario's ``provider`` too, and the simulator listens there.
METADATA_V4 = "169.254.169.254"
METADATA_V6 = "fd00:ec2::254"
#: A host on the internet, outside the VPC: reaching it needs the subnet's default route.
FAR_V4 = "198.51.100.10"
FAR_V6 = "2001:db8:ffff::10"
#: A host in a VPC subnet no ENI belongs to (reached through the ENI's subnet router).
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


def as_list(value: Any) -> list[str]:
    """A scenario value that may be absent, one string or a list, as a list of strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def subnet_of(addr: str, cidrs: Iterable[str], default_prefix: int) -> str:
    """``addr/prefixlen`` of the first of ``cidrs`` containing it (else ``default_prefix``)."""
    ip = ipaddress.ip_address(addr)
    for c in cidrs:
        net = ipaddress.ip_network(c, strict=False)
        if ip in net:
            return f"{addr}/{net.prefixlen}"
    return f"{addr}/{default_prefix}"

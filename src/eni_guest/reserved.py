"""Addresses a subnet never gives an ENI: its gateway, network and broadcast addresses, and
what the cloud keeps at each end of every subnet (AWS: the first four and the last one).
validate.py refuses such an address in metadata or the configuration: the kernel would
refuse the ENI's routes on every run."""

from __future__ import annotations

from functools import lru_cache

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Optional

    from .model import IPAddress, IPNetwork


def reserved(
    addr: IPAddress, net: IPNetwork, gateway: Optional[IPAddress], cloud: tuple[str, int, int]
) -> Optional[str]:
    """Why `addr` can never be an ENI's IP in `net`, or None.  Such an address in metadata (or
    the config) would make the kernel refuse the ENI's routes on every run."""
    if addr == gateway:
        return f"the gateway of subnet {net}"
    first, last = _bounds(net)
    size, value = last - first + 1, int(addr)
    if size > 2 and value == first:
        return f"the network address of subnet {net}"
    if net.version == 4 and size > 2 and value == last:
        return f"the broadcast address of subnet {net}"
    name, head, tail = cloud
    if size > head + tail and (value - first < head or last - value < tail):
        return (
            f"reserved by {name} in subnet {net} (the first {head} and the last {tail} "
            "addresses of every subnet)"
        )
    return None


@lru_cache(maxsize=256)
def _bounds(net: IPNetwork) -> tuple[int, int]:
    """A subnet's first and last address as integers: asked for every IP of an ENI (750 a
    run for 15 ENIs x 50 IPs), and ipaddress computes them anew each time."""
    return int(net.network_address), int(net.broadcast_address)


def cloud_reserves(provider: str) -> tuple[str, int, int]:
    """(cloud, first, last): the addresses of every subnet the cloud keeps (its registry
    entry, providers/registry.py); none known for a name the registry does not have."""
    from .providers.registry import BY_NAME

    cloud = BY_NAME.get(provider)
    return (provider, cloud.reserved_head, cloud.reserved_tail) if cloud else (provider, 0, 0)

"""The test bed's public names in one place, for the tests, the benchmarks and the demo.

    from eni_guest_lab.testbed import FAR_V4, SimVM

:class:`SimVM` (vm.py) is a VM with ENIs in a simulated VPC; the addresses are those of the
simulated world (topology/addresses.py); :class:`Probe` is what a packet probe saw
(probes.py); :func:`check_environment` and :func:`cleanup_stale` check the machine and clean up
after killed runs (topology/namespaces.py).
"""

from __future__ import annotations

from .probes import Probe
from .services import HeldConnection, TcpServer
from .shell import SimVMError
from .topology.addresses import (
    CONTAINER_V4,
    CONTAINER_V6,
    DOCKER_V4,
    DOCKER_V6,
    FAR_V4,
    FAR_V6,
    METADATA_V4,
    METADATA_V6,
    NEIGHBOUR_HOST,
    OTHER_SUBNET_V4,
    OTHER_SUBNET_V6,
    gateway_of,
    neighbour_of,
)
from .topology.guests import Guest
from .topology.namespaces import check_environment, cleanup_stale
from .vm import SimVM

__all__ = [
    "CONTAINER_V4",
    "CONTAINER_V6",
    "DOCKER_V4",
    "DOCKER_V6",
    "FAR_V4",
    "FAR_V6",
    "METADATA_V4",
    "METADATA_V6",
    "NEIGHBOUR_HOST",
    "OTHER_SUBNET_V4",
    "OTHER_SUBNET_V6",
    "Guest",
    "HeldConnection",
    "Probe",
    "SimVM",
    "SimVMError",
    "TcpServer",
    "check_environment",
    "cleanup_stale",
    "gateway_of",
    "neighbour_of",
]

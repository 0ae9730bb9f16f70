"""Scenario files of the lab (JSON, the simulator's format: sim/scenario.py).

``three-eni.json`` is the instance the demo, the end-to-end tests and the benchmarks share:

* eth0, the primary (device 0): 10.0.1.10 (from DHCP) and 10.0.1.11, with the Elastic IP
  203.0.113.5, and 2001:db8:1::10 (from router advertisements), in 10.0.1.0/24;
* eth1 (device 1) in the primary's own subnet, the case most tools get wrong: 10.0.1.20 and
  10.0.1.21, and the subnet's IPv6 prefix without an IPv6 address;
* eth2 (device 2) in a subnet of its own, dual-stack: 10.0.2.30, 10.0.2.31, 2001:db8:2::30.

Their MACs sort opposite to their device numbers (as in cloud-init's EC2 tests), so any code
that orders ENIs by MAC gets the wrong answer. ``aws-example.json`` is an example for
``eni-guest-sim --scenario aws-example``. Scenarios that test one specific situation live in
the tests that need them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_DIR = Path(__file__).resolve().parent

#: The instance shared by the demo, the tests and the benchmarks.
THREE_ENI = "three-eni"


def load(name: str) -> dict[str, Any]:
    """A fresh copy of the bundled scenario ``name`` (the file ``<name>.json`` here)."""
    with open(_DIR / f"{name}.json", encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def three_eni(provider: str = "aws") -> dict[str, Any]:
    """A fresh copy of the three-ENI instance, its metadata in ``provider``'s format."""
    data = load(THREE_ENI)
    data["provider"] = provider
    return data


def macs(scenario: dict[str, Any]) -> tuple[str, ...]:
    """The MACs of a scenario's ENIs in device-number order (the primary first)."""
    enis = sorted(scenario["enis"], key=lambda e: int(e.get("device-number", 0)))
    return tuple(str(e["mac"]) for e in enis)

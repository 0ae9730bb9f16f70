"""Offline instance metadata simulator (``eni-guest-sim``): AWS, Alibaba Cloud, Tencent Cloud,
JD Cloud and OpenStack formats from one scenario (scenario.py, render.py), and static ENI files.

It lets users test images without a cloud and lets our end-to-end tests drive every metadata
situation the agent must survive (hot-attach lag, expired tokens, slow or broken answers) from
a JSON scenario file. Standard library only, so it starts fast inside a bare network namespace.
"""

from .listener import parse_listen
from .render import render, render_static
from .scenario import Control, Eni, Scenario, load_scenario, parse_scenario
from .server import MetadataSimulator

__all__ = [
    "Control",
    "Eni",
    "MetadataSimulator",
    "Scenario",
    "load_scenario",
    "parse_listen",
    "parse_scenario",
    "render",
    "render_static",
]

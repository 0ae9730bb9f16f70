"""Render the files `eni-guest install` and the Debian package place (units, udev rule,
settings, the cloud-init drop-in) from jinja2 templates.

The templates live in ``eni_guest/templates`` as package data, so an installed eni-guest can
place them without a source checkout.  StrictUndefined: a misspelt variable must fail the
install, not write ``ExecStart= hotplug add`` into a unit.  The directory also holds the
cloud-init module, cc_eni_guest.py: plain Python, not a template (install.render_module).

The drop-ins every run writes are not templates (dropins.py): no run of the agent itself
imports jinja2.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Mapping

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"


@lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # configuration files, not HTML
    )


def render_template(name: str, context: Mapping[str, Any]) -> str:
    return str(_environment().get_template(name).render(**context))

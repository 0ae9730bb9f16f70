"""The `eni-guest` program: the systemd units' own command lines without click, all else with it.

udev starts `eni-guest hotplug add IFACE` for every NIC that appears, and the boot unit
`eni-guest apply`: importing click (with uuid, platform, gettext and inspect) was ~20 ms of
each, a third of what the hot-plug path may spend on imports.  These exact command lines,
with no option at all, run the same bodies as cli.py's commands (commands.py), logging set up
as `main` does without -v; any other command line, options, --help or a mistake included, is
click's (cli.py), so every message and exit code stays click's.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional


def _direct(argv: list[str]) -> Optional[Callable[[], object]]:
    """The command body for a units' command line, or None (click's to parse)."""
    from . import commands

    opts = commands.NO_OPTIONS
    if argv == ["apply"]:
        return lambda: _ran(commands.apply(opts))
    if argv == ["watch"]:
        return lambda: commands.watch(opts)
    if len(argv) == 3 and argv[0] == "hotplug" and argv[2] and not argv[2].startswith("-"):
        iface = argv[2]
        if argv[1] == "add":
            return lambda: commands.hotplug_add(iface, opts)
        if argv[1] == "remove":
            return lambda: commands.hotplug_remove(iface, opts)
    return None


def _ran(_result: object) -> int:
    return 0


def main() -> None:
    body = _direct(sys.argv[1:])
    if body is None:
        from .cli import main as cli

        cli()
        return
    import gc

    from . import commands

    if sys.argv[1:] != ["watch"]:
        # A one-shot run exits within seconds: the cyclic collector's passes over the objects
        # the imports create (~20 of them in an `apply`, ~5 ms) buy nothing.  The daemon
        # keeps it.
        gc.disable()
    commands.setup_logging(0)
    commands.run(body)  # type: ignore[arg-type]

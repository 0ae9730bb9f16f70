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

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Callable, Optional


def _direct(argv: list[str]) -> Optional[Callable[[Any], object]]:
    """The command body for a units' command line, or None (click's to parse).  The body gets
    commands.py, which is imported only once main has decided how to run."""
    if argv == ["apply"]:
        return lambda c: _ran(c.apply(c.NO_OPTIONS))
    if argv == ["watch"]:
        return lambda c: c.watch(c.NO_OPTIONS)
    if len(argv) == 3 and argv[0] == "hotplug" and argv[2] and not argv[2].startswith("-"):
        iface = argv[2]
        if argv[1] == "add":
            return lambda c: c.hotplug_add(iface, c.NO_OPTIONS)
        if argv[1] == "remove":
            return lambda c: c.hotplug_remove(iface, c.NO_OPTIONS)
    return None


def _ran(_result: object) -> int:
    return 0


def main() -> None:
    body = _direct(sys.argv[1:])
    if body is None:
        from .cli import main as cli

        cli()
        return
    if sys.argv[1:] == ["watch"]:
        from . import commands
        from .log import log

        log.setup(0)
        commands.run(lambda: body(commands))  # type: ignore[arg-type]
        return
    # A one-shot run exits within seconds: the cyclic collector's passes over the objects
    # the imports and the run create (~20 of them in an `apply`, ~5 ms) buy nothing.  Off
    # before the imports, which make most of those objects.  The daemon keeps it.
    import gc

    gc.disable()
    from . import commands
    from .log import log

    log.setup(0)
    try:
        commands.run(lambda: body(commands))  # type: ignore[arg-type]
    except SystemExit as e:
        _exit_now(e.code)


def _exit_now(code: object) -> None:
    """End a one-shot run without the interpreter's teardown: freeing the run's objects one
    by one (thousands of addresses, rules and routes: 10-20 ms of a no-op apply) changes
    nothing the run did.  What it wrote is already closed and renamed into place, the run
    lock goes with the process; only stdout and stderr need flushing first."""
    import os

    status = code if isinstance(code, int) else (0 if code is None else 1)
    if not isinstance(code, (int, type(None))):
        sys.stderr.write(f"{code}\n")
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away: as Python's own exit does
            status = status or 120
    os._exit(status)

"""What `apply`, `hotplug add`, `hotplug remove` and `watch` do, without the command line.

cli.py parses options with click and calls these; entry.py calls them directly for the exact
command lines the systemd units run (`eni-guest apply`, `eni-guest hotplug add IFACE`...),
which then never import click (~20 ms of every hot-plug).  Both go through `run`, which
turns every expected failure into one line and its exit code (README "Exit codes").
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import EXIT_INTERNAL, EniGuestError, NotPermitted

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Callable, Optional


#: The options of a command that reads metadata when none is given (cli.provider_options).
NO_OPTIONS: dict[str, Any] = {"provider": None, "metadata_url": None, "config_file": None}


def say(line: str) -> None:
    """One line on stderr (what click.echo(err=True) did)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def run(fn: Callable[[], Optional[int]]) -> None:
    """Run a command body; every expected failure becomes one line and its exit code."""
    try:
        code = fn() or 0
    except EniGuestError as e:
        say(f"eni-guest: {e}")
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        say("eni-guest: interrupted")
        sys.exit(130)
    except Exception:
        import traceback

        traceback.print_exc()
        say("eni-guest: internal error (a bug): please report the trace above")
        sys.exit(EXIT_INTERNAL)
    sys.exit(code)


def config(opts: dict[str, Any]) -> Any:
    from .config import load

    opts = dict(opts)
    path = opts.pop("config_file", None)
    return load(Path(path) if path else None, options=opts)


def need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise NotPermitted(f"eni-guest {what} changes addresses and routes and must run as root")


def apply(opts: dict[str, Any], *, dry_run: bool = False) -> Any:
    """Reconcile (or only plan, dry_run); the agent.Result.  The metrics file is rewritten."""
    from .agent import reconcile
    from .lock import run_lock

    cfg = config(opts)
    if dry_run:
        return reconcile(cfg, dry_run=True)
    if os.geteuid() != 0:
        raise NotPermitted(
            "eni-guest apply changes addresses and routes and must run as root "
            "(try sudo, or --dry-run to only see the plan)"
        )
    with run_lock(cfg.lock_file, cfg.lock_timeout):
        try:
            result = reconcile(cfg)
        except EniGuestError as e:
            _record_metrics(cfg, error=e)
            raise
        _record_metrics(cfg, result)
    return result


def _record_metrics(cfg: Any, result: Any = None, error: Optional[EniGuestError] = None) -> None:
    """Rewrite metrics_file, if one is set (README "Metrics"); textfile.py is imported only
    then (its parser and renderer are a few ms of every apply that has none)."""
    if cfg.metrics_file:
        from . import textfile

        textfile.record(cfg, result, error)


def hotplug_add(iface: str, opts: dict[str, Any], timeout: Optional[float] = None) -> int:
    from .hotplug import add

    cfg = config({**opts, "hotplug_timeout": timeout})
    need_root("hotplug add")
    return add(cfg, iface)


def hotplug_remove(iface: str, opts: dict[str, Any]) -> int:
    from .hotplug import remove

    cfg = config(opts)
    need_root("hotplug remove")
    return remove(cfg, iface)


def watch(opts: dict[str, Any], interval: Optional[float] = None) -> int:
    from .watch import Watcher

    def load() -> Any:
        return config({**opts, "watch_interval": interval})

    watcher = Watcher(load, load())
    need_root("watch")
    return watcher.run()

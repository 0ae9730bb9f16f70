"""Command line: parse options, call the agent, print, map errors to exit codes.  Nothing more.

The bodies of the commands the systemd units run live in commands.py (entry.py runs them
without click for the units' exact command lines).

Exit codes (README "Exit codes"): 0 done (changed or not), 1 internal error, 2 usage or
configuration, 3 metadata unavailable/disabled/invalid (nothing changed), 4 kernel refused a
change, 5 lock wait timed out, 6 not root.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from . import __version__, commands
from .commands import run as _run
from .errors import NotPermitted
from .log import log
from .providers import registry

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Callable, Optional


def provider_options(f: Callable) -> Callable:
    """Options shared by every command that reads metadata."""

    @click.option(
        "--provider",
        # Not a click.Choice: an unknown name is refused like one in the config file, in one
        # line naming the known ones (providers/registry.py), not with click's usage text.
        help="Metadata provider: " + ", ".join(registry.choices()) + " (default: auto, i.e. "
        "DMI, then probes).",
    )
    @click.option("--metadata-url", help="Metadata service base URL (default: the provider's).")
    @click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False),
        help="Settings file (default /etc/eni-guest/eni-guest.toml).",
    )
    @functools.wraps(f)
    def wrapper(**kw: Any) -> Any:
        return f(**kw)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="eni-guest")
@click.option("-v", "--verbose", count=True, help="Also log why nothing was done.")
def main(verbose: int) -> None:
    """Configure cloud ENIs and per-IP source routing from instance metadata."""
    log.setup(verbose)  # stderr, "eni-guest: " before each line; DEBUG up with -v


@main.command()
@click.option("--dry-run", is_flag=True, help="Print the planned changes; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@provider_options
def apply(dry_run: bool, as_json: bool, **opts: Any) -> None:
    """Reconcile every ENI with metadata (addresses, tables, rules)."""

    def body() -> int:
        result = commands.apply(opts, dry_run=dry_run)
        changes = result.plan.changes if dry_run else result.applied
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "dry_run": dry_run,
                        "changes": [c.describe() for c in changes],
                        "notes": list(result.plan.notes),
                        "metadata_requests": result.metadata_requests,
                        "netlink_requests": result.netlink_requests,
                        "timings": {k: round(v, 6) for k, v in result.timings.items()},
                    },
                    indent=2,
                )
            )
        elif dry_run:
            for c in changes:
                click.echo(c.describe())
            for note in result.plan.notes:
                click.echo(f"# {note}")
            if not changes:
                click.echo("# no changes: the kernel matches metadata")
        return 0

    _run(body)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@provider_options
def show(as_json: bool, **opts: Any) -> None:
    """Show each ENI: interface, MAC, id, IPs and Elastic IPs, table, in sync or not."""

    def body() -> int:
        from .agent import reconcile
        from .show import render_json, render_text

        result = reconcile(commands.config(opts), dry_run=True, fail_on_invalid=False)
        click.echo(render_json(result) if as_json else render_text(result))
        return 0

    _run(body)


@main.group()
def hotplug() -> None:
    """Handle one interface being attached or detached (run by udev/systemd)."""


@hotplug.command("add")
@click.argument("iface")
@click.option(
    "--timeout",
    type=float,
    help="Seconds to wait for metadata to list the interface (default: hotplug_timeout, 60).",
)
@provider_options
def hotplug_add(iface: str, timeout: Optional[float], **opts: Any) -> None:
    """Wait until metadata lists IFACE as a settled ENI, then reconcile.

    Exit 0 also when IFACE is gone or is not an ENI of this instance (a bridge, a Docker veth).
    """

    _run(lambda: commands.hotplug_add(iface, opts, timeout))


@hotplug.command("remove")
@click.argument("iface")
@provider_options
def hotplug_remove(iface: str, **opts: Any) -> None:
    """Clean up the rules and routes left by IFACE, which is already gone (no metadata needed)."""

    _run(lambda: commands.hotplug_remove(iface, opts))


@main.command()
@click.option(
    "--interval",
    type=float,
    help="Seconds between full reconciles (default: watch_interval, 60).",
)
@provider_options
def watch(interval: Optional[float], **opts: Any) -> None:
    """Daemon: follow link events (attach, detach, rename) and reconcile every interval."""

    _run(lambda: commands.watch(opts, interval))


@main.command()
@click.option(
    "--provider",
    type=click.Choice([c.sim_format for c in registry.CLOUDS if c.sim_format]),
    default="aws",
    show_default=True,
    help="Whose metadata format the simulated cloud serves (jdcloud: with DHCP by dnsmasq).",
)
@click.option(
    "--ha",
    is_flag=True,
    help="Instead: two VMs with keepalived, the master killed, the failover's timeline.",
)
def demo(provider: str, ha: bool) -> None:
    """Build a simulated VM in network namespaces, apply, prove routing with real packets."""
    import importlib

    # The demo belongs to the lab (eni_guest_lab), loaded only when asked for: nothing else in
    # the agent imports the lab.
    name = "eni_guest_lab.ha_demo" if ha else "eni_guest_lab.demo"
    try:
        run = importlib.import_module(name).run
    except ModuleNotFoundError as e:
        if e.name not in ("eni_guest_lab", name):
            raise
        # The Debian package ships the agent only, not the lab.
        click.echo(
            "eni-guest demo: the simulated VM (eni_guest_lab) is not installed here: "
            "run the demo from a checkout (README, Set up)",
            err=True,
        )
        sys.exit(2)
    sys.exit(run(click.echo) if ha else run(click.echo, provider=provider))


def root_option(help: str) -> Callable:
    """--root DIR: the directory tree `install` and `uninstall` work on (default /)."""
    return click.option(
        "--root", default="/", show_default=True, type=click.Path(file_okay=False), help=help
    )


def _on_tree(what: str, root: str, action: Callable[[Path], Any]) -> None:
    """Run `action` (install or uninstall) on `root` and print what it did; / only as root."""

    def body() -> int:
        if Path(root).resolve() == Path("/") and os.geteuid() != 0:
            raise NotPermitted(f"eni-guest {what} / must run as root (or use --root DIR)")
        for line in action(Path(root)).lines():
            click.echo(line)
        return 0

    _run(body)


@main.command()
@root_option(
    "Install into this directory tree (a mounted image); udev and systemd are reloaded only for /."
)
@click.option("--no-enable", is_flag=True, help="Do not enable the boot unit and watch daemon.")
@click.option(
    "--binary",
    help="Absolute path of eni-guest as the units should call it (default: this eni-guest).",
)
def install(root: str, no_enable: bool, binary: Optional[str]) -> None:
    """Place the udev rule, systemd units and cloud-init module (idempotent)."""

    def action(tree: Path) -> Any:
        from .install import install as do_install

        return do_install(tree, enable=not no_enable, binary=binary)

    _on_tree("install into", root, action)


@main.command()
@root_option("Remove from this directory tree.")
def uninstall(root: str) -> None:
    """Remove what `install` placed (keeps an edited eni-guest.toml)."""

    def action(tree: Path) -> Any:
        from .install import uninstall as do_uninstall

        return do_uninstall(tree)

    _on_tree("uninstall from", root, action)

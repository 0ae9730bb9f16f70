"""Command line of the metadata simulator: ``eni-guest-sim`` and ``python -m eni_guest_lab.sim``.

Signals are taken synchronously with ``sigwait`` in the main thread (they are blocked in every
thread before any is started), so a SIGHUP reload or a SIGTERM can never interrupt a handler
thread halfway through a request or deadlock on a lock it holds.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from .listener import format_address, parse_listen
from .render import render_static
from .scenario import load_scenario
from .server import MetadataSimulator

_BUNDLED = Path(__file__).resolve().parent.parent / "scenarios"


def _listen_arg(text: str) -> tuple[str, int]:
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def resolve_scenario(value: str) -> str:
    """A path as given, or the name of a bundled scenario (``aws-example``) when no such file
    exists, so users can try the simulator without writing a scenario first."""
    if os.path.exists(value) or os.sep in value:
        return value
    name = value if value.endswith(".json") else f"{value}.json"
    bundled = _BUNDLED / name
    return str(bundled) if bundled.is_file() else value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eni-guest-sim",
        description="Serve simulated instance metadata (AWS, Alibaba, Tencent, JD Cloud or "
        "OpenStack format, as the scenario's 'provider' says) from a JSON scenario file. "
        "SIGHUP reloads the scenario (it is also reloaded whenever the file changes), "
        "SIGUSR1 resets the request counters, SIGTERM/SIGINT stop.",
    )
    parser.add_argument(
        "--scenario",
        required=True,
        metavar="FILE",
        help="scenario JSON file, or the name of a bundled one (e.g. aws-example)",
    )
    parser.add_argument(
        "--listen",
        action="append",
        type=_listen_arg,
        metavar="HOST:PORT",
        help="address to serve on, repeatable; IPv6 as [ADDR]:PORT; port 0 picks a free "
        "port (default: the cloud's metadata address, e.g. 169.254.169.254:80 for aws, "
        "100.100.100.200:80 for alibaba, 169.254.0.23:80 for tencent)",
    )
    parser.add_argument(
        "--print-static",
        action="store_true",
        help="print the scenario's ENIs as the agent's static ENI file (provider static, "
        "TOML) and exit",
    )
    parser.add_argument(
        "--stats",
        metavar="FILE",
        help="keep this JSON file of request counters up to date (within 50 ms; exact at any "
        "moment from the Unix socket FILE.sock beside it: sim/stats.py)",
    )
    parser.add_argument(
        "--log-requests", action="store_true", help="log every request and reload to stderr"
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.print_static:
        try:
            print(render_static(load_scenario(resolve_scenario(args.scenario))), end="")
        except (OSError, ValueError) as exc:
            print(f"eni-guest-sim: {exc}", file=sys.stderr)
            return 2
        return 0
    handled = {signal.SIGTERM, signal.SIGINT}
    for name in ("SIGHUP", "SIGUSR1"):
        if hasattr(signal, name):
            handled.add(getattr(signal, name))
    use_sigwait = hasattr(signal, "pthread_sigmask") and hasattr(signal, "sigwait")
    if use_sigwait:
        # Block before any thread exists: threads inherit the mask, so only sigwait sees them.
        signal.pthread_sigmask(signal.SIG_BLOCK, handled)

    try:
        sim = MetadataSimulator(
            resolve_scenario(args.scenario),
            listen=args.listen,  # None: the scenario's cloud's own address
            stats_path=args.stats,
            log_requests=args.log_requests,
        )
    except (OSError, ValueError) as exc:
        print(f"eni-guest-sim: {exc}", file=sys.stderr)
        return 2
    try:
        addresses = sim.start()
    except OSError as exc:
        print(f"eni-guest-sim: cannot listen: {exc}", file=sys.stderr)
        return 1
    for host, port in addresses:
        # A parent process waits for these lines to know the sockets accept connections.
        print(f"listening on {format_address(host, port)}", flush=True)

    try:
        if use_sigwait:
            while True:
                signum = signal.sigwait(handled)
                if signum in (signal.SIGTERM, signal.SIGINT):
                    break
                if signum == getattr(signal, "SIGHUP", None):
                    sim.reload()
                elif signum == getattr(signal, "SIGUSR1", None):
                    sim.reset_stats()
        else:  # pragma: no cover - platforms without sigwait (Windows)
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What both demos (`eni-guest demo`, `eni-guest demo --ha`) do around their body: check the
machine can build namespaces, build the simulated bed, run, and always remove it: on success,
on an error, on Ctrl-C and on SIGTERM (which becomes the same KeyboardInterrupt)."""

from __future__ import annotations

import signal
from typing import Any, Callable, Optional, Protocol, TypeVar


class Closable(Protocol):
    def close(self) -> None: ...


B = TypeVar("B", bound=Closable)


def guarded(
    echo: Callable[[str], None],
    label: str,
    what: str,
    build: Callable[[], B],
    body: Callable[[B], int],
) -> int:
    """Run ``body(build())``; ``label`` ("eni-guest demo") starts error lines, ``what`` ("VM")
    names the bed.  Exit code: the body's, 1 on an error, 6 without root, 130 interrupted."""
    from . import testbed

    problem = testbed.check_environment()
    if problem is not None:
        echo(f"{label}: cannot build the simulated {what}: {problem}")
        return 6 if "root" in problem else 1
    testbed.cleanup_stale()

    def stop(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old = signal.signal(signal.SIGTERM, stop)
    bed: Optional[B] = None
    try:
        bed = build()
        return body(bed)
    except KeyboardInterrupt:
        echo(f"\ninterrupted: removing the simulated {what}")
        return 130
    except RuntimeError as e:
        echo(f"{label}: {e}")
        return 1
    finally:
        if bed is not None:
            bed.close()
        signal.signal(signal.SIGTERM, old)
        echo("cleaned up: every namespace of the demo is gone")

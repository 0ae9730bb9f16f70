"""The agent's log: `log.info("added %s to %s", ip, iface)` and the like, from every module.

Run from the command line (`setup`, which entry.py and cli.py call first), every message at
the chosen level or above is written to stderr at once, "eni-guest: " before each of its
lines: the journal keeps what a unit writes there, a terminal shows it.  The standard
library's `logging` is not imported then: it (with traceback, string and weakref) is ~4 ms of
every hot-plug's start, and the agent needs no more than one logger, four levels, %-style
arguments and a trace for `exception`.

Imported as a library (the test suite, the simulator), before or without `setup`, every
message goes to the standard library's logger "eni_guest", as a library's should: its
handlers, levels and pytest's caplog see them.  `as_library` goes back to that.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Optional

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40  # the standard library's numbers

NAME = "eni_guest"  # the standard library logger's name, as a library
PREFIX = "eni-guest: "


class Log:
    """The one logger.  `level` is None as a library (logging decides), else the lowest level
    written to stderr."""

    def __init__(self) -> None:
        self.level: Optional[int] = None

    def setup(self, verbose: int) -> None:
        """Write to stderr from now on: everything from INFO up, from DEBUG up if verbose."""
        self.level = DEBUG if verbose else INFO

    def as_library(self) -> None:
        """Hand every message to the standard library's logger "eni_guest" again."""
        self.level = None

    def log(self, level: int, msg: str, *args: Any, exc_info: bool = False) -> None:
        if self.level is None:
            import logging

            logging.getLogger(NAME).log(level, msg, *args, exc_info=exc_info)
            return
        if level < self.level:
            return
        text = msg % args if args else msg
        if exc_info:
            import traceback

            text += "\n" + traceback.format_exc().rstrip("\n")
        sys.stderr.write("".join(f"{PREFIX}{line}\n" for line in text.splitlines() or [""]))
        sys.stderr.flush()

    def debug(self, msg: str, *args: Any) -> None:
        self.log(DEBUG, msg, *args)

    def info(self, msg: str, *args: Any) -> None:
        self.log(INFO, msg, *args)

    def warning(self, msg: str, *args: Any) -> None:
        self.log(WARNING, msg, *args)

    def error(self, msg: str, *args: Any) -> None:
        self.log(ERROR, msg, *args)

    def exception(self, msg: str, *args: Any) -> None:
        """An error with the trace of the exception being handled."""
        self.log(ERROR, msg, *args, exc_info=True)


log = Log()

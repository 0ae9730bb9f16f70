"""The agent's log (eni_guest/log.py): on stderr for the command line, to logging as a library."""

from __future__ import annotations

import logging
import subprocess
import sys

from eni_guest.log import DEBUG, ERROR, INFO, WARNING, log


def test_the_command_line_writes_each_line_with_the_prefix(capsys) -> None:
    log.setup(0)
    log.info("added %s to %s", "10.0.1.5/24", "ens6")
    log.warning("two\nlines")
    log.debug("not shown without -v")
    assert capsys.readouterr().err == (
        "eni-guest: added 10.0.1.5/24 to ens6\neni-guest: two\neni-guest: lines\n"
    )


def test_verbose_shows_debug_and_a_message_keeps_a_literal_percent(capsys) -> None:
    log.setup(1)
    log.debug("why: %s", "excluded")
    log.error("100% of the ENIs")  # no arguments: not a format string
    assert capsys.readouterr().err == "eni-guest: why: excluded\neni-guest: 100% of the ENIs\n"


def test_an_exception_is_logged_with_its_trace_on_prefixed_lines(capsys) -> None:
    log.setup(0)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("internal error (a bug), continuing")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "eni-guest: internal error (a bug), continuing"
    assert lines[1] == "eni-guest: Traceback (most recent call last):"
    assert lines[-1] == "eni-guest: ValueError: boom"
    assert all(line.startswith("eni-guest: ") for line in lines)


def test_as_a_library_messages_go_to_the_standard_logger(caplog, capsys) -> None:
    with caplog.at_level(logging.DEBUG, logger="eni_guest"):
        log.debug("chose %s", "aws")
        log.log(WARNING, "%s", "not an ENI")
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("eni_guest", DEBUG, "chose aws"),
        ("eni_guest", WARNING, "not an ENI"),
    ]
    assert capsys.readouterr().err == ""


def test_the_levels_are_the_standard_librarys() -> None:
    assert (DEBUG, INFO, WARNING, ERROR) == (
        logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR,
    )  # fmt: skip


def test_the_hot_plug_path_logs_without_importing_logging_typing_or_socket() -> None:
    """What udev's unit runs (entry.py, commands, hotplug, the agent, the kernel) writes its
    log without them (measured against what the interpreter had already imported: a
    machine's site hooks may import typing)."""
    code = (
        "import sys; before = set(sys.modules); "
        "from eni_guest import entry, commands, hotplug, agent, kernel; "
        "from eni_guest.providers import aws, http; "
        "from eni_guest.log import log; log.setup(0); log.info('x'); "
        "print(sorted(m for m in ('logging', 'typing', 'socket') "
        "if m in sys.modules and m not in before))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"
    assert r.stderr == "eni-guest: x\n"

"""Errors the agent reports, each tied to a documented exit code.

Every failure a user can cause or meet (bad config, bad metadata, no metadata, lock held,
not root, a kernel refusal) has its own class so the CLI can print one clear line and pick
the exit code without parsing messages.  Exit codes are part of the interface: systemd units,
cloud-init and operators' scripts branch on them.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Optional

EXIT_OK = 0  # done: the kernel matches metadata (changed or not)
EXIT_INTERNAL = 1  # a bug: unexpected exception (a traceback is printed)
EXIT_USAGE = 2  # bad command line or configuration
EXIT_METADATA = 3  # metadata unreachable, disabled, incomplete or invalid: nothing changed
EXIT_KERNEL = 4  # the kernel refused a change; the next run converges from where this stopped
EXIT_LOCKED = 5  # another eni-guest held the lock longer than lock_timeout
EXIT_PERMISSION = 6  # not root (needs CAP_NET_ADMIN)


class EniGuestError(Exception):
    """Base of all errors that are reported as one line, without a traceback.

    A subclass names its exit code in its class line (``exit_code=EXIT_...``); one that does
    not (the Metadata* kinds) keeps its parent's.
    """

    exit_code = EXIT_INTERNAL

    def __init_subclass__(cls, exit_code: Optional[int] = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if exit_code is not None:
            cls.exit_code = exit_code


class ConfigError(EniGuestError, exit_code=EXIT_USAGE):
    """A bad command line, setting or configuration file."""


class MetadataError(EniGuestError, exit_code=EXIT_METADATA):
    """The metadata read failed or was incomplete: the run must change nothing."""


class MetadataUnavailable(MetadataError):
    """The metadata service did not answer, or not everything the run needs."""


class MetadataDisabled(MetadataError):
    """The metadata service refused to answer (switched off for this instance)."""


class MetadataInvalid(MetadataError):
    """Metadata answered, but with a value we refuse to act on (names the key and the value)."""


class KernelError(EniGuestError, exit_code=EXIT_KERNEL):
    """The kernel refused a change or a request (the message names it)."""


class LockTimeout(EniGuestError, exit_code=EXIT_LOCKED):
    """The run lock could not be taken: held by another run too long, or not openable."""


class NotPermitted(EniGuestError, exit_code=EXIT_PERMISSION):
    """Not root, or without a capability the run needs."""

"""Errors the agent reports, each tied to a documented exit code.

Every failure a user can cause or meet (bad config, bad metadata, no metadata, lock held,
not root, a kernel refusal) has its own class so the CLI can print one clear line and pick
the exit code without parsing messages.  Exit codes are part of the interface: systemd units,
cloud-init and operators' scripts branch on them.
"""

from __future__ import annotations

EXIT_OK = 0  # done: the kernel matches metadata (changed or not)
EXIT_INTERNAL = 1  # a bug: unexpected exception (a traceback is printed)
EXIT_USAGE = 2  # bad command line or configuration
EXIT_METADATA = 3  # metadata unreachable, disabled, incomplete or invalid: nothing changed
EXIT_KERNEL = 4  # the kernel refused a change; the next run converges from where this stopped
EXIT_LOCKED = 5  # another eni-guest held the lock longer than lock_timeout
EXIT_PERMISSION = 6  # not root (needs CAP_NET_ADMIN)


class EniGuestError(Exception):
    """Base of all errors that are reported as one line, without a traceback."""

    exit_code = EXIT_INTERNAL


class ConfigError(EniGuestError):
    exit_code = EXIT_USAGE


class MetadataError(EniGuestError):
    """The metadata read failed or was incomplete: the run must change nothing."""

    exit_code = EXIT_METADATA


class MetadataUnavailable(MetadataError):
    pass


class MetadataDisabled(MetadataError):
    pass


class MetadataInvalid(MetadataError):
    """Metadata answered, but with a value we refuse to act on (names the key and the value)."""


class KernelError(EniGuestError):
    exit_code = EXIT_KERNEL


class LockTimeout(EniGuestError):
    exit_code = EXIT_LOCKED


class NotPermitted(EniGuestError):
    exit_code = EXIT_PERMISSION

"""One reconcile: read metadata, read the kernel, plan, apply.  Shared by every entry point.

The metadata read comes first and must succeed completely before the kernel is even read:
whatever goes wrong with the metadata service, nothing changes.
"""

from __future__ import annotations

import time

from . import metrics
from .business_plan import check as check_businesses
from .business_plan import tag
from .config import Config
from .errors import KernelError, MetadataError, MetadataInvalid
from .log import log
from .model import Instance, build_instance
from .plan import Plan, plan
from .providers import memo
from .record import field, record, replace
from .scope import Scope, decide, of_instance
from .state import KernelState, Link

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Callable, Mapping, Optional, Sequence

    from .kernel import Kernel
    from .plan import Change
    from .providers import Provider


@record
class Result:
    instance: Instance
    plan: Plan
    state: KernelState
    applied: list[Change] = field(default_factory=list)
    metadata_requests: int = 0
    netlink_requests: int = 0
    # wall time of each phase in seconds (the benchmark compares "apply" with `ip -batch`)
    timings: dict[str, float] = field(default_factory=dict)
    scope: Optional[Scope] = None  # what the run managed and left alone (scope.py)


def log_changes(changes: list[Change], names: Optional[Mapping[str, str]] = None) -> None:
    """One line per change, in `ip` syntax with the ENI id; one log record (one write) for
    a whole stage: a first apply of 750 IPs logs 1,500 lines, and a write each cost a
    quarter of its netlink time.  The CLI's formatter prefixes every line."""
    names = names or {}
    log.info(
        "%s",
        "\n".join(c.describe() + (f" ({names[c.eni]})" if c.eni in names else "") for c in changes),
    )


def read_instance(
    config: Config,
    read_links: Optional[Callable[[], Sequence[Link]]] = None,
    dry_run: bool = False,
) -> tuple[Instance, int]:
    """Read metadata and decide the run's scope; (validated instance, metadata requests).

    The metadata read comes first: the kernel's links (`read_links`, or a netlink socket of
    its own) are looked at only once it succeeded (before it, they only tell which of the
    keys this boot kept still hold: providers/memo.py; a dry run writes none).  The scope
    (scope.py) is decided once, from what was read, the configuration and the links; a
    provider that needs the ENIs' NICs to finish its read (JD Cloud's DHCP probe) does so
    for the managed ones; then the configuration's overlay and validation (`build_instance`),
    so an added IP is held to the same rules as metadata.
    """
    from .providers import chosen_because, get_provider

    provider = get_provider(config)
    links = read_links or (lambda: _read_links(config))
    # What this boot's earlier runs read and cannot have changed since: kept for the NICs
    # that are still the ones it was read with (providers/memo.py).
    memo.load(config, provider.name, links())
    try:
        instance = read_from(provider, config, links)
        if not dry_run:
            memo.save(config, provider.name, links())
    except MetadataError:
        metrics.count("metadata_failures")
        raise
    finally:
        metrics.count("metadata_requests", provider.requests_sent)
        provider.close()
    why = chosen_because(provider)
    if why is not None:  # `show` says which cloud auto-detection chose, and why
        instance = replace(instance, chosen_because=why)
    return instance, provider.requests_sent


def read_from(
    provider: Provider, config: Config, read_links: Callable[[], Sequence[Link]]
) -> Instance:
    """The metadata phase with an open provider: read, scope, complete, validate."""
    raw = provider.read()
    scope = decide(raw, config, read_links())
    raw = provider.complete(raw, scope)  # JD Cloud: DHCP on the managed ENIs' NICs
    return build_instance(raw, config, scope)


def _read_links(config: Config) -> list[Link]:
    from .kernel import Kernel

    kernel = Kernel(config)
    try:
        return kernel.read_links()
    finally:
        kernel.close()


def reconcile(
    config: Config,
    *,
    dry_run: bool = False,
    instance: Optional[Instance] = None,
    log_warnings: bool = True,
    fail_on_invalid: bool = True,
) -> Result:
    """Make the kernel match metadata (or only plan it with dry_run).

    log_warnings=False leaves the plan's warnings (and its foreign rules capturing ENI IPs'
    traffic, capture.py) to the caller: the watch daemon reconciles every minute and logs a
    warning only when it first appears, not on every cycle.
    An ENI whose metadata was refused is left as it is and the others are configured; then
    the run fails (exit 3) naming it, or with fail_on_invalid=False only logs it (`show`
    shows it; `hotplug add` did its job for its own NIC).
    """
    requests = 0
    t0 = time.monotonic()
    from .kernel import Kernel

    kernel = Kernel(config)
    try:
        if instance is None:
            instance, requests = read_instance(config, kernel.read_links, dry_run)
        check_businesses(instance, config)  # a business's IP on another ENI: exit 2
        t1 = time.monotonic()
        state = kernel.read_state()
        t2 = time.monotonic()
        # What this run manages and leaves alone, decided with the metadata read and read by
        # all that follows (a model built by hand gets one decided from the kernel's links).
        scope = instance.scope or of_instance(instance, config, state.links)
        p = plan(instance, config, state, scope)
        for note in p.notes:
            log.debug("%s", note)
        for warning in (*p.warnings, *(c.warning for c in p.captures)) if log_warnings else ():
            log.warning("warning: %s", warning)
        result = Result(instance, p, state, metadata_requests=requests, scope=scope)
        t3 = time.monotonic()
        result.timings = dict(metadata=t1 - t0, kernel_read=t2 - t1, plan=t3 - t2, apply=0.0)
        if not dry_run and _keep_distro_off(instance, config, scope, state):
            # NetworkManager took NICs down as it let go of them: plan from what is there now.
            state = kernel.read_state()
            scope = instance.scope or of_instance(instance, config, state.links)
            p = plan(instance, config, state, scope)
            result = replace(result, plan=p, state=state, scope=scope, timings=dict(result.timings))
        if not dry_run and p.changes:
            try:
                _apply(kernel, instance, config, result)
            except KernelError as e:  # the metrics file says which ENIs are still pending
                e.result = result  # type: ignore[attr-defined]
                raise
        if instance.invalid:
            _refused(instance, fail_on_invalid, result)
        return result
    finally:
        kernel.close()


def _apply(kernel: Kernel, instance: Instance, config: Config, result: Result) -> None:
    """Apply the plan, logging each stage's changes as they are acknowledged; then verify."""
    names = {e.mac: e.eni_id for e in instance.enis}
    names.update((tag(b), tag(b)) for b in config.business)  # "(business partner)"
    start = time.monotonic()

    def done(changes: list[Change]) -> None:
        result.applied.extend(changes)
        log_changes(changes, names)

    kernel.watch()  # from before the first change: what the verify may rely on
    try:
        kernel.apply(result.plan.changes, done)
    finally:
        result.netlink_requests = kernel.requests_sent
        result.timings["apply"] = time.monotonic() - start
    t = time.monotonic()
    verify(kernel, result.applied, result.state)
    result.timings["verify"] = time.monotonic() - t


def _refused(instance: Instance, fail: bool, result: Result) -> None:
    """The ENIs whose metadata was refused, after the others were configured (the error
    carries the run's result: the metrics file shows the configured ENIs, textfile.py)."""
    first = instance.invalid[0].reason
    more = f" (and {len(instance.invalid) - 1} more ENI)" if len(instance.invalid) > 1 else ""
    message = f"{first}{more}; that ENI is left as it is, the others are configured"
    if fail:
        err = MetadataInvalid(message)
        err.result = result  # type: ignore[attr-defined]
        raise err
    log.error("%s", message)


def verify(kernel: Kernel, applied: list[Change], before: KernelState) -> None:
    """Check that the kernel still holds every applied change; raise KernelError if not.

    Every change was acknowledged, yet something may have undone one in between (a network
    manager taking a NIC down, another tool flushing a table) or the kernel may have
    normalised it away.  Exit 0 would then claim a routing that is not there; instead the
    run fails (exit 4) naming what differs, and the next run (systemd restarts the unit, the
    daemon's next cycle) tries again.

    First the kernel's own events since the apply began (witness.py): when none of them
    could have undone a change, that is the answer, without a second read of the kernel
    (~8 ms of a first apply of 750 IPs).  Else the kernel is read again, and only the applied
    changes are looked up in it (diff.not_taken), not a whole plan made again: that plan cost
    ~15 ms, and whatever else changed meanwhile is the next run's to see.
    """
    doubt = kernel.doubt(applied, before)
    if doubt is None:
        return
    log.debug("verify: %s: reading the kernel again", doubt)
    from .diff import not_taken

    pending = not_taken(applied, kernel.read_state())
    if pending:
        more = f" (and {len(pending) - 1} more)" if len(pending) > 1 else ""
        raise KernelError(
            f"after applying, the kernel still differs from the plan: {pending[0].describe()}"
            f"{more}; something else changed it meanwhile, or the kernel did not keep it"
        )


def _keep_distro_off(instance: Instance, config: Config, scope: Scope, state: KernelState) -> bool:
    """Tell NetworkManager / systemd-networkd to leave the secondary ENIs alone, before we
    configure them: a DHCP client of theirs would add a second main-table default route.

    Which NICs: `Scope.keep_off_macs` (unsettled ENIs included, excluded ones not).  And from
    now on, every NIC that appears except the primary and the excluded ones: udev marks it
    unmanaged before either manager sees it (`distro_hotplug`).  A failure here is reported,
    not fatal: routing matters more than the drop-ins.

    True when NetworkManager was told to let go of NICs it may hold: it takes their links
    down as it does, so the caller reads the kernel again before applying.
    """
    from pathlib import Path

    from .distro import NM_DROPIN, keep_off, wait_released
    from .distro_hotplug import mark_new_nics

    macs = scope.keep_off_macs(instance.primary_mac)
    root = Path(config.distro_root)
    released = False
    try:
        changed = keep_off(macs, instance.primary_mac, root, enabled=config.manage_distro_network)
        for path in changed:
            log.info("wrote %s", path)
        if str(root / NM_DROPIN) in changed and root.resolve() == Path("/"):
            names = [link.name for link in state.links if link.mac in macs]
            held = wait_released(names)
            if held:
                log.warning("warning: NetworkManager still manages %s", ", ".join(held))
            released = bool(names)
        for path in mark_new_nics(
            instance.primary_mac,
            scope.excluded_macs(),
            Path(config.distro_root),
            enabled=config.manage_distro_network,
        ):
            log.debug("wrote %s", path)
    except OSError as e:
        log.warning("warning: NetworkManager/networkd drop-ins not written: %s", e)
    return released

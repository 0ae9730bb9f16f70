"""Hot-plug of one interface: `eni-guest hotplug add IFACE` and `eni-guest hotplug remove IFACE`.

udev (through a per-interface systemd unit) runs these when a NIC appears or leaves, and the
watch daemon runs the same logic in-process.  Both must be quick and must never guess:

* `add` waits, without holding the run lock, until metadata lists the interface's MAC as a
  settled ENI (right after a hot attach AWS may list it with device-number 0 and no IPs for a
  few seconds; configuring it then would put two ENIs in one table).  It then takes the lock
  and runs a normal full reconcile.  If it had to wait for the lock, or its read is older
  than a second, it reads metadata once more under the lock: with eight ENIs attached at
  once, eight `add`s queue on the lock, and a read taken before the wait may predate an ENI
  that a run in between configured; reconciling with it would remove that ENI again.  A read
  taken under the lock is never older than the kernel state.  Otherwise (the lock was free,
  the read is fresh) it reconciles with the read it has: the metadata service is rate limited
  per ENI.  When the lock is free as the NIC appears, the first read is taken holding it, and
  an ENI settled by then is configured with that one read.
* With `provider = auto`, which cloud this is is part of the wait: a NIC may appear before
  the metadata service answers, or while the guest is too slow for the probes' first window,
  so detection is retried with the metadata reads' backoff (and a longer window each time)
  until it answers or `hotplug_timeout` passes.  Its answer is kept for the boot
  (providers/boot_cache.py), so the next `add` of the same boot does not probe again.
* A NIC some other run has configured since it appeared (it is in eni-guest's interface
  group, where a new NIC starts in group 0, and routed by its tables) needs nothing more:
  once metadata lists it as settled, `add` exits 0 without reconciling or waiting for the
  lock.  That is the case of every NIC present at boot, whose units udev starts beside the
  boot apply (the units are ordered after it; cloud-init's module runs alongside them).  While
  `add` waits for the run lock it keeps checking the same, and it waits for the lock up to
  what is left of `hotplug_timeout` (at least `lock_timeout`): a slow boot apply holding the
  lock does not fail the units queued behind it (exit 5) when it configures their NICs.
* `remove` runs after the interface is gone and needs no metadata (detach must work while the
  metadata service is down): it deletes only what the kernel shows to be orphaned
  (`plan.plan_unplug`).

Interfaces that cannot be ENIs (bridges, VLANs, tunnels, ...) are ignored with exit 0, and so,
after one complete metadata read, is a veth whose MAC metadata does not list: Docker and CNI
plugins create veths all the time.  (ENIs of the simulated VM are veths, so veths are looked
up at all.)  What the configuration excludes (exclude_interfaces by name, at once; exclude_enis
after one metadata read) is not waited for either: it is left alone.
"""

from __future__ import annotations

import time

from . import settle
from .config import Config
from .errors import MetadataDisabled, MetadataError, MetadataUnavailable
from .log import log
from .model import Instance
from .providers.detect import MAX_WINDOW, TOTAL_TIMEOUT
from .providers.registry import AUTO
from .record import record, replace
from .settle import Backoff, jitter
from .state import KernelState, Link

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Callable, Optional

    from .changes import Change
    from .kernel import Kernel


@record(frozen=True)
class Settled:
    """A NIC metadata lists as a settled ENI, and the configuration that read it (provider
    "auto" resolved to the cloud)."""

    link: Link
    config: Config
    instance: Optional[Instance] = None  # the read that found it settled
    read_at: float = 0.0  # when that read ended (time.monotonic)


def resolve_provider(config: Config, window: float = TOTAL_TIMEOUT) -> Config:
    """The configuration with provider "auto" replaced by the cloud (providers/detect.py
    `choose`: DMI, the answer kept earlier this boot, else probes for `window` seconds);
    MetadataUnavailable when nothing answered."""
    if config.provider != AUTO:
        return config
    from .providers.detect import choose

    name, reason = choose(config, window=window)
    log.info("provider %s chosen: %s", name, reason)
    return replace(config, provider=name)


def _detect(config: Config, tries: int, left: float) -> Config:
    """Try number `tries` of auto-detection within a wait: the window doubles from the first
    3 s up to MAX_WINDOW, within what is left of the wait (but never under the 3 s of a run
    that does not wait)."""
    window = min(TOTAL_TIMEOUT * 2 ** (tries - 1), MAX_WINDOW, max(left, TOTAL_TIMEOUT))
    try:
        return resolve_provider(config, window)
    except MetadataUnavailable as e:
        times = "once" if tries == 1 else f"{tries} times"
        raise MetadataUnavailable(f"auto-detection tried {times}, the last: {e}") from None


def _read(config: Config, left: float) -> Instance:
    """One complete metadata read that ends by the caller's deadline (at least 0.5 s)."""
    from .agent import read_instance

    budget = max(left, 0.5)
    capped = replace(
        config,
        metadata_deadline=min(config.metadata_deadline, budget),
        metadata_timeout=min(config.metadata_timeout, budget),
    )
    return read_instance(capped)[0]


def wait_until_settled(
    config: Config,
    link: Link,
    timeout: float,
    *,
    relookup: Callable[[int], Optional[Link]],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] = jitter,
) -> Optional[Settled]:
    """Poll metadata until `link`'s MAC is a settled ENI; return the link (it may have been
    renamed) with the configuration that read it, or None when there is nothing to configure
    (the link left, or it is not an ENI of this instance).  Raises MetadataError when no cloud
    was recognised, metadata stayed down or the ENI unsettled for the whole timeout: the
    caller changes nothing.  The decisions are settle.judge's.
    """
    deadline = clock() + timeout
    backoff = Backoff(rng=rng)
    tries = 0  # of auto-detection; it is retried like a failed read until it answers
    while True:
        instance, error = None, None
        try:
            if config.provider == AUTO:
                tries += 1
                config = _detect(config, tries, deadline - clock())
            instance = _read(config, deadline - clock())
        except MetadataDisabled:
            raise  # switched off: waiting will not switch it on
        except MetadataError as e:
            error = e
        left = deadline - clock()
        verdict = settle.judge(link, instance, error=error, time_left=left, timeout=timeout)
        if verdict.action == settle.CONFIGURE:
            return Settled(link, config, instance, clock())
        if verdict.action == settle.GIVE_UP:
            if verdict.failed:
                raise MetadataUnavailable(verdict.why)
            log.log(verdict.level, "%s", verdict.why)
            return None
        if verdict.action == settle.IGNORE:
            log.log(verdict.level, "%s", verdict.why)
            return None
        sleep(min(backoff.next(), left))
        now = relookup(link.index)
        if now is None:
            log.debug("%s left while waiting for metadata: nothing to do", link.name)
            return None
        link = now


def add(config: Config, ifname: str) -> int:
    """`eni-guest hotplug add IFACE`: wait for metadata to settle, then reconcile.  Exit code."""
    from .kernel import Kernel

    kernel = Kernel(config)
    try:
        link = kernel.link_by_name(ifname)
        if link is None:
            log.debug("%s is gone: nothing to do", ifname)
            return 0
        verdict = settle.first_look(link, config)
        if verdict is not None:
            log.log(verdict.level, "%s", verdict.why)
            return 0
        start = time.monotonic()
        if _configured_at_once(config, link, kernel):
            return 0
        settled = wait_until_settled(
            config, link, config.hotplug_timeout, relookup=kernel.link_by_index
        )
        if settled is None:
            return 0
        if configured(kernel.read_state(), link.index, config):
            log.debug("%s is configured already (by a run since it appeared)", link.name)
            return 0
        log.debug(
            "%s (%s) settled in metadata after %.1f s",
            settled.link.name,
            settled.link.mac,
            time.monotonic() - start,
        )
        wait = max(config.lock_timeout, config.hotplug_timeout - (time.monotonic() - start))

        def done() -> bool:
            return configured(kernel.read_state(), link.index, config)

        reconcile_unless_done(settled.config, wait, done, name=settled.link.name, settled=settled)
    finally:
        kernel.close()
    return 0


def _configured_at_once(config: Config, link: Link, kernel: Kernel) -> bool:
    """The common case in one read: when the run lock is free now, read metadata holding it
    and, if the ENI has settled, reconcile with that read (or do nothing, when another run
    has configured the NIC already).  False (nothing done) when the lock is busy, the cloud is
    not known yet or the ENI has not settled: then the wait."""
    from .agent import reconcile
    from .errors import LockTimeout
    from .lock import run_lock

    try:
        with run_lock(config.lock_file, 0.0):
            if config.provider == AUTO:
                config = resolve_provider(config)  # the answer kept for the boot, or probes
            instance = _read(config, config.metadata_deadline)
            verdict = settle.judge(link, instance, time_left=1.0, timeout=config.hotplug_timeout)
            if verdict.action != settle.CONFIGURE:
                return False
            if configured(kernel.read_state(), link.index, config):
                log.debug("%s is configured already (by a run since it appeared)", link.name)
                return True
            log.debug("%s (%s) settled in metadata", link.name, link.mac)
            reconcile(config, instance=instance, fail_on_invalid=False)
            return True
    except (LockTimeout, MetadataDisabled):
        return False  # busy; or switched off, which the wait reports
    except MetadataError:
        return False  # not answering yet: the wait retries with backoff


def configured(state: KernelState, index: int, config: Config) -> bool:
    """Whether a run of eni-guest has configured the NIC with this index since it appeared:
    it is in eni-guest's interface group (a NIC appears in group 0; unsettled ENIs are left in
    it) and a route of eni-guest's tables goes through it (a link moved in from another
    network namespace keeps its group, not its routes)."""
    link = next((x for x in state.links if x.index == index), None)
    if link is None or link.group != config.interface_group:
        return False
    return any(r.oif == index for r in state.routes)


def configured_now(index: int, config: Config) -> bool:
    """`configured`, with the kernel read now (the watch daemon's waiting links)."""
    from .kernel import Kernel

    kernel = Kernel(config)
    try:
        return configured(kernel.read_state(), index, config)
    finally:
        kernel.close()


FRESH = 1.0  # seconds: a read this young, with the lock free at once, is reused (see above)


def reconcile_unless_done(
    config: Config,
    wait: float,
    done: Callable[[], bool],
    *,
    name: str,
    step: float = 0.5,
    settled: Optional[Settled] = None,
) -> None:
    """A full reconcile under the run lock, the lock waited for up to `wait` seconds.  While
    it is held, and once it is taken, `done()` says whether the holder has configured the NIC
    meanwhile: then nothing is left to do.  LockTimeout (exit 5) only when neither happened in
    time.  The reconcile uses the `settled` read when the lock was free at once and that read
    is fresh; otherwise it reads metadata again, under the lock (see above).

    Another ENI whose metadata is refused does not fail a hot-plug: it is logged, and this
    NIC, which settled, is configured (its unit did its job)."""
    from .agent import reconcile
    from .errors import LockTimeout
    from .lock import run_lock

    deadline = time.monotonic() + wait
    waited = False
    while True:
        try:
            timeout = min(step, max(0.0, deadline - time.monotonic()))
            with run_lock(config.lock_file, timeout) as waited_now:
                if done():
                    log.debug("%s was configured by the run before this one", name)
                    return
                instance = None  # read again, under the lock
                fresh = settled is not None and time.monotonic() - settled.read_at <= FRESH
                if settled is not None and fresh and not (waited or waited_now):
                    instance = settled.instance
                reconcile(config, instance=instance, log_warnings=True, fail_on_invalid=False)
                return
        except LockTimeout:
            waited = True
            if done():
                log.info("%s is configured by the run holding the lock", name)
                return
            if time.monotonic() >= deadline:
                raise LockTimeout(
                    f"another eni-guest run held {config.lock_file} for more than {wait:.0f} s "
                    f"and has not configured {name}; nothing changed"
                ) from None


def remove(config: Config, ifname: str) -> int:
    """`eni-guest hotplug remove IFACE`: clean up after an interface that is gone.  Exit code."""
    from .kernel import Kernel
    from .lock import run_lock

    kernel = Kernel(config)
    try:
        if kernel.link_by_name(ifname) is not None:
            log.debug("%s is still present: nothing to remove", ifname)
            return 0
    finally:
        kernel.close()
    with run_lock(config.lock_file, config.lock_timeout):
        unplug(config)
    return 0


def unplug(config: Config) -> list[Change]:
    """Delete what departed interfaces left behind (no metadata needed); caller holds the lock."""
    from .agent import log_changes
    from .dhcp_known import forget_departed
    from .kernel import Kernel
    from .plan import plan_unplug
    from .providers import memo

    kernel = Kernel(config)
    applied: list[Change] = []

    def done(changes: list[Change]) -> None:
        applied.extend(changes)
        log_changes(changes)

    try:
        state = kernel.read_state()
        for path in forget_departed(config, state.links):  # JD Cloud's DHCP answers
            log.debug("removed %s: its NIC left", path)
        memo.forget_departed(config, state.links)  # and the metadata kept for it
        p = plan_unplug(state, config)
        for note in p.notes:
            log.debug("%s", note)
        kernel.apply(p.changes, done)
    finally:
        kernel.close()
    return applied

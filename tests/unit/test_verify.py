"""Verify after apply: when the kernel's events leave a doubt, the kernel is read again, and
what it did not keep fails the run (exit 4).

The kernel here is a stand-in that acknowledges every change, as netlink does, and then keeps
all of them, or loses one as a network manager taking a NIC down in between would: a real
kernel that silently drops an acknowledged change cannot be produced on demand.  Its events
(witness.py) are the real kernel's business: tests/e2e/test_verify_events.py.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Callable

import pytest
from test_plan import BOOT_STATE, B, C, P, applied, vm

from eni_guest import agent
from eni_guest.config import Config
from eni_guest.errors import KernelError
from eni_guest.plan import LinkChange

if TYPE_CHECKING:
    from eni_guest.changes import Change


class AckingKernel:
    """Acknowledges every change; `lose` picks those it then does not keep."""

    def __init__(
        self, lose: Callable[[Change], bool] = lambda c: False, doubt: str | None = "no events"
    ) -> None:
        self.state = BOOT_STATE
        self.lose = lose
        self.requests_sent = 0
        self.reads = 0
        self.said = doubt  # what its events leave in doubt (None: nothing)
        self.asked: list[tuple] = []

    def watch(self) -> None:
        pass

    def doubt(self, applied, before):
        self.asked.append((list(applied), before))
        return self.said

    def read_state(self):
        self.reads += 1
        return self.state

    def apply(self, changes, done) -> None:
        self.requests_sent += len(changes)
        self.state = applied(self.state, [c for c in changes if not self.lose(c)])
        done(list(changes))

    def close(self) -> None:
        pass


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path):
    def reconcile(kernel: AckingKernel) -> agent.Result:
        monkeypatch.setattr("eni_guest.kernel.Kernel", lambda config: kernel)
        config = Config(provider="aws", distro_root=str(tmp_path))
        return agent.reconcile(config, instance=vm(P, B, C))

    return reconcile


def test_a_kept_plan_passes_and_is_read_back(run) -> None:
    kernel = AckingKernel()
    result = run(kernel)
    assert result.applied and kernel.reads == 2  # once to plan, once to verify
    assert "verify" in result.timings


def test_events_that_vouch_for_the_apply_spare_the_second_read(run) -> None:
    kernel = AckingKernel(doubt=None)
    result = run(kernel)
    assert result.applied and kernel.reads == 1  # only to plan
    # asked about exactly what was applied, against the state the plan was made from
    assert kernel.asked == [(result.applied, result.state)]


def test_a_change_the_kernel_did_not_keep_fails_the_run_naming_it(run) -> None:
    def link_down(c: Change) -> bool:  # eth2 taken down by someone else right after
        return isinstance(c, LinkChange) and c.ifname == "eth2"

    with pytest.raises(KernelError, match="still differs from the plan: link set dev eth2 up") as e:
        run(AckingKernel(lose=link_down))
    assert e.value.exit_code == 4


def test_nothing_to_do_reads_the_kernel_once(run) -> None:
    kernel = AckingKernel()
    kernel.state = applied(BOOT_STATE, agent.plan(vm(P, B, C), Config(), BOOT_STATE).changes)
    result = run(kernel)
    assert result.applied == [] and kernel.reads == 1


def plan_of_boot() -> list[Change]:
    return list(agent.plan(vm(P, B, C), Config(), BOOT_STATE).changes)


@pytest.mark.parametrize("kind", ["AddrChange", "RouteChange", "RuleChange", "LinkChange"])
def test_each_kind_of_change_not_kept_is_named(kind: str) -> None:
    """Every kind the kernel acknowledged and then does not show is found, and only it."""
    from eni_guest.diff import not_taken

    changes = plan_of_boot()
    lost = next(c for c in changes if type(c).__name__ == kind)
    after = applied(BOOT_STATE, [c for c in changes if c is not lost])
    assert not_taken(changes, after) == [lost]
    assert not_taken(changes, applied(BOOT_STATE, changes)) == []


def test_a_removal_whose_object_is_still_there_is_named() -> None:
    from eni_guest.diff import not_taken

    kept = applied(BOOT_STATE, plan_of_boot())
    # metadata lost the third ENI: its addresses, routes, rules and group go
    removals = [c for c in agent.plan(vm(P, B), Config(), kept).changes if c.op == "del"]
    assert removals
    assert not_taken(removals, kept) == removals  # none of them taken yet
    assert not_taken(removals, applied(kept, removals)) == []


def test_what_was_on_a_link_that_left_meanwhile_is_not_counted() -> None:
    """A NIC unplugged between the apply and the read took its addresses and routes along:
    not a failed apply (its unplug clean-up follows)."""
    from eni_guest.diff import not_taken

    changes = plan_of_boot()
    gone = next(c.index for c in changes if isinstance(c, LinkChange) and c.ifname == "eth2")
    after = applied(BOOT_STATE, changes)
    after = replace(
        after,
        links=tuple(link for link in after.links if link.index != gone),
        addrs=tuple(a for a in after.addrs if a.index != gone),
        routes=tuple(r for r in after.routes if r.oif != gone),
    )
    on_link = [c for c in changes if getattr(c, "index", getattr(c, "oif", None)) == gone]
    assert on_link and not_taken(changes, after) == []

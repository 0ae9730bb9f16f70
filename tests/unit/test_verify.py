"""Verify after apply: the kernel is read again, and what it did not keep fails the run (exit 4).

The kernel here is a stand-in that acknowledges every change, as netlink does, and then keeps
all of them, or loses one as a network manager taking a NIC down in between would: a real
kernel that silently drops an acknowledged change cannot be produced on demand.
"""

from __future__ import annotations

from typing import Callable

import pytest
from test_plan import BOOT_STATE, B, C, P, applied, vm

from eni_guest import agent
from eni_guest.config import Config
from eni_guest.errors import KernelError
from eni_guest.plan import Change, LinkChange


class AckingKernel:
    """Acknowledges every change; `lose` picks those it then does not keep."""

    def __init__(self, lose: Callable[[Change], bool] = lambda c: False) -> None:
        self.state = BOOT_STATE
        self.lose = lose
        self.requests_sent = 0
        self.reads = 0

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

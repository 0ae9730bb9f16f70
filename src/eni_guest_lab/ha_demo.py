"""`eni-guest demo --ha`: keepalived failover on the simulated VPC, with a printed timeline.

Two VMs in one VPC (ha.py): keepalived with unicast VRRP, the VIP 10.0.2.100 on a secondary
ENI, a notify script calling the simulated cloud API, eni-guest's watch daemon following the
VIP (floating_ips).  A client on the far host sends a UDP request to the VIP every 10 ms.  The
demo kills the master, prints when each step happened, brings the old master back as backup
and shows it holds nothing of the VIP any more; then moves a whole ENI from A to B.
"""

from __future__ import annotations

import signal
import time
from typing import Any, Callable, Optional

from . import testbed
from .ha import MOVING_IP, VIP, HaBed


def run(echo: Callable[[str], None] = print) -> int:
    """Build, fail over, print, clean up.  0 when the failover worked as expected."""
    problem = testbed.check_environment()
    if problem is not None:
        echo(f"eni-guest demo --ha: cannot build the simulated VPC: {problem}")
        return 6 if "root" in problem else 1
    testbed.cleanup_stale()

    def stop(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old = signal.signal(signal.SIGTERM, stop)
    bed: Optional[HaBed] = None
    try:
        echo("building two VMs in one VPC, keepalived on both (unicast VRRP, advert 0.1 s)...")
        bed = HaBed(lag=2.0)
        return _demo(bed, echo)
    except KeyboardInterrupt:
        echo("\ninterrupted: removing the simulated VPC")
        return 130
    except RuntimeError as e:
        echo(f"eni-guest demo --ha: {e}")
        return 1
    finally:
        if bed is not None:
            bed.close()
        signal.signal(signal.SIGTERM, old)
        echo("cleaned up: every namespace of the demo is gone")


def _holds(bed: HaBed, name: str) -> str:
    n = bed.a if name == "A" else bed.b
    h = bed.holds_vip(n)
    yes = {True: "yes", False: "no"}
    return f"VM {name}: VIP address {yes[h['address']]}, rule from it {yes[h['rule']]}"


def _demo(bed: HaBed, echo: Callable[[str], None]) -> int:
    echo(f"A is master and answers on {VIP}; the client on the far host sends every 10 ms")
    echo(_holds(bed, "A"))
    echo(_holds(bed, "B"))
    echo("\nkilling A (keepalived SIGKILL, its service gone):")
    t = bed.fail_over()
    for line in t.lines():
        echo(line)
    followed = [x for x in bed.watch_log(bed.b).splitlines() if "floating IPs followed" in x]
    if followed:
        echo("  B's eni-guest watch: " + followed[-1].split(": ", 1)[-1])
    echo("\nstarting A again: keepalived comes up as backup (nopreempt)")
    bed.come_back()
    time.sleep(0.5)
    echo(_holds(bed, "A"))
    echo(_holds(bed, "B"))
    echo(f"\nmoving the ENI of {MOVING_IP} from A to B (cloud API detach, attach):")
    m = bed.move_eni()
    for line in m.lines():
        echo(line)
    ok = t.guest_side is not None and not bed.holds_vip(bed.a)["address"]
    echo("\nresult: " + ("failover as expected" if ok else "UNEXPECTED, see above"))
    return 0 if ok else 1

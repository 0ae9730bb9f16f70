#!/usr/bin/env python3
"""Benchmark of a keepalived failover on two simulated VMs (root; needs keepalived).

Each round builds the pair of eni_guest_lab/ha.py (VM A master of the VIP 10.0.2.100, VM B
backup, eni-guest's watch daemon in both, a client on the far host every 10 ms), measures a
floating address's rule (address event to rule event, from a netlink listener in B), kills A
and measures the outage, split into VRRP detection and the guest side; then A comes back as
backup and must hold neither the VIP's address nor its rule.

Not a timed test: it prints the figures (median and worst of the rounds) and exits non-zero
only if a target is missed (address to rule under 100 ms, guest side under 0.5 s, nothing
stale on A).

    python benchmarks/bench_failover.py [--rounds 3] [--advert 0.1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from eni_guest_lab.ha import HaBed
from eni_guest_lab.testbed import cleanup_stale

EXTRA = "10.0.2.101"


def one_round(advert: float) -> dict[str, float]:
    bed = HaBed(lag=1.0, advert=advert, floating=("10.0.2.100", EXTRA))
    try:
        bed.daemons_settled()
        rule = bed.address_to_rule(bed.b, EXTRA)
        bed.address_to_rule(bed.b, EXTRA, add=False)
        t = bed.fail_over()
        print("\n".join(t.lines()))
        bed.come_back()
        deadline = time.monotonic() + 2
        while bed.holds_vip(bed.a) != {"address": False, "rule": False}:
            if time.monotonic() > deadline:
                raise SystemExit(f"stale on A after it came back: {bed.holds_vip(bed.a)}")
            time.sleep(0.05)
        assert t.outage is not None and t.detection is not None and t.guest_side is not None
        return {
            "address_to_rule": rule,
            "outage": t.outage,
            "detection": t.detection,
            "guest_side": t.guest_side,
        }
    finally:
        bed.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--advert", type=float, default=0.1, help="keepalived advert_int (s)")
    args = ap.parse_args()
    cleanup_stale()
    rounds = [one_round(args.advert) for _ in range(args.rounds)]
    print(f"\n{args.rounds} rounds, advert_int {args.advert:g} s (median / worst):")
    for key in ("address_to_rule", "detection", "guest_side", "outage"):
        values = [r[key] * 1000 for r in rounds]
        print(f"  {key:16} {statistics.median(values):7.0f} ms / {max(values):7.0f} ms")
    worst = {k: max(r[k] for r in rounds) for k in rounds[0]}
    ok = worst["address_to_rule"] < 0.1 and worst["guest_side"] < 0.5
    print("targets (address to rule < 100 ms, guest side < 500 ms): " + ("met" if ok else "MISSED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

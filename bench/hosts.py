"""Several hosts on one machine under chaos: recovery per fault, and every invariant checked.

Run (Linux, as root: network namespaces): ``python bench/hosts.py`` (3 hosts, 600 channels,
24 faults: the nightly's length), ``python bench/hosts.py --quick`` (3 hosts, 150 channels, the 8
kinds of fault once: about a minute and a half), ``--seed N`` to replay a sequence,
``--faults N``, ``--hosts N``, ``--channels N``, ``--sweep`` to remove what a killed run left.

Each host is a network namespace running ``tmi-cluster run``; Redis, PostgreSQL and the chat
simulator run in the root namespace (:mod:`tmi_cluster.hosts`). The faults and the invariants
are those of :mod:`tmi_cluster.chaos`. Anonymous reading at today's budget (20 JOINs per 10 s per
connection); the bot sends one message every 2 s; the simulator generates 50 messages per
second. Exit code 1 when an invariant broke (the report says which).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from tmi_cluster import chaos
from tmi_cluster.hosts import missing, sweep


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each kind of fault once")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", type=int, default=None)
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--channels", type=int, default=None)
    parser.add_argument("--hold", type=float, default=8.0, help="seconds a cut or slow lasts")
    parser.add_argument("--rate", type=float, default=50.0, help="chat messages per second")
    parser.add_argument("--sweep", action="store_true", help="remove what a killed run left")
    args = parser.parse_args()
    if args.sweep:
        print("removed:", ", ".join(sweep()) or "nothing")
        return 0
    reason = missing()
    if reason is not None:
        print(f"cannot run here: {reason}", file=sys.stderr)
        return 2
    faults = args.faults or (len(chaos.FAULTS) if args.quick else 24)
    channels = args.channels or (150 if args.quick else 600)
    report = asyncio.run(
        chaos.scenario(
            seed=args.seed,
            faults=faults,
            hosts=args.hosts,
            channels=channels,
            hold_s=args.hold,
            rate=args.rate,
        )
    )
    print(report.table())
    for kind, (median, largest) in sorted(report.by_kind().items()):
        print(f"  {kind:18} steady after {median:6.2f} s (median), {largest:6.2f} s (max)")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""Several hosts on one machine under chaos: recovery per fault, and every invariant checked.

Run (Linux, as root: network namespaces): ``python bench/hosts.py`` (3 hosts, 600 channels,
24 faults: the nightly's length), ``python bench/hosts.py --quick`` (3 hosts, 150 channels, the 8
kinds of fault once: about 100 s), ``--seed N`` to replay a sequence,
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
import functools
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from tmi_cluster import chaos
from tmi_cluster.hosts import missing, sweep


async def _stoppable(run: Coroutine[Any, Any, chaos.Report]) -> chaos.Report:
    """``run``, cancelled by SIGTERM as by Ctrl-C (so that the hosts are removed either way)."""
    task = asyncio.ensure_future(run)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await task


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each kind of fault once")
    parser.add_argument("--seed", type=int, default=1, help="the sequence's seed (default 1)")
    parser.add_argument("--faults", type=int, default=None, help="default 24; 8 with --quick")
    parser.add_argument("--hosts", type=int, default=3, help="2 to 20 (default 3)")
    parser.add_argument("--channels", type=int, default=None, help="default 600; 150 --quick")
    parser.add_argument("--hold", type=float, default=8.0, help="seconds a cut or slow lasts")
    parser.add_argument("--rate", type=float, default=50.0, help="chat messages per second")
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning"],
        default="info",
        help="the hosts' log level (debug: to replay a seed that broke an invariant)",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="remove what a killed run left (never while another run is under way)",
    )
    args = parser.parse_args()
    if not 2 <= args.hosts <= 20:
        parser.error("--hosts must be between 2 and 20")
    for name in ("faults", "channels"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.hold < 0 or args.rate < 0:
        parser.error("--hold and --rate must not be negative")
    if args.sweep:
        print("removed:", ", ".join(sweep()) or "nothing")
        return 0
    reason = missing()
    if reason is not None:
        print(f"cannot run here: {reason}", file=sys.stderr)
        return 2
    faults = args.faults or (len(chaos.FAULTS) if args.quick else 24)
    channels = args.channels or (150 if args.quick else 600)
    try:
        report = asyncio.run(
            _stoppable(
                chaos.scenario(
                    log=functools.partial(print, flush=True),
                    seed=args.seed,
                    faults=faults,
                    hosts=args.hosts,
                    channels=channels,
                    hold_s=args.hold,
                    rate=args.rate,
                    log_level=args.log_level,
                )
            )
        )
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; the hosts and their servers are removed", file=sys.stderr)
        return 130
    print(report.table())
    for kind, (median, largest) in sorted(report.by_kind().items()):
        print(f"  {kind:18} steady after {median:6.2f} s (median), {largest:6.2f} s (max)")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())

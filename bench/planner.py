"""The coordinator's planner on a big snapshot: 250,000 channels over 5,000 processes.

Run: ``python bench/planner.py`` (5 rounds each) or ``python bench/planner.py --quick``
(1 round). Target (issue 11): under 1 s. Cases: a cold start (nothing assigned yet), a steady
state (nothing to do), and a failover (one process of 5,000 dead: its channels move), each
with 10 hosts of 5 supervisors; and the same with two copies of each channel
(``coordinator.replicas = 2``: 500,000 placements, capacity 120 per process).
"""

from __future__ import annotations

import argparse
import time

from tmi_cluster.coordinator.planner import Member, Snapshot, plan

PROCESSES = 5_000
CHANNELS = 250_000


def _members() -> list[Member]:
    return [
        Member(f"p{i}", supervisor=f"s{i % 50}", host=f"h{i % 10}", capacity=60)
        for i in range(PROCESSES)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round per case")
    rounds = 1 if parser.parse_args().quick else 5
    members = _members()
    wanted = frozenset(f"channel{i}" for i in range(CHANNELS))
    cold = Snapshot(wanted, tuple(members), {})
    placed = plan(cold).applied({})
    steady = Snapshot(wanted, tuple(members), placed)
    failover = Snapshot(wanted, tuple(members[1:]), placed)
    doubled = [Member(m.id, m.supervisor, m.host, capacity=120) for m in members]
    cold2 = Snapshot(wanted, tuple(doubled), {}, copies=2)
    first = plan(cold2)
    placed2, seconds = first.applied({}), first.applied_replicas({})
    steady2 = Snapshot(wanted, tuple(doubled), placed2, replicas=seconds, copies=2)
    failover2 = Snapshot(wanted, tuple(doubled[1:]), placed2, replicas=seconds, copies=2)
    print(f"{'case':30} {'best s':>8} {'assigned':>9} {'moves':>6}  target")
    missed = []
    for name, snapshot in (
        ("cold start", cold),
        ("steady", steady),
        ("failover (1 dead)", failover),
        ("two copies: cold start", cold2),
        ("two copies: steady", steady2),
        ("two copies: failover (1 dead)", failover2),
    ):
        best = float("inf")
        result = None
        for _ in range(rounds):
            started = time.perf_counter()
            result = plan(snapshot)
            best = min(best, time.perf_counter() - started)
        assert result is not None
        assigned = len(result.assign) + len(result.replicas)
        # the target (issue 23) is one copy's; two copies have none (a cold start is rare)
        target = "" if name.startswith("two copies") else ("under 1 s" if best < 1.0 else "MISSED")
        if target == "MISSED":
            missed.append(name)
        print(f"{name:30} {best:8.3f} {assigned:9,} {result.moves:6}  {target}")
    print(
        "target: one copy under 1 s in each case"
        + (f"; MISSED: {', '.join(missed)}" if missed else ": met")
    )


if __name__ == "__main__":
    main()

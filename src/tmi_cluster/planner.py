"""The coordinator's plan as a pure function: a snapshot of the cluster in, the changes out.

Level-triggered: the plan depends only on the snapshot (what is wanted, who is alive, who holds
what), so it is the same whether the coordinator missed one change or ten. Sticky: a channel
moves only when it must (its owner is gone or draining, it is no longer wanted) or to even the
load out, a bounded number per plan. Rules, in order:

1. A channel that is not wanted, or is blocked (a failed join waiting for its retry), is
   unassigned.
2. A wanted channel whose owner is not a live member, or is draining, is unowned.
3. Each unowned wanted channel goes to the member with the most free capacity; among equals,
   to the one whose host, then supervisor, holds the fewest channels (spread across hosts),
   then by id (deterministic). A member at its capacity takes none; what does not fit waits
   (:attr:`Plan.waiting`: a reason to scale out).
4. Rebalancing: while the most loaded member holds more than ``tolerance`` channels more than
   the least loaded one (both not draining, the latter below its capacity), one channel moves
   from the first to the second, at most ``max_moves`` per plan.

Invariants (property-tested): no channel has two owners; no member gets more than its capacity
from the plan; every wanted, unblocked channel is assigned when the capacity exists; at most
``max_moves`` rebalancing moves.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["Member", "Plan", "Snapshot", "plan"]

#: A member's place in the placement heap: room (negative), host load, supervisor load, id.
_Key = tuple[int, int, int, str]


@dataclass(frozen=True)
class Member:
    """A live worker process that can hold channels."""

    id: str
    supervisor: str = ""
    host: str = ""
    capacity: int = 50
    #: Being emptied (scale-in, a stop): it keeps nothing and takes nothing.
    draining: bool = False


@dataclass(frozen=True)
class Snapshot:
    """What the plan is made from."""

    wanted: frozenset[str]
    members: tuple[Member, ...]
    assignment: Mapping[str, str]
    #: Wanted channels not to be placed now (a failed join waiting for its retry).
    blocked: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        wanted: Iterable[str],
        members: Iterable[Member],
        assignment: Mapping[str, str],
        blocked: Iterable[str] = (),
    ) -> Snapshot:
        """A snapshot from any iterables."""
        return cls(frozenset(wanted), tuple(members), dict(assignment), frozenset(blocked))


@dataclass
class Plan:
    """The changes: channels to (re)assign, channels to unassign, what waits for capacity."""

    assign: dict[str, str] = field(default_factory=dict)
    unassign: set[str] = field(default_factory=set)
    waiting: list[str] = field(default_factory=list)
    #: How many of :attr:`assign` are rebalancing moves (the rest had no live owner).
    moves: int = 0

    def applied(self, assignment: Mapping[str, str]) -> dict[str, str]:
        """``assignment`` after this plan."""
        result = {c: p for c, p in assignment.items() if c not in self.unassign}
        result.update(self.assign)
        return result


def plan(snapshot: Snapshot, *, max_moves: int = 100, tolerance: int = 2) -> Plan:
    """The plan for ``snapshot`` (see the module's docstring)."""
    members = {m.id: m for m in snapshot.members}
    result = Plan()
    kept: dict[str, str] = {}
    for channel, owner in snapshot.assignment.items():
        if channel not in snapshot.wanted or channel in snapshot.blocked:
            result.unassign.add(channel)
        elif owner in members and not members[owner].draining:
            kept[channel] = owner
    load = Counter(kept.values())
    takers = [m for m in members.values() if not m.draining]
    unowned = sorted(snapshot.wanted - snapshot.blocked - kept.keys())
    _place(result, unowned, owners=kept, load=load, members=members, takers=takers)
    for channel in result.waiting:
        if channel in snapshot.assignment:
            result.unassign.add(channel)  # its owner is gone: nobody holds it now
    _rebalance(result, kept, load, takers, max_moves=max_moves, tolerance=tolerance)
    for channel, owner in list(result.assign.items()):
        if snapshot.assignment.get(channel) == owner:
            del result.assign[channel]  # no change after all
    return result


def _place(
    result: Plan,
    unowned: list[str],
    *,
    owners: dict[str, str],
    load: Counter[str],
    members: Mapping[str, Member],
    takers: list[Member],
) -> None:
    """Rule 3: each unowned channel to the member with the most room, spread across hosts."""
    host_load = Counter({m.host: 0 for m in members.values()})
    supervisor_load = Counter({m.supervisor: 0 for m in members.values()})
    for owner, count in load.items():
        host_load[members[owner].host] += count
        supervisor_load[members[owner].supervisor] += count

    def key(m: Member) -> _Key:
        return (load[m.id] - m.capacity, host_load[m.host], supervisor_load[m.supervisor], m.id)

    # The host and supervisor loads in a member's key are those of when it was queued: each
    # pop re-queues one member only, so placing a channel costs O(log members).
    heap = [key(m) for m in takers if load[m.id] < m.capacity]
    heapq.heapify(heap)
    for position, channel in enumerate(unowned):
        if not heap:
            result.waiting.extend(unowned[position:])
            return
        target = members[heapq.heappop(heap)[3]]
        result.assign[channel] = target.id
        owners[channel] = target.id
        load[target.id] += 1
        host_load[target.host] += 1
        supervisor_load[target.supervisor] += 1
        if load[target.id] < target.capacity:
            heapq.heappush(heap, key(target))


def _rebalance(
    result: Plan,
    owners: dict[str, str],
    load: Counter[str],
    takers: list[Member],
    *,
    max_moves: int,
    tolerance: int,
) -> None:
    """Move channels from the most to the least loaded member, in bounded steps."""
    if len(takers) < 2 or max_moves <= 0:
        return
    by_member: dict[str, list[str]] = {m.id: [] for m in takers}
    for channel, owner in owners.items():
        if owner in by_member:
            by_member[owner].append(channel)
    for channels in by_member.values():
        channels.sort()  # the last in name order moves first: deterministic
    while result.moves < max_moves:
        most = max(takers, key=lambda m: (load[m.id], m.id))
        least = min(takers, key=lambda m: (load[m.id] - m.capacity, load[m.id], m.id))
        if load[most.id] - load[least.id] <= tolerance or load[least.id] >= least.capacity:
            return
        channel = by_member[most.id].pop()
        by_member[least.id].append(channel)
        owners[channel] = least.id
        load[most.id] -= 1
        load[least.id] += 1
        result.assign[channel] = least.id
        result.moves += 1

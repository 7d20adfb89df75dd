"""The coordinator's plan as a pure function: a snapshot of the cluster in, the changes out.

Level-triggered: the plan depends only on the snapshot (what is wanted, who is alive, who holds
what), so it is the same whether the coordinator missed one change or ten. Sticky: a channel
moves only when it must (its owner is gone or draining, it is no longer wanted) or to even the
load out, a bounded number per plan. Rules, in order:

1. A channel that is not wanted, or is blocked (a failed join waiting for its retry), is
   unassigned.
2. A wanted channel whose owner is not a live member, or is draining, is unowned; while no
   other member can take it, it stays assigned where it is (a draining owner is never made to
   part it before another holds it, nor an owner whose heartbeat is only late). An unowned
   channel that a live member, not draining and below its capacity, holds already
   (:attr:`Snapshot.holders`: after Redis forgot the assignment) is adopted by it: no join.
3. Each unowned wanted channel goes to the member with the most free capacity; among equals,
   to the one whose host, then supervisor, holds the fewest channels (spread across hosts),
   then by id (deterministic). A member at its capacity takes none; what does not fit waits
   (:attr:`Plan.waiting`: a reason to scale out).
4. Join budgets: every channel given to a member costs a JOIN. A member takes at most its
   :attr:`Member.slots` new channels in one plan (the budget of its own identities, such as
   its anonymous connections), and the whole cluster at most :attr:`Snapshot.budget` (the
   budget of the bot's account, shared by every process); what the budgets leave out is
   :attr:`Plan.paced`: placed by a later plan, not a reason to scale out.
5. Rebalancing: while the most loaded member holds more than ``tolerance`` channels more than
   the least loaded one (both not draining, the latter below its capacity), one channel moves
   from the first to the second, at most ``max_moves`` per plan and within the budgets.

Invariants (property-tested): no channel has two owners; no member gets more than its capacity
or its slots from the plan; the plan's joins stay within the budget; every wanted, unblocked
channel is assigned when the capacity and the budgets allow; at most ``max_moves`` rebalancing
moves.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["Member", "Plan", "Snapshot", "plan"]


@dataclass(frozen=True)
class Member:
    """A live worker process that can hold channels."""

    id: str
    supervisor: str = ""
    host: str = ""
    capacity: int = 50
    #: Being emptied (scale-in, a stop): it keeps nothing and takes nothing.
    draining: bool = False
    #: How many new channels (joins) it may take in one plan; None: no limit of its own.
    slots: int | None = None


@dataclass(frozen=True)
class Snapshot:
    """What the plan is made from."""

    wanted: frozenset[str]
    members: tuple[Member, ...]
    assignment: Mapping[str, str]
    #: Wanted channels not to be placed now (a failed join waiting for its retry).
    blocked: frozenset[str] = frozenset()
    #: Channels held by a member without being assigned to it (``channel -> member``).
    holders: Mapping[str, str] = field(default_factory=dict)
    #: How many joins the whole plan may cost; None: no limit.
    budget: int | None = None

    @classmethod
    def of(
        cls,
        wanted: Iterable[str],
        members: Iterable[Member],
        assignment: Mapping[str, str],
        blocked: Iterable[str] = (),
        *,
        holders: Mapping[str, str] | None = None,
        budget: int | None = None,
    ) -> Snapshot:
        """A snapshot from any iterables."""
        return cls(
            frozenset(wanted),
            tuple(members),
            dict(assignment),
            frozenset(blocked),
            dict(holders or {}),
            budget,
        )


@dataclass
class Plan:
    """The changes: channels to (re)assign, channels to unassign, what waits for capacity."""

    assign: dict[str, str] = field(default_factory=dict)
    unassign: set[str] = field(default_factory=set)
    waiting: list[str] = field(default_factory=list)
    #: Channels left for a later plan by the join budgets (not a reason to scale out).
    paced: list[str] = field(default_factory=list)
    #: How many of :attr:`assign` are rebalancing moves (the rest had no live owner).
    moves: int = 0
    #: How many of :attr:`assign` are adoptions (held already: no join).
    adopted: int = 0

    @property
    def joins(self) -> int:
        """How many JOINs carrying out the plan costs."""
        return len(self.assign) - self.adopted

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
    unowned = _adopt(result, unowned, snapshot.holders, owners=kept, load=load, members=members)
    budget = _Budget(snapshot.budget, {m.id: m.slots for m in takers})
    _place(result, unowned, owners=kept, load=load, members=members, takers=takers, budget=budget)
    # What nobody can take yet stays where it is assigned: a draining owner keeps holding it
    # (make-before-break, never a gap), and an owner without a heartbeat may only be late to
    # beat: unassigning would make it part a channel that nobody else joins.
    _rebalance(result, kept, load, takers, max_moves=max_moves, tolerance=tolerance, budget=budget)
    for channel, owner in list(result.assign.items()):
        if snapshot.assignment.get(channel) == owner:
            del result.assign[channel]  # no change after all
    return result


class _Budget:
    """The joins a plan may still cost: in all (None: no limit), and per member."""

    def __init__(self, total: int | None, slots: dict[str, int | None]) -> None:
        self.total = total
        self.slots = slots

    def allows(self, member: str) -> bool:
        slots = self.slots.get(member)
        return (self.total is None or self.total > 0) and (slots is None or slots > 0)

    def spend(self, member: str, count: int = 1) -> None:
        if self.total is not None:
            self.total -= count
        slots = self.slots.get(member)
        if slots is not None:
            self.slots[member] = slots - count

    @property
    def spent(self) -> bool:
        return self.total is not None and self.total <= 0


def _adopt(
    result: Plan,
    unowned: list[str],
    holders: Mapping[str, str],
    *,
    owners: dict[str, str],
    load: Counter[str],
    members: Mapping[str, Member],
) -> list[str]:
    """Rule 2: unowned channels that a live member holds stay with it; the others returned."""
    if not holders:
        return unowned
    rest = []
    for channel in unowned:
        holder = members.get(holders.get(channel, ""))
        if holder is not None and not holder.draining and load[holder.id] < holder.capacity:
            result.assign[channel] = owners[channel] = holder.id
            load[holder.id] += 1
            result.adopted += 1
        else:
            rest.append(channel)
    return rest


def _place(
    result: Plan,
    unowned: list[str],
    *,
    owners: dict[str, str],
    load: Counter[str],
    members: Mapping[str, Member],
    takers: list[Member],
    budget: _Budget,
) -> None:
    """Rules 3 and 4: each unowned channel to the member with the most room, spread across
    hosts, within the join budgets.

    The counts are those of placing one channel at a time on the member with the most room
    (:func:`_fill`); the few at the level that take one more are chosen by their host's, then
    their supervisor's load, then id (:func:`_at_level`). Then each member takes its count of
    the sorted channels. O(members * log capacity + channels)."""
    total = len(unowned) if budget.total is None else min(len(unowned), max(budget.total, 0))
    room: dict[str, tuple[int, int]] = {}  # member -> (free, how many it may take)
    for m in takers:
        free = m.capacity - load[m.id]
        slots = budget.slots.get(m.id)
        can = free if slots is None else min(free, slots)
        if can > 0:
            room[m.id] = (free, can)
    takes, level = _fill(room, total)
    _at_level(takes, room, level, total - sum(takes.values()), load=load, members=members)
    position = 0
    for member_id in sorted(takes, key=lambda m: (-takes[m], m)):
        count = takes[member_id]
        for channel in unowned[position : position + count]:
            result.assign[channel] = member_id
            owners[channel] = member_id
        position += count
        load[member_id] += count
        budget.spend(member_id, count)
    rest = unowned[position:]
    if rest:
        room_left = any(load[m.id] < m.capacity for m in takers)
        (result.paced if room_left else result.waiting).extend(rest)


def _fill(room: Mapping[str, tuple[int, int]], total: int) -> tuple[dict[str, int], int]:
    """Water-filling: how many of ``total`` channels each member takes so that all are filled
    down to one level of free room (each within what it may take), and that level."""

    def takes_at(level: int) -> int:
        return sum(min(can, max(0, free - level)) for free, can in room.values())

    level = 0
    if room and takes_at(0) > total:  # the lowest level the channels fill down to
        low, high = 0, max(free for free, _ in room.values())
        while low < high:
            middle = (low + high) // 2
            if takes_at(middle) <= total:
                high = middle
            else:
                low = middle + 1
        level = low
    return {m: min(can, max(0, free - level)) for m, (free, can) in room.items()}, level


def _at_level(
    takes: dict[str, int],
    room: Mapping[str, tuple[int, int]],
    level: int,
    left: int,
    *,
    load: Counter[str],
    members: Mapping[str, Member],
) -> None:
    """The ``left`` channels after the fill: one more each for members at the level that may
    take one, those whose host, then supervisor, holds the fewest channels first."""
    if left <= 0:
        return
    host_load = Counter({m.host: 0 for m in members.values()})
    supervisor_load = Counter({m.supervisor: 0 for m in members.values()})
    for owner, count in (load + Counter(takes)).items():
        host_load[members[owner].host] += count
        supervisor_load[members[owner].supervisor] += count
    queue = [
        (host_load[members[m].host], supervisor_load[members[m].supervisor], m)
        for m, (free, can) in room.items()
        if takes[m] < can and free - takes[m] == level
    ]
    heapq.heapify(queue)
    while left > 0 and queue:
        host, supervisor, member_id = heapq.heappop(queue)
        target = members[member_id]
        now = (host_load[target.host], supervisor_load[target.supervisor])
        if now != (host, supervisor):  # its host took one meanwhile: queued again
            heapq.heappush(queue, (*now, member_id))
            continue
        takes[member_id] += 1
        left -= 1
        host_load[target.host] += 1
        supervisor_load[target.supervisor] += 1


def _rebalance(
    result: Plan,
    owners: dict[str, str],
    load: Counter[str],
    takers: list[Member],
    *,
    max_moves: int,
    tolerance: int,
    budget: _Budget,
) -> None:
    """Rule 5: move channels from the most to the least loaded member, in bounded steps."""
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
        open_ = [m for m in takers if budget.allows(m.id)]
        if not open_:
            return
        least = min(open_, key=lambda m: (load[m.id] - m.capacity, load[m.id], m.id))
        if load[most.id] - load[least.id] <= tolerance or load[least.id] >= least.capacity:
            return
        budget.spend(least.id)
        channel = by_member[most.id].pop()
        by_member[least.id].append(channel)
        owners[channel] = least.id
        load[most.id] -= 1
        load[least.id] += 1
        result.assign[channel] = least.id
        result.moves += 1

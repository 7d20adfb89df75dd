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

With ``copies = 2`` (``coordinator.replicas``), each channel also has a *second copy*
(:attr:`Snapshot.replicas`): a second member holds it too, and the cluster delivers each of its
events once (the first copy to see it wins), so that a member's death loses nothing.

6. A member's load counts both copies it holds; a channel's two copies are never on one
   member, and are kept apart: on two hosts when the takers run on more than one, else on two
   supervisors when more than one, else on two members (the *domains*).
7. A channel whose owner is gone or draining while its second copy lives and holds it
   (:attr:`Snapshot.held`) is *promoted*: the second copy becomes its owner (no join, no gap),
   and a new second copy is placed.
8. A missing second copy is adopted from a member that holds the channel already (after Redis
   forgot the assignment), else placed on the member with the most free capacity in another
   domain than the owner's (else on another member of the same domain), within the budgets;
   what finds no room is :attr:`Plan.replicas_waiting` (a reason to scale out), what the
   budgets leave out :attr:`Plan.replicas_paced`. Second copies sharing their owner's domain
   while another domain could take them move there, at most ``max_moves`` per plan.
9. Rebalancing (rule 5) never moves a channel onto its second copy's member, nor into its
   domain when there are several; a member whose channels cannot move is passed over for the
   next most loaded. Then second copies are evened out the same way (each move a join, within
   the budgets and ``max_moves`` in all).

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
    #: The second copy of each channel: ``channel -> member`` (``copies`` 2).
    replicas: Mapping[str, str] = field(default_factory=dict)
    #: How many members hold each channel: 1, or 2 (``coordinator.replicas``).
    copies: int = 1
    #: Every member that holds each channel (``copies`` 2: adopting second copies).
    held: Mapping[str, frozenset[str]] = field(default_factory=dict)

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
        replicas: Mapping[str, str] | None = None,
        copies: int = 1,
        held: Mapping[str, Iterable[str]] | None = None,
    ) -> Snapshot:
        """A snapshot from any iterables."""
        return cls(
            frozenset(wanted),
            tuple(members),
            dict(assignment),
            frozenset(blocked),
            dict(holders or {}),
            budget,
            dict(replicas or {}),
            copies,
            {c: frozenset(m) for c, m in (held or {}).items()},
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
    #: How many of :attr:`assign` are second copies promoted to owners (held: no join).
    promoted: int = 0
    #: Second copies to (re)place: ``channel -> member`` (copies 2).
    replicas: dict[str, str] = field(default_factory=dict)
    #: Channels whose second copy goes, with no other (no longer wanted, or promoted with
    #: no member to take a new one).
    unreplicate: set[str] = field(default_factory=set)
    #: How many of :attr:`replicas` are adoptions (held already: no join), and how many are
    #: moves of a second copy (spreading it apart from its owner, or evening the load).
    replicas_adopted: int = 0
    replica_moves: int = 0
    #: Second copies that no member could take (a reason to scale out), and those the join
    #: budgets left for a later plan.
    replicas_waiting: list[str] = field(default_factory=list)
    replicas_paced: list[str] = field(default_factory=list)

    @property
    def joins(self) -> int:
        """How many JOINs carrying out the plan costs."""
        return (
            len(self.assign)
            - self.adopted
            - self.promoted
            + len(self.replicas)
            - self.replicas_adopted
        )

    def applied(self, assignment: Mapping[str, str]) -> dict[str, str]:
        """``assignment`` after this plan."""
        result = {c: p for c, p in assignment.items() if c not in self.unassign}
        result.update(self.assign)
        return result

    def applied_replicas(self, replicas: Mapping[str, str]) -> dict[str, str]:
        """The second copies ``replicas`` after this plan."""
        gone = self.unassign | self.unreplicate
        result = {c: p for c, p in replicas.items() if c not in gone}
        result.update(self.replicas)
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
    second = _kept_seconds(snapshot, result, kept, members)
    load = Counter(kept.values())
    load.update(second.values())
    takers = [m for m in members.values() if not m.draining]
    unowned = sorted(snapshot.wanted - snapshot.blocked - kept.keys())
    if second:
        unowned = _promote(result, unowned, second, kept, snapshot.held)
    unowned = _adopt(result, unowned, snapshot.holders, owners=kept, load=load, members=members)
    held_here = set(result.assign)  # promoted and adopted: held, no join; not moved now
    budget = _Budget(snapshot.budget, {m.id: m.slots for m in takers})
    _place(result, unowned, owners=kept, load=load, members=members, takers=takers, budget=budget)
    # What nobody can take yet stays where it is assigned: a draining owner keeps holding it
    # (make-before-break, never a gap), and an owner without a heartbeat may only be late to
    # beat: unassigning would make it part a channel that nobody else joins.
    domain = _domains(takers)
    _rebalance(
        result,
        kept,
        load,
        takers,
        max_moves=max_moves,
        tolerance=tolerance,
        budget=budget,
        apart=(second, domain),
        stay=held_here,
    )
    for channel, owner in list(result.assign.items()):
        if snapshot.assignment.get(channel) == owner:
            del result.assign[channel]  # no change after all
    if snapshot.copies > 1:
        seconds = _Seconds(
            snapshot, result, owners=kept, second=second, load=load, takers=takers, budget=budget
        )
        seconds.place(domain, max_moves, tolerance)
    return result


def _kept_seconds(
    snapshot: Snapshot, result: Plan, kept: Mapping[str, str], members: Mapping[str, Member]
) -> dict[str, str]:
    """The second copies that stay (wanted, on a live member that is not draining, not the
    owner's); the others are removed from the plan's view (and from the assignment when no
    longer wanted, or copies went back to 1)."""
    replicas = snapshot.replicas
    if not replicas:
        return {}
    placeable = snapshot.wanted - snapshot.blocked
    gone = replicas.keys() - placeable if snapshot.copies > 1 else set(replicas)
    result.unreplicate.update(gone - result.unassign)
    if snapshot.copies < 2:
        return {}
    live = {m.id for m in members.values() if not m.draining}
    return {c: h for c, h in replicas.items() if h in live and c in placeable and kept.get(c) != h}


def _promote(
    result: Plan,
    unowned: list[str],
    second: dict[str, str],
    owners: dict[str, str],
    held: Mapping[str, frozenset[str]],
) -> list[str]:
    """Rule 7: unowned channels whose second copy lives and holds them (``held``: joined, not
    only assigned) are owned by it: no join, no gap; the others returned (a second copy still
    joining keeps its place, and the channel is placed as any other)."""
    rest = []
    for channel in unowned:
        holder = second.get(channel)
        if holder is None or holder not in held.get(channel, ()):
            rest.append(channel)
            continue
        del second[channel]
        result.assign[channel] = owners[channel] = holder
        result.promoted += 1
    return rest


def _domains(takers: Iterable[Member]) -> dict[str, str]:
    """Rule 6: each member's domain: its host when the takers run on several, else its
    supervisor when several, else itself."""
    members = list(takers)
    if len({m.host for m in members}) > 1:
        return {m.id: f"h:{m.host}" for m in members}
    if len({m.supervisor for m in members}) > 1:
        return {m.id: f"s:{m.supervisor}" for m in members}
    return {m.id: f"m:{m.id}" for m in members}


class _Seconds:
    """Rule 8: the second copies that are missing (or share their owner's domain) placed."""

    def __init__(
        self,
        snapshot: Snapshot,
        result: Plan,
        *,
        owners: Mapping[str, str],
        second: dict[str, str],
        load: Counter[str],
        takers: list[Member],
        budget: _Budget,
    ) -> None:
        self.snapshot = snapshot
        self.result = result
        self.owners = owners
        self.second = second
        self.load = load
        self.members = {m.id: m for m in takers}
        self.budget = budget
        self.domain: Mapping[str, str] = {}
        # members with room and budget, most free first: (-free, id)
        self.heap = [
            (load[m.id] - m.capacity, m.id)
            for m in takers
            if load[m.id] < m.capacity and budget.allows(m.id)
        ]
        heapq.heapify(self.heap)

    def place(self, domain: Mapping[str, str], max_moves: int, tolerance: int) -> None:
        """Place the missing second copies, then spread those sharing their owner's domain
        (``domain``: each member's), then even the load out (``max_moves`` moves in all,
        the plan's own counted)."""
        self.domain = domain
        missing, crowded = self._classify()
        self._fill(self._adopt(missing))
        left = max_moves - self.result.moves
        left -= self._spread(crowded, left)
        self._even(left, tolerance)
        result, second = self.result, self.second
        for channel in self.snapshot.replicas.keys() - second.keys():
            if channel in self.owners and channel not in result.replicas:
                result.unreplicate.add(channel)  # promoted, or its holder gone: none instead
        for channel, member in list(result.replicas.items()):
            if self.snapshot.replicas.get(channel) == member:
                del result.replicas[channel]  # no change after all

    def _classify(self) -> tuple[list[str], list[str]]:
        """The owned channels without a second copy, and those whose copy shares the owner's
        domain while there are several."""
        second, owners, domain = self.second, self.owners, self.domain
        several = len(set(domain.values())) > 1
        missing: list[str] = []
        crowded: list[str] = []
        for channel, owner in owners.items():
            have = second.get(channel)
            if have is None or have == owner:
                second.pop(channel, None)
                missing.append(channel)
            elif several and domain.get(have) == domain.get(owner):
                crowded.append(channel)
        missing.sort()  # deterministic: the same snapshot, the same plan
        crowded.sort()
        # the owners taken in turn (one channel of each, then a second of each, ...): taking
        # all of one owner's first leaves its domain alone with room at the end
        rank: Counter[str] = Counter()
        turns = []
        for channel in missing:
            owner = owners[channel]
            turns.append((rank[owner], owner, channel))
            rank[owner] += 1
        turns.sort()
        return [channel for _, _, channel in turns], crowded

    def _fill(self, missing: list[str]) -> None:
        """Place ``missing`` second copies while room and budgets last; say why the rest wait."""
        result = self.result
        for channel in missing:
            if self.budget.spent or not self.heap:
                break
            taker = self._take(self.owners[channel], apart_only=False)
            if taker is not None:  # else only its owner has room: the next may fit elsewhere
                self.second[channel] = result.replicas[channel] = taker
        left = [c for c in missing if c not in result.replicas]
        # left for a later plan by the budgets while room remains, else waiting for room
        limited = self.budget.spent or any(not self.budget.allows(m) for m in self.members)
        paced = limited and any(_free(m, self.load) for m in self.members.values())
        (result.replicas_paced if paced else result.replicas_waiting).extend(left)

    def _spread(self, crowded: list[str], max_moves: int) -> int:
        """Move second copies sharing their owner's domain to another, at most ``max_moves``;
        how many moved."""
        moved = 0
        for channel in crowded[: max(0, max_moves)]:
            owner = self.owners[channel]
            taker = None if self.budget.spent else self._take(owner, apart_only=True)
            if taker is None:
                break
            self.load[self.second[channel]] -= 1
            self.second[channel] = self.result.replicas[channel] = taker
            moved += 1
        self.result.replica_moves += moved
        return moved

    def _even(self, max_moves: int, tolerance: int) -> None:
        """Move second copies from the most to the least loaded member (rule 9), at most
        ``max_moves``: never onto the channel's owner, nor into its domain when there are
        several; a member none of whose copies may go is passed over."""
        members, load, budget, domain = self.members, self.load, self.budget, self.domain
        if len(members) < 2 or max_moves <= 0:
            return
        several = len(set(domain.values())) > 1
        copies: dict[str, list[str]] = {m: [] for m in members}
        for channel, holder in self.second.items():
            if holder in copies:
                copies[holder].append(channel)
        for channels in copies.values():
            channels.sort()  # the last in name order moves first: deterministic
        owners = self.owners
        stuck: set[str] = set()
        moved = 0
        while moved < max_moves:
            givers = [m for m in members.values() if m.id not in stuck and copies[m.id]]
            pair = _pair(givers, list(members.values()), load, budget, tolerance)
            if pair is None:
                break
            most, least = pair
            found = _movable(copies[most.id], least.id, owners, domain if several else {})
            if found is None:
                stuck.add(most.id)
                continue
            channel = copies[most.id].pop(found)
            copies[least.id].append(channel)
            budget.spend(least.id)
            load[most.id] -= 1
            load[least.id] += 1
            self.second[channel] = self.result.replicas[channel] = least.id
            moved += 1
        self.result.replica_moves += moved

    def _adopt(self, missing: list[str]) -> list[str]:
        """Missing second copies that a member (not the owner) holds already; the rest."""
        held, members, load = self.snapshot.held, self.members, self.load
        if not held:
            return missing
        rest = []
        for channel in missing:
            owner = self.owners[channel]
            found = sorted(
                m
                for m in held.get(channel, ())
                if m != owner and m in members and load[m] < members[m].capacity
            )
            if not found:
                rest.append(channel)
                continue
            holder = found[0]
            self.second[channel] = self.result.replicas[channel] = holder
            self.result.replicas_adopted += 1
            load[holder] += 1
        if self.result.replicas_adopted:  # the free room changed: the heap made again
            self.heap = [
                (load[m.id] - m.capacity, m.id)
                for m in members.values()
                if _free(m, load) and self.budget.allows(m.id)
            ]
            heapq.heapify(self.heap)
        return rest

    def _take(self, owner: str, *, apart_only: bool) -> str | None:
        """The member with the most free room in another domain than ``owner``'s (else, unless
        ``apart_only``, another member of it); its load and budget counted; None: none."""
        heap, domain = self.heap, self.domain
        mine = domain.get(owner)
        skipped: list[tuple[int, str]] = []
        chosen: tuple[int, str] | None = None
        while heap:
            entry = heapq.heappop(heap)
            if domain[entry[1]] != mine:
                chosen = entry
                break
            skipped.append(entry)
        if chosen is None and not apart_only:
            for index, entry in enumerate(skipped):
                if entry[1] != owner:
                    chosen = skipped.pop(index)
                    break
        for entry in skipped:
            heapq.heappush(heap, entry)
        if chosen is None:
            return None
        member = chosen[1]
        self.load[member] += 1
        self.budget.spend(member)
        if _free(self.members[member], self.load) and self.budget.allows(member):
            heapq.heappush(heap, (chosen[0] + 1, member))
        return member


def _free(member: Member, load: Counter[str]) -> bool:
    """Whether ``member`` has room left."""
    return load[member.id] < member.capacity


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
    apart: tuple[Mapping[str, str], Mapping[str, str]] = ({}, {}),
    stay: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Rule 5: move channels from the most to the least loaded member, in bounded steps; with
    ``apart`` (second copies, domains), rule 9. Channels of ``stay`` (adopted or promoted by
    this plan: held, no join) do not move in it."""
    if len(takers) < 2 or max_moves <= 0:
        return
    second, domain = apart
    several = len(set(domain.values())) > 1
    by_member: dict[str, list[str]] = {m.id: [] for m in takers}
    for channel, owner in owners.items():
        if owner in by_member and channel not in stay:
            by_member[owner].append(channel)
    for channels in by_member.values():
        channels.sort()  # the last in name order moves first: deterministic
    stuck: set[str] = set()  # members none of whose channels may move to the least loaded
    while result.moves < max_moves:
        pair = _pair([m for m in takers if m.id not in stuck], takers, load, budget, tolerance)
        if pair is None:
            return
        most, least = pair
        candidates = by_member[most.id]
        index = _movable(candidates, least.id, second, domain if several else {})
        if index is None:
            stuck.add(most.id)
            continue
        budget.spend(least.id)
        channel = candidates.pop(index)
        by_member[least.id].append(channel)
        owners[channel] = least.id
        load[most.id] -= 1
        load[least.id] += 1
        result.assign[channel] = least.id
        result.moves += 1


def _pair(
    givers: list[Member],
    takers: list[Member],
    load: Counter[str],
    budget: _Budget,
    tolerance: int,
) -> tuple[Member, Member] | None:
    """The most loaded of ``givers`` and the least loaded of ``takers`` the budgets allow,
    when a move between them evens the load out (more than ``tolerance`` apart, room left);
    else None."""
    open_ = [m for m in takers if budget.allows(m.id)]
    if not givers or not open_:
        return None
    most = max(givers, key=lambda m: (load[m.id], m.id))
    least = min(open_, key=lambda m: (load[m.id] - m.capacity, load[m.id], m.id))
    if load[most.id] - load[least.id] <= tolerance or load[least.id] >= least.capacity:
        return None
    return most, least


def _movable(
    candidates: list[str], target: str, second: Mapping[str, str], domain: Mapping[str, str]
) -> int | None:
    """The index of the channel of ``candidates`` (one copy of each, held by one member) to
    move to ``target``: the last, or with other copies (``second``: channel -> the member of
    its other copy, the second copy's for an owner's channels and the owner's for second
    copies) the last of the 64 last whose other copy is neither on ``target`` nor in its
    domain (``domain``: empty when there is one); None: none of them."""
    if not candidates:
        return None
    if not second:
        return len(candidates) - 1
    mine = domain.get(target)
    for index in range(len(candidates) - 1, max(-1, len(candidates) - 65), -1):
        other = second.get(candidates[index])
        if other is None or (other != target and (not domain or domain.get(other) != mine)):
            return index
    return None

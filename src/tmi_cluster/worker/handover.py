"""A worker's hand-overs: a channel moves between two worker processes make-before-break, and
its events reach the application exactly once (:mod:`tmi_cluster.worker.delivery`).

- Leaving: a channel assigned elsewhere is *guarded* (its events checked cluster-wide) from
  the moment the worker says so in Redis; the new owner joins once it reads that; the worker
  parts the channel once the new owner holds it, or nobody owns it now, or after
  ``process.timeout`` (while stopping, at once when the new owner is not alive or stops too).
  It stays guarded until it is parted, also when it was itself taken over a moment before
  and that take-over's check ends meanwhile.
- Taking over: a channel held by another process is joined once its holder guards it (or did
  not say so within :data:`GUARD_WAIT_S`), and its events are checked here as well until
  nobody else has held it for :data:`GUARD_LINGER_S` (their last copies elsewhere have
  arrived by then). A channel moving back from the EventSub route (whose events are always
  checked) is joined at once and checked the same way until EventSub no longer reads it.
- With two copies of every channel (``checks_all``: ``coordinator.replicas = 2``), every event
  is checked everywhere already: a channel is joined at once, whoever else holds it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tmi_cluster.bus import Assignment, AsyncRedis, Keys, live, read
from tmi_cluster.bus.keys import ORPHAN_GUARD_S
from tmi_cluster.bus.routes import EventSubRoutes
from tmi_cluster.worker.worker import Worker

__all__ = ["GUARD_LINGER_S", "GUARD_WAIT_S", "HandOver"]

log = logging.getLogger(__name__)

#: Seconds a worker taking a channel over waits for its holder to guard it, at most.
GUARD_WAIT_S = 3.0
#: Seconds a worker that took a channel over keeps checking it once nobody else holds it.
GUARD_LINGER_S = 2.0
#: Seconds the list of the other worker processes is reused.
_PEERS_S = 5.0
#: The state a worker process stopping says of itself in its heartbeat.
_STOPPING = "stopping"


class HandOver:
    """The hand-overs of worker process ``process_id`` running ``worker``; see the module.
    ``stopping`` tells whether the process stops (its hand-overs then end sooner)."""

    def __init__(
        self,
        worker: Worker,
        process_id: str,
        keys: Keys,
        *,
        timeout_s: float,
        stopping: Callable[[], bool],
        eventsub: bool = False,
        checks_all: bool = False,
    ) -> None:
        self.worker = worker
        self.id = process_id
        self.keys = keys
        self.timeout_s = timeout_s
        self.stopping = stopping
        #: Whether channels may come from the EventSub route (their events are checked there).
        self.eventsub = eventsub
        #: Whether every event of every channel is checked here (two copies of each channel).
        self.checks_all = checks_all
        #: Channels being handed over -> the deadline of their hand-over (monotonic).
        self.leaving: dict[str, float] = {}
        #: Channels to take over -> since when they wait for their holder's guard.
        self.deferred: dict[str, float] = {}
        #: Channels taken over -> when their check lifts (None: still held elsewhere).
        self.taking: dict[str, float | None] = {}
        #: Channels taken from a worker presumed dead -> the end of their check at the
        #: earliest (that worker may only be cut off), whoever else holds them meanwhile.
        self.orphaned: dict[str, float] = {}
        self._peers: tuple[float, list[str]] = (-1e9, [])  # when read, the other processes

    @property
    def pending(self) -> bool:
        """Whether a hand-over is under way (either way)."""
        return bool(self.leaving or self.deferred or self.taking)

    async def start_leaving(self, assignment: Assignment, channels: list[str]) -> None:
        """Hand ``channels`` over: check their events from now on, then say so (the new owner
        joins once it reads that), then wait for the new owner (make-before-break)."""
        if not channels:
            return
        deadline = time.monotonic() + self.timeout_s
        self.worker.delivery.guard(channels)
        await self.worker.delivery.mark_recent(channels)  # their EventSub copies, if any
        await assignment.guard(self.id, channels)
        log.debug("%s hands %d channels over, checking their events", self.id, len(channels))
        for channel in channels:
            self.leaving.setdefault(channel, deadline)

    async def stop_leaving(self, assignment: Assignment, channels: list[str]) -> None:
        """``channels``, parted, are not being handed over any more, nor taken over."""
        if not channels:
            return
        for channel in channels:
            self.leaving.pop(channel, None)
            self.taking.pop(channel, None)
            self.orphaned.pop(channel, None)
            self.deferred.pop(channel, None)
        self.worker.delivery.lift(channels)
        await assignment.guard(self.id, channels, on=False)

    async def keep(self, assignment: Assignment, channels: list[str]) -> None:
        """``channels``, being handed over, are ours again: no longer leaving, but still checked
        as channels taken over (until nobody else has held them for :data:`GUARD_LINGER_S`):
        their would-be new owner may hold them already, and it checks its copies against
        ours."""
        if not channels:
            return
        for channel in channels:
            self.leaving.pop(channel, None)
            self.taking[channel] = None
        await assignment.guard(self.id, channels, on=False)

    def recheck(self, channels: list[str]) -> None:
        """``channels``, held and ours, are checked as channels taken over (until nobody else
        has held them for :data:`GUARD_LINGER_S`): a worker back from a fence may have been
        given back channels that the workers which took them meanwhile still hold."""
        for channel in channels:
            self.taking.setdefault(channel, None)
        self.worker.delivery.guard(channels)

    async def other_processes(self, client: AsyncRedis, *, fresh: bool = False) -> list[str]:
        """The other live worker processes (read again when ``fresh``, else every
        :data:`_PEERS_S`: a worker that started a moment ago must not be missed before a join)."""
        read_at, peers = self._peers
        if fresh or time.monotonic() - read_at >= _PEERS_S:
            found = await live(client, self.keys, "process")
            peers = sorted(p for p in found if p != self.id)
            self._peers = (time.monotonic(), peers)
        return peers

    async def ready_to_take(self, assignment: Assignment, fresh: list[str]) -> list[str]:
        """Of ``fresh`` (channels to join), those that may be joined now: held by no other
        process, or held by one that checks their events already (or that did not say so
        within :data:`GUARD_WAIT_S`). Those held elsewhere are checked from now on, until
        nobody else holds them. With :attr:`checks_all`, all of them."""
        if self.checks_all:
            return fresh
        orphans = await assignment.orphaned(fresh)
        if orphans:  # their old owner may only be cut off: checked until the mark's end
            until = time.monotonic() + ORPHAN_GUARD_S
            for channel in orphans:
                self.taking[channel] = until
                self.orphaned[channel] = until
            self.worker.delivery.guard(orphans)
            log.info(
                "%s takes %d channels from a worker presumed dead; their events are checked "
                "for %d s (it may only have been cut off)",
                self.id,
                len(orphans),
                ORPHAN_GUARD_S,
            )
        peers = await self.other_processes(assignment.client, fresh=True)
        holders = await assignment.held_by(peers, fresh)
        from_eventsub = await self._on_eventsub(assignment, fresh)
        if from_eventsub:  # EventSub checks their events already: taken over, checked here too
            self.taking.update(dict.fromkeys(from_eventsub))
            self.worker.delivery.guard(from_eventsub)
        if not holders:
            return fresh
        guarded = await assignment.guarded({c: owners[0] for c, owners in holders.items()})
        now = time.monotonic()
        ready = []
        for channel in fresh:
            if channel in holders:
                since = self.deferred.setdefault(channel, now)
                if channel not in guarded and now - since < GUARD_WAIT_S:
                    continue  # its holder has not begun to check it yet
                self.deferred.pop(channel, None)
                self.taking[channel] = None
            ready.append(channel)
        taken = [c for c in ready if c in holders]
        self.worker.delivery.guard(taken)
        if taken or len(ready) < len(fresh):
            log.debug(
                "%s takes %d channels over (%d wait for their holder to check them)",
                self.id,
                len(taken),
                len(fresh) - len(ready),
            )
        return ready

    async def _on_eventsub(self, assignment: Assignment, channels: list[str]) -> list[str]:
        """Of ``channels``, those EventSub still reads (moving back to IRC, or not yet)."""
        if not self.eventsub or not channels:
            return []
        states = await EventSubRoutes(assignment.client, self.keys).states(channels)
        return [c for c in channels if states[c] is not None]

    async def lift_taken(self, assignment: Assignment) -> None:
        """Stop checking the channels taken over that nobody else has held for
        :data:`GUARD_LINGER_S` (their last copies elsewhere have arrived by then)."""
        if not self.taking:
            return
        taking = sorted(self.taking)
        holders = await self._held_elsewhere(assignment, taking, fresh=False)
        now = time.monotonic()
        # a channel about to start its linger, or to lift: a worker started in the last
        # seconds (not in the cached list of the others) may hold it too
        due = [c for c in taking if c not in holders and (self.taking[c] or 0.0) <= now]
        if due:
            holders = await self._held_elsewhere(assignment, taking, fresh=True)
        lifted = []
        for channel in taking:
            if channel in holders:  # still held elsewhere: our copies are checked
                self.taking[channel] = None
                continue
            until = self.taking[channel]
            if until is None:  # the linger, and never before an orphan's own check ends
                self.taking[channel] = max(now + GUARD_LINGER_S, self.orphaned.get(channel, 0.0))
            elif until <= now:
                lifted.append(channel)
        for channel in lifted:
            del self.taking[channel]
            self.orphaned.pop(channel, None)
        if lifted:
            log.debug(
                "%s took %d channels over; their events go unchecked again", self.id, len(lifted)
            )
        # one being handed over meanwhile stays checked until it is parted (its new owner
        # checks its copies against ours)
        self.worker.delivery.lift([c for c in lifted if c not in self.leaving])

    async def _held_elsewhere(
        self, assignment: Assignment, channels: list[str], *, fresh: bool
    ) -> set[str]:
        """Of ``channels``, those another worker process holds, or EventSub reads (the list
        of the other processes read again when ``fresh``)."""
        holders = set(await self._on_eventsub(assignment, channels))
        peers = await self.other_processes(assignment.client, fresh=fresh)
        holders |= (await assignment.held_by(peers, channels)).keys()
        return holders

    async def part_handed_over(
        self, assignment: Assignment, now: float, *, settled: bool = True
    ) -> list[str]:
        """Part the channels leaving us whose new owner holds them, or that nobody owns now,
        or whose hand-over ran out of time; those parted. Not ``settled`` (the assignment's
        epoch is not the one this worker knows: Redis forgot it, and it is being rebuilt),
        a channel that nobody owns may only not be placed again yet: it is kept until its
        new owner holds it, or its deadline."""
        if not self.leaving:
            return []
        pool = self.worker.pool
        deadlines = dict(self.leaving)  # the follow loop may change it while this waits
        leaving = sorted(deadlines)
        owners = await assignment.owners(leaving)
        elsewhere = {c: p for c, p in owners.items() if p is not None and p != self.id}
        taken = await assignment.holding(elsewhere) if elsewhere else set()
        if self.stopping() and elsewhere:  # stopping: a new owner that stops too never takes
            taken |= await self.owners_gone(assignment, elsewhere)
        done = [
            c
            for c in leaving
            if (owners[c] is None and settled)
            or c in taken
            or deadlines[c] <= now
            or c not in pool.channels
        ]
        late = [c for c in done if deadlines[c] <= now and c not in taken and owners[c]]
        if late:
            log.warning(
                "%s: %d channels parted before their new owner held them (after %g s)",
                self.id,
                len(late),
                self.timeout_s,
            )
        if done:
            log.debug(
                "%s parts %d channels handed over: %d held by their new owner, %d owned by "
                "nobody, %d out of time, %d lost already (such as %s)",
                self.id,
                len(done),
                sum(1 for c in done if c in taken),
                sum(1 for c in done if owners[c] is None),
                sum(1 for c in done if deadlines[c] <= now),
                sum(1 for c in done if c not in pool.channels),
                ", ".join(done[:3]),
            )
            # no longer held from now on, for the others: a PART can take seconds to be
            # confirmed, and meanwhile a coordinator rebuilding the assignment (Redis forgot it)
            # would adopt the channel here, where it is being parted, and its other holder
            # would part it too
            await assignment.record_held(self.id, left=done)
            await pool.part(done)
            await self.stop_leaving(assignment, done)
        return done

    async def owners_gone(self, assignment: Assignment, owners: dict[str, str]) -> set[str]:
        """Of ``channel -> new owner``, the channels whose new owner is not alive or stops as
        well (its supervisor stops them all): waiting for it to take them is waiting for the
        deadline."""
        beats = await read(assignment.client, self.keys, "process", set(owners.values()))
        gone = {
            p for p in set(owners.values()) if p not in beats or beats[p].status.state == _STOPPING
        }
        return {c for c, p in owners.items() if p in gone}

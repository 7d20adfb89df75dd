"""A worker's event path after its pool: exactly once across the cluster, then the handlers
and the event stream.

The pool already de-duplicates within the process (a RECONNECT's overlap, a move between two
of its connections). Across processes an event can be read twice only while two processes
hold its channel: a make-before-break move, from the moment the new owner joins until the old
one has parted. So only the channels that a worker is handing over or taking over are
*guarded*; an event of any other channel goes to the sinks at once, with no check at all (the
common path costs one set lookup).

An event of a guarded channel waits for the cluster-wide check
(:class:`~tmi_cluster.bus.events.Seen`, one pipelined ``SET NX`` per batch) and goes on
only if no process saw it first: by its ``dedupe_key``, or for events that carry no id (JOIN,
PART, ROOMSTATE, ...) by a hash of its raw line. Events of a channel keep their order: once
guarded, all of them take the checked path, an event of a channel with events waiting for the
check waits behind them (a Shared Chat copy, say), and a guard is lifted only when nothing
waits.

With ``handlers.shared_chat = "once"``, the copies of a Shared Chat message (tag
``source-id``) are checked by their shared key wherever they arrive, so that the message
reaches the application once for the whole shared session.

A channel moving to the EventSub route (:mod:`tmi_cluster.worker.shards`) is checked here from
the moment its hand-over begins; with ``recent_s``, the keys of the events delivered unchecked
in the last seconds are marked seen too (:meth:`Delivery.mark_recent`), so that their EventSub
copies, which may arrive later, are dropped.

A worker that has not renewed its heartbeat for longer than it lives (a host cut off, Redis
out of its reach) is *fenced* (:meth:`Delivery.fence`): the cluster may have given its channels
to others, who deliver their events too, so every event of every channel is checked until the
worker has read its assignment again and handed over what went elsewhere.

With ``coordinator.replicas = 2`` (``check_all``), two processes hold every channel: every
event is checked, and only the handlers' (``wanted``: the events some handler takes) are
checked here; the event stream's publisher checks each event itself as it writes it
(:class:`~tmi_cluster.bus.events.EventPublisher` with ``dedupe_key``), so that a process
killed between the check and the write loses nothing.

While Redis does not answer, a checked event is delivered unchecked once it has waited
:data:`UNCHECKED_AFTER_S` itself while Redis did not answer (counted in
:attr:`Delivery.unchecked`): a duplicate is better than a lost event. Each event waits its own
time: an event read just after a long outage (a host cut off, then back) is checked as soon as
Redis answers again, not delivered unchecked because the outage began long ago; while fenced,
the wait is :data:`FENCED_UNCHECKED_AFTER_S` (its channels may be read by others meanwhile).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from tmi_cluster.bus.events import Seen
from tmi_cluster.bus.keys import RAW_KEY_MARK
from tmi_cluster.errors import RedisUnavailableError
from tmi_cluster.events import Event

__all__ = ["FENCED_UNCHECKED_AFTER_S", "RECENT_S", "UNCHECKED_AFTER_S", "Delivery", "event_key"]

log = logging.getLogger(__name__)

#: Seconds a checked event waits for Redis before it is delivered unchecked.
UNCHECKED_AFTER_S = 5.0
#: The same for a fenced worker (cut off: others may hold its channels, checking theirs).
FENCED_UNCHECKED_AFTER_S = 30.0
#: Seconds the keys of unchecked events are remembered where the EventSub route runs (longer
#: than an EventSub copy takes to arrive after its IRC twin).
RECENT_S = 5.0


def event_key(event: Event, *, shared_chat: bool = False) -> str:
    """The key by which the cluster recognises ``event`` a second time: its ``dedupe_key``
    (the Shared Chat key with ``shared_chat``), else its class and a hash of its raw line."""
    key = event.shared_chat_key if shared_chat else event.dedupe_key
    if key is not None:
        return key
    digest = hashlib.blake2b(event.raw.encode(), digest_size=12).hexdigest()
    return f"{type(event).__name__}{RAW_KEY_MARK}{digest}"


class Delivery:
    """Fans each event out to ``sinks`` (the handlers' dispatcher, the stream's publisher),
    checking the guarded channels' events first; see the module. :meth:`put` never waits;
    :meth:`run` does the checks."""

    def __init__(
        self,
        sinks: Sequence[Callable[[Event], None]],
        seen: Seen | None,
        *,
        shared_chat_once: bool = False,
        recent_s: float = 0.0,
        check_all: bool = False,
        wanted: Callable[[Event], bool] | None = None,
    ) -> None:
        self.sinks = list(sinks)
        self.seen = seen
        #: Every event is checked, always (two copies of every channel; see the module), and
        #: of those only the ones ``wanted`` says a sink takes (None: all).
        self.check_all = check_all and seen is not None
        self.wanted = wanted
        #: Seconds the keys of the events delivered unchecked are remembered (0: not at all),
        #: for :meth:`mark_recent`.
        self.recent_s = recent_s if seen is not None else 0.0
        self._recent: deque[tuple[float, str | None, str]] = deque()
        self.shared_chat_once = shared_chat_once and seen is not None
        #: Events that went through the cluster-wide check, that it dropped as seen before,
        #: and that went unchecked because Redis did not answer.
        self.checked = 0
        self.duplicates = 0
        self.unchecked = 0
        #: Every event is checked (:meth:`fence`).
        self.fenced = False
        self._guarded: set[str] = set()
        self._lifting: set[str] = set()
        self._waiting: deque[Event] = deque()
        self._since: deque[float] = deque()  # when each waiting event was queued (monotonic)
        self._queued: dict[str | None, int] = {}  # channel -> its events in _waiting
        self._ready = asyncio.Event()

    @property
    def guarded(self) -> frozenset[str]:
        """The channels whose events are checked now."""
        return frozenset(self._guarded)

    def guard(self, channels: Iterable[str]) -> None:
        """Check the events of ``channels`` from now on."""
        if self.seen is None:
            return
        for channel in channels:
            self._guarded.add(channel)
            self._lifting.discard(channel)

    def lift(self, channels: Iterable[str]) -> None:
        """Stop checking ``channels`` once none of their events waits."""
        for channel in channels:
            if channel in self._guarded:
                self._lifting.add(channel)
        self._lift_if_idle()

    def _lift_if_idle(self) -> None:
        if self._lifting and not self._waiting:
            self._guarded -= self._lifting
            self._lifting.clear()

    def fence(self) -> None:
        """Check every event, whatever its channel, until :meth:`unfence` (see the module).
        Without ``seen`` (no cluster), nothing changes."""
        self.fenced = self.seen is not None

    def unfence(self) -> None:
        """Back to checking the guarded channels only."""
        self.fenced = False

    def put(self, event: Event) -> None:
        """Deliver ``event``, or queue it for the check. Never waits."""
        if self.check_all:
            if self.wanted is None or self.wanted(event):
                self._queue(event)
            return
        guarded = self._guarded
        channel = event.channel
        if (
            not self.fenced
            and (not guarded or channel not in guarded)
            and not (self.shared_chat_once and "source-id" in event.tags)
            and (not self._waiting or not self._queued.get(channel))
        ):
            for sink in self.sinks:
                sink(event)
            if self.recent_s:
                self._remember(event)
            return
        self._queue(event)  # checked, or behind checked events of its channel

    def _remember(self, event: Event) -> None:
        key = event.dedupe_key
        if key is None:
            return
        now = time.monotonic()
        recent = self._recent
        recent.append((now, event.channel, key))
        horizon = now - self.recent_s
        while recent[0][0] < horizon:
            recent.popleft()

    async def mark_recent(self, channels: Iterable[str]) -> int:
        """Mark the events of ``channels`` delivered unchecked within ``recent_s`` as seen
        cluster-wide, so that their copies on another route are dropped (a channel moving to
        EventSub: call it once its events are guarded, before saying so); how many.
        RedisUnavailableError when Redis does not answer."""
        if self.seen is None or not self._recent:
            return 0
        names = set(channels)
        keys = [key for _, channel, key in self._recent if channel in names]
        if keys:
            await self.seen.first(keys)
        return len(keys)

    def put_checked(self, event: Event) -> None:
        """Deliver ``event`` only if no process saw it first, whatever its channel (the
        EventSub route: a notification retried on another shard, a channel moving between
        routes). Without ``seen``, at once. Never waits."""
        if self.seen is None:
            self._deliver(event)
            return
        self._queue(event)

    def _queue(self, event: Event) -> None:
        """``event`` waits for the check, behind the others of its channel."""
        self._waiting.append(event)
        self._since.append(time.monotonic())
        self._queued[event.channel] = self._queued.get(event.channel, 0) + 1
        if not self._ready.is_set():
            self._ready.set()

    def _deliver(self, event: Event) -> None:
        for sink in self.sinks:
            sink(event)

    async def run(self) -> None:
        """Check the waiting events until cancelled."""
        waiting = self._waiting
        failing_since: float | None = None
        while True:
            if not waiting:
                self._lift_if_idle()
                self._ready.clear()
                await self._ready.wait()
                continue
            batch = list(waiting)
            firsts, failing_since = await self._check(batch, failing_since)
            if not firsts:
                await asyncio.sleep(0.2)  # Redis away: the batch waits, in order
                continue
            self._pass(batch[: len(firsts)], firsts)

    async def _check(
        self, batch: list[Event], failing_since: float | None
    ) -> tuple[list[bool] | None, float | None]:
        """For each event of ``batch``, whether it is the first sighting in the cluster; while
        Redis does not answer, True for the first ones that have waited long enough themselves
        (see the module) and None when none has."""
        once = self.shared_chat_once
        keys = [event_key(e, shared_chat=once and "source-id" in e.tags) for e in batch]
        assert self.seen is not None
        try:
            firsts = await self.seen.first(keys)
        except RedisUnavailableError as error:
            now = time.monotonic()
            if failing_since is None:
                log.warning("the duplicate check waits for Redis: %s", error)
                failing_since = now
            limit = FENCED_UNCHECKED_AFTER_S if self.fenced else UNCHECKED_AFTER_S
            # each event's own wait while Redis did not answer: the outage's start, or its own
            ready = 0
            for queued_at in self._since:
                if now - max(queued_at, failing_since) < limit:
                    break
                ready += 1
            if not ready:
                return None, failing_since
            self.unchecked += ready
            return [True] * ready, failing_since
        self.checked += len(batch)
        return firsts, None

    def _pass(self, batch: list[Event], firsts: list[bool]) -> None:
        """Take ``batch`` off the queue; deliver the first sightings, count the rest."""
        waiting, queued, since = self._waiting, self._queued, self._since
        for event, first in zip(batch, firsts, strict=True):
            waiting.popleft()
            since.popleft()
            left = queued[event.channel] - 1
            if left:
                queued[event.channel] = left
            else:
                del queued[event.channel]
            if first:
                self._deliver(event)
            else:
                self.duplicates += 1

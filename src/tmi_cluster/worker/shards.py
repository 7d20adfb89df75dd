"""The conduit shards a worker process holds: :class:`Shards`.

The coordinator places each shard of the application's conduit like a channel (the
pseudo-channel :func:`~tmi_cluster.bus.routes.shard_name` in the assignment). For each shard
assigned to it, the worker keeps one EventSub WebSocket session
(:class:`~tmi_cluster.eventsub.shard.ShardSession`) and binds it to the shard through Helix once
welcomed; Twitch then sends the shard's notifications there, and their events go to
``deliver`` (the worker's checked path: a notification retried on another shard reaches the
application once). A shard no longer assigned is closed at once: Twitch gives its notifications
to the conduit's other shards until the new holder binds it.

Contracts: :meth:`Shards.follow` never waits on the network; a session that cannot bind (no
conduit yet, Twitch refuses) tries again with the session's backoff; :attr:`Shards.held` is what
is bound now; a ``revocation`` is reported to the coordinator
(:meth:`~tmi_cluster.bus.routes.EventSubRoutes.revoked`); a shard Twitch disabled (reported by
whichever worker read ``conduit.shard.disabled``, or by the coordinator's check) gets a new
session, bound again, from the worker whose session it was.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable

from tmi_cluster.bus import Assignment, AsyncRedis, Keys, live, wake
from tmi_cluster.bus.routes import EventSubRoutes, shard_name, shard_of
from tmi_cluster.config import Settings
from tmi_cluster.errors import EventSubError, HelixError, RedisUnavailableError
from tmi_cluster.events import Event
from tmi_cluster.eventsub.helix import Helix
from tmi_cluster.eventsub.messages import Subscription
from tmi_cluster.eventsub.shard import ShardSession
from tmi_cluster.tasks import cancel_and_wait

__all__ = ["DRAIN_S", "GATE_FRESH_S", "GATE_WAIT_S", "LEAVE_S", "RouteGate", "Shards"]

log = logging.getLogger(__name__)

#: Seconds a shard no longer ours keeps its session at most, waiting for its new holder.
LEAVE_S = 10.0
#: Seconds a moved shard's old session is still read (what Twitch sent it before the move).
DRAIN_S = 1.0
#: Seconds a channel's gate stays as decided before it is looked up again.
GATE_FRESH_S = 5.0
#: Seconds an event waits at the gate at most (older ones were delivered by IRC).
GATE_WAIT_S = 4.0
#: Seconds between two looks at channels whose IRC holder does not check them yet.
_GATE_RETRY_S = 0.2


class RouteGate:
    """Which EventSub events go on to the worker (its checked path), so that a channel moving
    from IRC to EventSub reaches the application once:

    - a channel not in ``P eventsub:routes`` (subscribed, not routed yet; or gone), or a
      routed one that an IRC connection of the cluster holds without checking its events:
      its events wait, at most :data:`GATE_WAIT_S` (IRC delivered those, unchecked);
    - a routed channel whose IRC holders all check its events (their hand-over began, the
      keys of their recent unchecked events marked seen), that nobody holds on IRC, or one
      moving back to IRC: its events go on, the waiting ones first, through the cluster-wide
      check (those IRC delivered are dropped there).

    An open channel stays open :data:`GATE_FRESH_S`, then is looked up again. Nothing is
    dropped on a decision that may be stale: an event leaves the gate only on, or too old.
    :meth:`put` never waits; :meth:`run` decides.
    While Redis does not answer, events go on (the checked path waits for Redis, then
    delivers: a duplicate is better than a loss).
    """

    def __init__(
        self,
        client: AsyncRedis,
        keys: Keys,
        deliver: Callable[[list[Event]], None],
    ) -> None:
        self.bus = EventSubRoutes(client, keys)
        self.assignment = Assignment(client, keys)
        self.client = client
        self.keys = keys
        self._deliver = deliver
        self._open: dict[str, float] = {}
        self._pending: dict[str, list[tuple[float, Event]]] = {}
        self._ready = asyncio.Event()
        #: Events dropped after waiting :data:`GATE_WAIT_S` (IRC delivered them).
        self.expired = 0

    def put(self, events: list[Event]) -> None:
        """Events of a shard: on, dropped, or kept until their channel is decided."""
        now = time.monotonic()
        passing: list[Event] = []
        for event in events:
            channel = event.channel
            if channel is None:
                passing.append(event)
            elif channel in self._pending:
                self._pending[channel].append((now, event))
            elif self._open.get(channel, 0.0) > now:
                passing.append(event)
            else:
                self._pending[channel] = [(now, event)]
                self._ready.set()
        if passing:
            self._deliver(passing)

    async def run(self) -> None:
        """Decide the waiting channels until cancelled."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            waiting = sorted(self._pending)
            try:
                decided = await self._decide(waiting)
            except RedisUnavailableError:  # a duplicate is better than a loss
                decided = dict.fromkeys(waiting, True)
            now = time.monotonic()
            for channel, go in decided.items():
                queued = self._pending.pop(channel, [])
                fresh = [(at, e) for at, e in queued if now - at <= GATE_WAIT_S]
                self.expired += len(queued) - len(fresh)
                if go:
                    self._open[channel] = now + GATE_FRESH_S
                    if fresh:
                        self._deliver([e for _, e in fresh])
                elif fresh:
                    self._pending[channel] = fresh
            if len(self._open) > 50_000:
                self._open = {c: t for c, t in self._open.items() if t > now}
            if self._pending:
                await asyncio.sleep(_GATE_RETRY_S)
                self._ready.set()

    async def _decide(self, channels: list[str]) -> dict[str, bool]:
        """Each channel: True (on) or False (waits)."""
        states = await self.bus.states(channels)
        routed = [c for c in channels if states[c] == "routed"]
        decided = {c: states[c] == "leaving" for c in channels if states[c] != "routed"}
        if routed:
            processes = sorted(await live(self.client, self.keys, "process"))
            holders = await self.assignment.held_by(processes, routed)
            guarded: set[tuple[str, str]] = set()
            rank = 0
            while True:  # one round trip per rank: usually one holder per channel at most
                pairs = {c: owners[rank] for c, owners in holders.items() if len(owners) > rank}
                if not pairs:
                    break
                guarded |= {(c, pairs[c]) for c in await self.assignment.guarded(pairs)}
                rank += 1
            for channel in routed:
                decided[channel] = all((channel, p) in guarded for p in holders.get(channel, []))
        return decided


class Shards:
    """The shards of one worker process; see the module."""

    def __init__(
        self,
        settings: Settings,
        client: AsyncRedis,
        keys: Keys,
        deliver: Callable[[list[Event]], None],
        *,
        helix: Helix | None = None,
        on_bound: Callable[[str], None] | None = None,
    ) -> None:
        self.url = settings.tmi.transport.eventsub_url
        self.client = client
        self.keys = keys
        self.bus = EventSubRoutes(client, keys)
        self.helix = helix if helix is not None else Helix(settings)
        self._deliver = deliver
        self._on_bound = on_bound
        self.sessions: dict[str, ShardSession] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        #: Shards no longer ours whose session stays until their new holder has them.
        self.leaving: dict[str, float] = {}
        #: Shards the new holder has, their session read until the time given (monotonic).
        self._draining: dict[str, float] = {}
        self._closed_notifications = 0
        self._revocations: dict[str, float] = {}  # broadcaster id -> when reported
        #: Sessions replaced because Twitch disabled their shard.
        self.renewed = 0
        self._reports: set[asyncio.Task[None]] = set()

    @property
    def held(self) -> set[str]:
        """The shards (pseudo-channels) whose session is bound now."""
        return {name for name, session in self.sessions.items() if session.state == "open"}

    @property
    def notifications(self) -> int:
        """Notifications delivered by every session so far (closed ones included)."""
        return self._closed_notifications + sum(s.notifications for s in self.sessions.values())

    @property
    def problem(self) -> str | None:
        """Why shards this worker should hold are not bound (None: all are)."""
        down = sorted(
            f"{name} {session.state}: {session.problem}"
            for name, session in self.sessions.items()
            if session.state != "open" and session.problem and name not in self.leaving
        )
        if not down:
            return None
        return "EventSub shard " + "; ".join(down[:3])

    async def follow(self, wanted: Iterable[str], assignment: Assignment | None = None) -> None:
        """Hold the shards ``wanted`` (pseudo-channels): new sessions opened; a shard no longer
        wanted is closed :data:`DRAIN_S` after its new holder holds it (``assignment`` says;
        make-before-break: Twitch moves a shard to the session bound last, and what it sent
        before is still read), nobody owns it, or after :data:`LEAVE_S`; without
        ``assignment``, at once."""
        names = set(wanted)
        await self._renew_disabled()
        for name in sorted(names - self.sessions.keys()):
            session = ShardSession(
                self.url,
                bind=self._binder(name),
                deliver=self._deliver,
                revoked=self._revoked,
                disabled=self._disabled,
            )
            self.sessions[name] = session
            self._tasks[name] = asyncio.create_task(session.run(), name=f"EventSub {name}")
            self._tasks[name].add_done_callback(self._ended)
        now = time.monotonic()
        for name in names:
            self.leaving.pop(name, None)
        for name in self.sessions.keys() - names - self._draining.keys():
            self.leaving.setdefault(name, now + LEAVE_S)
        done = set(self.leaving)
        if assignment is not None and self.leaving:
            owners = await assignment.owners(sorted(self.leaving))
            elsewhere = {c: p for c, p in owners.items() if p is not None}
            taken = await assignment.holding(elsewhere) if elsewhere else set()
            done = {
                name
                for name, deadline in self.leaving.items()
                if owners.get(name) is None or name in taken or deadline <= now
            }
        for name in done:  # what Twitch sent before it moved the shard is read for a moment
            del self.leaving[name]
            self._draining.setdefault(name, now + (DRAIN_S if assignment is not None else 0.0))
        closing = [n for n, at in self._draining.items() if at <= now or n in names]
        for name in closing:
            del self._draining[name]
            if name not in names:
                self._closed_notifications += self.sessions.pop(name).notifications
        gone = [self._tasks.pop(n) for n in closing if n not in names]
        await cancel_and_wait(*gone, what="EventSub shards")

    async def _renew_disabled(self) -> None:
        """Open a new session for each shard Twitch disabled while bound to our session (the
        entry then goes; one naming another session is another holder's)."""
        if not self.sessions:
            return
        disabled = await self.bus.disabled()
        for shard, session_id in disabled.items():
            session = self.sessions.get(shard_name(shard))
            if session is None or session.session_id != session_id:
                continue
            await session.renew()
            await self.bus.renewed(shard, session_id)
            self.renewed += 1

    def _disabled(self, shard: str, session_id: str) -> None:
        """A ``conduit.shard.disabled`` read here: reported for the shard's holder."""
        task = asyncio.create_task(
            self._report_disabled(shard, session_id), name="EventSub shard disabled"
        )
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _report_disabled(self, shard: str, session_id: str) -> None:
        for _ in range(30):  # Redis may be away a while: tried for about a minute
            try:
                await self.bus.report_disabled(shard, session_id)
                return
            except RedisUnavailableError:
                await asyncio.sleep(2.0)
        log.error("EventSub: that shard %s was disabled could not be reported", shard)

    def _binder(self, name: str) -> Callable[[str], Awaitable[None]]:
        shard = shard_of(name)

        async def bind(session_id: str) -> None:
            try:
                status = await self.bus.status()
                if not status.conduit_id:
                    raise EventSubError("the coordinator has made no conduit yet")
                refused = await self.helix.bind(status.conduit_id, {shard: session_id})
            except (HelixError, RedisUnavailableError) as error:
                raise EventSubError(f"shard {shard} could not be bound: {error}") from None
            if refused:
                raise EventSubError(
                    f"Twitch refused to bind shard {shard}: {refused.get(shard) or refused}"
                )
            log.info("EventSub shard %s bound to session %s", shard, session_id)
            if self._on_bound is not None:
                self._on_bound(name)

        return bind

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A session's task never ends by itself: an error is logged, never silent."""
        if not task.cancelled() and task.exception() is not None:
            log.error("an EventSub shard session failed", exc_info=task.exception())

    def _revoked(self, subscription: Subscription) -> None:
        """A ``revocation``: reported to the coordinator once per broadcaster (each of the
        channel's subscription types gets one) and logged once."""
        broadcaster = str(subscription.condition.get("broadcaster_user_id", ""))
        now = time.monotonic()
        if not broadcaster or self._revocations.get(broadcaster, -math.inf) > now - 60.0:
            return
        self._revocations[broadcaster] = now
        log.info(
            "EventSub: Twitch revoked the subscriptions of broadcaster %s (%s): reported to "
            "the coordinator",
            broadcaster,
            subscription.status,
        )
        task = asyncio.create_task(self._report(broadcaster), name="EventSub revocation")
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _report(self, broadcaster: str) -> None:
        for _ in range(30):  # Redis may be away a while: tried for about a minute
            try:
                await self.bus.revoked(broadcaster)
                await wake(self.client, self.keys)
                return
            except RedisUnavailableError:
                await asyncio.sleep(2.0)
        log.error("EventSub: the revocation of broadcaster %s could not be reported", broadcaster)

    async def hand_over(self, assignment: Assignment, process_id: str, within_s: float) -> None:
        """While stopping (``process_id``'s shards unassigned by the coordinator): each shard
        goes to its new holder, within ``within_s``, or at once when no other live worker
        could take it (the whole cluster stops); the rest close with :meth:`aclose`."""
        deadline = time.monotonic() + within_s
        while self.sessions and time.monotonic() < deadline:
            try:
                if not await self._others(process_id):
                    return  # nobody to take them over: the whole cluster stops
                ours = await assignment.of(process_id)
                await self.follow((n for n in self.sessions if n in ours), assignment)
            except RedisUnavailableError:
                return
            if self.sessions:
                await asyncio.sleep(0.1)

    async def _others(self, process_id: str) -> bool:
        """Whether another live worker process that is not stopping could take a shard."""
        beats = await live(self.client, self.keys, "process")
        return any(p != process_id and b.status.state != "stopping" for p, b in beats.items())

    async def aclose(self) -> None:
        """Close every session, and the Helix client."""
        await self.follow(())
        await cancel_and_wait(*self._reports, what="EventSub revocation reports")
        await self.helix.aclose()

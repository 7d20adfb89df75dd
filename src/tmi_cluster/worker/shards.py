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
(:meth:`~tmi_cluster.bus.routes.EventSubRoutes.revoked`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from tmi_cluster.bus import Assignment, AsyncRedis, Keys, wake
from tmi_cluster.bus.routes import EventSubRoutes, shard_of
from tmi_cluster.config import Settings
from tmi_cluster.errors import EventSubError, HelixError, RedisUnavailableError
from tmi_cluster.events import Event
from tmi_cluster.eventsub.helix import Helix
from tmi_cluster.eventsub.messages import Subscription
from tmi_cluster.eventsub.shard import ShardSession
from tmi_cluster.tasks import cancel_and_wait

__all__ = ["LEAVE_S", "Shards"]

log = logging.getLogger(__name__)

#: Seconds a shard no longer ours keeps its session at most, waiting for its new holder.
LEAVE_S = 10.0


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
        self._reports: set[asyncio.Task[None]] = set()

    @property
    def held(self) -> set[str]:
        """The shards (pseudo-channels) whose session is bound now."""
        return {name for name, session in self.sessions.items() if session.state == "open"}

    @property
    def notifications(self) -> int:
        """Notifications delivered by every session so far."""
        return sum(session.notifications for session in self.sessions.values())

    async def follow(self, wanted: Iterable[str], assignment: Assignment | None = None) -> None:
        """Hold the shards ``wanted`` (pseudo-channels): new sessions opened; a shard no longer
        wanted is closed once its new holder holds it (``assignment`` says; make-before-break:
        Twitch moves a shard to the session bound last), nobody owns it, or after
        :data:`LEAVE_S`; without ``assignment``, at once."""
        names = set(wanted)
        for name in sorted(names - self.sessions.keys()):
            session = ShardSession(
                self.url,
                bind=self._binder(name),
                deliver=self._deliver,
                revoked=self._revoked,
            )
            self.sessions[name] = session
            self._tasks[name] = asyncio.create_task(session.run(), name=f"EventSub {name}")
            self._tasks[name].add_done_callback(self._ended)
        now = time.monotonic()
        for name in names:
            self.leaving.pop(name, None)
        for name in self.sessions.keys() - names:
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
        for name in done:
            del self.leaving[name]
            del self.sessions[name]
        await cancel_and_wait(*(self._tasks.pop(name) for name in done), what="EventSub shards")

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
        broadcaster = str(subscription.condition.get("broadcaster_user_id", ""))
        log.warning(
            "EventSub: Twitch revoked the %s subscription of broadcaster %s (%s)",
            subscription.type,
            broadcaster,
            subscription.status,
        )
        if broadcaster:
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
        goes to its new holder, within ``within_s``; the rest close with :meth:`aclose`."""
        deadline = time.monotonic() + within_s
        while self.sessions and time.monotonic() < deadline:
            try:
                ours = await assignment.of(process_id)
                await self.follow((n for n in self.sessions if n in ours), assignment)
            except RedisUnavailableError:
                return
            if self.sessions:
                await asyncio.sleep(0.1)

    async def aclose(self) -> None:
        """Close every session, and the Helix client."""
        await self.follow(())
        await cancel_and_wait(*self._reports, what="EventSub revocation reports")
        await self.helix.aclose()

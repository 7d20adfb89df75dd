"""The coordinator's EventSub route: the application's conduit, its shards and the chat
subscriptions of the channels read through it (:class:`ConduitKeeper`).

The leader runs it beside its passes (:meth:`ConduitKeeper.run`); each step, at most every
:data:`STEP_S` seconds or when woken:

1. the routes (:class:`~tmi_cluster.routes.Routing`) of the wanted channels from the stored
   grants: the channels to read through EventSub, each with its broadcaster's user id;
   revocations the workers saw (``P eventsub:revoked``) end their channel's grant first;
2. the conduit: the application's own, reused across restarts and leaders (never a second),
   grown to ``tmi.transport.shards`` or one shard per live worker process (never shrunk: a
   spare shard is held by a remaining worker);
3. the subscriptions: listed from Twitch once per leadership (so a restart reconciles, and
   duplicates nothing); each missing one made (``tmi.transport.subscriptions`` per channel,
   ``subscribe_concurrency`` calls at once, a 429 waited out); a channel counts as routed once
   all of its types exist and a worker holds a shard of the conduit (Twitch drops what no
   bound shard can take), and goes into ``P eventsub:routes``; its IRC connection is then
   parted by the next pass (the worker checks its events against duplicates until it has);
4. a channel no longer routed (its grant revoked, unwanted, the route turned off) is marked
   leaving in ``P eventsub:routes`` (:data:`~tmi_cluster.bus.routes.LEAVING`) at once, so that
   IRC joins it again, checking its events against EventSub's; once its IRC holder has it (or
   after :data:`LEAVE_S`) it leaves ``P eventsub:routes`` and its subscriptions are deleted;
5. the channels the bot moderates, listed every :data:`MODERATED_S` when the bot granted
   ``user:read:moderated_channels`` (stored in SQL, :data:`MODERATED_KEY`): read through
   EventSub without their broadcaster's grant; a revocation there (the bot unmodded) ends it
   at once and lists them again;
6. the grants' user tokens validated hourly and refreshed
   (:class:`~tmi_cluster.coordinator.tokens.TokenKeeper`, with ``twitch.grant_key``): a grant
   that ended is deleted, and its channel goes back to IRC like a revoked one;
7. :class:`~tmi_cluster.bus.routes.RouteStatus` (the conduit, counts, cost, the problem) and
   the per-channel problems (a refused subscription: the channel stays on IRC, retried after
   :data:`RETRY_S`) are published, fenced by the lease's token.

The coordinator's pass places :meth:`ConduitKeeper.placed` instead of the wanted channels: the
channels not routed, and the conduit's shards as pseudo-channels
(:func:`~tmi_cluster.bus.routes.shard_name`), each held by one worker's WebSocket session.
A Helix error is a visible :attr:`ConduitKeeper.problem`, never the end of the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tmi_cluster.bus import Assignment, AsyncRedis, Keys, live
from tmi_cluster.bus.lease import Lease
from tmi_cluster.bus.routes import LEAVING, EventSubRoutes, RouteStatus, shard_name
from tmi_cluster.config import Settings
from tmi_cluster.coordinator.tokens import TokenKeeper
from tmi_cluster.errors import (
    GrantKeyError,
    HelixError,
    RedisUnavailableError,
    StaleLeaseError,
    StorageError,
)
from tmi_cluster.eventsub.helix import Conduit, Helix
from tmi_cluster.eventsub.shard import SHARD_DISABLED
from tmi_cluster.routes import (
    MODERATED_KEY,
    MODERATED_SCOPE,
    Routing,
    eventsub_configured,
    stored_moderated,
)
from tmi_cluster.store import SealedGrant, Store

__all__ = [
    "CHECK_S",
    "LEAVE_S",
    "MODERATED_S",
    "RELIST_S",
    "RETRY_S",
    "STEP_S",
    "ConduitKeeper",
]

log = logging.getLogger(__name__)

#: Seconds between two steps when nothing wakes the keeper.
STEP_S = 2.0
#: Seconds a channel moved back to IRC keeps its subscriptions at most, waiting for IRC.
LEAVE_S = 15.0
#: Seconds before a refused subscription is tried again.
RETRY_S = 30.0
#: Seconds of Helix calls in one step at most (the rest goes on in the next).
STEP_WORK_S = 5.0
#: Seconds between two looks at whether the conduit still exists at Twitch (one call).
CHECK_S = 30.0
#: Seconds between two listings of the conduit's subscriptions (one call per 100 at Twitch):
#: one deleted without a revocation is made again.
RELIST_S = 600.0
#: Seconds between two listings of the channels the bot moderates (one call per 100).
MODERATED_S = 300.0


@dataclass
class _Known:
    """What the keeper knows of Twitch's side (forgotten when it stops leading)."""

    conduit: Conduit | None = None
    listed: bool = False
    #: When the subscriptions were listed, and the conduit last seen at Twitch (monotonic).
    listed_at: float = 0.0
    checked_at: float = 0.0
    #: broadcaster id -> type -> subscription id
    subs: dict[str, dict[str, str]] = field(default_factory=dict)
    #: The conduit's ``conduit.shard.disabled`` subscription (None: not made yet).
    watch: str | None = None


class ConduitKeeper:
    """The EventSub route of the coordinator holding ``lease``; see the module."""

    def __init__(
        self,
        settings: Settings,
        client: AsyncRedis,
        keys: Keys,
        store: Store,
        lease: Lease,
        *,
        helix: Helix | None = None,
        step_s: float = STEP_S,
        leave_s: float = LEAVE_S,
        tokens: TokenKeeper | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.lease = lease
        self.keys = keys
        self.bus = EventSubRoutes(client, keys)
        self.assignment = Assignment(client, keys)
        self.helix = helix if helix is not None else Helix(settings)
        #: The grants' tokens kept valid (None: no ``twitch.grant_key`` to open them with).
        self.tokens = tokens
        if tokens is None and settings.twitch.grant_key.get_secret_value():
            self.tokens = TokenKeeper(settings, store, step_s=step_s)
        self.step_s = step_s
        self.leave_s = leave_s
        self.types = list(settings.tmi.transport.subscriptions)
        #: The wanted channels and the live worker processes, set by each pass.
        self.wanted: frozenset[str] = frozenset()
        self.workers = 0
        #: Channels read through EventSub -> broadcaster id (as published).
        self.routed: dict[str, str] = {}
        #: Channels read by no route (``route = "eventsub"`` without a grant).
        self.waiting: set[str] = set()
        #: The shard count published (0: no conduit).
        self.shards = 0
        #: What failed last (a Helix error, the database), else None.
        self.problem: str | None = None
        self.steps = 0
        self._known = _Known()
        self._problems: dict[str, str] = {}
        self._retry_at: dict[str, float] = {}
        self._leaving: dict[str, tuple[str, float]] = {}  # channel -> (broadcaster, deadline)
        self._paused_until = 0.0
        self._wake = asyncio.Event()
        self._published: RouteStatus | None = None
        self._token = 0
        #: Channels to read through EventSub now; whether workers read EventSub at all.
        self._targets = 0
        self._reading = eventsub_configured(settings)
        #: The channels the bot moderates -> broadcaster id (listed every MODERATED_S with
        #: the bot's grant of ``user:read:moderated_channels``; stored in SQL).
        self.moderated: dict[str, str] = {}
        self.moderated_every_s = MODERATED_S
        self._moderated_at: float | None = None
        self._moderated_grant: tuple[str, str] | None = None  # the bot's grant listed with
        self._moderation_problem: str | None = None

    def wake(self) -> None:
        """Step now (the wanted channels or the workers changed)."""
        self._wake.set()

    def placed(self, wanted: frozenset[str]) -> frozenset[str]:
        """What the pass places instead of ``wanted``: the channels IRC reads, and the shards;
        the keeper steps at once when the wanted channels changed."""
        if wanted != self.wanted:
            self.wanted = wanted
            self.wake()
        if not (self.routed or self.waiting or self._targets or self._leaving):
            return wanted  # no channel on EventSub, or moving: no shard needed either
        shards = {shard_name(n) for n in range(self.shards)} if self._reading else set()
        return frozenset((wanted - self.routed.keys() - self.waiting) | shards)

    def saw(self, workers: int) -> None:
        """The pass saw ``workers`` live worker processes: a step at once when it changed."""
        if workers != self.workers:
            self.workers = workers
            self.wake()

    async def run(self, leading: Callable[[], bool], stop: asyncio.Event) -> None:
        """Step while ``leading()``, until ``stop``; never raises (problems are shown)."""
        try:
            while not stop.is_set():
                if leading():
                    await self._guarded_step()
                elif self._token:
                    self._forget()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.step_s)
                self._wake.clear()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP clients (Helix, the token keeper's). Idempotent."""
        await self.helix.aclose()
        if self.tokens is not None:
            await self.tokens.aclose()

    async def _guarded_step(self) -> None:
        try:
            await self.step()
        except StaleLeaseError as error:
            log.warning("EventSub route: %s", error)
            self._forget()
        except RedisUnavailableError as error:
            self.problem = f"Redis: {error}"
        except Exception as error:  # a bug: visible, and the next step goes on
            log.exception("EventSub route: a step failed")
            self.problem = f"{type(error).__name__}: {error}"

    def _forget(self) -> None:
        """Not leading: what was known of Twitch may be stale by the next leadership."""
        self._known = _Known()
        self._token = 0
        self._published = None

    async def step(self) -> None:
        """One step (see the module); StaleLeaseError once the lease is lost."""
        token = self.lease.token
        if token != self._token:
            await self._lead(token)
        self.steps += 1
        try:
            grants = await asyncio.to_thread(self.store.grants)
        except StorageError as error:  # the database is away: keep the routes as they are
            self.problem = f"the grants could not be read: {error}"
            return
        grants = await self._live_grants(token, grants)
        await self._list_moderated(grants)
        routing = Routing(self.settings, grants, self.moderated)
        target = routing.eventsub_channels(self.wanted)
        self.waiting = routing.waiting(self.wanted)
        self._targets = len(target)
        known = self._known
        problem: str | None = routing.unavailable
        if target or known.conduit is not None or self.routed or self._leaving:
            try:
                await self._reconcile(token, target, routing.bot_id or "")
                problem = None if target or routing.available else routing.unavailable
            except HelixError as error:
                problem = str(error)
                if error.retry_after_s:
                    self._paused_until = time.monotonic() + error.retry_after_s
        if problem is None and self.routed and not await self._bound_shards():
            problem = (
                f"no worker holds a shard of the conduit: its {len(self.routed)} channels are "
                "not read (the EventSub server unreachable, or no worker running)"
            )
        if problem is None and self.tokens is not None:
            problem = self.tokens.problem  # a grant that cannot be opened or checked
        if problem is None:
            problem = self._moderation_problem
        self.problem = problem
        await self._publish(token, routing, problem)

    async def _live_grants(self, token: int, grants: list[SealedGrant]) -> list[SealedGrant]:
        """``grants`` without those that ended: Twitch no longer accepts their tokens (the
        hourly validation, refreshes), or it revoked their subscriptions."""
        if self.tokens is not None:
            ended = await self.tokens.step(grants)
            grants = [g for g in grants if g.user_id not in ended]
        revoked = await self.bus.revocations()
        if revoked:
            await self._end_revoked(token, revoked, {g.user_id: g.login for g in grants})
            grants = [g for g in grants if g.user_id not in revoked]
        return grants

    async def _lead(self, token: int) -> None:
        """A new leadership: go on from what was published and stored."""
        self._forget()
        self._token = token
        self.routed, leaving = await self.bus.table()
        deadline = time.monotonic() + self.leave_s
        self._leaving = {c: (b, deadline) for c, b in leaving.items()}
        self._problems = await self.bus.problems()
        with contextlib.suppress(StorageError):
            self.moderated = await asyncio.to_thread(stored_moderated, self.store)
        self._moderated_at = None

    async def _list_moderated(self, grants: list[SealedGrant]) -> None:
        """List the channels the bot moderates, every :attr:`moderated_every_s`, when the bot
        granted :data:`~tmi_cluster.routes.MODERATED_SCOPE` (else none is known); stored in
        SQL when they changed. Twitch not answering keeps the list as it was."""
        now = time.monotonic()
        login = self.settings.tmi.identity.username
        bot = next((g for g in grants if g.login == login), None)
        usable = bot is not None and MODERATED_SCOPE in bot.scopes and self.tokens is not None
        grant = (bot.user_id, bot.access_token) if bot is not None and usable else None
        due = self._moderated_at is None or now - self._moderated_at >= self.moderated_every_s
        if not due and grant == self._moderated_grant:  # a new grant is listed at once
            return
        self._moderated_at, self._moderated_grant = now, grant
        found: dict[str, str] = {}
        if bot is not None and usable and self.tokens is not None:
            try:
                token = self.tokens.grants.open(bot).access_token
                found = await self.helix.moderated_channels(bot.user_id, token)
            except (GrantKeyError, HelixError) as error:
                self._moderation_problem = f"the bot's moderated channels are not known: {error}"
                return
        self._moderation_problem = None
        if found != self.moderated:
            gained, lost = found.keys() - self.moderated.keys(), self.moderated.keys() - found
            log.info(
                "EventSub route: the bot moderates %d channel(s) (%d new, %d no longer)",
                len(found),
                len(gained),
                len(lost),
            )
            self.moderated = found
            with contextlib.suppress(StorageError):
                await asyncio.to_thread(self.store.set_state, MODERATED_KEY, {"channels": found})

    async def _end_revoked(self, token: int, revoked: set[str], logins: dict[str, str]) -> None:
        """Twitch revoked these broadcasters' subscriptions: their grants end (a channel the
        bot moderated is no longer taken for one: the bot was unmodded, most likely)."""
        unmodded = {c for c, b in self.moderated.items() if b in revoked}
        for channel in sorted(unmodded):
            log.info("EventSub route: the bot no longer moderates #%s: back to IRC", channel)
        if unmodded:
            self.moderated = {c: b for c, b in self.moderated.items() if c not in unmodded}
            self._moderated_at = None  # listed again at this step
        for broadcaster in sorted(revoked):
            login = logins.get(broadcaster)
            if login is not None:  # else its grant ended already (reported by several types)
                log.info("EventSub route: Twitch revoked the grant of %s: back to IRC", login)
                with contextlib.suppress(StorageError):
                    await asyncio.to_thread(self.store.delete_grant, broadcaster)
            self._known.subs.pop(broadcaster, None)
        await self.bus.take_revoked(token, revoked)

    async def _reconcile(self, token: int, target: dict[str, str], bot_id: str) -> None:
        known = self._known
        now = time.monotonic()
        if now < self._paused_until:
            return
        if known.conduit is not None and now >= known.checked_at + CHECK_S:
            await self._check_conduit(token)
            known = self._known  # made anew when the conduit was gone
        if known.conduit is None:  # a new leadership: the application's conduit as it is
            existing = await self.helix.conduits()
            known.conduit = existing[0] if existing else None
            known.checked_at = now
        shards = self.settings.tmi.transport.shards or max(
            1, self.workers, known.conduit.shard_count if known.conduit else 0
        )  # grows with the workers, never shrinks (a leader that just came sees fewer)
        if known.conduit is None or known.conduit.shard_count != shards:
            known.conduit = await self.helix.conduit(shards)
            log.info(
                "EventSub route: conduit %s with %d shards",
                known.conduit.id,
                known.conduit.shard_count,
            )
        self.shards = known.conduit.shard_count
        if not known.listed or now >= known.listed_at + RELIST_S:
            known.subs, known.watch = {}, None
            for sub in await self.helix.subscriptions(known.conduit.id):
                if sub.type == SHARD_DISABLED:
                    known.watch = sub.id
                    continue
                broadcaster = str(sub.condition.get("broadcaster_user_id", ""))
                known.subs.setdefault(broadcaster, {})[sub.type] = sub.id
            known.listed, known.listed_at = True, now
        if known.watch is None and target:
            await self._watch_shards(known.conduit.id)
        await self._subscribe(target, bot_id, known.conduit.id)
        self._leave(target)
        await self._unsubscribe(target)

    async def _check_conduit(self, token: int) -> None:
        """Whether the conduit is still there at Twitch (deleted by hand, or Twitch forgot it):
        if not, everything is made again, now. Its shards that Twitch disabled while bound to
        a session are marked, for their holder to bind a new one (the backstop of
        ``conduit.shard.disabled``, which no shard can carry when all are down)."""
        known = self._known
        assert known.conduit is not None
        ids = {c.id for c in await self.helix.conduits()}
        known.checked_at = time.monotonic()
        if known.conduit.id not in ids:
            log.warning(
                "EventSub route: conduit %s is gone at Twitch; making a new one and "
                "subscribing again",
                known.conduit.id,
            )
            self._known = _Known(checked_at=known.checked_at)
            return
        down = {
            shard.id: shard.session_id
            for shard in await self.helix.shards(known.conduit.id)
            if shard.status != "enabled" and shard.session_id
        }
        if down:
            log.warning(
                "EventSub route: Twitch disabled shard(s) %s: their holders bind new sessions",
                ", ".join(sorted(down)),
            )
        await self.bus.mark_disabled(token, down)  # and those enabled again are forgotten

    async def _watch_shards(self, conduit_id: str) -> None:
        """Subscribe to ``conduit.shard.disabled``; a refusal is logged and tried again at the
        next listing (the check of the shards stands in meanwhile)."""
        try:
            self._known.watch = (await self.helix.watch_shards(conduit_id)).id
        except HelixError as error:
            if error.status is None or error.status == 429:
                raise
            log.warning("EventSub route: conduit.shard.disabled not subscribed: %s", error)
            self._known.watch = ""

    async def _subscribe(self, target: dict[str, str], bot_id: str, conduit_id: str) -> None:
        """Make the missing subscriptions of ``target`` (within :data:`STEP_WORK_S`)."""
        subs = self._known.subs
        now = time.monotonic()
        self._forget_problems(target, now)
        todo = [
            (channel, broadcaster, kind)
            for channel, broadcaster in sorted(target.items())
            if self._retry_at.get(channel, 0.0) <= now
            for kind in self.types
            if kind not in subs.get(broadcaster, {})
        ]
        gate = asyncio.Semaphore(self.settings.tmi.transport.subscribe_concurrency)
        deadline = now + STEP_WORK_S
        limited: list[HelixError] = []

        async def one(channel: str, broadcaster: str, kind: str) -> None:
            async with gate:
                if time.monotonic() > deadline or limited or channel in self._problems:
                    return
                await self._subscribe_one(
                    channel,
                    broadcaster,
                    kind,
                    bot_id=bot_id,
                    conduit_id=conduit_id,
                    limited=limited,
                )

        async with asyncio.TaskGroup() as tasks:
            for item in todo:
                tasks.create_task(one(*item))
        bound = await self._bound_shards()
        for channel, broadcaster in target.items():
            if channel in self._problems or (not bound and channel not in self.routed):
                continue  # no shard bound yet: Twitch would drop its notifications
            if all(kind in subs.get(broadcaster, {}) for kind in self.types):
                self.routed[channel] = broadcaster
                self._leaving.pop(channel, None)
        if limited:
            raise limited[0]

    async def _subscribe_one(
        self,
        channel: str,
        broadcaster: str,
        kind: str,
        *,
        bot_id: str,
        conduit_id: str,
        limited: list[HelixError],
    ) -> None:
        """One subscription; a refusal is the channel's problem, a 429 stops the step (in
        ``limited``), no answer from Twitch ends it (raised)."""
        try:
            sub = await self.helix.subscribe(kind, broadcaster, bot_id, conduit_id)
        except HelixError as error:
            if error.status == 429:
                limited.append(error)
                return
            if error.status is None:
                raise
            self._problems[channel] = f"Twitch refused the {kind} subscription: {error.reason}"
            self._retry_at[channel] = time.monotonic() + RETRY_S
            return
        self._known.subs.setdefault(broadcaster, {})[kind] = sub.id

    async def _bound_shards(self) -> int:
        """How many of the conduit's shards a live worker holds (bound to its session)."""
        names = [shard_name(n) for n in range(self.shards)]
        processes = sorted(await live(self.assignment.client, self.keys, "process"))
        return len(await self.assignment.held_by(processes, names)) if processes else 0

    def _forget_problems(self, target: dict[str, str], now: float) -> None:
        """Problems of channels no longer targeted, or due for another try, are forgotten."""
        self._problems = {
            c: p
            for c, p in self._problems.items()
            if c in target and self._retry_at.get(c, 0.0) > now
        }

    def _leave(self, target: dict[str, str]) -> None:
        """Routed channels no longer in ``target`` go back to IRC at once."""
        deadline = time.monotonic() + self.leave_s
        for channel in sorted(self.routed.keys() - target.keys()):
            self._leaving[channel] = (self.routed.pop(channel), deadline)

    async def _unsubscribe(self, target: dict[str, str]) -> None:
        """Delete the subscriptions of broadcasters not read through EventSub: those leaving
        once IRC holds their channel (or their time is up), the others at once."""
        subs = self._known.subs
        now = time.monotonic()
        leaving = self._leaving
        owners = await self.assignment.owners(sorted(leaving)) if leaving else {}
        pairs = {c: p for c, p in owners.items() if p is not None}
        held = await self.assignment.holding(pairs) if pairs else set()
        done = {
            c
            for c, (_, deadline) in leaving.items()
            if c in held or deadline <= now or c not in self.wanted  # unwanted: nobody takes it
        }
        for channel in done:
            del leaving[channel]
        keep = set(target.values()) | {b for b, _ in leaving.values()}
        gone = [b for b in subs if b not in keep]
        deadline = now + STEP_WORK_S
        for broadcaster in gone:
            if time.monotonic() > deadline:
                break
            for sub_id in list(subs[broadcaster].values()):
                await self.helix.unsubscribe(sub_id)
            del subs[broadcaster]

    async def _publish(self, token: int, routing: Routing, problem: str | None) -> None:
        known = self._known
        status = RouteStatus(
            conduit_id=known.conduit.id if known.conduit else "",
            shards=self.shards,
            bot_id=routing.bot_id or "",
            bot_login=routing.bot_login,
            channels=len(self.routed),
            subscriptions=sum(len(s) for s in known.subs.values()),
            problem=problem,
        )
        routed, leaving = await self.bus.table()
        current = {**routed, **{c: LEAVING + b for c, b in leaving.items()}}
        wanted = {
            **self.routed,
            **{c: LEAVING + b for c, (b, _) in self._leaving.items() if c not in self.routed},
        }
        add = {c: b for c, b in wanted.items() if current.get(c) != b}
        gone = current.keys() - wanted.keys()
        published = await self.bus.problems()
        new_problems = {c: p for c, p in self._problems.items() if published.get(c) != p}
        solved = published.keys() - self._problems.keys()
        if status == self._published and not add and not gone and not new_problems and not solved:
            return
        await self.bus.publish(
            token, status, routes=add, unroute=gone, problems=new_problems, solved=solved
        )
        self._published = status

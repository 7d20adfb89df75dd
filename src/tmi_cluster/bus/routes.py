"""The EventSub route's state in Redis: the application's conduit and its shards, the channels
read through EventSub, the subscriptions that failed and the revocations the workers saw.

- The coordinator writes :class:`RouteStatus`, the routes and the problems, each write fenced
  by its lease's token (:class:`~tmi_cluster.bus.coordination.Coordination`'s script).
- Any process reads them: a worker binds its shards to :attr:`RouteStatus.conduit_id` and sends
  to a channel in :meth:`EventSubRoutes.routes` through Helix; ``channels`` shows each channel's
  route. A channel moving back to IRC stays in ``P eventsub:routes`` marked :data:`LEAVING`
  until its IRC holder has it: meanwhile both routes check its events against duplicates.
- A worker that reads a ``revocation`` adds the broadcaster's id to ``P eventsub:revoked``
  (unfenced: it is a report); the coordinator takes them with :meth:`EventSubRoutes.take_revoked`.
- A shard Twitch disabled goes into ``P eventsub:disabled`` with the session it was bound to
  (a worker that reads ``conduit.shard.disabled`` reports it; the coordinator's check of the
  shards marks it, fenced); the worker holding that very session opens a new one, binds it, and
  takes the entry away (:meth:`EventSubRoutes.renewed`: only while it still names that session).

A conduit's shard is placed like a channel: the pseudo-channel :func:`shard_name` in the
assignment (:mod:`tmi_cluster.bus.assignment`) is held by the worker whose WebSocket session the
shard is bound to, so that a dead worker's shards move as its channels do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

import msgspec
import redis
import redis.asyncio

from tmi_cluster.bus.client import describe_client, translated
from tmi_cluster.bus.coordination import Coordination, _Ops
from tmi_cluster.bus.keys import Keys

__all__ = [
    "LEAVING",
    "SHARD_PREFIX",
    "EventSubRoutes",
    "RouteStatus",
    "is_shard",
    "route_status_sync",
    "shard_name",
    "shard_of",
]

#: The mark of a channel moving back to IRC in ``P eventsub:routes`` (``-<broadcaster id>``):
#: EventSub still reads it, checked, until its IRC holder has it.
LEAVING = "-"
#: The assignment's name of a conduit shard: ``~eventsub/<shard id>`` (never a login).
SHARD_PREFIX = "~eventsub/"


def shard_name(shard: int | str) -> str:
    """The pseudo-channel of shard ``shard`` in the assignment."""
    return f"{SHARD_PREFIX}{shard}"


def is_shard(name: str) -> bool:
    """Whether ``name`` (an assignment entry) is a conduit shard, not a channel."""
    return name.startswith(SHARD_PREFIX)


def shard_of(name: str) -> str:
    """The shard id of the pseudo-channel ``name``."""
    return name[len(SHARD_PREFIX) :]


class RouteStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The EventSub route as the coordinator last saw it (all empty: the route is off)."""

    #: The application's conduit (empty: none yet).
    conduit_id: str = ""
    #: Its shard count.
    shards: int = 0
    #: The bot's Twitch user id (the ``user_id`` of every subscription, the sender of Helix).
    bot_id: str = ""
    bot_login: str = ""
    #: Channels read through EventSub, and the subscriptions behind them.
    channels: int = 0
    subscriptions: int = 0
    #: Twitch's cost of the subscriptions, and its maximum (0: not known).
    cost: int = 0
    max_cost: int = 0
    #: Why the route is off, or what failed last (None: nothing).
    problem: str | None = None


#: Items per command of a fenced script (Lua's ``unpack`` takes about 8,000 values at most).
_CHUNK = 1000
T = TypeVar("T")

#: HDEL a field only while it holds the value given (compare and delete).
_RENEWED = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(RouteStatus)


def _chunks(items: Sequence[T]) -> list[Sequence[T]]:
    """``items`` in pieces that Lua's ``unpack`` takes (at most :data:`_CHUNK` each)."""
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def route_status_sync(client: redis.Redis, keys: Keys) -> RouteStatus | None:
    """The route's state through a synchronous client (``list``); None when the coordinator
    wrote none. RedisUnavailableError when Redis does not answer."""
    with translated(describe_client(client)):
        raw = client.get(keys.eventsub_conduit)
    if raw is None:
        return None
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError:
        return RouteStatus(problem="the EventSub state in Redis could not be read")


class EventSubRoutes:
    """The EventSub route's keys of cluster ``keys``; see the module. RedisUnavailableError
    when Redis does not answer; the fenced writes StaleLeaseError when ``token`` is stale."""

    def __init__(self, client: redis.asyncio.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._where = describe_client(client)
        self._coordination = Coordination(client, keys)
        self._renewed = client.register_script(_RENEWED)

    # -- the coordinator's, fenced ------------------------------------------------------------

    async def publish(
        self,
        token: int,
        status: RouteStatus,
        *,
        routes: Mapping[str, str] | None = None,
        unroute: Iterable[str] = (),
        problems: Mapping[str, str] | None = None,
        solved: Iterable[str] = (),
    ) -> None:
        """Write ``status`` and the changes of the routes (channel -> broadcaster id, or
        :data:`LEAVING` + id, added; ``unroute`` removed) and of the problems, in one fenced
        script."""
        ops = _Ops()
        ops.add("SET", self.keys.eventsub_conduit, _encoder.encode(status).decode())
        routes_key, problems_key = self.keys.eventsub_routes, self.keys.eventsub_problems
        for names in _chunks(sorted(set(unroute))):
            ops.add("HDEL", routes_key, *names)
        for pairs in _chunks(sorted(routes.items()) if routes else []):
            ops.add("HSET", routes_key, *(part for item in pairs for part in item))
        for names in _chunks(sorted(set(solved))):
            ops.add("HDEL", problems_key, *names)
        for pairs in _chunks(sorted(problems.items()) if problems else []):
            ops.add("HSET", problems_key, *(part for item in pairs for part in item))
        await self._coordination._run(token, ops)

    async def mark_disabled(self, token: int, shards: Mapping[str, str]) -> None:
        """The coordinator's check found ``shards`` (id -> session id) disabled at Twitch:
        they replace the entries (those Twitch no longer has disabled go)."""
        ops = _Ops()
        ops.add("DEL", self.keys.eventsub_disabled)
        pairs = sorted(shards.items())
        if pairs:
            ops.add("HSET", self.keys.eventsub_disabled, *(part for item in pairs for part in item))
        await self._coordination._run(token, ops)

    async def take_revoked(self, token: int, broadcaster_ids: Iterable[str]) -> None:
        """Forget revocations the coordinator acted on."""
        ids = sorted(set(broadcaster_ids))
        if ids:
            ops = _Ops()
            ops.add("SREM", self.keys.eventsub_revoked, *ids)
            await self._coordination._run(token, ops)

    # -- anyone's ---------------------------------------------------------------------------

    async def status(self) -> RouteStatus:
        """The route's state (empty when the coordinator wrote none)."""
        with translated(self._where):
            raw = await self.client.get(self.keys.eventsub_conduit)
        if raw is None:
            return RouteStatus()
        try:
            return _decoder.decode(raw)
        except msgspec.DecodeError:  # written by another version: as if none
            return RouteStatus(problem="the EventSub state in Redis could not be read")

    async def routes(self) -> dict[str, str]:
        """The channels read through EventSub -> their broadcaster's user id (not those
        moving back to IRC)."""
        return (await self.table())[0]

    async def table(self) -> tuple[dict[str, str], dict[str, str]]:
        """The channels read through EventSub, and those moving back to IRC (each ->
        its broadcaster's user id)."""
        with translated(self._where):
            raw = await self.client.hgetall(self.keys.eventsub_routes)
        routed: dict[str, str] = {}
        leaving: dict[str, str] = {}
        for key, value in raw.items():
            text = _text(value)
            if text.startswith(LEAVING):
                leaving[_text(key)] = text[len(LEAVING) :]
            else:
                routed[_text(key)] = text
        return routed, leaving

    async def states(self, channels: Sequence[str]) -> dict[str, str | None]:
        """Each of ``channels``: ``"routed"``, ``"leaving"`` (moving back to IRC) or None."""
        if not channels:
            return {}
        with translated(self._where):
            raw = await self.client.hmget(self.keys.eventsub_routes, list(channels))
        return {
            channel: None
            if value is None
            else "leaving"
            if _text(value).startswith(LEAVING)
            else "routed"
            for channel, value in zip(channels, raw, strict=True)
        }

    async def send_target(self, channel: str) -> tuple[str, str] | None:
        """(broadcaster id, bot id) when ``channel`` is read through EventSub, else None (one
        round trip)."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hget(self.keys.eventsub_routes, channel)
            pipe.get(self.keys.eventsub_conduit)
            with translated(self._where):
                broadcaster, raw = await pipe.execute()
        if broadcaster is None or raw is None or _text(broadcaster).startswith(LEAVING):
            return None
        try:
            bot_id = _decoder.decode(raw).bot_id
        except msgspec.DecodeError:
            return None
        return (_text(broadcaster), bot_id) if bot_id else None

    async def report_disabled(self, shard: str, session_id: str) -> None:
        """Report that Twitch disabled ``shard`` bound to ``session_id`` (a worker read
        ``conduit.shard.disabled``)."""
        with translated(self._where):
            await self.client.hset(self.keys.eventsub_disabled, shard, session_id)

    async def disabled(self) -> dict[str, str]:
        """The shards Twitch disabled -> the session id each was bound to."""
        with translated(self._where):
            raw = await self.client.hgetall(self.keys.eventsub_disabled)
        return {_text(k): _text(v) for k, v in raw.items()}

    async def renewed(self, shard: str, session_id: str) -> None:
        """``shard``'s disabled session was replaced: its entry goes, if it still names
        ``session_id`` (a newer report stays)."""
        with translated(self._where):
            await self._renewed(keys=[self.keys.eventsub_disabled], args=[shard, session_id])

    async def problems(self) -> dict[str, str]:
        """The channels whose subscription failed -> why."""
        with translated(self._where):
            raw = await self.client.hgetall(self.keys.eventsub_problems)
        return {_text(k): _text(v) for k, v in raw.items()}

    async def revoked(self, broadcaster_id: str) -> None:
        """Report that Twitch revoked a subscription of ``broadcaster_id``'s channel."""
        with translated(self._where):
            await self.client.sadd(self.keys.eventsub_revoked, broadcaster_id)

    async def revocations(self) -> set[str]:
        """The broadcaster ids whose revocations wait for the coordinator."""
        with translated(self._where):
            raw = await self.client.smembers(self.keys.eventsub_revoked)
        return {_text(v) for v in raw}

"""Heartbeats: who is alive, as typed statuses stamped with Redis's clock, found without SCAN.

Each supervisor and worker process keeps a heartbeat, written by one script per beat:

- its key (``P supervisor:{id}:heartbeat``, ``P process:{id}:heartbeat``) holds its status, a
  :class:`SupervisorStatus` or :class:`ProcessStatus` as JSON, stamped ``at`` with Redis's clock
  (seconds), and expires after its stale time (``supervisor.stale``, ``process.stale``);
- its entry in the registry of its kind (``P live:supervisor``, ``P live:process``: a sorted
  set of ids scored by the Redis time of their last beat) lets readers find the live ones by
  listing the registry, never by scanning the keyspace, so a pass costs the number of recent
  owners however many other keys Redis holds. The beats prune the registry of owners silent
  for :data:`REGISTRY_FORGET_S`.

Liveness is the key's existence, never a SQL row and never the registry alone: an owner killed
with SIGKILL stops renewing its key, which expires ``ttl_s`` later. A reader gets each live
owner's status with its age on Redis's clock (:class:`Beat`), so no host compares its own clock
with another's. A value that does not decode (another version, a hand-written key) is logged
once and counted as alive with default figures. A Redis outage is waited out by the beat: it
logs the outage once, retries every ``interval_s``, and goes on when Redis answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from typing import Any, Generic, Literal, NamedTuple, TypeVar

import msgspec
import redis
import redis.asyncio

from tmi_cluster.bus.client import describe_client, translated
from tmi_cluster.bus.keys import Keys
from tmi_cluster.bus.windows import Outage
from tmi_cluster.errors import RedisUnavailableError

__all__ = [
    "REGISTRY_FORGET_S",
    "Beat",
    "Heartbeat",
    "Kind",
    "ProcessStatus",
    "SupervisorStatus",
    "alive",
    "last_beats_sync",
    "live",
    "mark_alive",
    "of_live_supervisors",
    "read",
    "read_sync",
]

log = logging.getLogger(__name__)

#: Seconds after which the registry forgets an owner that stopped beating (its key is long gone).
REGISTRY_FORGET_S = 3600

Kind = Literal["supervisor", "process"]


class SupervisorStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What a live supervisor says of itself in its heartbeat (``list``, ``health``)."""

    pid: int = 0
    host: str = ""
    #: starting, running, stopping
    state: str = "running"
    #: Its worker processes running now.
    processes: int = 0
    #: Its workers are paused (SIGUSR2).
    paused: bool = False
    problem: str | None = None
    #: It holds the coordinator's lease.
    coordinator: bool = False
    #: How many workers it runs for (the coordinator's target, or its own fixed count).
    target: int = 0
    #: It runs a fixed number of workers (``supervisor.processes``): the auto-scaler leaves
    #: it alone.
    fixed: bool = False
    #: When it started (Unix time, its own host's clock: for display only).
    started: float = 0.0
    #: Where its workers read chat: "twitch", "simulator" (the built-in one), or "host:port".
    chat: str = "twitch"
    #: Worker processes it restarted after an unexpected end, since it started.
    restarts_total: int = 0
    #: Passes it made as the coordinator, since it started.
    coordinator_passes_total: int = 0
    #: When it beat last (Redis's clock, Unix seconds), stamped by the beat's script.
    at: float = 0.0


class ProcessStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What a live worker process says of itself in its heartbeat."""

    #: The id of its supervisor: a worker of a dead supervisor is dead to the cluster.
    supervisor: str = ""
    pid: int = 0
    #: starting, running, paused, stopping
    state: str = "starting"
    channels: int = 0
    connections: int = 0
    memory_bytes: int = 0
    messages_per_s: float = 0.0
    #: It has a Twitch identity and consumes the send stream.
    sends: bool = False
    problem: str | None = None
    handler_errors: int = 0
    events_published: int = 0
    events_dropped: int = 0
    duplicates_dropped: int = 0
    #: Chat messages read since it started (a counter, for the metrics).
    messages_total: int = 0
    #: The cluster's send commands it answered since it started, and their rate now.
    commands_total: int = 0
    commands_per_s: float = 0.0
    #: Reconnects of its connections since it started (a RECONNECT, a loss).
    reconnects_total: int = 0
    #: Its joins since it started, by result (``joined``, or Twitch's refusal, ``timeout``...).
    joins: dict[str, int] = msgspec.field(default_factory=dict)
    #: Seconds its takes from Twitch's rate windows waited since it started, by bucket
    #: (``join``, ``auth``, ``messages``).
    rate_limit_waits: dict[str, float] = msgspec.field(default_factory=dict)
    #: Its ``coordinator.replicas``: 2 when it checks every event (the coordinator places
    #: second copies only while every worker does).
    replicas: int = 1
    #: When it beat last (Redis's clock, Unix seconds), stamped by the beat's script.
    at: float = 0.0


S = TypeVar("S", SupervisorStatus, ProcessStatus)
_STATUS: dict[str, type[SupervisorStatus] | type[ProcessStatus]] = {
    "supervisor": SupervisorStatus,
    "process": ProcessStatus,
}


class Beat(NamedTuple, Generic[S]):
    """A live heartbeat as read: the owner's status and how old its last beat is (Redis's
    clock at the read, less the beat's ``at``)."""

    status: S
    age_s: float


# KEYS[1] heartbeat, KEYS[2] registry; ARGV[1] status (a JSON object), ARGV[2] ttl ms, ARGV[3]
# id, ARGV[4] forget ms, ARGV[5] "nx" to claim. Returns Redis's time in ms, or 0 when a claim
# finds another owner's key. The status gets ``"at"`` (seconds) spliced in before its last "}".
_BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local value = string.sub(ARGV[1], 1, -2) .. ',"at":' .. string.format('%.3f', now / 1000) .. '}'
if ARGV[5] == 'nx' then
  if not redis.call('SET', KEYS[1], value, 'PX', ARGV[2], 'NX') then return 0 end
else
  redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
end
redis.call('ZADD', KEYS[2], now, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[4]))
return now
"""


class Heartbeat(Generic[S]):
    """Keeps the heartbeat of ``owner_id`` (of ``kind``) alive with the status ``status_of()``
    returns at each beat: renewed every ``interval_s``, expiring after ``ttl_s`` without
    renewal. ``beats`` counts the renewals Redis accepted."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: Keys,
        kind: Kind,
        owner_id: str,
        *,
        ttl_s: float,
        interval_s: float,
        status_of: Callable[[], S],
        outage: Outage | None = None,
    ) -> None:
        if not 0 < interval_s < ttl_s:
            raise ValueError(f"a heartbeat needs 0 < interval_s < ttl_s, got {interval_s}, {ttl_s}")
        self.kind = kind
        self.owner_id = owner_id
        self.key = _heartbeat_key(keys, kind, owner_id)
        self.registry = keys.registry(kind)
        self.ttl_s = ttl_s
        self.interval_s = interval_s
        self.status_of: Callable[[], S] = status_of
        self.outage = outage or Outage()
        self.beats = 0
        self._client = client
        self._script = client.register_script(_BEAT)
        self._where = describe_client(client)

    async def _write(self, *, claim: bool) -> bool:
        status = self.status_of()  # "at" is Redis's to stamp
        value = msgspec.json.encode(
            {f: getattr(status, f) for f in status.__struct_fields__ if f != "at"}
        )
        with translated(self._where):
            now: Any = await self._script(
                keys=[self.key, self.registry],
                args=[
                    value,
                    int(self.ttl_s * 1000),
                    self.owner_id,
                    REGISTRY_FORGET_S * 1000,
                    "nx" if claim else "",
                ],
            )
        if now:
            self.beats += 1
        return bool(now)

    async def beat(self) -> None:
        """Renew the heartbeat once; RedisUnavailableError when Redis cannot be reached."""
        await self._write(claim=False)

    async def claim(self) -> bool:
        """A first beat that must be the only owner of the key: False when another owner's
        heartbeat is there (nothing is written then)."""
        return await self._write(claim=True)

    async def run(self, stop: asyncio.Event) -> None:
        """Beat until ``stop`` is set; an outage is logged once and waited out."""
        while not stop.is_set():
            try:
                await self.beat()
            except RedisUnavailableError as error:
                self.outage.began(error, f"heartbeat {self.key}")
            else:
                self.outage.ended()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)

    async def clear(self) -> None:
        """Delete the heartbeat (a clean stop); an unreachable Redis lets it expire instead
        (logged)."""
        try:
            with translated(self._where):
                async with self._client.pipeline(transaction=False) as pipe:
                    pipe.delete(self.key)
                    pipe.zrem(self.registry, self.owner_id)
                    await pipe.execute()
        except RedisUnavailableError as error:
            log.warning("heartbeat %s expires by itself: %s", self.key, error)


def _heartbeat_key(keys: Keys, kind: Kind, owner_id: str) -> str:
    if kind == "supervisor":
        return keys.supervisor_heartbeat(owner_id)
    return keys.process_heartbeat(owner_id)


_undecodable_logged: set[str] = set()


def _decode(kind: Kind, key: str, raw: bytes) -> SupervisorStatus | ProcessStatus:
    cls = _STATUS[kind]
    try:
        return msgspec.json.decode(raw, type=cls)
    except msgspec.DecodeError as error:  # alive all the same: its key exists
        if key not in _undecodable_logged:
            _undecodable_logged.add(key)
            log.warning(
                "heartbeat %s does not decode (%s): counted alive, figures unknown", key, error
            )
        return cls()


def _beats(
    kind: Kind, keys: Keys, ids: Sequence[str], values: Sequence[Any], clock: Sequence[Any]
) -> dict[str, Any]:
    now = float(clock[0]) + float(clock[1]) / 1e6
    found: dict[str, Any] = {}
    for owner_id, raw in zip(ids, values, strict=True):
        if raw is None:
            continue
        key = _heartbeat_key(keys, kind, owner_id)
        status = _decode(kind, key, raw)
        found[owner_id] = Beat(status, max(0.0, now - status.at) if status.at else 0.0)
    return found


async def read(
    client: redis.asyncio.Redis, keys: Keys, kind: Kind, ids: Iterable[str]
) -> dict[str, Beat[Any]]:
    """The live heartbeats among ``ids`` of ``kind`` (one round trip), by id;
    RedisUnavailableError when Redis cannot be reached."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return {}
    with translated(describe_client(client)):
        async with client.pipeline(transaction=False) as pipe:
            pipe.mget([_heartbeat_key(keys, kind, i) for i in wanted])
            pipe.time()
            values, clock = await pipe.execute()
    return _beats(kind, keys, wanted, values, clock)


def read_sync(
    client: redis.Redis, keys: Keys, kind: Kind, ids: Iterable[str]
) -> dict[str, Beat[Any]]:
    """:func:`read` for synchronous code."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return {}
    with translated(describe_client(client)):
        pipe = client.pipeline(transaction=False)
        pipe.mget([_heartbeat_key(keys, kind, i) for i in wanted])
        pipe.time()
        values, clock = pipe.execute()
    return _beats(kind, keys, wanted, values, clock)


async def live(client: redis.asyncio.Redis, keys: Keys, kind: Kind) -> dict[str, Beat[Any]]:
    """Every live heartbeat of ``kind``, by id: the registry listed, then the keys read (two
    round trips; no SCAN). Works while the database is away."""
    with translated(describe_client(client)):
        members: Any = await client.zrange(keys.registry(kind), 0, -1)
    return await read(client, keys, kind, [m.decode() for m in members])


def last_beats_sync(
    client: redis.Redis, keys: Keys, kind: Kind, ids: Sequence[str]
) -> dict[str, float]:
    """When (Redis's clock, Unix seconds) each of ``ids`` beat last, as the registry remembers
    it for an hour: the last sign of life of an owner that is dead now."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return {}
    with translated(describe_client(client)):
        scores: Any = client.zmscore(keys.registry(kind), wanted)
    return {i: float(ms) / 1000 for i, ms in zip(wanted, scores, strict=True) if ms is not None}


def of_live_supervisors(
    processes: Mapping[str, Beat[ProcessStatus]], supervisors: Container[str]
) -> dict[str, Beat[ProcessStatus]]:
    """Of the live worker heartbeats ``processes`` (by id), those whose supervisor is among the
    live ``supervisors``: the worker of a dead supervisor is dead to the cluster, even while its
    own heartbeat still beats (a worker stuck in its stop)."""
    return {p: b for p, b in processes.items() if b.status.supervisor in supervisors}


async def mark_alive(client: redis.asyncio.Redis, keys: Keys, *, sends: bool, ttl_s: float) -> None:
    """Say that a worker is alive (and, with ``sends``, one that can send): the two keys
    :meth:`Keys.alive_workers` and :meth:`Keys.alive_senders`, expiring after ``ttl_s``. An
    application asks them (:func:`alive`) instead of reading every heartbeat."""
    with translated(describe_client(client)):
        pipe = client.pipeline(transaction=False)
        pipe.set(keys.alive_workers, b"1", px=int(ttl_s * 1000))
        if sends:
            pipe.set(keys.alive_senders, b"1", px=int(ttl_s * 1000))
        await pipe.execute()


async def alive(client: redis.asyncio.Redis, keys: Keys) -> tuple[bool, bool]:
    """Whether any worker is alive, and whether any that can send is (one round trip)."""
    with translated(describe_client(client)):
        workers, senders = await client.mget([keys.alive_workers, keys.alive_senders])
    return workers is not None, senders is not None

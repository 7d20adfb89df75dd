"""Heartbeats: a key per live supervisor or process, kept alive by its owner, expiring by itself.

Liveness is the key's existence, never a SQL row: a supervisor or process killed with SIGKILL
stops renewing its key, which expires ``ttl_s`` later (``supervisor.stale``,
``process.stale``). A Redis outage is waited out: the beat logs it once, retries every
``interval_s``, and goes on when Redis answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from typing import Any

import redis
import redis.asyncio

from tmi_cluster.bus.client import describe_client, translated
from tmi_cluster.bus.keys import Keys
from tmi_cluster.bus.windows import Outage
from tmi_cluster.errors import RedisUnavailableError

__all__ = [
    "Heartbeat",
    "live_processes",
    "live_supervisors",
    "of_live_supervisors",
    "scan_statuses",
    "statuses",
    "statuses_async",
]


class Heartbeat:
    """Keeps ``key`` (holding ``value``, or what ``value_of()`` returns at each beat) alive:
    renewed every ``interval_s``, expiring after ``ttl_s`` without renewal. ``beats`` counts the
    renewals Redis accepted."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        key: str,
        *,
        ttl_s: float,
        interval_s: float,
        value: str = "1",
        value_of: Callable[[], str] | None = None,
        outage: Outage | None = None,
    ) -> None:
        if not 0 < interval_s < ttl_s:
            raise ValueError(f"a heartbeat needs 0 < interval_s < ttl_s, got {interval_s}, {ttl_s}")
        self.key = key
        self.ttl_s = ttl_s
        self.interval_s = interval_s
        self.value = value
        self.value_of = value_of
        self.outage = outage or Outage()
        self.beats = 0
        self._client = client
        self._where = describe_client(client)

    async def beat(self) -> None:
        """Renew the key once; RedisUnavailableError when Redis cannot be reached."""
        if self.value_of is not None:
            self.value = self.value_of()
        with translated(self._where):
            await self._client.set(self.key, self.value, px=int(self.ttl_s * 1000))
        self.beats += 1

    async def claim(self) -> bool:
        """Set the key only if it does not exist (a first beat that must be the only owner);
        False when another owner's key is there."""
        if self.value_of is not None:
            self.value = self.value_of()
        with translated(self._where):
            created = await self._client.set(
                self.key, self.value, px=int(self.ttl_s * 1000), nx=True
            )
        if created:
            self.beats += 1
        return bool(created)

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
        """Delete the key (a clean stop); an unreachable Redis lets it expire instead."""
        with contextlib.suppress(RedisUnavailableError), translated(self._where):
            await self._client.delete(self.key)


def live_supervisors(client: redis.Redis, keys: Keys, ids: Iterable[str]) -> set[str]:
    """Which of the supervisor ``ids`` have a live heartbeat now (one round trip);
    RedisUnavailableError when Redis cannot be reached."""
    return _live(
        client, {supervisor_id: keys.supervisor_heartbeat(supervisor_id) for supervisor_id in ids}
    )


def live_processes(client: redis.Redis, keys: Keys, ids: Iterable[str]) -> set[str]:
    """Which of the worker process ``ids`` have a live heartbeat now (one round trip);
    RedisUnavailableError when Redis cannot be reached."""
    return _live(client, {process_id: keys.process_heartbeat(process_id) for process_id in ids})


def _live(client: redis.Redis, heartbeats: dict[str, str]) -> set[str]:
    if not heartbeats:
        return set()
    with translated(describe_client(client)):
        pipe = client.pipeline(transaction=False)
        for key in heartbeats.values():
            pipe.exists(key)
        found = pipe.execute()
    return {owner for owner, n in zip(heartbeats, found, strict=True) if n}


def of_live_supervisors(
    processes: Mapping[str, dict[str, Any]], supervisors: Container[str]
) -> dict[str, dict[str, Any]]:
    """Of the live heartbeats ``processes`` (by id), those whose supervisor (the status's
    ``supervisor``) is among the live ``supervisors``: the worker of a dead supervisor is dead
    to the cluster, even while its own heartbeat still beats (a worker stuck in its stop)."""
    return {p: s for p, s in processes.items() if str(s.get("supervisor", "")) in supervisors}


def _status(raw: bytes | str | None) -> dict[str, Any] | None:
    """A heartbeat's value as a status: a JSON object, or ``{"pid": ...}`` for a bare pid."""
    if raw is None:
        return None
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    try:
        value = json.loads(text)
    except ValueError:
        return {"value": text}
    return value if isinstance(value, dict) else {"value": value}


def statuses(client: redis.Redis, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The live heartbeats among ``keys`` (one round trip), each key's value as a status;
    RedisUnavailableError when Redis cannot be reached."""
    if not keys:
        return {}
    with translated(describe_client(client)):
        values: Any = client.mget(list(keys))
    return {k: s for k, v in zip(keys, values, strict=True) if (s := _status(v)) is not None}


async def statuses_async(
    client: redis.asyncio.Redis, keys: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """:func:`statuses` for asyncio code."""
    if not keys:
        return {}
    with translated(describe_client(client)):
        values: Any = await client.mget(list(keys))
    return {k: s for k, v in zip(keys, values, strict=True) if (s := _status(v)) is not None}


async def scan_statuses(
    client: redis.asyncio.Redis, keys: Keys, kind: str
) -> dict[str, dict[str, Any]]:
    """Every live heartbeat of ``kind`` ("process" or "supervisor") found in Redis alone (no
    SQL: it works while the database is away), by id, with its status."""
    pattern = keys.heartbeat_pattern(kind)
    start = len(f"{keys.prefix}{kind}:")
    found: list[str] = []
    with translated(describe_client(client)):
        async for key in client.scan_iter(match=pattern, count=1000):
            found.append(key.decode() if isinstance(key, bytes) else key)
    values = await statuses_async(client, found)
    return {key[start : -len(":heartbeat")]: status for key, status in values.items()}


async def mark_alive(client: redis.asyncio.Redis, keys: Keys, *, sends: bool, ttl_s: float) -> None:
    """Say that a worker is alive (and, with ``sends``, one that can send): the two keys
    :meth:`Keys.alive_workers` and :meth:`Keys.alive_senders`, expiring after ``ttl_s``. An
    application asks them (:func:`alive`) instead of scanning every heartbeat."""
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

"""Cluster-wide chores: who is alive, purging the dead.

- :func:`live_processes` reads the records of every worker process in SQL and keeps those with a
  heartbeat (with their status), one SQL read and one Redis round trip.
- :func:`purge`: supervisors and processes whose records claim them alive but whose heartbeat
  is gone (after their ``stale`` time since they started) are recorded dead, except while
  Redis has just forgotten everything (no assignment epoch yet, or a new one younger than
  ``supervisor.stale``: the heartbeats of the living are not back yet); the keys of dead
  processes are deleted (what they held, their notices, their draining mark; their channels
  are the coordinator's to place again, as it does for any owner without a heartbeat); the rows
  of the dead
  (and of the cleanly stopped) older than ``retention_s`` are deleted (0: all of them), the
  history stays. Supervisors run it every :data:`PURGE_EVERY_S` seconds under one Redis lock,
  so that it runs once for the whole cluster, not once per supervisor; ``tmi-cluster purge``
  runs it at once.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio

from tmi_cluster.bus import Assignment, Keys, statuses_async, translated
from tmi_cluster.bus.client import describe_client
from tmi_cluster.bus.heartbeat import of_live_supervisors
from tmi_cluster.listing import CLAIMS_ALIVE
from tmi_cluster.store import Store

__all__ = [
    "PURGE_EVERY_S",
    "RETENTION_S",
    "PurgeResult",
    "live_processes",
    "live_supervisors",
    "purge",
    "purge_once",
]

#: Seconds between two automatic purges of the cluster.
PURGE_EVERY_S = 5.0
#: Rows of the dead and stopped kept this long by the automatic purge (for ``list``).
RETENTION_S = 3600.0


@dataclass(frozen=True)
class PurgeResult:
    """What a purge found and did."""

    dead_supervisors: list[str]
    dead_processes: list[str]
    released: int
    deleted: int


async def live_processes(
    store: Store, client: redis.asyncio.Redis, keys: Keys
) -> dict[str, dict[str, Any]]:
    """Every live worker process of the cluster whose supervisor is alive too: its id and its
    heartbeat's status."""
    records = await asyncio.to_thread(store.processes)
    found = await _live(client, [p.id for p in records if p.state in CLAIMS_ALIVE],
                        keys.process_heartbeat)  # fmt: skip
    named = sorted({str(status.get("supervisor", "")) for status in found.values()})
    supervisors = await _live(client, named, keys.supervisor_heartbeat)
    return of_live_supervisors(found, supervisors)


async def live_supervisors(
    store: Store, client: redis.asyncio.Redis, keys: Keys
) -> dict[str, dict[str, Any]]:
    """Every live supervisor of the cluster: its id and its heartbeat's status."""
    records = await asyncio.to_thread(store.supervisors)
    return await _live(client, [s.id for s in records if s.state in CLAIMS_ALIVE],
                       keys.supervisor_heartbeat)  # fmt: skip


async def _live(
    client: redis.asyncio.Redis, ids: list[str], key_of: Callable[[str], str]
) -> dict[str, dict[str, Any]]:
    found = await statuses_async(client, [key_of(i) for i in ids])
    return {i: found[key_of(i)] for i in ids if key_of(i) in found}


async def purge(
    store: Store,
    client: redis.asyncio.Redis,
    keys: Keys,
    *,
    retention_s: float = RETENTION_S,
    now: datetime | None = None,
) -> PurgeResult:
    """Purge the cluster once (see the module's docstring)."""
    at = now or datetime.now(UTC)
    supervisors = await asyncio.to_thread(store.supervisors)
    processes = await asyncio.to_thread(store.processes)
    supervisor_grace = timedelta(seconds=keys.supervisor_ttl_s)
    process_grace = timedelta(seconds=keys.process_ttl_s)
    claims = [s for s in supervisors if s.state in CLAIMS_ALIVE]
    process_claims = [p for p in processes if p.state in CLAIMS_ALIVE]
    found = await statuses_async(
        client,
        [keys.supervisor_heartbeat(s.id) for s in claims]
        + [keys.process_heartbeat(p.id) for p in process_claims],
    )
    if await _redis_forgot_recently(client, keys):
        claims, process_claims = [], []  # a missing heartbeat may only not be back yet
    dead_supervisors = [
        s.id
        for s in claims
        if keys.supervisor_heartbeat(s.id) not in found and at - s.started_at > supervisor_grace
    ]
    dead_processes = [
        p.id
        for p in process_claims
        if keys.process_heartbeat(p.id) not in found and at - p.last_seen_at > process_grace
    ]
    if dead_supervisors or dead_processes:
        await asyncio.to_thread(store.mark_dead, dead_supervisors, dead_processes)
    assignment = Assignment(client, keys)
    released = 0
    gone = set(dead_processes) | {p.id for p in processes if p.state not in CLAIMS_ALIVE}
    for process_id in sorted(gone):
        released += len(await assignment.of(process_id))
        await assignment.forget(process_id)
    if dead_supervisors:  # their orders streams: nobody reads them any more
        with translated(describe_client(client)):
            await client.delete(*(keys.supervisor_commands(s) for s in dead_supervisors))
    cutoff = at - timedelta(seconds=retention_s)
    old_supervisors = [
        s.id
        for s in supervisors
        if (s.id in dead_supervisors or s.state not in CLAIMS_ALIVE)
        and (retention_s <= 0 or (s.stopped_at or at) <= cutoff)
    ]
    old_processes = [
        p.id
        for p in processes
        if (p.id in dead_processes or p.state not in CLAIMS_ALIVE)
        and (retention_s <= 0 or (p.stopped_at or at) <= cutoff)
    ]
    if old_supervisors or old_processes:
        await asyncio.to_thread(
            store.delete_records, supervisor_ids=old_supervisors, process_ids=old_processes
        )
    return PurgeResult(
        dead_supervisors, dead_processes, released, len(old_supervisors) + len(old_processes)
    )


async def _redis_forgot_recently(client: redis.asyncio.Redis, keys: Keys) -> bool:
    """Whether Redis has no assignment epoch, or got a new one within ``supervisor.stale``
    (a restart forgot every heartbeat; the live ones are written again within seconds)."""
    with translated(describe_client(client)):
        epoch, fresh = await client.mget([keys.assignment_epoch, keys.assignment_fresh])
    return epoch is None or fresh is not None


async def purge_once(
    store: Store, client: redis.asyncio.Redis, keys: Keys, *, lock_s: float = PURGE_EVERY_S
) -> PurgeResult | None:
    """:func:`purge` if no other supervisor purged in the last ``lock_s`` seconds (a lock in
    Redis that is left to expire: at most one purge per period for the whole cluster); None
    when another one did."""
    token = secrets.token_hex(8)
    key = keys.lock("purge")
    with translated(describe_client(client)):
        taken = await client.set(key, token, px=int(lock_s * 1000), nx=True)
    if not taken:
        return None
    return await purge(store, client, keys)

"""Cluster-wide chores: who is alive, purging the dead.

- :func:`live_processes` reads the records of every worker process in SQL and keeps those with a
  heartbeat (with their status), one SQL read and one Redis round trip.
- :func:`purge`: supervisors and processes whose records claim them alive but whose heartbeat
  is gone (after their ``stale`` time since they started) are recorded dead, except while
  Redis has just forgotten everything (no assignment epoch yet, or a new one younger than
  ``supervisor.stale``: the heartbeats of the living are not back yet); the keys of dead
  processes are deleted (what they held, their notices, their draining mark; their channels
  are the coordinator's to place again, as it does for any owner without a heartbeat), but
  never those of one that beats again (a process recorded dead while its host was cut off,
  then back: it goes on, and the others must see what it holds); the rows
  of the dead
  (and of the cleanly stopped) older than ``retention_s`` are deleted (0: all of them), the
  history stays. Supervisors run it every :data:`PURGE_EVERY_S` seconds under one Redis lock,
  so that it runs once for the whole cluster, not once per supervisor; ``tmi-cluster purge``
  runs it at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Container, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from tmi_cluster.bus import (
    Assignment,
    AsyncRedis,
    Beat,
    Coordination,
    Keys,
    ProcessStatus,
    SupervisorStatus,
    forget_orders,
    read,
)
from tmi_cluster.bus.heartbeat import of_live_supervisors
from tmi_cluster.cluster.listing import CLAIMS_ALIVE
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
    store: Store, client: AsyncRedis, keys: Keys
) -> dict[str, Beat[ProcessStatus]]:
    """Every live worker process of the cluster whose supervisor is alive too: its id and its
    heartbeat."""
    records = await asyncio.to_thread(store.processes)
    found: dict[str, Beat[ProcessStatus]] = await read(
        client, keys, "process", [p.id for p in records if p.state in CLAIMS_ALIVE]
    )
    named = sorted({beat.status.supervisor for beat in found.values()})
    supervisors = await read(client, keys, "supervisor", named)
    return of_live_supervisors(found, supervisors)


async def live_supervisors(
    store: Store, client: AsyncRedis, keys: Keys
) -> dict[str, Beat[SupervisorStatus]]:
    """Every live supervisor of the cluster: its id and its heartbeat."""
    records = await asyncio.to_thread(store.supervisors)
    return await read(
        client, keys, "supervisor", [s.id for s in records if s.state in CLAIMS_ALIVE]
    )


class _Record(Protocol):
    """What the purge reads of a supervisor or process record."""

    @property
    def id(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def stopped_at(self) -> datetime | None: ...


async def purge(
    store: Store,
    client: AsyncRedis,
    keys: Keys,
    *,
    retention_s: float = RETENTION_S,
    now: datetime | None = None,
    coordination: Coordination | None = None,
) -> PurgeResult:
    """Purge the cluster once (see the module's docstring)."""
    at = now or datetime.now(UTC)
    supervisors = await asyncio.to_thread(store.supervisors)
    processes = await asyncio.to_thread(store.processes)
    claims = [s for s in supervisors if s.state in CLAIMS_ALIVE]
    process_claims = [p for p in processes if p.state in CLAIMS_ALIVE]
    live_supervisors = await read(client, keys, "supervisor", [s.id for s in claims])
    live_workers = await read(client, keys, "process", [p.id for p in process_claims])
    if await (coordination or Coordination(client, keys)).forgot_recently():
        claims, process_claims = [], []  # a missing heartbeat may only not be back yet
    # A supervisor's grace counts from its start, a process's from its record's last write.
    dead_supervisors = _dead(
        [(s.id, s.started_at) for s in claims], live_supervisors, keys.supervisor_ttl_s, at
    )
    dead_processes = _dead(
        [(p.id, p.last_seen_at) for p in process_claims], live_workers, keys.process_ttl_s, at
    )
    if dead_supervisors or dead_processes:
        await asyncio.to_thread(store.mark_dead, dead_supervisors, dead_processes)
    gone = set(dead_processes) | {p.id for p in processes if p.state not in CLAIMS_ALIVE}
    released = await _release(Assignment(client, keys), gone)
    await forget_orders(client, keys, dead_supervisors)  # nobody reads them any more
    old_supervisors = _expired(supervisors, dead_supervisors, retention_s, at)
    old_processes = _expired(processes, dead_processes, retention_s, at)
    if old_supervisors or old_processes:
        await asyncio.to_thread(
            store.delete_records, supervisor_ids=old_supervisors, process_ids=old_processes
        )
    return PurgeResult(
        dead_supervisors, dead_processes, released, len(old_supervisors) + len(old_processes)
    )


def _dead(
    claims: list[tuple[str, datetime]], live: Container[str], grace_s: float, at: datetime
) -> list[str]:
    """Of ``claims`` (id, since when), those with no heartbeat (not in ``live``) for longer
    than ``grace_s``."""
    grace = timedelta(seconds=grace_s)
    return [id_ for id_, since in claims if id_ not in live and at - since > grace]


async def _release(assignment: Assignment, gone: set[str]) -> int:
    """Forget the assignment's keys of the processes ``gone``, but of none that beats again
    (recorded dead while cut off, then back: its keys are its own again, and deleting them
    would hide what it holds from the workers taking its channels over); how many channels
    the forgotten ones had."""
    released = 0
    for process_id in sorted(gone):
        channels = len(await assignment.of(process_id))
        if await assignment.forget(process_id, unless_alive=True):
            released += channels
    return released


def _expired(
    records: Sequence[_Record], dead: list[str], retention_s: float, at: datetime
) -> list[str]:
    """The ids of ``records`` of the dead (``dead``, or recorded so) and the stopped whose end
    is older than ``retention_s`` (0: all of them)."""
    cutoff = at - timedelta(seconds=retention_s)
    return [
        r.id
        for r in records
        if (r.id in dead or r.state not in CLAIMS_ALIVE)
        and (retention_s <= 0 or (r.stopped_at or at) <= cutoff)
    ]


async def purge_once(
    store: Store, client: AsyncRedis, keys: Keys, *, lock_s: float = PURGE_EVERY_S
) -> PurgeResult | None:
    """:func:`purge` if no other supervisor purged in the last ``lock_s`` seconds (a lock in
    Redis that is left to expire: at most one purge per period for the whole cluster); None
    when another one did."""
    coordination = Coordination(client, keys)
    if not await coordination.take_lock("purge", lock_s):
        return None
    return await purge(store, client, keys, coordination=coordination)

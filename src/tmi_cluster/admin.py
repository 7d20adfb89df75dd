"""What the cluster commands of the CLI do (``terminate``, ``purge``, ``join``, ``part``), as
library functions.

``join`` and ``part`` are the thin path that writes the assignment directly until the
coordinator owns it: a joined channel goes to the live worker process with the fewest channels
and is recorded as wanted in SQL (so that a restored cluster finds it), a parted one is
unassigned and no longer wanted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import redis.asyncio

from tmi_cluster import housekeeping
from tmi_cluster.bus import (
    Assignment,
    Keys,
    Order,
    connect_async,
    describe_client,
    send_order,
    statuses_async,
    translated,
)
from tmi_cluster.config import Settings
from tmi_cluster.errors import NotAvailableError, RedisUnavailableError, TmiClusterError
from tmi_cluster.logins import normalise_logins
from tmi_cluster.store import Store

__all__ = ["CHANNEL_STATES", "channels", "join", "part", "purge", "terminate"]

#: The states ``tmi-cluster channels`` shows.
CHANNEL_STATES = ("wanted", "joining", "joined", "moving", "failed", "parted")
_JOINED = "joined"


@contextlib.asynccontextmanager
async def _redis(settings: Settings, command: str) -> AsyncIterator[redis.asyncio.Redis]:
    """The command's Redis client, checked first (RedisUnavailableError naming the server
    unless Redis answers), closed after."""
    client = connect_async(settings, name=f"tmi-cluster:{command}")
    try:
        with translated(describe_client(client)):
            await client.ping()
        yield client
    finally:
        await client.aclose()


async def terminate(settings: Settings, supervisor_id: str | None = None) -> dict[str, bool]:
    """Ask one supervisor (or every live one) to stop gracefully; wait until each has stopped
    (its heartbeat gone), at most ``process.timeout`` plus 15 s, unless ``fast_termination``.
    Return each supervisor's id and whether it stopped; TmiClusterError for an unknown or dead
    supervisor id."""
    keys = Keys.from_settings(settings)
    async with _redis(settings, "terminate") as client:
        with Store.from_settings(settings) as store:
            live = await housekeeping.live_supervisors(store, client, keys)
        targets = [supervisor_id] if supervisor_id is not None else sorted(live)
        if supervisor_id is not None and supervisor_id not in live:
            raise TmiClusterError(
                f"no live supervisor {supervisor_id!r} (see 'tmi-cluster list'; live: "
                f"{', '.join(sorted(live)) or 'none'})"
            )
        for target in targets:
            await send_order(client, keys, target, Order.TERMINATE)
        stopped = dict.fromkeys(targets, False)
        if settings.fast_termination:
            return stopped
        deadline = time.monotonic() + settings.process.timeout + 15.0
        while not all(stopped.values()) and time.monotonic() < deadline:
            try:
                found = await statuses_async(
                    client, [keys.supervisor_heartbeat(t) for t in targets]
                )
            except RedisUnavailableError:
                if not settings.embedded_redis:
                    raise
                return dict.fromkeys(targets, True)  # the host's Redis went with its supervisor
            for target in targets:
                stopped[target] = keys.supervisor_heartbeat(target) not in found
            if not all(stopped.values()):
                await asyncio.sleep(0.2)
        return stopped


async def purge(settings: Settings) -> housekeeping.PurgeResult:
    """Purge the cluster now (every dead or stopped record deleted)."""
    keys = Keys.from_settings(settings)
    async with _redis(settings, "purge") as client:
        with Store.from_settings(settings) as store:
            return await housekeeping.purge(store, client, keys, retention_s=0)


async def join(settings: Settings, channels: list[str], *, timeout_s: float) -> dict[str, str]:
    """Join ``channels`` (InvalidChannelError before anything is done for a bad name); return
    each one's outcome: ``joined (process)``, the failure's reason, ``no answer within N s``.
    NotAvailableError when no worker process is alive."""
    names = normalise_logins(channels)
    keys = Keys.from_settings(settings)
    async with _redis(settings, "join") as client:
        assignment = Assignment(client, keys)
        with Store.from_settings(settings) as store:
            statuses = await housekeeping.live_processes(store, client, keys)
            if not statuses:
                raise NotAvailableError(
                    "no live worker process to join channels: start one with 'tmi-cluster run'"
                )
            await asyncio.to_thread(store.want, names)
        # Paused workers take no new work: prefer the others; with none, say so at once.
        going = sorted(p for p, s in statuses.items() if s.get("state") != "paused")
        live = going or sorted(statuses)
        owners = await assignment.owners(names)
        results: dict[str, str] = {}
        for channel, owner in owners.items():
            if owner in live:
                held = await assignment.holding({channel: owner})
                if held:
                    results[channel] = f"joined ({owner}, already)"
        after = await assignment.last_report_id()
        waiting = [n for n in names if n not in results]
        await housekeeping.spread(assignment, waiting, live)
        placed = await assignment.owners(waiting)
        deadline = time.monotonic() + (timeout_s if going else 0.0)
        while waiting and time.monotonic() < deadline:
            for report in await assignment.reports(after, deadline - time.monotonic()):
                after = report.id
                if report.channel in waiting and report.process == placed.get(report.channel):
                    shown = report.result
                    results[report.channel] = (
                        f"joined ({report.process})" if shown == "joined" else shown
                    )
                    waiting.remove(report.channel)
        for channel in waiting:
            results[channel] = (
                f"no answer within {timeout_s:g} s (assigned to {placed[channel]})"
                if going
                else f"assigned to {placed[channel]}, which is paused: it joins on SIGCONT"
            )
        return {name: results[name] for name in names}


async def part(settings: Settings, channels: list[str]) -> dict[str, str | None]:
    """Part ``channels``: unassigned (their processes part them) and no longer wanted; return
    each one's former owner."""
    names = normalise_logins(channels)
    keys = Keys.from_settings(settings)
    async with _redis(settings, "part") as client:
        with Store.from_settings(settings) as store:
            await asyncio.to_thread(store.unwant, names)
        return await Assignment(client, keys).unassign(names)


async def channels(
    settings: Settings, names: list[str], *, state: str | None = None
) -> list[dict[str, str | None]]:
    """Each known channel's state (one of :data:`CHANNEL_STATES`), owner process, the time of
    its last change, and its last failure (the latest failed join reported for it); the named
    ones only when ``names`` is not empty; those in ``state`` only when given."""
    logins = normalise_logins(names)
    keys = Keys.from_settings(settings)
    async with _redis(settings, "channels") as client:
        assignment = Assignment(client, keys)
        with Store.from_settings(settings) as store:
            rows = await asyncio.to_thread(store.channel_states, logins)
            live = await housekeeping.live_processes(store, client, keys)
        owners = await assignment.owners([login for login, _, _ in rows])
        held_by: dict[str, set[str]] = {}
        for process_id in live:
            for channel in await assignment.held(process_id):
                held_by.setdefault(channel, set()).add(process_id)
        failures = await _last_failures(assignment)
        shown: list[dict[str, str | None]] = []
        for login, wanted, since in rows:
            owner = owners.get(login)
            holders = held_by.get(login, set())
            failure = failures.get(login)
            if not wanted:
                current = "parted"
            elif owner is None:
                current = "wanted"
            elif owner in holders:
                current = "moving" if holders - {owner} else _JOINED
            elif holders:
                current = "moving"
            else:
                current = "failed" if failure is not None and failure[0] == owner else "joining"
            if state is None or current == state:
                shown.append(
                    {
                        "channel": login,
                        "state": current,
                        "process": owner,
                        "since": since.isoformat(),
                        "failure": failure[1] if failure is not None else None,
                    }
                )
        return shown


async def _last_failures(assignment: Assignment) -> dict[str, tuple[str, str]]:
    """The latest report of each channel that is a failure: channel -> (process, reason)."""
    latest: dict[str, tuple[str, str]] = {}
    after = "0-0"
    while reports := await assignment.reports(after, 0.001):
        after = reports[-1].id
        for report in reports:
            latest[report.channel] = (report.process, report.result)
    return {c: v for c, v in latest.items() if v[1] != _JOINED}

"""What the web pages show: one :class:`Snapshot` of the cluster, read at most once a second
however many browsers and scrapers ask (:class:`ClusterView`).

A snapshot is what ``tmi-cluster list --json``, ``health`` and ``channels --json`` say, read
the same way (the SQL records, their liveness from the Redis heartbeats, the channels' live
state), plus the figures of the dashboard and the metrics: messages and commands per second
(the live workers' heartbeats, summed), channels by state, the auto-scaler's state and the
streams' lengths. When Redis cannot be asked, the snapshot still comes (the database's part),
with ``status`` ``down`` and the reason; a database that cannot be read raises
:class:`~tmi_cluster.errors.StorageError` (the pages answer 503 with it).
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tmi_cluster.bus import AsyncRedis, Keys, close_client, connect_async
from tmi_cluster.bus.heartbeat import ProcessStatus
from tmi_cluster.bus.streams import Scaled, StreamLengths, recent_scaled, stream_lengths
from tmi_cluster.cluster import admin, listing
from tmi_cluster.config import Settings
from tmi_cluster.errors import EmbeddedRedisError, RedisUnavailableError
from tmi_cluster.store import Store
from tmi_cluster.store.models import ProcessRecord, SupervisorRecord

__all__ = ["CHANNEL_COUNTS", "STATUSES", "ClusterView", "Snapshot"]

#: The cluster's status: ``operational`` (healthy by the rule of ``tmi-cluster health``),
#: ``degraded`` (not healthy, with the reason), ``down`` (no supervisor alive, or Redis cannot
#: be asked).
STATUSES = ("operational", "degraded", "down")
#: The channel states counted in the statistics (the keys are a contract).
CHANNEL_COUNTS = ("joined", "joining", "failed", "wanted", "unauthorized")


@dataclass(frozen=True)
class Snapshot:
    """The cluster at one moment (``taken``: ``time.time()`` of this process)."""

    taken: float
    status: str
    reason: str
    supervisors: Sequence[SupervisorRecord]
    processes: Sequence[ProcessRecord]
    liveness: listing.Liveness
    #: ``tmi-cluster list --json``'s object.
    listing: Mapping[str, Any]
    #: Every known channel, sorted by name (:func:`~tmi_cluster.cluster.admin.channel_json`
    #: makes a row of ``tmi-cluster channels --json`` of one).
    channels: Sequence[admin.ChannelRow]
    #: Whether the channels' live state was read (Redis), and why not when it was not.
    channels_live: bool = True
    channels_warning: str | None = None
    #: The auto-scaler's state (``tmi-cluster scale``'s), None when Redis cannot be asked.
    scaling: Mapping[str, Any] | None = None
    #: The supervisors' latest changes of size, newest first.
    scaled: Sequence[Scaled] = ()
    streams: StreamLengths | None = None
    #: Channels by state, every state of ``channels --json`` (zero included).
    channel_states: Mapping[str, int] = field(default_factory=dict)
    #: Channels one worker process holds at 100 % (``auto_scale.thresholds.channels``).
    channel_capacity: int = 0
    #: How many processes hold each channel (``coordinator.replicas``).
    copies: int = 1

    @property
    def usage_percent(self) -> float | None:
        """The channels to hold (wanted, joining, joined, moving; each copy counted) over the
        live processes' capacity, in percent: the auto-scaler's measure; None with no live
        process."""
        if not self.live_processes or self.channel_capacity <= 0:
            return None
        states = self.channel_states
        held = sum(states.get(s, 0) for s in ("wanted", "joining", "joined", "moving"))
        return 100.0 * held * self.copies / (len(self.live_processes) * self.channel_capacity)

    @functools.cached_property
    def _names(self) -> tuple[str, list[int]]:
        """Every channel's name in one text, and where each starts (for :meth:`search`)."""
        offsets = []
        at = 0
        for row in self.channels:
            offsets.append(at)
            at += len(row.channel) + 1
        return "\n".join(row.channel for row in self.channels), offsets

    @functools.cached_property
    def _by_process(self) -> dict[str, list[int]]:
        owned: dict[str, list[int]] = {}
        for index, row in enumerate(self.channels):
            if row.process is not None:
                owned.setdefault(row.process, []).append(index)
        return owned

    def search(self, text: str) -> list[int]:
        """The indexes in :attr:`channels` of the rows whose name or owner process holds
        ``text`` (lowercase), in order: a scan of one text, not of every row."""
        names, offsets = self._names
        found: set[int] = set()
        at = names.find(text)
        while at != -1:
            found.add(bisect.bisect_right(offsets, at) - 1)
            at = names.find(text, at + 1)
        for process, indexes in self._by_process.items():
            if text in process.lower():
                found.update(indexes)
        return sorted(found)

    @property
    def live_processes(self) -> dict[str, ProcessStatus]:
        """The live worker processes' heartbeat statuses, by id."""
        beats = self.liveness.processes or {}
        return {pid: beat.status for pid, beat in beats.items()}

    @property
    def messages_per_s(self) -> float:
        """Chat messages read per second by the whole cluster now."""
        return round(sum(s.messages_per_s for s in self.live_processes.values()), 1)

    @property
    def commands_per_s(self) -> float:
        """Send commands answered per second by the whole cluster now."""
        return round(sum(s.commands_per_s for s in self.live_processes.values()), 1)

    def statistics(self) -> dict[str, Any]:
        """``GET {path}/api/statistics`` (the first keys are a contract; more may follow)."""
        live_supervisors = self.liveness.supervisors or {}
        return {
            "status": self.status,
            "reason": self.reason,
            "messages_per_s": self.messages_per_s,
            "commands_per_s": self.commands_per_s,
            "channels": {state: self.channel_states.get(state, 0) for state in CHANNEL_COUNTS},
            "supervisors": len(live_supervisors),
            "processes": len(self.live_processes),
            "channel_states": dict(self.channel_states),
            "scaling": dict(self.scaling) if self.scaling is not None else None,
            "scaled": [
                {
                    "at": entry.at,
                    "supervisor": entry.event.supervisor,
                    "before": entry.event.before,
                    "after": entry.event.after,
                    "cause": entry.event.cause,
                }
                for entry in self.scaled
            ],
            "streams": (
                {
                    "events": self.streams.events,
                    "send_commands": self.streams.send_commands,
                    "dead_letters": self.streams.dead_letters,
                    "groups": [
                        {"group": g.group, "pending": g.pending, "lag": g.lag}
                        for g in self.streams.groups
                    ],
                }
                if self.streams is not None
                else None
            ),
            "taken": self.taken,
        }


def _status(liveness: listing.Liveness, healthy: bool, reason: str) -> tuple[str, str]:
    if liveness.supervisors is None:
        return "down", reason
    if not liveness.supervisors:
        return "down", "no supervisor is alive" + ("" if healthy else f": {reason}")
    return ("operational", reason) if healthy else ("degraded", reason)


class ClusterView:
    """Snapshots of the cluster of ``settings``, one read at most every ``max_age_s`` seconds
    however many ask, or every three times as long as a read takes when that is longer (a read
    of 100,000 channels takes about a second: the pages then show figures up to about 3 s
    old, and the reads take a third of a core). Concurrent requests share the read under way
    and are answered from the last snapshot meanwhile, up to ``stale_s`` old. Holds a store for
    its life: ``await view.aclose()``; each read has a Redis client of its own, in a thread."""

    def __init__(
        self, settings: Settings, *, max_age_s: float = 1.0, stale_s: float = 10.0
    ) -> None:
        self.settings = settings
        self.keys = Keys.from_settings(settings)
        self.max_age_s = max_age_s
        self.stale_s = stale_s
        self._store: Store | None = None
        self._read_s = 0.0  # how long the last read took
        self._last: Snapshot | None = None
        self._reading: asyncio.Task[Snapshot] | None = None

    async def snapshot(self) -> Snapshot:
        """The latest snapshot. One older than ``max_age_s`` is still answered at once while a
        new one is read in the background (a request never waits for a read, but the first,
        or when the last is older than ``stale_s``); a read that failed (the database
        unreachable) is raised to the next caller, and nothing stale is shown after it."""
        task = self._reading
        if task is not None and task.done():
            self._reading = None
            if not task.cancelled():
                error = task.exception()
                if error is not None:
                    self._last = None
                    raise error
                self._last = task.result()
        last = self._last
        age = time.time() - last.taken if last is not None else math.inf
        # a big cluster's read takes long: read at most a third of the time
        if last is not None and age < max(self.max_age_s, 3 * self._read_s):
            return last
        if self._reading is None:
            self._reading = asyncio.create_task(self.read(), name="web snapshot")
        if last is not None and age < self.stale_s:
            return last
        # none yet, or too old to show: wait for it (shielded: one caller that goes away does
        # not cancel the read the others wait for)
        snapshot = await asyncio.shield(self._reading)
        self._last = snapshot
        return snapshot

    async def aclose(self) -> None:
        """Close the store (a read under way is awaited first)."""
        if self._reading is not None and not self._reading.done():
            await asyncio.wait([self._reading])
        if self._store is not None:
            self._store.close()
            self._store = None

    def store(self) -> Store:
        """The view's store (opened on first use; SQLAlchemy's engine serves any thread)."""
        if self._store is None:
            self._store = Store.from_settings(self.settings)
        return self._store

    async def read(self, *, channels: bool = True) -> Snapshot:
        """A snapshot read now (what :meth:`snapshot` does at most every ``max_age_s``);
        without its ``channels`` (the costly part of a big cluster's) when asked."""
        # In a thread with an event loop of its own: the work of a big cluster's snapshot
        # (100,000 channels: about a second) never holds up the requests of the server's loop.
        started = time.monotonic()
        snapshot = await asyncio.to_thread(asyncio.run, self._read_here(channels))
        self._read_s = time.monotonic() - started
        return snapshot

    async def _read_here(self, channels: bool) -> Snapshot:
        client: AsyncRedis | None = None

        async def redis() -> AsyncRedis:
            nonlocal client
            if client is None:
                client = connect_async(self.settings, name="tmi-cluster:web")
            return client

        try:
            handles = admin.Handles(redis=redis, store=self.store())
            return await self._read_with(handles, with_channels=channels)
        finally:
            if client is not None:
                await close_client(client)

    async def _read_with(self, handles: admin.Handles, *, with_channels: bool) -> Snapshot:
        settings = self.settings
        store = self.store()
        supervisors, processes = store.supervisors(), store.processes()
        liveness = listing.check_liveness(settings, supervisors, processes)
        healthy, reason = listing.health(
            supervisors, processes, liveness, minimum=settings.auto_scale.processes.min
        )
        status, reason = _status(liveness, healthy, reason)
        warnings: list[str] = []
        channels: list[admin.ChannelRow] = []
        channels_live = liveness.supervisors is not None
        if with_channels:
            channels, channels_live = await admin.channel_table(
                settings, [], warn=warnings.append, handles=handles
            )
        counts = Counter(row.state for row in channels)
        scaling: dict[str, Any] | None = None
        streams: StreamLengths | None = None
        scaled: list[Scaled] = []
        if liveness.supervisors is not None:
            try:
                scaling = await admin.scaling(settings, handles=handles)
                assert handles.redis is not None
                client = await handles.redis()
                streams = await stream_lengths(client, self.keys)
                scaled = await recent_scaled(client, self.keys)
            except (RedisUnavailableError, EmbeddedRedisError):
                pass  # Redis went between two reads: the next snapshot says so
        return Snapshot(
            taken=time.time(),
            status=status,
            reason=reason,
            supervisors=supervisors,
            processes=processes,
            liveness=liveness,
            listing=listing.cluster_json(supervisors, processes, liveness),
            channels=channels,
            channels_live=channels_live,
            channels_warning=warnings[0] if warnings else None,
            scaling=scaling,
            scaled=scaled,
            streams=streams,
            channel_states={state: counts.get(state, 0) for state in admin.CHANNEL_STATES},
            channel_capacity=self.settings.auto_scale.thresholds.channels,
            copies=self.settings.coordinator.replicas,
        )

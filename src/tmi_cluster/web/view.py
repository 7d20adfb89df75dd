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
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tmi_cluster.bus import AsyncRedis, Keys, close_client, connect_async
from tmi_cluster.bus.heartbeat import ProcessStatus
from tmi_cluster.bus.streams import StreamLengths, stream_lengths
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
    #: ``tmi-cluster channels --json``'s rows.
    channels: Sequence[Mapping[str, Any]]
    #: Why the channels' live state is unknown (Redis), if it is.
    channels_warning: str | None = None
    #: The auto-scaler's state (``tmi-cluster scale``'s), None when Redis cannot be asked.
    scaling: Mapping[str, Any] | None = None
    streams: StreamLengths | None = None
    #: Channels by state, every state of ``channels --json`` (zero included).
    channel_states: Mapping[str, int] = field(default_factory=dict)

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
            "streams": (
                {
                    "events": self.streams.events,
                    "send_commands": self.streams.send_commands,
                    "dead_letters": self.streams.dead_letters,
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
    """Snapshots of the cluster of ``settings``, one at most every ``max_age_s`` seconds
    (concurrent requests share the one being read). Holds one Redis client and one store for
    its life: ``await view.aclose()``."""

    def __init__(self, settings: Settings, *, max_age_s: float = 1.0) -> None:
        self.settings = settings
        self.keys = Keys.from_settings(settings)
        self.max_age_s = max_age_s
        self._store: Store | None = None
        self._client: AsyncRedis | None = None
        self._last: Snapshot | None = None
        self._reading: asyncio.Task[Snapshot] | None = None

    async def snapshot(self) -> Snapshot:
        """The latest snapshot, read anew when older than ``max_age_s``."""
        last = self._last
        if last is not None and time.time() - last.taken < self.max_age_s:
            return last
        if self._reading is None or self._reading.done():
            self._reading = asyncio.create_task(self._read(), name="web snapshot")
        # shielded: one caller that goes away does not cancel the read the others wait for
        snapshot = await asyncio.shield(self._reading)
        self._last = snapshot
        return snapshot

    async def aclose(self) -> None:
        """Close the client and the store (a read under way is awaited first)."""
        if self._reading is not None and not self._reading.done():
            await asyncio.wait([self._reading])
        if self._client is not None:
            await close_client(self._client)
            self._client = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def store(self) -> Store:
        """The view's store (opened on first use)."""
        if self._store is None:
            self._store = Store.from_settings(self.settings)
        return self._store

    async def redis(self) -> AsyncRedis:
        """The view's Redis client (opened on first use)."""
        if self._client is None:
            self._client = connect_async(self.settings, name="tmi-cluster:web")
        return self._client

    def _handles(self) -> admin.Handles:
        return admin.Handles(redis=self.redis, store=self.store())

    async def _read(self) -> Snapshot:
        settings = self.settings
        store = self.store()
        supervisors, processes = await asyncio.to_thread(
            lambda: (store.supervisors(), store.processes())
        )
        liveness = await asyncio.to_thread(listing.check_liveness, settings, supervisors, processes)
        healthy, reason = listing.health(
            supervisors, processes, liveness, minimum=settings.auto_scale.processes.min
        )
        status, reason = _status(liveness, healthy, reason)
        warnings: list[str] = []
        channels = await admin.channels(settings, [], warn=warnings.append, handles=self._handles())
        counts = Counter(row["state"] for row in channels)
        scaling: dict[str, Any] | None = None
        streams: StreamLengths | None = None
        if liveness.supervisors is not None:
            try:
                scaling = await admin.scaling(settings, handles=self._handles())
                streams = await stream_lengths(await self.redis(), self.keys)
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
            channels_warning=warnings[0] if warnings else None,
            scaling=scaling,
            streams=streams,
            channel_states={state: counts.get(state, 0) for state in admin.CHANNEL_STATES},
        )

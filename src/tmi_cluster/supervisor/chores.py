"""A supervisor's periodic chores, every :data:`~tmi_cluster.cluster.housekeeping.PURGE_EVERY_S`
seconds while it runs, each its own step (one waiting for Redis or the database never keeps
the others from running):

- :class:`~tmi_cluster.events.SupervisorLooped` to the cluster's events;
- the purge of the cluster's dead (:func:`~tmi_cluster.cluster.housekeeping.purge_once`: once per
  period for the whole cluster, under a lock in Redis);
- the target resync: the supervisor's target in ``P scale:targets`` is the truth; an order
  that was lost is made up for;
- the supervisor's figures in its SQL record, at most every
  :data:`~tmi_cluster.supervisor.processes.RECORD_EVERY_S` seconds;
- the memory check: over ``memory_limit`` (after a grace at start), the supervisor stops to be
  started again with the same id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import psutil

from tmi_cluster.bus import AsyncRedis, Coordination, Keys
from tmi_cluster.cluster.housekeeping import PURGE_EVERY_S, purge_once
from tmi_cluster.config import Settings
from tmi_cluster.errors import RedisUnavailableError, StorageError
from tmi_cluster.events import ClusterEvent, SupervisorLooped
from tmi_cluster.store import Store
from tmi_cluster.supervisor.processes import RECORD_EVERY_S, Processes

__all__ = ["Chores"]

log = logging.getLogger(__name__)


class Chores:
    """The chores of supervisor ``supervisor_id``; see the module. ``emit`` takes the cluster's
    events of the supervisor."""

    def __init__(
        self,
        supervisor_id: str,
        settings: Settings,
        store: Store,
        client: AsyncRedis,
        processes: Processes,
        *,
        coordination: Coordination,
        emit: Callable[[ClusterEvent], None],
        memory_grace_s: float,
    ) -> None:
        self.id = supervisor_id
        self.settings = settings
        self.store = store
        self.client = client
        self.keys = Keys.from_settings(settings)
        self.processes = processes
        self.coordination = coordination
        self.emit = emit
        self.memory_grace_s = memory_grace_s
        self._me = psutil.Process()
        self._started_at = time.monotonic()

    async def run(self, stop: asyncio.Event) -> bool:
        """Do the chores every period until ``stop`` is set (False), or until the supervisor is
        over ``memory_limit`` (True: it should stop and be started again)."""
        next_record = time.monotonic() + RECORD_EVERY_S
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PURGE_EVERY_S)
            if stop.is_set():
                return False
            self.emit(SupervisorLooped(supervisor=self.id))
            await self._purge()
            await self._resync_target()
            rss = self._me.memory_info().rss
            if time.monotonic() >= next_record:  # figures in SQL at most every 30 s
                next_record = time.monotonic() + RECORD_EVERY_S
                await self._record_metrics(rss)
            if self._over_memory(rss):
                return True
        return False

    async def _purge(self) -> None:
        """Purge the dead of the cluster (once per period for the whole cluster)."""
        try:
            result = await purge_once(self.store, self.client, self.keys)
        except (RedisUnavailableError, StorageError) as error:
            log.warning("supervisor %s: the purge waits: %s", self.id, error)
            return
        if result is not None and (result.dead_supervisors or result.dead_processes):
            log.warning(
                "purged the dead: supervisors %s, processes %s (%d channels released)",
                result.dead_supervisors or "none",
                result.dead_processes or "none",
                result.released,
            )

    async def _resync_target(self) -> None:
        """Follow the target in Redis when an order was lost (the hash is the truth)."""
        with contextlib.suppress(RedisUnavailableError):  # the next period tries again
            target = await self.coordination.target_of(self.id)
            if target is not None and target >= 0 and target != self.processes.target:
                self.processes.set_target(target, "resync")

    async def _record_metrics(self, rss: int) -> None:
        """The supervisor's figures in its SQL record (a database outage: the next time)."""
        processes = self.processes
        with contextlib.suppress(StorageError):
            await asyncio.to_thread(
                self.store.set_supervisor_metrics,
                self.id,
                {
                    "processes": len(processes.running()),
                    "problem": processes.problem,
                    "memory_bytes": rss,
                },
            )

    def _over_memory(self, rss: int) -> bool:
        """Over ``memory_limit`` after the grace at start (logged)."""
        limit = self.settings.memory_limit * 1024 * 1024
        if rss <= limit or time.monotonic() - self._started_at < self.memory_grace_s:
            return False
        log.warning(
            "supervisor %s uses %d MiB (over memory_limit %d): restarting",
            self.id,
            rss // 1048576,
            self.settings.memory_limit,
        )
        return True

"""The coordinator's pass: under the lease, the cluster's actual assignment made to follow
what is wanted.

:meth:`Coordinator.run_once` is one level-triggered pass:

1. take or renew the lease (:mod:`tmi_cluster.bus.lease`); without it, do nothing;
2. read the snapshot: the wanted channels (SQL), the live worker processes (their records and
   heartbeats; a process whose state is ``stopping`` is draining) with the hosts of their
   supervisors, and the assignment (Redis);
3. plan (:func:`tmi_cluster.planner.plan`, a pure function);
4. write the plan fenced by the lease's token: if another coordinator took over meanwhile,
   :class:`~tmi_cluster.errors.StaleLeaseError`, nothing is written and this one steps down.

Not yet run by the supervisors: the thin path (``tmi-cluster join`` and the supervisors writing
the assignment) is still what runs; the loop that calls this pass every second in every
supervisor replaces it next.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio

from tmi_cluster.bus import Assignment, Keys, translated
from tmi_cluster.bus.client import describe_client
from tmi_cluster.bus.lease import Lease
from tmi_cluster.errors import StaleLeaseError
from tmi_cluster.housekeeping import live_processes
from tmi_cluster.planner import Member, Plan, Snapshot, plan
from tmi_cluster.store import Store

__all__ = ["Coordinator"]

log = logging.getLogger(__name__)


class Coordinator:
    """The coordinator candidate ``holder`` (a supervisor's id) of one cluster."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        store: Store,
        keys: Keys,
        holder: str,
        *,
        capacity: int,
        lease_s: float = 10.0,
        max_moves: int = 100,
    ) -> None:
        self.client = client
        self.store = store
        self.keys = keys
        self.capacity = capacity
        self.max_moves = max_moves
        self.lease = Lease(client, keys, holder, lease_s)

    async def snapshot(self) -> Snapshot:
        """What the plan is made from, read now."""
        wanted = await asyncio.to_thread(self.store.wanted)
        statuses = await live_processes(self.store, self.client, self.keys)
        supervisors = await asyncio.to_thread(self.store.supervisors)
        hosts = {s.id: s.hostname for s in supervisors}
        members = [
            Member(
                process_id,
                supervisor=str(status.get("supervisor", "")),
                host=hosts.get(str(status.get("supervisor", "")), ""),
                capacity=self.capacity,
                draining=status.get("state") == "stopping",
            )
            for process_id, status in sorted(statuses.items())
        ]
        with translated(describe_client(self.client)):
            raw: Any = await self.client.hgetall(self.keys.assignment)
        assignment = {k.decode(): v.decode() for k, v in raw.items()}
        return Snapshot.of(wanted, members, assignment)

    async def run_once(self) -> Plan | None:
        """One pass; the plan carried out, or None when another coordinator holds the lease
        (or took it over before the writes)."""
        token = await self.lease.acquire()
        if not token:
            return None
        result = plan(await self.snapshot(), max_moves=self.max_moves)
        fenced = Assignment(self.client, self.keys, token=token)
        try:
            if result.unassign:
                await fenced.unassign(sorted(result.unassign))
            if result.assign:
                await fenced.assign(result.assign)
        except StaleLeaseError as error:
            log.warning("coordinator %s steps down: %s", self.lease.holder, error)
            self.lease.token = 0
            return None
        return result

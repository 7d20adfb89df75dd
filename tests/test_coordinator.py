"""The coordinator's pass against real Redis and SQLite: only the lease's holder acts, the plan
is written, a dead process's channels move, a leader that lost its lease writes nothing."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio

from tmi_cluster.autoscale import ScalePolicy
from tmi_cluster.bus import Assignment, Keys
from tmi_cluster.coordinator import Coordinator
from tmi_cluster.store import RunState, Store

from .test_simulator import run

CHANNELS = ["a", "b", "c", "d", "e", "f"]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path / 'cluster.db'}") as opened:
        opened.migrate()
        opened.record_supervisor("s1", RunState.RUNNING, pid=1)
        for process_id in ("p1", "p2"):
            opened.record_process(process_id, "s1", RunState.RUNNING, pid=2)
        opened.want(CHANNELS)
        yield opened


async def _beat(client: redis.asyncio.Redis, keys: Keys, process_id: str) -> None:
    status = {"supervisor": "s1", "state": "running"}
    await client.set(keys.process_heartbeat(process_id), json.dumps(status), px=30_000)


@run
async def test_only_the_leader_acts_and_the_dead_lose_their_channels(
    store: Store, redis_server: str, redis_prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server)
    keys = Keys(redis_prefix, 30.0, 3.0)
    try:
        for process_id in ("p1", "p2"):
            await _beat(client, keys, process_id)
        policy = ScalePolicy(minimum=1, maximum=5, capacity=4)  # more processes could come
        leader = Coordinator(client, store, keys, "s1", capacity=4, policy=policy)
        other = Coordinator(client, store, keys, "s2", capacity=4, policy=policy)
        first = await leader.run_once()
        assert first is not None
        assert await other.run_once() is None  # not the lease's holder: nothing done
        owners = await Assignment(client, keys).owners(CHANNELS)
        assert Counter(owners.values()) == {"p1": 3, "p2": 3}
        await client.delete(keys.process_heartbeat("p2"))  # p2 dies
        second = await leader.run_once()
        assert second is not None
        owners = await Assignment(client, keys).owners(CHANNELS)
        assert Counter(owners.values()) == {"p1": 4, None: 2}  # capacity 4: two wait
        assert len(second.waiting) == 2
        again = await leader.run_once()
        assert again is not None
        assert again.assign == {}  # level-triggered: the same snapshot, nothing more to do
    finally:
        await client.aclose()


class _Paused(Coordinator):
    """A leader that stalls between its lease and its writes, long enough to lose the lease."""

    rival: Coordinator

    async def _assignment(self) -> dict[str, str]:
        taken = await super()._assignment()
        await self.client.delete(self.keys.coordinator_lease)  # its lease ran out meanwhile
        assert await self.rival.lease.acquire() > 0  # and another took over
        return taken


@run
async def test_a_leader_that_lost_its_lease_meanwhile_writes_nothing(
    store: Store, redis_server: str, redis_prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server)
    keys = Keys(redis_prefix, 30.0, 3.0)
    try:
        await _beat(client, keys, "p1")
        paused = _Paused(client, store, keys, "s1", capacity=10)
        paused.rival = Coordinator(client, store, keys, "s2", capacity=10)
        assert await paused.run_once() is None  # stepped down
        assert await client.hlen(keys.assignment) == 0  # nothing written by the stale leader
        result = await paused.rival.run_once()
        assert result is not None
        assert len(result.assign) == len(CHANNELS)
    finally:
        await client.aclose()

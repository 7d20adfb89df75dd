"""The purge of the dead (real Redis, real SQLite): a process found dead that beats again keeps
its keys; one still silent loses them."""

from __future__ import annotations

from datetime import timedelta

import redis.asyncio

from tmi_cluster.bus import Assignment, Keys
from tmi_cluster.cluster.housekeeping import purge
from tmi_cluster.store import RunState, Store
from tmi_cluster.store.models import utcnow

from .helpers import beat_process, run


@run
async def test_forget_unless_alive_keeps_the_keys_of_a_process_that_beats(
    redis_server: str, redis_prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server)
    keys = Keys(redis_prefix, 30.0, 3.0)
    assignment = Assignment(client, keys)
    try:
        await beat_process(client, keys, "p1")
        await assignment.record_held("p1", joined=["a"])
        assert not await assignment.forget("p1", unless_alive=True)
        assert await assignment.held_of(["p1"]) == {"p1": {"a"}}
        assert await client.exists(keys.process_heartbeat("p1")) == 1
        assert await assignment.forget("p1")  # unconditional: a process that ended
        assert await assignment.held_of(["p1"]) == {"p1": set()}
        assert await client.exists(keys.process_heartbeat("p1")) == 0
        await assignment.record_held("p1", joined=["a"])
        assert await assignment.forget("p1", unless_alive=True)  # no heartbeat: gone
        assert await assignment.held_of(["p1"]) == {"p1": set()}
    finally:
        await client.aclose()


@run
async def test_a_process_found_dead_that_beats_again_is_not_forgotten_by_the_next_purges(
    redis_server: str, redis_prefix: str, sqlite_url: str
) -> None:
    # A host cut off for longer than process.stale: its processes are recorded dead and their
    # keys deleted. One comes back and beats again before its supervisor records it alive: the
    # purges that follow (every few seconds) must not delete its heartbeat and what it holds,
    # or the workers taking its channels over see nobody holding them and check nothing.
    client = redis.asyncio.Redis.from_url(redis_server)
    keys = Keys(redis_prefix, 30.0, 3.0)
    assignment = Assignment(client, keys)
    await client.set(keys.assignment_epoch, "1")  # Redis did not just forget everything
    try:
        with Store(sqlite_url) as store:
            store.migrate()
            store.record_supervisor("sup", RunState.RUNNING, pid=1)
            for process_id in ("back", "silent"):
                store.record_process(process_id, "sup", RunState.RUNNING, pid=2)
                await assignment.record_held(process_id, joined=[f"{process_id}-channel"])
            await assignment.assign({"back-channel": "back", "silent-channel": "silent"})
            later = utcnow() + timedelta(seconds=60)  # past every grace
            first = await purge(store, client, keys, now=later)
            assert sorted(first.dead_processes) == ["back", "silent"]
            assert first.released == 2
            assert {p.id: p.state for p in store.processes()} == {
                "back": RunState.DEAD,
                "silent": RunState.DEAD,
            }
            await beat_process(client, keys, "back")  # back, recorded dead still
            await assignment.record_held("back", joined=["back-channel"])
            second = await purge(store, client, keys, now=later)
            assert second.released == 1  # "silent"'s channel, still assigned; "back" is kept
            assert await assignment.held_of(["back", "silent"]) == {
                "back": {"back-channel"},
                "silent": set(),
            }
            assert await client.exists(keys.process_heartbeat("back")) == 1
            assert await assignment.of("back") == {"back-channel"}
    finally:
        await client.aclose()

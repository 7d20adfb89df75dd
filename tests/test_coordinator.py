"""The coordinator's pass against real Redis and SQLite: only the lease's holder acts, the plan
is written, a dead process's channels move, a leader that lost its lease writes nothing."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from tmi_cluster.bus import (
    Assignment,
    Heartbeat,
    Keys,
    ProcessStatus,
    SupervisorStatus,
    wanted_changed,
)
from tmi_cluster.coordinator.autoscale import ScalePolicy
from tmi_cluster.coordinator.coordinator import Coordinator, JoinBudget
from tmi_cluster.coordinator.failures import retry_delay
from tmi_cluster.store import RunState, Store

from .helpers import run

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


def _coordinator(
    client: redis.asyncio.Redis, store: Store, keys: Keys, holder: str, **options: Any
) -> Coordinator:
    """A coordinator that places channels from its first pass (no adoption grace)."""
    return Coordinator(client, store, keys, holder, adopt_grace_s=0, **options)


async def _beat(client: redis.asyncio.Redis, keys: Keys, process_id: str) -> None:
    await _beat_as(client, keys, process_id, "s1")
    await _supervisor(client, keys, "s1")


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
        leader = _coordinator(client, store, keys, "s1", capacity=4, policy=policy)
        other = _coordinator(client, store, keys, "s2", capacity=4, policy=policy)
        first = await leader.run_once()
        assert first is not None
        assert await other.run_once() is None  # not the lease's holder: nothing done
        owners = await Assignment(client, keys).owners(CHANNELS)
        assert Counter(owners.values()) == {"p1": 3, "p2": 3}
        await client.delete(keys.process_heartbeat("p2"))  # p2 dies
        second = await leader.run_once()
        assert second is not None
        owners = await Assignment(client, keys).owners(CHANNELS)
        # capacity 4: two wait, still assigned to p2 (if it was only late to beat, it keeps
        # them; if it is dead, they go to the first with room)
        assert Counter(owners.values()) == {"p1": 4, "p2": 2}
        assert len(second.waiting) == 2
        # the two taken from p2, presumed dead, are marked: p1 checks their events a while
        taken = sorted(c for c, owner in second.assign.items() if owner == "p1")
        assert len(taken) == 1
        assert await Assignment(client, keys).orphaned(CHANNELS) == taken
        again = await leader.run_once()
        assert again is not None
        assert again.assign == {}  # level-triggered: the same snapshot, nothing more to do
    finally:
        await client.aclose()


class _Paused(Coordinator):
    """A leader that stalls between its lease and its writes, long enough to lose the lease."""

    rival: Coordinator

    async def _read(self, wanted: frozenset[str]) -> Any:
        taken = await super()._read(wanted)
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
        paused = _Paused(client, store, keys, "s1", adopt_grace_s=0, capacity=10)
        paused.rival = _coordinator(client, store, keys, "s2", capacity=10)
        assert await paused.run_once() is None  # stepped down
        assert await client.hlen(keys.assignment) == 0  # nothing written by the stale leader
        result = await paused.rival.run_once()
        assert result is not None
        assert len(result.assign) == len(CHANNELS)
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("reason", "attempts", "delay"),
    [
        ("msg_banned", 1, None),  # a ban: only a new request helps
        ("tos_ban", 1, None),
        ("msg_channel_suspended", 1, 60.0),
        ("msg_channel_suspended", 3, 240.0),
        ("msg_channel_suspended", 20, 3600.0),
        ("msg_concurrent_channel_limit_reached", 2, 60.0),
        ("timeout", 1, 5.0),
        ("timeout", 11, 600.0),
        ("timeout", 12, None),  # silence twelve times: most likely no such channel
        ("removed", 1, 5.0),
        ("closed", 30, 300.0),
    ],
)
def test_retry_delay(reason: str, attempts: int, delay: float | None) -> None:
    assert retry_delay(reason, attempts) == delay


async def _beat_as(
    client: redis.asyncio.Redis,
    keys: Keys,
    process_id: str,
    supervisor: str,
    state: str = "running",
    *,
    replicas: int = 1,
) -> None:
    status = ProcessStatus(supervisor=supervisor, state=state, replicas=replicas)
    await Heartbeat(
        client, keys, "process", process_id, ttl_s=30, interval_s=1, status_of=lambda: status
    ).beat()


async def _targets(client: redis.asyncio.Redis, keys: Keys) -> dict[str, int]:
    raw: Any = await client.hgetall(keys.scale_targets)
    return {k.decode(): int(v) for k, v in raw.items()}


async def _supervisor(
    client: redis.asyncio.Redis, keys: Keys, supervisor: str, state: str = "running"
) -> None:
    status = SupervisorStatus(host=f"host-{supervisor}", state=state)
    await Heartbeat(
        client, keys, "supervisor", supervisor, ttl_s=30, interval_s=1, status_of=lambda: status
    ).beat()


@run
async def test_a_failed_join_leaves_the_channel_where_a_live_worker_holds_it(
    store: Store, redis_server: str, redis_prefix: str
) -> None:
    """The new owner's join timed out while the old owner still holds the channel (a hand-over
    under faults): not unassigned (the old owner would part it, read by nobody; chaos seed 9)."""
    client = redis.asyncio.Redis.from_url(redis_server)
    keys = Keys(redis_prefix, 30.0, 3.0)
    try:
        await _beat(client, keys, "p1")
        await _beat(client, keys, "p2")
        coordinator = _coordinator(client, store, keys, "s1", capacity=10)
        await coordinator.run_once()
        reporter = Assignment(client, keys)
        owners = {c: p for p in ("p1", "p2") for c in await reporter.of(p)}
        channel = CHANNELS[0]
        other = "p2" if owners[channel] == "p1" else "p1"
        await reporter.record_held(other, joined=[channel])  # still there, being handed over
        await reporter.report(owners[channel], {channel: "timeout"})
        result = await coordinator.run_once()
        assert result is not None
        assert channel not in result.unassign
        assert (await reporter.owners([channel]))[channel] is not None
        assert channel in store.failures()  # the failure is recorded all the same
    finally:
        await client.aclose()


@run
async def test_failed_joins_are_recorded_blocked_retried_and_given_up(
    store: Store, redis_server: str, redis_prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server)
    keys = Keys(redis_prefix, 30.0, 3.0)
    try:
        await _beat(client, keys, "p1")
        coordinator = _coordinator(client, store, keys, "s1", capacity=10)
        await coordinator.run_once()
        reporter = Assignment(client, keys)
        assert set(await reporter.of("p1")) == set(CHANNELS)
        # the owner reports: a joined, b banned, c timed out; a report of another is ignored
        await reporter.report("p1", {"a": "joined", "b": "msg_banned", "c": "timeout"})
        await reporter.report("p9", {"d": "msg_banned"})
        result = await coordinator.run_once()
        assert result is not None
        assert result.unassign == {"b", "c"}  # blocked: b given up, c waits for its retry
        failures = store.failures()
        assert sorted(failures) == ["b", "c"]
        assert failures["b"].given_up
        assert failures["c"].attempts == 1
        assert failures["c"].retry_at is not None
        assert not failures["c"].given_up
        # c's retry is due: placed again; b stays given up until it is asked for again
        store.record_failures([failures["c"]._replace(retry_at=datetime.now(UTC))])
        await client.incr(keys.wanted_version)
        again = await coordinator.run_once()
        assert again is not None
        assert again.assign == {"c": "p1"}
        store.want(["b"])  # tmi-cluster join b: tried again at once
        await client.incr(keys.wanted_version)
        third = await coordinator.run_once()
        assert third is not None
        assert third.assign == {"b": "p1"}
        await reporter.report("p1", {"b": "joined", "c": "joined"})
        await coordinator.run_once()
        assert store.failures() == {}
    finally:
        await client.aclose()


@run
async def test_the_database_away_the_coordinator_goes_on_with_what_it_read(
    store: Store, redis_server: str, redis_prefix: str, tmp_path: Path
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server)
    keys = Keys(redis_prefix, 30.0, 3.0)
    try:
        await _beat(client, keys, "p1")
        await _beat(client, keys, "p2")
        first = _coordinator(client, store, keys, "s1", capacity=10)
        await first.run_once()
        assert await client.hlen(keys.assignment) == len(CHANNELS)
        await first.lease.release()
        away = Store(f"sqlite:///{tmp_path / 'no.db'}")  # no tables: nothing can be read
        fresh = _coordinator(client, away, keys, "s2", capacity=10)
        assert await fresh.run_once() is None  # nothing read yet: it does nothing at all
        assert await client.hlen(keys.assignment) == len(CHANNELS)  # nothing unassigned
        await fresh.lease.release()
        first.store = away
        await client.incr(keys.wanted_version)  # a change it cannot read now
        await client.delete(keys.process_heartbeat("p2"))  # and p2 dies meanwhile
        result = await first.run_once()
        assert result is not None  # the wanted channels read before: p2's move to p1
        owners = await Assignment(client, keys).owners(CHANNELS)
        assert set(owners.values()) == {"p1"}
        away.close()
    finally:
        await client.aclose()


@run
async def test_the_account_budget_paces_the_joins(
    store: Store, redis_server: str, redis_prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server)
    keys = Keys(redis_prefix, 30.0, 3.0)
    try:
        await _beat(client, keys, "p1")
        await _beat(client, keys, "p2")
        coordinator = _coordinator(
            client, store, keys, "s1", capacity=10, budget=JoinBudget(account=4)
        )
        first = await coordinator.run_once()
        assert first is not None
        assert (len(first.assign), len(first.paced)) == (4, 2)
        assert (await coordinator.run_once() or first).assign == {}  # 4 joins under way
        assignment = Assignment(client, keys)
        owners = await assignment.owners(CHANNELS)
        for channel, owner in owners.items():
            if owner is not None:
                await assignment.record_held(owner, joined=[channel])  # confirmed
        last = await coordinator.run_once()
        assert last is not None
        assert len(last.assign) == 2
    finally:
        await client.aclose()


@run
async def test_the_cluster_size_restore_scale_out_scale_in_and_spread(
    store: Store, redis_server: str, redis_prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server)
    keys = Keys(redis_prefix, 30.0, 3.0)
    try:
        store.set_state("scale", {"processes": 3})  # the size it last ran at
        await _supervisor(client, keys, "s1")
        await _supervisor(client, keys, "s2")
        policy = ScalePolicy(minimum=1, maximum=4, capacity=2, cooldown_s=0.0)
        coordinator = _coordinator(client, store, keys, "s1", capacity=2, policy=policy)
        await coordinator.run_once()
        targets = await _targets(client, keys)
        assert targets == {"s1": 2, "s2": 1}  # restored, spread
        orders: Any = await client.xrange(keys.supervisor_commands("s2"))
        assert orders[-1][1] == {b"op": b"scale", b"processes": b"1", b"cause": b"restore"}
        for process_id, supervisor in (("s1-1", "s1"), ("s1-2", "s1"), ("s2-1", "s2")):
            await _beat_as(client, keys, process_id, supervisor)
        await coordinator.run_once()  # 6 channels over 3 processes of 2: 100 % > 70 %: out
        targets = await _targets(client, keys)
        assert targets == {"s1": 2, "s2": 2}  # to the one with the fewest
        store.unwant(CHANNELS[1:])  # one channel left: 1 / 8 = 12.5 % < 50 %: in
        await client.incr(keys.wanted_version)
        await _beat_as(client, keys, "s2-2", "s2")
        await coordinator.run_once()
        draining = await client.hgetall(keys.draining)
        assert len(draining) == 1  # the least-loaded one drains
        [(drained, why)] = draining.items()
        assert why == b"scale_in"
        owner = (await Assignment(client, keys).owners(["a"]))["a"]
        assert drained != (owner or "").encode()  # not the one holding the channel
    finally:
        await client.aclose()


@run
async def test_after_redis_forgot_the_assignment_held_channels_stay_where_they_are(
    store: Store, redis_server: str, redis_prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server)
    keys = Keys(redis_prefix, 30.0, 3.0)
    try:
        for process_id in ("p1", "p2"):
            await _beat(client, keys, process_id)
        # the workers say what they hold; Redis has no assignment and no epoch
        assignment = Assignment(client, keys)
        await assignment.set_held("p2", ["a", "b", "c", "d"])
        coordinator = Coordinator(client, store, keys, "s1", capacity=10, adopt_grace_s=30)
        first = await coordinator.run_once()
        assert first is not None
        assert first.assign == dict.fromkeys("abcd", "p2")  # adopted: no join, no move
        assert first.adopted == 4
        assert await assignment.epoch() is not None  # the new assignment is named
        assert await assignment.owners(["e", "f"]) == {"e": None, "f": None}  # placed later
        coordinator.adopt_grace_s = 0
        coordinator._adopt_until = 0.0  # the grace is over
        later = await coordinator.run_once()
        assert later is not None
        assert set(later.assign) >= {"e", "f"}
    finally:
        await client.aclose()


class _Manager:
    """A manager of one's own that refuses ``refused``, and raises while ``down``."""

    def __init__(self) -> None:
        self.refused: set[str] = set()
        self.down = False

    async def authorize(self, channels: Any, *, reconnect: bool = False) -> None: ...

    async def revoke(self, channels: Any) -> None: ...

    async def authorized(self, channels: Any) -> set[str]:
        if self.down:
            raise ConnectionError("the manager's API is down")
        return set(channels) - self.refused

    async def acknowledged(self, channels: Any) -> None: ...

    async def stale(self, channels: Any) -> set[str]:
        return set()


@run
async def test_only_the_channels_the_manager_authorizes_are_placed(
    store: Store, redis_server: str, redis_prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server)
    keys = Keys(redis_prefix, 30.0, 3.0)
    manager = _Manager()
    try:
        await _beat(client, keys, "p1")
        coordinator = _coordinator(client, store, keys, "s1", capacity=10, manager=manager)
        manager.refused = {"b"}
        first = await coordinator.run_once()
        assert first is not None
        assert set(first.assign) == set(CHANNELS) - {"b"}
        manager.refused = {"b", "c"}  # revoked in the manager's own records
        await wanted_changed(client, keys)
        second = await coordinator.run_once()
        assert second is not None
        assert second.unassign == {"c"}
        manager.down = True  # its API is down: what was read stays, the problem shows
        await wanted_changed(client, keys)
        third = await coordinator.run_once()
        assert third is not None
        assert not third.unassign
        assert coordinator._manager_problem is not None
        assert "the manager's API is down" in coordinator._manager_problem
    finally:
        await client.aclose()


@run
async def test_the_stale_cleanup_runs_once_per_interval_for_all_coordinators(
    store: Store, redis_server: str, redis_prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server)
    keys = Keys(redis_prefix, 30.0, 3.0)
    manager = _Manager()
    interval = 0.4
    try:
        await _beat(client, keys, "p1")
        coordinators = [
            _coordinator(
                client,
                store,
                keys,
                f"s{n}",
                capacity=10,
                manager=manager,
                cleanup_every=(interval, 0.1),
                pass_s=0.05,
                lease_s=1.0,
            )
            for n in range(3)
        ]
        stops = [asyncio.Event() for _ in coordinators]
        loops = [asyncio.create_task(c.run(s)) for c, s in zip(coordinators, stops, strict=True)]

        async def runs(count: int) -> list[tuple[int, str]]:
            while True:
                entries: Any = await client.xrange(keys.cleanup_runs)
                if len(entries) >= count:
                    return [(int(i.split(b"-")[0]), f[b"by"].decode()) for i, f in entries]
                await asyncio.sleep(0.05)

        first = await asyncio.wait_for(runs(3), 10)
        leader = next(n for n, c in enumerate(coordinators) if c.leading)
        stops[leader].set()  # the leader stops: another takes over, and runs when it is due
        await loops[leader]
        manager.refused = {"f"}  # the next run parts it
        later = await asyncio.wait_for(runs(len(first) + 3), 15)
        for stop in stops:
            stop.set()
        await asyncio.gather(*loops)
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(later)]
        assert min(gaps) >= interval * 1000 * 0.9, gaps  # never twice within an interval
        assert {by for _, by in later[len(first) :]} - {f"s{leader}"}  # another one ran them
        assert "f" not in store.wanted()
        newest: Any = await client.xrevrange(keys.cleanup_runs, count=1)
        fields = newest[0][1]
        assert int(fields[b"checked"]) == len(CHANNELS) - 1
    finally:
        await client.aclose()


class _FailingStale(_Manager):
    """Its ``stale()`` fails while ``broken`` (its API is down)."""

    broken = True

    async def stale(self, channels: Any) -> set[str]:
        if self.broken:
            raise ConnectionError("stale() cannot reach its API")
        return set()


@run
async def test_a_failed_cleanup_is_shown_and_tried_again_later(
    store: Store, redis_server: str, redis_prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server)
    keys = Keys(redis_prefix, 30.0, 3.0)
    manager = _FailingStale()
    try:
        await _beat(client, keys, "p1")
        coordinator = _coordinator(
            client, store, keys, "s1", capacity=10, manager=manager, cleanup_every=(300.0, 0.0)
        )
        assert await coordinator.run_once() is not None
        assert coordinator.cleanup is not None
        assert coordinator.cleanup.task is not None
        await coordinator.cleanup.task
        assert coordinator.cleanup_problem is not None
        assert "stale() cannot reach its API" in coordinator.cleanup_problem
        retry_ms = await client.pttl(keys.cleanup_due)
        assert 20_000 < retry_ms <= 30_000  # in 30 s, not in the 300 s of a run that worked
        assert set(store.wanted()) == set(CHANNELS)  # nothing parted by a failed run
        manager.broken = False
        await client.delete(keys.cleanup_due)  # its 30 s are over
        await coordinator.run_once()
        await coordinator.cleanup.task
        assert coordinator.cleanup_problem is None
        assert await client.pttl(keys.cleanup_due) > 290_000
    finally:
        await client.aclose()


@run
async def test_two_copies_on_two_hosts_and_a_promotion_when_an_owner_dies(
    store: Store, redis_server: str, redis_prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server)
    keys = Keys(redis_prefix, 30.0, 3.0)
    try:
        for process_id, supervisor in (("p1", "s1"), ("p2", "s2"), ("p3", "s3")):
            # p3 has another setting: it would not check every event
            await _beat_as(client, keys, process_id, supervisor, replicas=1 + (process_id != "p3"))
            await _supervisor(client, keys, supervisor)  # each on a host of its own
        leader = _coordinator(client, store, keys, "s1", capacity=10, copies=2)
        assert await leader.run_once() is not None
        reader = Assignment(client, keys)
        assert await reader.replicas() == {}  # one copy while a worker differs, and said so
        assert leader.copies_problem is not None
        assert "p3" in leader.copies_problem
        await _beat_as(client, keys, "p3", "s3", replicas=2)  # restarted with the setting
        assert await leader.run_once() is not None
        assert leader.copies_problem is None
        owners, seconds = await reader.all(), await reader.replicas()
        assert set(owners) == set(seconds) == set(CHANNELS)
        assert all(owners[c] != seconds[c] for c in CHANNELS)
        load = Counter(owners.values()) + Counter(seconds.values())
        assert sum(load.values()) == 12  # both copies count
        assert max(load.values()) - min(load.values()) <= 2  # the rebalancing's tolerance
        # p1 dies: its channels' second copies own them (no join), new ones go to the third
        mine = sorted(c for c, p in owners.items() if p == "p1")
        before = dict(seconds)
        for process_id in ("p1", "p2", "p3"):  # the workers joined what they were given
            await reader.set_held(process_id, await reader.of(process_id))
        await client.delete(keys.process_heartbeat("p1"))
        promoted = await leader.run_once()
        assert promoted is not None
        assert promoted.promoted == len(mine)
        owners, seconds = await reader.all(), await reader.replicas()
        for channel in mine:  # owned by the process that held its second copy
            assert owners[channel] == before[channel]
        assert "p1" not in set(owners.values()) | set(seconds.values())
        assert all(owners[c] != seconds[c] for c in CHANNELS)
        assert await reader.of("p1") == set()
        # one worker left: no second copy has room, and that is said
        await client.delete(keys.process_heartbeat("p3"))
        assert await leader.run_once() is not None
        assert leader.copies_problem is not None
        assert "without a second copy" in leader.copies_problem
        await _beat_as(client, keys, "p3", "s3", replicas=2)
        assert await leader.run_once() is not None
        assert leader.copies_problem is None
        # back to one copy: the second copies go
        single = _coordinator(client, store, keys, "s1", capacity=10)
        result = await single.run_once()
        assert result is not None
        assert result.unreplicate == set(CHANNELS)
        assert await reader.replicas() == {}
        p2, p3 = await reader.of("p2"), await reader.of("p3")
        assert sorted(p2 | p3) == CHANNELS
        assert not p2 & p3  # one copy each
    finally:
        await client.aclose()

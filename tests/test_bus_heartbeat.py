"""Heartbeats: typed statuses stamped with Redis's clock, keys with expiry, a registry that finds
the live ones without SCAN; against a real Redis."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import pytest
import redis

from tmi_cluster.bus import (
    Beat,
    Heartbeat,
    Keys,
    ProcessStatus,
    SupervisorStatus,
    connect,
    connect_async,
    live,
    read_sync,
)
from tmi_cluster.bus.heartbeat import of_live_supervisors
from tmi_cluster.config import Settings
from tmi_cluster.errors import RedisUnavailableError

Make = Callable[..., Settings]


def _settings(make_settings: Make, redis_server: str, redis_prefix: str) -> Settings:
    return make_settings(
        None, {"TMI_CLUSTER_REDIS__URL": redis_server, "TMI_CLUSTER_PREFIX": redis_prefix}
    )


def test_a_beat_is_typed_stamped_with_redis_clock_and_registered(
    make_settings: Make, redis_server: str, redis_prefix: str, redis_client: redis.Redis
) -> None:
    settings = _settings(make_settings, redis_server, redis_prefix)
    keys = Keys.from_settings(settings)

    async def scenario() -> None:
        client = connect_async(settings)
        status = ProcessStatus(supervisor="s1", pid=42, state="running", channels=7)
        beat = Heartbeat(
            client, keys, "process", "p1", ttl_s=5, interval_s=0.05, status_of=lambda: status
        )
        await beat.beat()
        assert beat.beats == 1
        raw = json.loads(redis_client.get(keys.process_heartbeat("p1")) or b"")
        seconds, micros = redis_client.time()
        assert raw["channels"] == 7
        assert abs(raw["at"] - (seconds + micros / 1e6)) < 2.0  # Redis's clock, not ours
        assert 0 < redis_client.pttl(keys.process_heartbeat("p1")) <= 5000
        found = await live(client, keys, "process")
        assert list(found) == ["p1"]
        assert found["p1"].status.pid == 42
        assert found["p1"].status.state == "running"
        assert 0.0 <= found["p1"].age_s < 2.0
        stop = asyncio.Event()
        stop.set()
        await beat.run(stop)  # a set stop returns at once, without a beat
        assert beat.beats == 1
        await beat.clear()
        assert await live(client, keys, "process") == {}
        await client.aclose()

    asyncio.run(scenario())
    assert redis_client.exists(keys.process_heartbeat("p1")) == 0
    assert redis_client.zcard(keys.registry("process")) == 0


def test_an_expired_key_is_dead_whatever_the_registry_says(
    make_settings: Make, redis_server: str, redis_prefix: str, redis_client: redis.Redis
) -> None:
    settings = _settings(make_settings, redis_server, redis_prefix)
    keys = Keys.from_settings(settings)

    async def scenario() -> None:
        client = connect_async(settings)
        for owner in ("s1", "s2"):
            beat = Heartbeat(
                client,
                keys,
                "supervisor",
                owner,
                ttl_s=0.3,
                interval_s=0.1,
                status_of=lambda: SupervisorStatus(host="h"),
            )
            await beat.beat()
        await client.aclose()

    asyncio.run(scenario())
    redis_client.pexpire(keys.supervisor_heartbeat("s2"), 1)  # as if it had stopped beating
    deadline = time.monotonic() + 5
    while redis_client.exists(keys.supervisor_heartbeat("s2")) and time.monotonic() < deadline:
        time.sleep(0.01)

    async def listed() -> set[str]:
        client = connect_async(settings)
        try:
            return set(await live(client, keys, "supervisor"))
        finally:
            await client.aclose()

    assert asyncio.run(listed()) == {"s1"}
    client = connect(settings)
    try:
        assert redis_client.zcard(keys.registry("supervisor")) == 2  # the index, not the truth
        assert set(read_sync(client, keys, "supervisor", ["s1", "s2", "s3"])) == {"s1"}
        assert read_sync(client, keys, "supervisor", []) == {}
    finally:
        client.close()


def test_a_claim_never_takes_another_owners_heartbeat(
    make_settings: Make, redis_server: str, redis_prefix: str, redis_client: redis.Redis
) -> None:
    settings = _settings(make_settings, redis_server, redis_prefix)
    keys = Keys.from_settings(settings)

    async def scenario() -> None:
        client = connect_async(settings)
        first = Heartbeat(
            client,
            keys,
            "supervisor",
            "s1",
            ttl_s=5,
            interval_s=1,
            status_of=lambda: SupervisorStatus(pid=1),
        )
        second = Heartbeat(
            client,
            keys,
            "supervisor",
            "s1",
            ttl_s=5,
            interval_s=1,
            status_of=lambda: SupervisorStatus(pid=2),
        )
        assert await first.claim()
        assert not await second.claim()
        assert (await live(client, keys, "supervisor"))["s1"].status.pid == 1
        await client.aclose()

    asyncio.run(scenario())


def test_a_value_that_does_not_decode_is_alive_with_unknown_figures(
    make_settings: Make, redis_server: str, redis_prefix: str, redis_client: redis.Redis
) -> None:
    settings = _settings(make_settings, redis_server, redis_prefix)
    keys = Keys.from_settings(settings)
    redis_client.set(keys.process_heartbeat("p9"), b"not json", ex=30)
    client = connect(settings)
    try:
        found = read_sync(client, keys, "process", ["p9"])
    finally:
        client.close()
    assert found["p9"].status == ProcessStatus()


def test_the_workers_of_a_dead_supervisor_are_dead() -> None:
    workers = {
        "a-1": Beat(ProcessStatus(supervisor="a"), 0.0),
        "b-1": Beat(ProcessStatus(supervisor="b"), 0.0),
        "old": Beat(ProcessStatus(), 0.0),  # names no supervisor: nobody's
    }
    assert set(of_live_supervisors(workers, {"a"})) == {"a-1"}


def test_live_on_unreachable_redis(make_settings: Make) -> None:
    settings = make_settings(None, {"TMI_CLUSTER_REDIS__URL": "redis://127.0.0.1:1/0"})
    client = connect(settings)
    try:
        with pytest.raises(RedisUnavailableError, match=r"cannot reach Redis at 127\.0\.0\.1:1:"):
            read_sync(client, Keys.from_settings(settings), "supervisor", ["s1"])
    finally:
        client.close()

"""Heartbeats: keys with expiry, and which owners are live, against a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import redis

from tmi_cluster.bus import (
    Heartbeat,
    Keys,
    connect,
    connect_async,
    live_processes,
    live_supervisors,
)
from tmi_cluster.config import Settings
from tmi_cluster.errors import RedisUnavailableError

Make = Callable[..., Settings]


def test_live_supervisors_and_processes(
    make_settings: Make, redis_server: str, redis_prefix: str, redis_client: redis.Redis
) -> None:
    settings = make_settings(
        None, {"TMI_CLUSTER_REDIS__URL": redis_server, "TMI_CLUSTER_PREFIX": redis_prefix}
    )
    keys = Keys.from_settings(settings)
    redis_client.set(keys.supervisor_heartbeat("s1"), b"1", ex=30)
    redis_client.set(keys.process_heartbeat("p2"), b"1", ex=30)
    client = connect(settings)
    try:
        assert live_supervisors(client, keys, ["s1", "s2", "p2"]) == {"s1"}
        assert live_processes(client, keys, ["p1", "p2", "s1"]) == {"p2"}
        assert live_supervisors(client, keys, []) == set()
    finally:
        client.close()


def test_live_supervisors_on_unreachable_redis(make_settings: Make) -> None:
    settings = make_settings(None, {"TMI_CLUSTER_REDIS__URL": "redis://127.0.0.1:1/0"})
    client = connect(settings)
    try:
        with pytest.raises(RedisUnavailableError, match=r"cannot reach Redis at 127\.0\.0\.1:1:"):
            live_supervisors(client, Keys.from_settings(settings), ["s1"])
    finally:
        client.close()


def test_heartbeat_beats_then_clears(
    make_settings: Make, redis_server: str, redis_prefix: str, redis_client: redis.Redis
) -> None:
    settings = make_settings(
        None, {"TMI_CLUSTER_REDIS__URL": redis_server, "TMI_CLUSTER_PREFIX": redis_prefix}
    )
    key = Keys.from_settings(settings).supervisor_heartbeat("s1")

    async def scenario() -> None:
        client = connect_async(settings)
        beat = Heartbeat(client, key, ttl_s=5, interval_s=0.05, value="42")
        await beat.beat()
        assert beat.beats == 1
        assert redis_client.get(key) == b"42"
        assert 0 < redis_client.pttl(key) <= 5000
        stop = asyncio.Event()
        stop.set()
        await beat.run(stop)  # a set stop returns at once, without a beat
        assert beat.beats == 1
        await beat.clear()
        await client.aclose()

    asyncio.run(scenario())
    assert redis_client.exists(key) == 0

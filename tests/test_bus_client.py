"""Opening Redis: configured URL, embedded discovery, and translated errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from tmi_cluster.bus import Keys, connect, connect_async, resolve_url, translate_errors
from tmi_cluster.config import Settings
from tmi_cluster.embedded import EmbeddedRedis
from tmi_cluster.errors import EmbeddedRedisError, RedisUnavailableError

Make = Callable[..., Settings]


def test_configured_server(make_settings: Make, redis_server: str, redis_prefix: str) -> None:
    settings = make_settings(
        None, {"TMI_CLUSTER_REDIS__URL": redis_server, "TMI_CLUSTER_PREFIX": redis_prefix}
    )
    keys = Keys.from_settings(settings)
    client = connect(settings)
    with translate_errors(settings.redis.url):
        client.set(keys.lock("x"), b"1", ex=10)
        assert client.get(keys.lock("x")) == b"1"
    client.close()


def test_async_client(make_settings: Make, redis_server: str, redis_prefix: str) -> None:
    settings = make_settings(None, {"TMI_CLUSTER_REDIS__URL": redis_server})

    async def roundtrip() -> bytes | None:
        client = connect_async(settings)
        try:
            await client.set(redis_prefix + "k", b"v")
            value = await client.get(redis_prefix + "k")
            assert value is None or isinstance(value, bytes)
            return value
        finally:
            await client.aclose()

    assert asyncio.run(roundtrip()) == b"v"


def test_embedded_server_is_found(make_settings: Make, tmp_path: Path) -> None:
    settings = make_settings()
    with pytest.raises(EmbeddedRedisError, match="no embedded Redis server runs"):
        resolve_url(settings)
    with EmbeddedRedis(settings.redis.embedded_dir) as server:
        assert resolve_url(settings) == server.url
        client = connect(settings)
        assert client.ping()
        client.close()


def test_unreachable_server_is_translated_without_password(make_settings: Make) -> None:
    settings = make_settings(None, {"TMI_CLUSTER_REDIS__URL": "redis://:hunter2@127.0.0.1:1/0"})
    client = connect(settings)
    with pytest.raises(RedisUnavailableError) as caught, translate_errors(settings.redis.url):
        client.ping()
    assert "hunter2" not in str(caught.value)
    assert "cannot reach Redis at redis://:***@127.0.0.1:1/0" in str(caught.value)
    client.close()

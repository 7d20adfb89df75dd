"""The coordinator's lease and its fencing token, against real Redis."""

from __future__ import annotations

import pytest
import redis.asyncio

from tmi_cluster.bus import Assignment, Keys
from tmi_cluster.bus.lease import FENCE_CHECK, Lease
from tmi_cluster.errors import StaleLeaseError

from .helpers import run

_FENCED_WRITE = FENCE_CHECK + "redis.call('SET', KEYS[2], ARGV[2]) return 1"


def _keys(prefix: str) -> Keys:
    return Keys(prefix, 30.0, 3.0)


@pytest.fixture
def url(redis_server: str) -> str:
    return redis_server


@run
async def test_one_holder_at_a_time_and_tokens_grow(url: str, redis_prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(url)
    keys = _keys(redis_prefix)
    first, second = Lease(client, keys, "a", 10.0), Lease(client, keys, "b", 10.0)
    try:
        await client.set(keys.coordinator_fence, 0)  # as if counted from 0
        table = [
            (first.acquire, 1),  # free: a takes it, token 1
            (second.acquire, 0),  # held by a: b gets nothing
            (first.acquire, 1),  # a renews: the same token
            (first.release, True),
            (second.acquire, 2),  # b takes it: a new token
            (first.release, False),  # not a's any more
            (first.acquire, 0),
        ]
        for step, expected in table:
            assert await step() == expected, step
        assert await client.get(keys.coordinator_lease) == b"b"
        # Redis forgot everything (a restart): the next token is above every earlier one
        await client.delete(keys.coordinator_fence, keys.coordinator_lease)
        assert await first.acquire() > 1_000_000_000_000  # Redis's clock in milliseconds
    finally:
        await client.aclose()


@run
async def test_an_expired_lease_goes_to_the_next_and_fences_the_former_holder(
    url: str, redis_prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(url)
    keys = _keys(redis_prefix)
    write = client.register_script(_FENCED_WRITE)
    target = redis_prefix + "target"
    paused, fresh = Lease(client, keys, "paused", 10.0), Lease(client, keys, "fresh", 10.0)
    try:
        old_token = await paused.acquire()
        assert await write(keys=[keys.coordinator_fence, target], args=[old_token, "old"]) == 1
        await client.delete(keys.coordinator_lease)  # the lease expires while "paused" sleeps
        new_token = await fresh.acquire()
        assert new_token == old_token + 1
        with pytest.raises(redis.exceptions.ResponseError, match=f"STALE {new_token}"):
            await write(keys=[keys.coordinator_fence, target], args=[old_token, "stale"])
        assert await client.get(target) == b"old"  # nothing written by the former holder
        assert await write(keys=[keys.coordinator_fence, target], args=[new_token, "new"]) == 1
        assert await client.get(target) == b"new"
        assert await paused.acquire() == 0  # and it cannot take the lease back while held
    finally:
        await client.aclose()


def test_a_lease_needs_a_positive_ttl() -> None:
    with pytest.raises(ValueError, match="ttl_s > 0"):
        Lease(redis.asyncio.Redis(), _keys("x:"), "a", 0)


@run
async def test_the_assignment_written_under_a_stale_token_is_refused(
    url: str, redis_prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(url)
    keys = _keys(redis_prefix)
    try:
        old, new = Lease(client, keys, "old", 10.0), Lease(client, keys, "new", 10.0)
        token = await old.acquire()
        fenced = Assignment(client, keys, token=token)
        assert await fenced.assign({"alpha": "p1"}) == {"alpha": None}
        await client.delete(keys.coordinator_lease)  # the old leader's lease ran out
        newer = await new.acquire()
        with pytest.raises(StaleLeaseError, match=f"token {token} is not current \\({newer} is\\)"):
            await fenced.assign({"alpha": "p2", "beta": "p2"})
        assert await Assignment(client, keys).owners(["alpha", "beta"]) == {
            "alpha": "p1",
            "beta": None,
        }
        current = Assignment(client, keys, token=newer)
        assert await current.assign({"beta": "p2"}) == {"beta": None}
        assert await Assignment(client, keys).assign({"gamma": "p3"}) == {"gamma": None}  # unfenced
    finally:
        await client.aclose()

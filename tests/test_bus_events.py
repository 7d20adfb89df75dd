"""The event stream in Redis: bounded by length and age, filtered without decoding, events of
another version skipped; against real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import redis.asyncio

from tmi_cluster.bus import Keys
from tmi_cluster.bus.events import EventPublisher, EventReader
from tmi_cluster.events import IrcMessageEvent, JoinEvent, MessageEvent

from .helpers import run


def _message(number: int, channel: str = "alpha") -> MessageEvent:
    return MessageEvent(
        channel=channel,
        user="u",
        text=str(number),
        tags={"id": str(number)},
        raw=f"@id={number} :u!u@u PRIVMSG #{channel} :{number}",
    )


@run
async def test_the_stream_is_bounded_by_length_and_by_age(
    redis_server: str, redis_prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server)
    keys = Keys(redis_prefix, 2.0, 3.0)
    try:
        bounded = EventPublisher(client, keys, maxlen=1000)
        for start in range(0, 5000, 500):
            await bounded.publish([_message(n) for n in range(start, start + 500)])
        length: Any = await client.xlen(keys.events)
        assert 1000 <= length < 1500  # trimmed, approximately, at every batch
        before = length
        assert bounded.published == 5000
        old: Any = await client.time()
        while await client.time() == old:  # a moment of Redis's clock passes
            await asyncio.sleep(0.001)
        aged = EventPublisher(client, keys, maxlen=100_000, max_age_s=0.0)
        await aged.publish([_message(9999)])  # its first call trims by age
        length = await client.xlen(keys.events)
        assert length < before / 2  # what is left: the nodes approximate trimming keeps
    finally:
        await client.aclose()


@run
async def test_readers_filter_skip_what_they_cannot_read_and_never_see_raw_line_events(
    redis_server: str, redis_prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server)
    keys = Keys(redis_prefix, 2.0, 3.0)
    try:
        publisher = EventPublisher(client, keys)
        reader = await EventReader(
            client, keys, channels=frozenset({"alpha"}), types=frozenset({"MessageEvent"})
        ).start()
        raw_too = await EventReader(client, keys, since="0").start()
        publisher.put(IrcMessageEvent(raw="PING :x", command="PING"))  # never streamed
        await client.xadd(keys.events, {"t": "MessageEvent", "c": "alpha", "e": b"\xc1 junk"})
        await publisher.publish(
            [
                JoinEvent(channel="alpha", user="x"),
                _message(1, "beta"),
                _message(2),
            ]
        )
        got = await asyncio.wait_for(reader.__anext__(), 5)
        assert got == msgspec.structs.replace(_message(2), raw="")  # the raw line left out
        assert reader.undecodable == 1
        kinds = [type(await asyncio.wait_for(raw_too.__anext__(), 5)).__name__ for _ in range(3)]
        assert kinds == ["JoinEvent", "MessageEvent", "MessageEvent"]
        await reader.aclose()
        await raw_too.aclose()
        kept = EventPublisher(client, keys, raw=True)
        raws = await EventReader(client, keys).start()
        await kept.publish([_message(3)])
        assert (await asyncio.wait_for(raws.__anext__(), 5)).raw == _message(3).raw
        await raws.aclose()
    finally:
        await client.aclose()

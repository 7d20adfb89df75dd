"""The worker's event path after its pool: unguarded channels go straight through, guarded ones
are checked across the cluster (two workers reading one channel during a move deliver each
event once), in order; against real Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio

from tmi_cluster.bus import Keys
from tmi_cluster.bus.events import Seen
from tmi_cluster.events import CheerEvent, Event, JoinEvent, MessageEvent
from tmi_cluster.worker import delivery as delivery_module
from tmi_cluster.worker.delivery import Delivery, event_key

from .helpers import run, until
from .test_redis_outage import RedisProcess


def _message(channel: str, number: int, source: str | None = None) -> MessageEvent:
    tags = {"id": f"m{number}"}
    if source is not None:
        tags["source-id"] = source
    return MessageEvent(
        channel=channel,
        user="u",
        text=str(number),
        tags=tags,
        raw=f"@id=m{number} :u PRIVMSG #{channel} :{number}",
    )


@contextlib.asynccontextmanager
async def _seen(redis_server: str, prefix: str) -> AsyncIterator[Seen]:
    """The cluster-wide check on a client of its own, closed after the block."""
    client = redis.asyncio.Redis.from_url(redis_server)
    try:
        yield Seen(client, Keys(prefix, 2.0, 3.0))
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def _running(*deliveries: Delivery) -> AsyncIterator[None]:
    """The deliveries' check tasks, for the block."""
    tasks = [asyncio.create_task(d.run()) for d in deliveries]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _until(check: Callable[[], object], timeout_s: float = 5.0) -> None:
    await until(check, timeout_s)


def test_the_key_of_an_event_without_an_id_is_its_raw_line() -> None:
    join = JoinEvent(channel="a", user="someone", raw=":someone!someone@x JOIN #a")
    assert event_key(join) == event_key(JoinEvent(channel="a", user="someone", raw=join.raw))
    assert event_key(join) != event_key(JoinEvent(channel="a", user="other", raw=":other JOIN #a"))
    assert event_key(_message("a", 1)) == "MessageEvent:m1"
    shared = _message("a", 1, source="orig")
    assert event_key(shared, shared_chat=True) == "MessageEvent:orig"


@run
async def test_two_workers_during_a_move_deliver_each_event_once(
    redis_server: str, redis_prefix: str
) -> None:
    old_side: list[Event] = []
    new_side: list[Event] = []
    async with _seen(redis_server, redis_prefix) as seen:
        old = Delivery([old_side.append], seen)
        new = Delivery([new_side.append], seen)
        async with _running(old, new):
            old.put(_message("busy", 0))  # not guarded: straight through, no check at all
            assert old_side == [_message("busy", 0)]
            assert old.checked == 0
            old.guard(["busy"])
            new.guard(["busy"])
            for number in range(1, 201):  # both read everything while both hold the channel
                old.put(_message("busy", number))
                new.put(_message("busy", number))
            cheer = _message("busy", 300)
            for worker in (old, new):  # a cheer is two events with one id: both go through, once
                worker.put(cheer)
                worker.put(
                    CheerEvent(channel="busy", user="u", text="300", tags=cheer.tags, bits=5)
                )
            new.put(JoinEvent(channel="busy", user="x", raw=":x!x@x JOIN #busy"))
            old.put(JoinEvent(channel="busy", user="x", raw=":x!x@x JOIN #busy"))
            await _until(lambda: old.duplicates + new.duplicates == 203)
            delivered = [e for e in old_side + new_side if type(e) is MessageEvent]
            assert sorted(int(e.text) for e in delivered) == [*range(201), 300]  # each once
            assert sum(type(e) is CheerEvent for e in old_side + new_side) == 1  # never lost
            assert sum(isinstance(e, JoinEvent) for e in old_side + new_side) == 1
            for side in (old_side, new_side):  # in order on each side
                numbers = [int(e.text) for e in side if type(e) is MessageEvent]
                assert numbers == sorted(numbers)
            new.lift(["busy"])
            await _until(lambda: "busy" not in new.guarded)
            new.put(_message("busy", 500))
            assert new_side[-1] == _message("busy", 500)  # lifted: straight through again
            assert old.unchecked == new.unchecked == 0


@run
async def test_shared_chat_copies_once_for_the_session(
    redis_server: str, redis_prefix: str
) -> None:
    once: list[Event] = []
    each: list[Event] = []
    async with _seen(redis_server, redis_prefix) as seen:
        deliveries = [
            Delivery([once.append], seen, shared_chat_once=True),
            Delivery([each.append], None),
        ]
        async with _running(deliveries[0]):
            for delivery in deliveries:
                delivery.put(_message("host", 1, source="orig-1"))
                delivery.put(_message("guest", 2, source="orig-1"))  # the copy in another channel
                delivery.put(_message("guest", 3))  # not shared
            await _until(lambda: len(once) == 2)
            assert [e.channel for e in once] == ["host", "guest"]
            assert [e.tags["id"] for e in once] == ["m1", "m3"]
            assert len(each) == 3  # 'each': every channel's copy, as Twitch sends them


@run
async def test_a_fenced_worker_checks_every_channel_until_unfenced(
    redis_server: str, redis_prefix: str
) -> None:
    # Another worker took the channel while this one could not renew its heartbeat: once
    # fenced, what this one reads of it again is dropped as seen, whatever its guards.
    async with _seen(redis_server, redis_prefix) as seen:
        theirs: list[Event] = []
        ours: list[Event] = []
        new_owner = Delivery([theirs.append], seen)
        stale = Delivery([ours.append], seen)
        async with _running(new_owner, stale):
            new_owner.guard(["alpha"])
            for number in range(3):
                new_owner.put(_message("alpha", number))
            await _until(lambda: len(theirs) == 3)
            stale.fence()
            assert stale.fenced
            for number in range(4):  # the three it missed while away, and a new one
                stale.put(_message("alpha", number))
            await _until(lambda: stale.checked == 4)
            assert [e.text for e in ours if isinstance(e, MessageEvent)] == ["3"]
            assert stale.duplicates == 3
            stale.unfence()
            stale.put(_message("alpha", 0))  # unguarded again: straight through
            assert len(ours) == 2


def test_without_a_cluster_fencing_changes_nothing() -> None:
    lonely = Delivery([], None)
    lonely.fence()
    assert not lonely.fenced


@run
async def test_an_event_read_after_a_long_outage_waits_its_own_time_before_going_unchecked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host cut off, then back: the outage began long ago, but an event read after it is
    checked once Redis answers again, not delivered unchecked at once (it was a duplicate of
    what the channel's new owner delivered meanwhile: found by the chaos suite)."""
    monkeypatch.setattr(delivery_module, "UNCHECKED_AFTER_S", 1.5)
    monkeypatch.setattr(delivery_module, "FENCED_UNCHECKED_AFTER_S", 1.5)
    server = RedisProcess(tmp_path)
    server.start()
    client = redis.asyncio.Redis.from_url(server.url, socket_timeout=0.3)
    keys = Keys("t:", 2.0, 3.0)
    got: list[Event] = []
    delivery = Delivery([got.append], Seen(client, keys))
    delivery.fence()  # every event checked
    checking = asyncio.create_task(delivery.run())
    try:
        server.kill()
        delivery.put(_message("c", 1))  # Redis away: delivered unchecked after its wait
        await until(lambda: len(got) == 1, 10, "the first event, unchecked")
        assert delivery.unchecked == 1
        delivery.put(_message("c", 2))  # read long after the outage began
        await asyncio.sleep(0.15)  # its check failed: it waits its own time, Redis still away
        assert len(got) == 1
        server.start()
        await Seen(client, keys).first([event_key(_message("c", 2))])  # another delivered it
        await until(lambda: delivery.duplicates == 1, 10, "the second event, checked")
        assert [e.tags["id"] for e in got] == ["m1"]
        assert delivery.unchecked == 1
    finally:
        checking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await checking
        await client.aclose()
        server.kill()

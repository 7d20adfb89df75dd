"""Sends with acknowledgement, in one process against real Redis and the simulator: the
protocol of ``bus.commands`` (markers, claims, dead letters, trimming) and the worker's
``Outbox`` answering each command true to what happened."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from tmi_cluster.bus import Keys
from tmi_cluster.bus.commands import (
    MAX_DELIVERIES,
    SEND_GROUP,
    SendClient,
    SendCommand,
    SendQueue,
    timed_out,
)
from tmi_cluster.bus.events import EventPublisher, EventReader
from tmi_cluster.channels import ChannelManager, DatabaseChannelManager, DummyChannelManager
from tmi_cluster.chat.pool import Pool
from tmi_cluster.config import Settings
from tmi_cluster.events import MessageEvent
from tmi_cluster.outcomes import IN_FLIGHT, SendRefusal, SendResult, SendStatus
from tmi_cluster.simulator import ChatSimulator
from tmi_cluster.simulator.limits import Limits
from tmi_cluster.store import Store
from tmi_cluster.worker.outbox import Outbox
from tmi_cluster.worker.worker import build_pool

from .helpers import run
from .test_redis_outage import RedisProcess

CHANNELS = [f"room{i}" for i in range(20)]


def _keys(prefix: str) -> Keys:
    return Keys(prefix, 2.0, 3.0)


def _command(channel: str = "room0", text: str = "hello", **fields: Any) -> SendCommand:
    return SendCommand(
        id=fields.pop("id", f"c-{time.monotonic_ns()}"),
        channel=channel,
        text=text,
        reply="tester",
        **fields,
    )


async def _replies(sends: SendClient, count: int, timeout_s: float = 10.0) -> list[SendResult]:
    found: list[SendResult] = []
    deadline = time.monotonic() + timeout_s
    while len(found) < count and time.monotonic() < deadline:
        found += await sends.replies(0.5)
    return found


@run
async def test_the_protocol_markers_claims_and_dead_letters(
    redis_server: str, redis_prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server)
    keys = _keys(redis_prefix)
    try:
        sends = SendClient(client, keys, "tester")
        a, b = SendQueue(client, keys, "proc-a"), SendQueue(client, keys, "proc-b")
        await a.ensure_group()
        await a.ensure_group()  # idempotent
        first = _command(id="one")
        await sends.submit(first)
        [got] = await a.read(10, 0.5)
        assert got.command == first
        assert got.deliveries == 1
        assert (await a.begin("one")).empty  # only one worker ever begins it
        assert (await b.begin("one")).begun_by == "proc-a"
        assert (await sends.abandon("one")).begun_by == "proc-a"  # too late to fence it off
        written = SendResult(id="one", channel="room0", status=SendStatus.WRITTEN, parts=1)
        await a.finish(got, written)
        assert await _replies(sends, 1) == [written]
        assert await sends.known("one") == written  # the idempotency key keeps its result
        assert (await sends.pending()).get("proc-a", 0) == 0
        # fenced off before any worker began it: nobody will write it
        await sends.submit(_command(id="two"))
        [second] = await a.read(10, 0.5)
        assert (await sends.abandon("two")).empty
        assert (await a.begin("two")).abandoned
        assert timed_out(_command(id="two"), await a.marker("two")).reason is None
        await a.finish(second, timed_out(second.command or _command(), await a.marker("two")))
        await _replies(sends, 1)
        # a consumer that dies with a command pending: another claims it, with the count
        await sends.submit(_command(id="three"))
        assert len(await a.read(10, 0.5)) == 1
        claimed = await b.claim_dead()
        assert [e.command.id for e in claimed.entries if e.command] == ["three"]
        assert claimed.entries[0].deliveries == 2
        await b.finish(claimed.entries[0], written)
        assert "proc-a" in (await b.claim_dead()).removed  # gone with nothing pending: removed
        assert "proc-a" not in await sends.pending()
        # a live consumer keeps what it read
        await client.set(keys.process_heartbeat("proc-b"), "{}", ex=10)
        await sends.submit(_command(id="four"))
        [fourth] = await b.read(10, 0.5)
        assert (await a.claim_dead()).entries == []
        # a poison entry does not decode; dead letters keep it with the reason
        await client.xadd(keys.send_commands, {"c": b"\xff not msgpack"})
        [poison] = await a.read(10, 0.5)
        assert poison.command is None
        assert await a.dead_letter(poison, "not a command") is None
        failed = await b.dead_letter(fourth, "it broke")
        assert failed is not None
        assert failed.reason == SendRefusal.FAILED.value
        letters = await sends.dead_letters()
        assert [letter.reason for letter in letters] == ["it broke", "not a command"]
        assert letters[0].command.id == "four"
        # trimming by age keeps what is recent; a lost group is made again on the next read
        await b.trim()
        assert await client.xlen(keys.send_commands) > 0
        await client.xgroup_destroy(keys.send_commands, SEND_GROUP)
        await sends.submit(_command(id="five"))
        assert await a.read(10, 0.5) != []  # made again from the start: everything is seen
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def _outbox(
    make_settings: Callable[..., Settings],
    redis_server: str,
    redis_prefix: str,
    sim: ChatSimulator,
    *,
    token: str = "secret",  # noqa: S107 - the simulator's test account
    extra: str = "",
    port: int | None = None,
    restrict_to: ChannelManager | None = None,
) -> AsyncIterator[tuple[Outbox, SendClient, Pool, redis.asyncio.Redis]]:
    settings = make_settings(
        f'prefix = "{redis_prefix}"\n'
        f'[tmi.connection]\nserver = "127.0.0.1"\nport = {port or sim.port}\nsecure = false\n'
        "connect_interval = 0\nread_anonymously = true\n"
        f'[tmi.identity]\nusername = "mybot"\npassword = "oauth:{token}"\n'
        "[throttle.messages]\nchannel_interval = 0\nlong_text = 'refuse'\n" + extra
    )
    client = redis.asyncio.Redis.from_url(redis_server)
    keys = Keys.from_settings(settings)
    stop = asyncio.Event()
    try:
        async with build_pool(settings, redis_client=client) as pool:
            outbox = Outbox(SendQueue(client, keys, "proc-a"), pool, restrict_to=restrict_to)
            running = asyncio.create_task(outbox.run(stop))
            try:
                yield outbox, SendClient(client, keys, "tester"), pool, client
            finally:
                stop.set()
                await asyncio.wait_for(running, 30)
    finally:
        await client.aclose()


@run
async def test_the_outbox_answers_each_command_true_to_what_happened(
    make_settings: Callable[..., Settings], redis_server: str, redis_prefix: str
) -> None:
    limits = Limits(message_allow=1000, channel_interval_s=0.0)
    async with ChatSimulator(channels=CHANNELS, limits=limits) as sim:
        sim.add_account("mybot", "secret")
        async with _outbox(make_settings, redis_server, redis_prefix, sim) as (
            outbox,
            sends,
            _,
            client,
        ):
            commands = [_command(f"room{i}", f"message {i}") for i in range(10)]
            for command in commands:
                await sends.submit(command)
            results = {r.id: r for r in await _replies(sends, 10)}
            assert all(results[c.id].status is SendStatus.WRITTEN for c in commands), results
            assert sorted(sim.account("mybot").said) == sorted(
                (c.channel, c.text) for c in commands
            )
            # a second delivery of a command already carried out answers the same again
            await sends.submit(commands[0])
            [again] = await _replies(sends, 1)
            assert again == results[commands[0].id]
            assert len(sim.account("mybot").said) == 10
            # text that slipped past a caller's checks is refused, nothing written
            await sends.submit(_command(text="x" * 600, id="long"))
            await sends.submit(_command(text="a\nPRIVMSG #room1 :b", id="unsafe"))
            refused = {r.id: r for r in await _replies(sends, 2)}
            assert refused["long"].reason == SendRefusal.TOO_LONG.value
            assert refused["unsafe"].reason == SendRefusal.FAILED.value
            assert "CR, LF or NUL" in refused["unsafe"].detail
            # a deadline already passed when read: not written, never
            await client.xadd(sends.keys.send_commands, {"c": b""})  # no command at all
            late = _command(id="late", timeout_s=-1.0)  # its deadline passed before it is read
            await sends.submit(late)
            [answer] = await _replies(sends, 1)
            assert answer.status is SendStatus.TIMED_OUT
            assert answer.reason is None
            # a command begun by a worker that died: in flight, not written again
            begun = _command(id="begun")
            await client.set(sends.keys.command("begun"), b"begun:proc-dead", ex=60)
            await sends.submit(begun)
            [answer] = await _replies(sends, 1)
            assert answer.status is SendStatus.TIMED_OUT
            assert answer.reason == IN_FLIGHT
            assert ("room0", "hello") not in sim.account("mybot").said
            assert outbox.dead_lettered == 1  # the empty entry
            assert sim.account("mybot").violations == []


@run
async def test_refusals_budget_login_and_connection(
    make_settings: Callable[..., Settings], redis_server: str, redis_prefix: str
) -> None:
    async with ChatSimulator(channels=CHANNELS) as sim:
        sim.add_account("mybot", "secret")
        budget = "allow = 1\nevery = 30\n"
        async with _outbox(make_settings, redis_server, redis_prefix, sim, extra=budget) as (
            _,
            sends,
            _,
            _,
        ):
            await sends.submit(_command("room1", "first", id="first", timeout_s=5))
            [first] = await _replies(sends, 1)  # the one message of the window
            assert first.ok
            await sends.submit(_command("room2", "second", id="second", timeout_s=0.5))
            [second] = await _replies(sends, 1)
            assert second.reason == SendRefusal.RATE_LIMITED.value
        async with _outbox(
            make_settings, redis_server, f"{redis_prefix}b:", sim, token="wrong"
        ) as (_, sends, _, _):
            await sends.submit(_command(id="login", timeout_s=5))
            [answer] = await _replies(sends, 1)
            assert answer.reason == SendRefusal.UNAUTHORIZED.value
            assert "refused the bot's login" in answer.detail
    with contextlib.closing(__import__("socket").socket()) as closed:
        closed.bind(("127.0.0.1", 0))  # a port where nothing listens
        port = closed.getsockname()[1]
        async with (
            ChatSimulator(channels=CHANNELS) as sim,
            _outbox(make_settings, redis_server, f"{redis_prefix}c:", sim, port=port) as (
                _,
                sends,
                _,
                _,
            ),
        ):
            await sends.submit(_command(id="down", timeout_s=1))
            [answer] = await _replies(sends, 1)
            assert answer.reason == SendRefusal.NOT_CONNECTED.value


@run
async def test_a_command_that_keeps_killing_its_workers_goes_to_the_dead_letters(
    make_settings: Callable[..., Settings], redis_server: str, redis_prefix: str
) -> None:
    async with ChatSimulator(channels=CHANNELS) as sim:
        sim.add_account("mybot", "secret")
        client = redis.asyncio.Redis.from_url(redis_server)
        keys = _keys(redis_prefix)
        sends = SendClient(client, keys, "tester")
        try:
            poison = _command(id="poison")
            await SendQueue(client, keys, "w0").ensure_group()
            await sends.submit(poison)
            for n in range(MAX_DELIVERIES):  # each reader "dies" holding it
                queue = SendQueue(client, keys, f"w{n + 1}")
                taken = await queue.claim_dead() if n else None
                if taken is None:
                    assert await queue.read(10, 0.5) != []
                else:
                    assert [e.deliveries for e in taken.entries] == [n + 1]
            async with _outbox(make_settings, redis_server, redis_prefix, sim) as (
                outbox,
                _,
                _,
                _,
            ):
                [answer] = await _replies(sends, 1)
                assert answer.reason == SendRefusal.FAILED.value
                assert "dead-lettered" in answer.detail
            assert outbox.dead_lettered == 1  # counted once its task ended (the outbox closed)
            assert [d.command.id for d in await sends.dead_letters()] == ["poison"]
            assert sim.account("mybot").said == []
        finally:
            await client.aclose()


def test_the_result_is_true_only_when_written() -> None:
    written = SendResult(id="x", channel="c", status=SendStatus.WRITTEN, parts=2)
    refused = SendResult(id="x", channel="c", status=SendStatus.REFUSED, reason="too_long")
    assert written
    assert written.ok
    assert not refused
    assert not refused.ok
    with pytest.raises(AttributeError):
        written.parts = 3  # type: ignore[misc]


@pytest.mark.timeout(120)
@run
async def test_sends_and_the_stream_go_on_after_a_redis_restart(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    server = RedisProcess(tmp_path)
    server.start()
    try:
        async with ChatSimulator(channels=CHANNELS) as sim:
            sim.add_account("mybot", "secret")
            # a restarted Redis fences the message window off for one window's length (it
            # cannot know what was sent in it): a short window keeps the test short
            short = "every = 2\n"
            async with _outbox(make_settings, server.url, "restart:", sim, extra=short) as (
                outbox,
                sends,
                _,
                client,
            ):
                await sends.submit(_command("room1", "before", id="before"))
                assert [r.ok for r in await _replies(sends, 1)] == [True]
                publisher = EventPublisher(client, sends.keys, maxlen=1000)
                await publisher.publish([_event("before")])
                reader = await EventReader(client, sends.keys, group="g").start()
                server.kill()  # Redis forgets everything: the group, the streams, the markers
                server.start()
                stop = asyncio.Event()
                publishing = asyncio.create_task(publisher.run(stop))  # waits the outage out
                publisher.put(_event("after"))
                got = await asyncio.wait_for(reader.__anext__(), 10)  # its group made again
                assert isinstance(got, MessageEvent)
                assert got.text == "after"
                stop.set()
                await publishing
                await reader.aclose()
                await sends.submit(_command("room2", "after", id="after"))
                after = await _replies(sends, 1, timeout_s=20)
                assert [r.ok for r in after] == [True], after
                assert outbox.outage.outages >= 1
            assert ("room2", "after") in sim.account("mybot").said
    finally:
        server.kill()


def _event(text: str) -> MessageEvent:
    return MessageEvent(channel="room1", user="u", text=text, tags={"id": text})


@run
async def test_the_duplicate_rule_holds_across_workers(
    make_settings: Callable[..., Settings], redis_server: str, redis_prefix: str
) -> None:
    limits = Limits(message_allow=0, channel_interval_s=0.0)
    async with ChatSimulator(channels=CHANNELS, limits=limits) as sim:
        sim.add_account("mybot", "secret")
        settings = make_settings(
            f'prefix = "{redis_prefix}"\n'
            f'[tmi.connection]\nserver = "127.0.0.1"\nport = {sim.port}\nsecure = false\n'
            "connect_interval = 0\nread_anonymously = true\n"
            '[tmi.identity]\nusername = "mybot"\npassword = "oauth:secret"\n'
            "[throttle.messages]\nchannel_interval = 0\n"
        )
        client = redis.asyncio.Redis.from_url(redis_server)
        try:
            async with (
                build_pool(settings, redis_client=client, name="one") as one,
                build_pool(settings, redis_client=client, name="two") as two,
            ):
                for pool in (one, two, one, two):  # the same words, by turns from two workers
                    assert await pool.say("room1", "same words") == 1
        finally:
            await client.aclose()
        said = [text for channel, text in sim.account("mybot").said if channel == "room1"]
        assert said == ["same words", "same words \U000e0000"] * 2  # none dropped by Twitch
        assert sim.account("mybot").violations == []


@run
async def test_restricted_sending_refuses_an_unauthorized_channel(
    make_settings: Callable[..., Settings], redis_server: str, redis_prefix: str, sqlite_url: str
) -> None:
    store = Store(sqlite_url)
    store.migrate()
    manager = DatabaseChannelManager(make_settings(""), store=store)
    await manager.authorize(["room1"])
    async with ChatSimulator(channels=CHANNELS) as sim:
        sim.add_account("mybot", "secret")
        async with _outbox(make_settings, redis_server, redis_prefix, sim, restrict_to=manager) as (
            _,
            sends,
            _,
            _,
        ):
            await sends.submit(_command("room1", "allowed", id="allowed"))
            await sends.submit(_command("room2", "not allowed", id="denied"))
            results = {r.id: r for r in await _replies(sends, 2)}
            assert results["allowed"].ok
            assert results["denied"].reason == SendRefusal.UNAUTHORIZED.value
            assert "restrict_messages" in results["denied"].detail
        assert sim.account("mybot").said == [("room1", "allowed")]
    store.close()


class _CountingManager(DummyChannelManager):
    """A manager of one's own that allows ``allowed`` and counts its calls; raises while
    ``down``."""

    def __init__(self, allowed: set[str]) -> None:
        super().__init__()
        self.allowed = allowed
        self.calls: list[int] = []
        self.down = False

    async def authorized(self, channels: Sequence[str]) -> set[str]:
        self.calls.append(len(channels))
        if self.down:
            raise ConnectionError("the manager's API is down")
        return set(channels) & self.allowed


@run
async def test_restricted_sending_asks_the_manager_in_batches_and_refuses_when_it_fails(
    make_settings: Callable[..., Settings], redis_server: str, redis_prefix: str
) -> None:
    manager = _CountingManager({f"room{i}" for i in range(1, 4)})
    async with ChatSimulator(channels=CHANNELS) as sim:
        sim.add_account("mybot", "secret")
        async with _outbox(make_settings, redis_server, redis_prefix, sim, restrict_to=manager) as (
            _,
            sends,
            _,
            _,
        ):
            for n in range(40):
                await sends.submit(_command(CHANNELS[n % len(CHANNELS)], f"m{n}", id=f"m{n}"))
            results = {r.id: r for r in await _replies(sends, 40)}
            for n in range(40):
                expected = CHANNELS[n % len(CHANNELS)] in manager.allowed
                assert results[f"m{n}"].ok is expected, results[f"m{n}"]
            assert sum(manager.calls) == len(CHANNELS)  # each channel asked once
            assert len(manager.calls) < len(CHANNELS)  # in batches, not a call per channel
            manager.down = True
            await sends.submit(_command("elsewhere", "while down", id="down"))
            (down,) = await _replies(sends, 1)
            assert down.reason == SendRefusal.UNAUTHORIZED.value
    assert all(channel in manager.allowed for channel, _ in sim.account("mybot").said)

"""The application's side against real processes and the simulator as judge: ``Cluster`` and
``SyncCluster`` sending, joining and reading events; bad input refused before anything is
queued; the CLI's ``send``, ``tail`` and ``dead-letters``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tmi_cluster import (
    Cluster,
    InvalidChannelError,
    MessageTooLongError,
    SendStatus,
    SyncCluster,
    UnknownEventTypeError,
    UnsafeLineError,
)
from tmi_cluster.events import MessageEvent
from tmi_cluster.simulator import ChatSimulator
from tmi_cluster.simulator.limits import Limits

from .clusterproc import BOT, IDENTITY, TOKEN, ProcessCluster
from .helpers import run
from .test_cli import SCRIPT

CHANNELS = ["alpha", "beta", "gamma"]
ONE_SENDER = {
    **IDENTITY,
    "TMI_CLUSTER_AUTO_SCALE__PROCESSES__MIN": "1",
    "TMI_CLUSTER_AUTO_SCALE__PROCESSES__MAX": "1",
    "TMI_CLUSTER_THROTTLE__MESSAGES__LONG_TEXT": "refuse",
}


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> AsyncIterator[tuple[ChatSimulator, ProcessCluster]]:
    """A supervisor with one worker that has the bot's identity, and its simulator."""
    limits = Limits(anonymous_join_allow=200, message_allow=1000, channel_interval_s=0.0)
    async with ChatSimulator(channels=CHANNELS, limits=limits) as sim:
        sim.add_account(BOT, TOKEN)
        cluster = ProcessCluster(tmp_path, sim, redis_server, redis_prefix, **ONE_SENDER)
        try:
            cluster.start("sup-a")

            async def sending() -> bool:
                return any(s.sends for s in (await cluster.workers()).values())

            await cluster.until(sending, 30, "a worker that can send")
            yield sim, cluster
        finally:
            await cluster.stop()


@contextlib.asynccontextmanager
async def application(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> AsyncIterator[tuple[ChatSimulator, ProcessCluster, Cluster]]:
    """:func:`running`, and a Cluster of the application's on it."""
    async with (
        running(tmp_path, redis_server, redis_prefix) as (sim, cluster),
        Cluster(cluster.settings()) as app,
    ):
        yield sim, cluster, app


@run
async def test_send_writes_to_twitch_and_says_so(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    async with application(tmp_path, redis_server, redis_prefix) as (sim, cluster, app):
        result = await app.send("#Alpha", "hello there", timeout_s=10)
        assert result.ok, result
        assert bool(result)
        assert result.status is SendStatus.WRITTEN
        assert result.parts == 1
        assert result.process is not None
        assert ("alpha", "hello there") in sim.account(BOT).said
        # an action and a reply, through the same path
        action = await app.send("beta", "waves", action=True)
        assert action.ok, action
        assert ("beta", "\x01ACTION waves\x01") in sim.account(BOT).said
        # a key makes it idempotent: the second send answers the first one's result
        first = await app.send("gamma", "once only", key="order-17")
        again = await app.send("gamma", "once only", key="order-17")
        assert first.ok
        assert again == first
        assert sim.account(BOT).said.count(("gamma", "once only")) == 1
        # A Cluster closed right after its send closes at once: its reader of results is not
        # left in a blocking read of Redis (whose cancellation redis-py may swallow, so that
        # the read ran to its 1 s timeout and every `tmi-cluster send` took a second more).
        other = Cluster(cluster.settings())
        assert (await other.send("alpha", "and close", timeout_s=10)).ok
        started = time.monotonic()
        await other.aclose()
        assert time.monotonic() - started < 0.5


@run
async def test_bad_input_is_refused_before_anything_is_queued(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    async with application(tmp_path, redis_server, redis_prefix) as (sim, cluster, app):
        before: Any = await cluster.client.xlen(cluster.keys.send_commands)
        with pytest.raises(InvalidChannelError, match="invalid channel"):
            await app.send("no such channel!", "hi")
        with pytest.raises(UnsafeLineError, match="CR, LF or NUL"):
            await app.send("alpha", "hi\r\nPRIVMSG #beta :injected")
        with pytest.raises(UnsafeLineError):
            await app.send("alpha", "nul\0byte")
        with pytest.raises(MessageTooLongError, match="exceeds"):
            await app.send("alpha", "x" * 600)
        with pytest.raises(ValueError, match="empty"):
            await app.send("alpha", "   ")
        with pytest.raises(ValueError, match="timeout_s"):
            await app.send("alpha", "hi", timeout_s=0)
        with pytest.raises(UnknownEventTypeError, match="MessageEvent"):
            app.events(types=["MesageEvent"])
        after: Any = await cluster.client.xlen(cluster.keys.send_commands)
        assert after == before  # nothing was queued
        assert not any("injected" in text for _, text in sim.account(BOT).said)


@run
async def test_events_reach_a_reader_once_each_with_filters(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    async with application(tmp_path, redis_server, redis_prefix) as (sim, _cluster, app):
        joined = await app.join(["#ALPHA", "beta"], timeout_s=20)
        assert all(v.ok and v.status == "joined" for v in joined.values()), joined
        # one client and one store for the Cluster's life: the next commands open none
        client, store = app._client, app._store
        assert client is not None
        assert store is not None
        again = await app.join(["alpha"], timeout_s=20)
        assert again["alpha"].status == "already"
        await app.channels(["alpha"])
        await app.part(["zeta"])
        assert (app._client, app._store) == (client, store)
        messages = await app.events(channels=["alpha"], types=[MessageEvent]).start()
        everything = await app.events().start()  # from now
        lines = sim.generate(200, channel="alpha") + sim.generate(50, channel="beta")
        wanted = [
            line.message_id
            for line in lines
            if line.channel == "alpha" and line.command == "PRIVMSG" and line.message_id
        ]
        seen: list[str] = []

        async def read() -> None:
            async for event in messages:
                assert isinstance(event, MessageEvent)  # a CheerEvent too (a subclass)
                assert event.channel == "alpha"
                assert event.raw == ""  # the stream leaves the raw line out by default
                if type(event) is MessageEvent:
                    seen.append(event.tags["id"])
                if len(seen) >= len(wanted):
                    return

        await asyncio.wait_for(read(), 20)
        assert sorted(seen) == sorted(wanted)
        channels: set[str | None] = set()

        async def read_all() -> None:
            async for event in everything:
                channels.add(event.channel)
                if {"alpha", "beta"} <= channels:
                    return

        await asyncio.wait_for(read_all(), 20)
        await messages.aclose()
        await everything.aclose()


@run
async def test_groups_share_and_separate_groups_each_see_everything(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    async with application(tmp_path, redis_server, redis_prefix) as (sim, _cluster, app):
        await app.join(["alpha"], timeout_s=20)
        a1 = app.events(types="MessageEvent", group="analytics", consumer="a1")
        a2 = app.events(types="MessageEvent", group="analytics", consumer="a2")
        solo = app.events(types="MessageEvent", group="moderation", consumer="m1")
        got: dict[str, list[str]] = {"a1": [], "a2": [], "m1": []}

        async def take(name: str, reader: Any) -> None:
            while True:
                event = await asyncio.wait_for(reader.__anext__(), 10)
                if type(event) is MessageEvent:
                    got[name].append(event.tags["id"])
                    return

        async def drain(name: str, reader: Any, until: Any) -> None:
            with contextlib.suppress(TimeoutError):
                while not until():
                    event = await asyncio.wait_for(reader.__anext__(), 3)
                    if type(event) is MessageEvent:
                        got[name].append(event.tags["id"])

        try:
            for reader in (a1, a2, solo):  # make the groups (from now) before the traffic
                await reader.start()
            lines = sim.generate(150, channel="alpha")
            await take("a1", a1)  # a1 takes what has come so far, and is busy with it
            lines += sim.generate(150, channel="alpha")
            await take("a2", a2)  # so a2 gets the rest: the group shares
            wanted = {line.message_id or "" for line in lines if line.command == "PRIVMSG"}
            shared = lambda: len(got["a1"]) + len(got["a2"]) >= len(wanted)  # noqa: E731
            await asyncio.gather(
                drain("a1", a1, shared),
                drain("a2", a2, shared),
                drain("m1", solo, lambda: len(got["m1"]) >= len(wanted)),
            )
        finally:
            for reader in (a1, a2, solo):
                await reader.aclose()
        assert sorted(got["m1"]) == sorted(wanted)  # another group: everything
        assert sorted(got["a1"] + got["a2"]) == sorted(wanted)  # shared, none twice
        assert got["a1"]
        assert got["a2"]


@run
async def test_a_group_reader_that_restarts_resumes_where_it_stopped(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    async with application(tmp_path, redis_server, redis_prefix) as (sim, _cluster, app):
        await app.join(["alpha"], timeout_s=20)
        reader = await app.events(types="MessageEvent", group="billing", consumer="b1").start()
        lines = sim.generate(100, channel="alpha")
        wanted = [line.message_id or "" for line in lines if line.command == "PRIVMSG"]

        async def ids(reader: Any, count: int) -> list[str]:
            found: list[str] = []
            while len(found) < count:
                event = await asyncio.wait_for(reader.__anext__(), 10)
                if type(event) is MessageEvent:
                    found.append(event.tags["id"])
            return found

        before = await ids(reader, 10)
        await reader.client.aclose()  # dies without a word: nothing of it acknowledged
        restarted = app.events(types="MessageEvent", group="billing", consumer="b1")
        resumed = wanted.index((await ids(restarted, 1))[0])
        after = [wanted[resumed], *await ids(restarted, len(wanted) - resumed - 1)]
        assert before == wanted[:10]
        assert resumed <= 10  # at least once: from what it had not acknowledged, no gap
        assert after == wanted[resumed:]
        await restarted.aclose()


@run
async def test_the_sync_twin_sends_and_reads(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    async with running(tmp_path, redis_server, redis_prefix) as (sim, cluster):

        def script() -> tuple[Any, list[Any], str]:  # no event loop here, as in a WSGI app
            with SyncCluster(cluster.settings()) as app:
                result = app.send("alpha", "from a script")
                app.join(["alpha"], timeout_s=20)
                with app.events(channels="alpha", types="MessageEvent", since="0-0") as events:
                    sim_loop.call_soon_threadsafe(sim.generate, 5, "alpha")
                    first = next(iter(events))
                return result, app.channels(), first.channel or ""

        sim_loop = asyncio.get_running_loop()
        result, channels, channel = await asyncio.to_thread(script)
        assert result.ok, result
        assert ("alpha", "from a script") in sim.account(BOT).said
        assert [c["channel"] for c in channels] == ["alpha"]
        assert channel == "alpha"


@run
async def test_cli_send_and_dead_letters(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    async with running(tmp_path, redis_server, redis_prefix) as (sim, cluster):

        def tmi(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [SCRIPT, *args],
                check=False,
                cwd=tmp_path,
                env=cluster.env,
                capture_output=True,
                text=True,
                timeout=60,
            )

        sent = await asyncio.to_thread(tmi, "send", "#alpha", "from the shell")

        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "written" in sent.stdout
        assert ("alpha", "from the shell") in sim.account(BOT).said
        as_json = await asyncio.to_thread(tmi, "send", "alpha", "x" * 600, "--json")
        assert as_json.returncode == 65, as_json.stdout + as_json.stderr  # too long: EX_DATAERR
        bad = await asyncio.to_thread(tmi, "send", "bad name!", "hi")
        assert bad.returncode == 2
        assert "invalid channel" in bad.stderr
        joined = await asyncio.to_thread(tmi, "join", "alpha")
        assert joined.returncode == 0, joined.stdout + joined.stderr
        sim.generate(30, channel="alpha")
        tailed = await asyncio.to_thread(
            tmi,
            "tail",
            "--since",
            "0",
            "--channel",
            "#Alpha",
            "--type",
            "MessageEvent",
            "--limit",
            "5",
            "--json",
        )
        assert tailed.returncode == 0, tailed.stdout + tailed.stderr
        events = [json.loads(line) for line in tailed.stdout.splitlines()]
        assert len(events) == 5
        assert all(e["channel"] == "alpha" for e in events)
        assert {e["type"] for e in events} <= {"MessageEvent", "CheerEvent"}
        readable = await asyncio.to_thread(tmi, "tail", "--since", "0", "--limit", "2")
        assert readable.returncode == 0
        assert len(readable.stdout.splitlines()) == 2
        sim.generate(300, channel="alpha")
        every = await asyncio.to_thread(
            tmi, "tail", "--since", "0", "--channel", "alpha", "--limit", "200", "--json"
        )
        rows = [json.loads(line) for line in every.stdout.splitlines()]
        assert all(isinstance(r["stream_id"], str) for r in rows)
        kinds = {r["type"] for r in rows}
        assert "UserNoticeEvent" not in kinds  # a sub is its SubEvent alone...
        assert not [r for r in rows if r["type"] == "MessageEvent" and r["tags"].get("bits")]
        assert kinds & {"CheerEvent", "SubEvent", "ResubEvent", "RaidEvent"}  # ...and shown
        next_one = await asyncio.to_thread(
            tmi,
            "tail",
            "--since",
            rows[9]["stream_id"],
            "--channel",
            "alpha",
            "--limit",
            "1",
            "--json",
        )
        assert json.loads(next_one.stdout)["stream_id"] == rows[10]["stream_id"]
        unknown = await asyncio.to_thread(tmi, "tail", "--type", "NoSuchEvent")
        assert unknown.returncode == 2
        assert "unknown event type 'NoSuchEvent'" in unknown.stderr
        raw_lines = await asyncio.to_thread(tmi, "tail", "--type", "IrcCommandEvent")
        assert raw_lines.returncode == 2
        assert "never published to the event stream" in raw_lines.stderr
        bogus = await asyncio.to_thread(tmi, "tail", "--since", "bogus", "--limit", "1")
        assert bogus.returncode == 2
        assert "since must be a stream entry id" in bogus.stderr
        letters = await asyncio.to_thread(tmi, "dead-letters", "--json")
        assert letters.returncode == 0
        assert json.loads(letters.stdout) == []


@run
async def test_a_refused_token_is_logged_shown_and_makes_the_cluster_unhealthy(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    async with ChatSimulator(channels=CHANNELS) as sim:
        sim.add_account(BOT, TOKEN)
        wrong = {**ONE_SENDER, "TMI_CLUSTER_TMI__IDENTITY__PASSWORD": "oauth:notthetoken"}
        cluster = ProcessCluster(tmp_path, sim, redis_server, redis_prefix, **wrong)
        try:
            cluster.start("sup-a")
            async with Cluster(cluster.settings()) as app:
                result = await app.send("alpha", "with a wrong token", timeout_s=20)
            assert result.reason == "unauthorized", result

            async def reported() -> bool:
                return any(s.problem for s in (await cluster.workers()).values())

            await cluster.until(reported, 30, "the worker to report the refused login")

            def tmi(*args: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    [SCRIPT, *args],
                    env=cluster.env,
                    cwd=tmp_path,
                    check=False,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )

            health = await asyncio.to_thread(tmi, "health")
            assert health.returncode == 1, health.stdout + health.stderr
            assert "Twitch refused the bot's login" in health.stdout + health.stderr
            listed = json.loads((await asyncio.to_thread(tmi, "list", "--json")).stdout)
            problems = [p["problem"] for p in listed["processes"] if p["problem"]]
            assert problems, listed
            assert "check tmi.identity.username and tmi.identity.password" in problems[0]
        finally:
            await cluster.stop()
        logs = cluster.logs()
        assert "ERROR tmi_cluster.chat.connection" in logs
        assert "Twitch refused the login" in logs
        assert "notthetoken" not in logs + json.dumps(listed)  # the token is never shown

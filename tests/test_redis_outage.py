"""A Redis outage never kills anything for good: a real redis-server of the test's own, on its
own port, stopped and started under the connections, the pool and the sender."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio

from tmi_cluster import Connection, ConnectionOptions, ConnectionState, Settings
from tmi_cluster.bus import SharedWindow
from tmi_cluster.chat.ratelimit import Rate
from tmi_cluster.embedded import redis_server_executable
from tmi_cluster.events import ConnectedEvent, DisconnectedEvent
from tmi_cluster.simulator import ChatSimulator, Limits
from tmi_cluster.worker.worker import build_pool

from .helpers import free_port, run
from .test_connection import Recorder


class RedisProcess:
    """A redis-server of one test, that the test stops (SIGKILL) and starts again."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                redis_server_executable(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        try:
            while True:
                with contextlib.suppress(redis.exceptions.ConnectionError):
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError("redis-server did not start within 10 s")
                time.sleep(0.02)  # the server's start: no event to wait on from outside
        finally:
            client.close()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path)
    yield server
    server.kill()


@pytest.mark.timeout(90)
@run
async def test_a_login_waits_for_redis_and_carries_on_when_it_comes(
    own_redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tmi_cluster.bus.windows")
    async with ChatSimulator(channels=["alpha"]) as sim:
        sim.add_account("bot", "tok")
        client = redis.asyncio.Redis.from_url(own_redis.url)  # Redis is down
        try:
            auth = SharedWindow(
                client, "t:ratelimit:bot:auth", Rate(20, 10), epoch_key="t:ratelimit:epoch"
            )
            events = Recorder()
            options = ConnectionOptions(
                host="127.0.0.1", port=sim.port, secure=False, login="bot", token="tok"
            )
            async with Connection(options, on_event=events, auth_window=auth) as connection:
                await asyncio.wait_for(auth.outage.wait(active=True), 10)
                assert connection.state is ConnectionState.CONNECTING  # waiting, not dead
                await asyncio.sleep(5)  # the outage itself: Redis comes back 5 s later
                assert connection.state is ConnectionState.CONNECTING
                assert not events.of(DisconnectedEvent)
                own_redis.start()
                await connection.wait_connected(10)
                assert (await connection.join(["alpha"]))["alpha"].ok
                assert len(events.of(ConnectedEvent)) == 1
                assert not auth.outage.active
        finally:
            await client.aclose()
    waits = [r for r in caplog.records if "waits for Redis" in r.getMessage()]
    backs = [r for r in caplog.records if "Redis answers again" in r.getMessage()]
    assert len(waits) == 1, "the outage is logged once, with its reason"
    assert "cannot reach Redis at 127.0.0.1:" in waits[0].getMessage()
    assert len(backs) == 1
    assert sim.account("bot").authentications == 1


@pytest.mark.timeout(120)
@run
async def test_a_redis_restart_under_joins_and_sends_breaks_no_limit(
    own_redis: RedisProcess, make_settings: Callable[..., Settings]
) -> None:
    own_redis.start()
    channels = [f"c{i}" for i in range(30)]
    limits = Limits(
        join_allow=10,
        join_every_s=2.0,
        auth_allow=5,
        auth_every_s=8.0,
        message_allow=4,
        message_every_s=2.0,
        channel_interval_s=0.1,
    )
    async with ChatSimulator(channels=channels, limits=limits) as sim:
        sim.add_account("bot", "tok")
        settings = make_settings(
            f'prefix = "outage:"\n[redis]\nurl = "{own_redis.url}"\n'
            f'[tmi.connection]\nserver = "127.0.0.1"\nport = {sim.port}\nsecure = false\n'
            "connect_interval = 0\nchannels_per_connection = 10\njoin_timeout = 20\n"
            '[tmi.identity]\nusername = "bot"\npassword = "oauth:tok"\n'
            "[throttle.join]\nallow = 10\nevery = 2\n[throttle.auth]\nallow = 5\nevery = 8\n"
            "[throttle.messages]\nallow = 4\nevery = 2\nchannel_interval = 0.1\n"
        )
        client = redis.asyncio.Redis.from_url(own_redis.url)
        try:
            async with build_pool(settings, redis_client=client) as pool:
                joining = asyncio.ensure_future(pool.join(channels))
                await sim.wait_until(lambda: sim.account("bot").joins >= 10, 30)
                own_redis.kill()  # everything under way now waits
                # The first messages: the sending connection's first login waits for Redis,
                # then for the login window's fence after the restart (8.25 s): longer than
                # a login's own 10 s limit in all.
                texts = [f"message {i}" for i in range(10)]
                saying = asyncio.gather(*(pool.say(channels[i], t) for i, t in enumerate(texts)))
                await asyncio.sleep(3)  # the outage itself
                own_redis.start()  # an empty Redis: every window forgotten
                outcomes = await asyncio.wait_for(joining, 60)
                sent = await asyncio.wait_for(saying, 60)
                assert all(outcome.ok for outcome in outcomes.values())
                assert sent == [1] * len(texts)
                assert pool.channels == set(channels)
        finally:
            await client.aclose()
        stats = sim.account("bot")
        assert stats.violations == []  # no budget exceeded, before, during or after
        assert stats.joins == len(channels)  # nothing joined twice
        assert stats.messages == len(texts)  # each said once: none lost, none twice

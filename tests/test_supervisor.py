"""The supervisor's lifecycle: start, Redis waited for and outages waited out, an idempotent
stop, signals (a second one forces the exit), a database outage at stop logged."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio

from tmi_cluster.bus import Coordination, Keys, Order, read
from tmi_cluster.cluster import admin
from tmi_cluster.config import Settings
from tmi_cluster.embedded import redis_server_executable
from tmi_cluster.errors import RedisUnavailableError, TmiClusterError
from tmi_cluster.events import ClusterEvent, ProcessScaled
from tmi_cluster.store import RunState, Store
from tmi_cluster.supervisor.supervisor import Supervisor

from .helpers import free_port, until
from .test_cli import SCRIPT, _env

Make = Callable[..., Settings]


async def _until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    """Wait until ``condition()`` holds (another process's state), at most ``timeout_s``."""
    await until(condition, timeout_s)


class RedisServer:
    """A redis-server of the test's own on a fixed port, to stop and start again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
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
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    assert self.process.poll() is None, "redis-server exited"
                    assert time.monotonic() < deadline, "redis-server did not answer"
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer(free_port())
    yield server
    server.stop()


def _settings(
    make: Make, tmp_path: Path, redis_url: str, prefix: str = "t:", **extra: str
) -> Settings:
    return make(
        None,
        {
            "TMI_CLUSTER_REDIS__URL": redis_url,
            "TMI_CLUSTER_PREFIX": prefix,
            "TMI_CLUSTER_DATABASE__URL": f"sqlite:///{tmp_path / 'cluster.db'}",
            "TMI_CLUSTER_SUPERVISOR__STALE": "3",
            "TMI_CLUSTER_PROCESS__PERIODIC_TIMER": "0.1",
            "TMI_CLUSTER_TMI__CONNECTION__SIMULATE": "always",  # never Twitch in a test
            **extra,
        },
    )


def _state(supervisor: Supervisor) -> RunState:
    """The state now (a call, so that the type checker does not carry an earlier check over)."""
    return supervisor.state


def _history(settings: Settings, supervisor_id: str) -> list[str]:
    with Store(settings.database.url) as store:
        return [h.state for h in store.history(supervisor_id) if h.process_id is None]


def test_aclose_is_idempotent(
    make_settings: Make,
    tmp_path: Path,
    redis_server: str,
    redis_prefix: str,
    redis_client: redis.Redis,
) -> None:
    settings = _settings(make_settings, tmp_path, redis_server, redis_prefix)
    supervisor = Supervisor(settings)
    key = supervisor.keys.supervisor_heartbeat(supervisor.id)

    async def scenario() -> None:
        async with supervisor:
            assert supervisor.state is RunState.RUNNING
            assert redis_client.exists(key) == 1
            await asyncio.gather(supervisor.aclose(), supervisor.aclose())  # concurrent
            assert _state(supervisor) is RunState.STOPPED
            await supervisor.aclose()  # again
        await supervisor.aclose()  # and after the block's own

    asyncio.run(scenario())
    assert supervisor.state is RunState.STOPPED
    assert redis_client.exists(key) == 0
    assert _history(settings, supervisor.id) == ["running", "stopped"]  # one stop recorded


def test_aclose_before_start(make_settings: Make, tmp_path: Path, redis_server: str) -> None:
    supervisor = Supervisor(_settings(make_settings, tmp_path, redis_server))
    asyncio.run(supervisor.aclose())
    assert supervisor.state is RunState.STOPPED
    with pytest.raises(RuntimeError, match="starts once"):
        asyncio.run(supervisor.start())


def test_start_gives_up_when_redis_never_answers(make_settings: Make, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    settings = _settings(make_settings, tmp_path, f"redis://127.0.0.1:{port}/0")
    supervisor = Supervisor(settings, redis_wait_s=0.5)

    async def scenario() -> None:
        async with supervisor:
            raise AssertionError("started without Redis")

    began = time.monotonic()
    with pytest.raises(RedisUnavailableError) as caught:
        asyncio.run(scenario())
    assert time.monotonic() - began < 10
    assert str(caught.value).startswith(f"cannot reach Redis at 127.0.0.1:{port}: ")
    assert str(caught.value).endswith("(waited 0.5 s): start Redis, or check redis.url")
    assert supervisor.state is RunState.STOPPED
    assert supervisor.outage.outages == 1
    assert _history(settings, supervisor.id) == []  # never recorded as running


def test_start_waits_for_redis(make_settings: Make, tmp_path: Path, own_redis: RedisServer) -> None:
    supervisor = Supervisor(_settings(make_settings, tmp_path, own_redis.url), redis_wait_s=30)

    async def scenario() -> None:
        starting = asyncio.create_task(supervisor.start())
        try:
            await _until(lambda: supervisor.outage.active)
            assert supervisor.state is RunState.STARTING
            await asyncio.to_thread(own_redis.start)
            await starting
            assert _state(supervisor) is RunState.RUNNING
            assert not supervisor.outage.active
        finally:
            await supervisor.aclose()

    asyncio.run(scenario())
    assert supervisor.state is RunState.STOPPED


def test_redis_outage_while_running_is_waited_out(
    make_settings: Make, tmp_path: Path, own_redis: RedisServer
) -> None:
    own_redis.start()
    settings = _settings(make_settings, tmp_path, own_redis.url)
    supervisor = Supervisor(settings)
    key = supervisor.keys.supervisor_heartbeat(supervisor.id)
    client = redis.Redis(port=own_redis.port)

    async def scenario() -> None:
        async with supervisor:
            own_redis.stop()
            await _until(lambda: supervisor.outage.active)
            assert supervisor.state is RunState.RUNNING
            await asyncio.to_thread(own_redis.start)  # empty: the key is gone with the server
            await _until(lambda: client.exists(key) == 1)  # the heartbeat wrote it again
            assert supervisor.state is RunState.RUNNING
            assert not supervisor.outage.active

    try:
        asyncio.run(scenario())
    finally:
        client.close()
    assert supervisor.outage.outages == 1
    assert _history(settings, supervisor.id) == ["running", "stopped"]


def _run(tmp_path: Path, redis_url: str, prefix: str) -> tuple[subprocess.Popen[str], str]:
    database = f"sqlite:///{tmp_path / 'cluster.db'}"
    process = subprocess.Popen(
        [SCRIPT, "run"],
        cwd=tmp_path,
        env=_env(
            TMI_CLUSTER_REDIS__URL=redis_url,
            TMI_CLUSTER_PREFIX=prefix,
            TMI_CLUSTER_DATABASE__URL=database,
            TMI_CLUSTER_TMI__CONNECTION__SIMULATE="always",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert " running (Redis: " in line, line
    return process, database


def _read_until(process: subprocess.Popen[str], needle: str) -> str:
    assert process.stderr is not None
    seen = ""
    while needle not in seen:
        line = process.stderr.readline()
        assert line, f"stderr ended before {needle!r}:\n{seen}"
        seen += line
    return seen


def test_second_signal_forces_the_exit(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    process, database = _run(tmp_path, redis_server, redis_prefix)
    lock = sqlite3.connect(tmp_path / "cluster.db", isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")  # the final write now waits for the database (10 s)
        process.send_signal(signal.SIGTERM)
        _read_until(process, "SIGTERM received: stopping gracefully")
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        assert time.monotonic() - began < 5  # at once, not after the database's busy timeout
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        lock.close()
    assert process.returncode == -signal.SIGTERM, err
    assert "SIGTERM again: forcing the exit now" in err
    assert "Traceback" not in err
    assert "stopped" not in out
    with Store(database) as store:
        [record] = store.supervisors()
    assert record.state == "running"  # no final write: list finds the heartbeat gone instead


def test_database_outage_at_stop_is_logged(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    process, _ = _run(tmp_path, redis_server, redis_prefix)
    try:
        with sqlite3.connect(tmp_path / "cluster.db", isolation_level=None) as db:
            for table in ("history", "supervisor_processes", "supervisors"):
                db.execute(f"DROP TABLE tmi_cluster_{table}")
        db.close()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "stopped, but its stop could not be recorded: cannot write to database" in err
    assert "no such table" in err
    assert "Traceback" not in err
    assert out.endswith(" stopped\n")


def test_a_supervisor_over_memory_limit_stops_to_start_again(
    make_settings: Make, tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    settings = make_settings(
        None,
        {
            "TMI_CLUSTER_REDIS__URL": redis_server,
            "TMI_CLUSTER_PREFIX": redis_prefix,
            "TMI_CLUSTER_DATABASE__URL": f"sqlite:///{tmp_path / 'cluster.db'}",
            "TMI_CLUSTER_MEMORY_LIMIT": "16",  # any Python process is over it
            "TMI_CLUSTER_TMI__CONNECTION__SIMULATE": "always",
        },
    )
    supervisor = Supervisor(settings, memory_grace_s=0.0)

    async def scenario() -> None:
        async with supervisor:
            await asyncio.wait_for(supervisor.wait(), 20)  # it asks for its own stop

    asyncio.run(scenario())
    assert supervisor.restart_wanted
    assert supervisor.failure is None
    assert _state(supervisor) is RunState.STOPPED  # cleanly: `tmi-cluster run` then starts again


def test_the_coordinator_sizes_the_supervisor_with_process_scaled_events(
    make_settings: Make, tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    settings = _settings(make_settings, tmp_path, redis_server, redis_prefix)
    events: list[ClusterEvent] = []

    async def scenario() -> None:
        sized = asyncio.Event()

        def on_event(event: ClusterEvent) -> None:
            events.append(event)
            if isinstance(event, ProcessScaled):
                sized.set()

        supervisor = Supervisor(settings, supervisor_id="sup-s", on_event=on_event)
        holder.append(supervisor)
        async with supervisor:
            assert supervisor.coordinator is not None
            await asyncio.wait_for(sized.wait(), 20)  # the coordinator gave it the minimum
            assert supervisor.processes is not None
            assert supervisor.processes.target == settings.auto_scale.processes.min
            supervisor.order(Order.SCALE, {"processes": "3", "cause": "manual"})
            assert supervisor.processes.target == 3
            supervisor.order(Order.SCALE, {"processes": "lots"})  # a bad order: ignored
            assert supervisor.processes.target == 3

    holder: list[Supervisor] = []
    asyncio.run(scenario())
    supervisor = holder[0]
    scaled = [e for e in events if isinstance(e, ProcessScaled)]
    minimum = ProcessScaled(supervisor="sup-s", before=0, after=2, cause="below_minimum")
    assert scaled[0] == minimum  # the cluster's min
    assert scaled[1] == ProcessScaled(supervisor="sup-s", before=2, after=3, cause="manual")
    assert supervisor.coordinator is not None
    assert not supervisor.coordinator.leading  # the lease was given up at the stop


def test_a_supervisor_of_fixed_size_runs_its_own_count_and_the_auto_scaler_leaves_it(
    make_settings: Make, tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    settings = _settings(
        make_settings, tmp_path, redis_server, redis_prefix, TMI_CLUSTER_SUPERVISOR__PROCESSES="3"
    )
    events: list[ClusterEvent] = []

    async def scenario() -> None:
        supervisor = Supervisor(settings, supervisor_id="sup-f", on_event=events.append)
        async with supervisor:
            assert supervisor.processes is not None
            assert supervisor.processes.target == 3  # not the cluster's min (2)
            client = redis.asyncio.Redis.from_url(redis_server)
            keys = Keys.from_settings(settings)
            try:
                # beating, it says it sizes itself; the coordinator sets it no target
                await _until_async(lambda: _says_fixed(client, keys, "sup-f"))
                assert supervisor.coordinator is not None
                for _ in range(3):
                    await supervisor.coordinator.run_once()
                assert "sup-f" not in await Coordination(client, keys).targets()
            finally:
                await client.aclose()
            supervisor.order(Order.SCALE, {"processes": "1", "cause": "manual"})  # ignored
            assert supervisor.processes.target == 3
            with pytest.raises(TmiClusterError, match=r"sup-f runs a fixed 3 .*processes"):
                await admin.scale(settings, "sup-f", 1)  # by hand: refused, saying why
            assert (await admin.scaling(settings))["fixed"] == {"sup-f": 3}

    asyncio.run(scenario())
    scaled = [e for e in events if isinstance(e, ProcessScaled)]
    assert scaled == [ProcessScaled(supervisor="sup-f", before=0, after=3, cause="fixed")]


async def _says_fixed(client: redis.asyncio.Redis, keys: Keys, supervisor_id: str) -> bool:
    beats = await read(client, keys, "supervisor", {supervisor_id})
    return supervisor_id in beats and beats[supervisor_id].status.fixed


async def _until_async(check: Callable[[], Awaitable[bool]], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)

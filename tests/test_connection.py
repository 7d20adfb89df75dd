"""One Twitch connection against the simulator (and one hostile raw server)."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tmi_cluster.chat.connection import Connection, ConnectionOptions, ConnectionState
from tmi_cluster.chat.ratelimit import LocalWindow, Rate
from tmi_cluster.chat.transport import describe_connect_error
from tmi_cluster.errors import LoginError
from tmi_cluster.events import (
    CapEvent,
    ChannelLostEvent,
    ConnectedEvent,
    DisconnectedEvent,
    Event,
    IrcCommandEvent,
    IrcMessageEvent,
    JoinEvent,
    MessageEvent,
    UserNoticeEvent,
)
from tmi_cluster.outcomes import JoinResult
from tmi_cluster.simulator import ChatSimulator

from .helpers import run, until_set

TIMEOUT_S = 10.0
E = TypeVar("E", bound=Event)


def state(connection: Connection) -> ConnectionState:
    """The state, read through a call (so that type narrowing does not stick)."""
    return connection.state


class Recorder:
    """Collects events; lets a test wait for a condition on them."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    async def until(self, check: Callable[[], bool], timeout_s: float = TIMEOUT_S) -> None:
        await until_set(check, self._changed, timeout_s)


async def every_message_exactly_once(
    events: Recorder, sim: ChatSimulator, channels: list[str]
) -> None:
    """Stop the traffic; then every message the simulator delivered while one of our
    connections was joined must arrive, and none twice (the simulator's accounting judges)."""
    sim.pause()
    expected = {d.message_id for c in channels for d in sim.deliveries(c) if d.connections}

    def received() -> list[str]:
        # One MessageEvent per PRIVMSG and one UserNoticeEvent per USERNOTICE.
        kinds = (MessageEvent, UserNoticeEvent)
        return [e.tags["id"] for e in events.events if type(e) in kinds]

    await events.until(lambda: set(received()) >= expected)
    ids = received()
    assert len(ids) == len(set(ids)), "a message was delivered twice"
    assert set(ids) == expected


def _options(sim: ChatSimulator, **changes: object) -> ConnectionOptions:
    base: dict[str, object] = {
        "host": "127.0.0.1",
        "port": sim.port,
        "secure": False,
        "backoff_base_s": 0.05,
        "backoff_cap_s": 0.2,
    }
    base.update(changes)
    return ConnectionOptions(**base)  # type: ignore[arg-type]


@run
async def test_anonymous_connection_joins_and_reads() -> None:
    async with ChatSimulator(channels=["alpha", "beta"], seed=1) as sim:
        events = Recorder()
        async with Connection(_options(sim), on_event=events) as connection:
            await connection.join(["alpha", "#Beta"])
            await connection.wait_connected(TIMEOUT_S)
            [connected] = events.of(ConnectedEvent)
            assert isinstance(connected, ConnectedEvent)
            assert connected.user.startswith("justinfan")
            await events.until(lambda: len(sim.joined("alpha")) == len(sim.joined("beta")) == 1)
            lines = sim.generate(50)
            wanted = {line.message_id for line in lines if line.command == "PRIVMSG"}
            await events.until(lambda: {e.message_id for e in events.of(MessageEvent)} >= wanted)
            assert state(connection) is ConnectionState.CONNECTED
        assert state(connection) is ConnectionState.CLOSED


@run
async def test_account_over_tls_sends_and_another_reads() -> None:
    async with ChatSimulator(channels=["alpha"], tls_port=0) as sim:
        sim.add_account("mybot", "s3cret")
        assert sim.tls_port is not None
        options = ConnectionOptions(
            host="localhost",
            port=sim.tls_port,
            secure=True,
            ca_file=str(sim.ca_file),
            login="mybot",
            token="s3cret",
        )
        reader_events = Recorder()
        async with (
            Connection(_options(sim), on_event=reader_events) as reader,
            Connection(options) as bot,
        ):
            await reader.join(["alpha"])
            await reader_events.until(lambda: len(sim.joined("alpha")) == 1)
            await bot.wait_connected(TIMEOUT_S)
            assert bot.nick == "mybot"
            await bot.send("PRIVMSG", ["#alpha", "hello over TLS"])
            await reader_events.until(
                lambda: any(
                    getattr(e, "text", None) == "hello over TLS"
                    for e in reader_events.of(MessageEvent)
                )
            )


@run
async def test_websocket_transport() -> None:
    async with ChatSimulator(channels=["alpha"], websocket_port=0) as sim:
        assert sim.websocket_port is not None
        events = Recorder()
        options = _options(sim, port=sim.websocket_port, transport="websocket")
        async with Connection(options, on_event=events) as connection:
            await connection.join(["alpha"])
            await events.until(lambda: len(sim.joined("alpha")) == 1)
            lines = sim.generate(20, "alpha")
            wanted = {line.message_id for line in lines if line.command == "PRIVMSG"}
            await events.until(lambda: {e.message_id for e in events.of(MessageEvent)} >= wanted)


@run
async def test_refused_login_stops_without_retrying() -> None:
    async with ChatSimulator() as sim:
        sim.add_account("mybot", "right")
        events = Recorder()
        async with Connection(_options(sim, login="mybot", token="wrong"), on_event=events) as c:
            await events.until(lambda: bool(events.of(DisconnectedEvent)))
            [lost] = events.of(DisconnectedEvent)
            assert isinstance(lost, DisconnectedEvent)
            assert lost.reason == "mybot: Login authentication failed"
            assert not lost.reconnecting
            await events.until(lambda: state(c) is ConnectionState.FAILED)
            assert isinstance(c.failure, LoginError)
            with pytest.raises(LoginError, match="Login authentication failed"):
                await c.wait_connected(TIMEOUT_S)  # at once, with the reason
        assert "wrong" not in repr(_options(sim, token="wrong"))
        assert sim.account("mybot").authentications == 1


@run
async def test_abrupt_close_reconnects_with_backoff_and_rejoins() -> None:
    async with ChatSimulator(channels=["alpha", "beta"]) as sim:
        events = Recorder()
        async with Connection(_options(sim), on_event=events) as connection:
            await connection.join(["alpha", "beta"])
            await events.until(lambda: len(sim.joined("alpha")) == len(sim.joined("beta")) == 1)
            first = sim.joined("alpha")
            sim.drop()
            await events.until(lambda: len(events.of(ConnectedEvent)) == 2)
            [lost] = events.of(DisconnectedEvent)
            assert isinstance(lost, DisconnectedEvent)
            assert lost.reconnecting
            await events.until(
                lambda: (
                    len(sim.joined("alpha")) == len(sim.joined("beta")) == 1
                    and sim.joined("alpha") != first
                )
            )
            assert connection.reconnects == 1


@run
async def test_half_open_connection_is_detected_by_ping() -> None:
    async with ChatSimulator(channels=["alpha"]) as sim:
        events = Recorder()
        options = _options(sim, ping_interval_s=0.2, ping_timeout_s=0.3)
        async with Connection(options, on_event=events) as connection:
            await connection.join(["alpha"])
            await connection.wait_connected(TIMEOUT_S)
            loop = asyncio.get_running_loop()
            sim.stall()
            stalled_at = loop.time()
            await events.until(lambda: bool(events.of(DisconnectedEvent)))
            detected_after = loop.time() - stalled_at
            [lost] = events.of(DisconnectedEvent)
            assert isinstance(lost, DisconnectedEvent)
            assert lost.reason == "no PONG within 0.3 s"
            assert detected_after < 0.2 + 0.3 + 0.5
            await events.until(lambda: len(events.of(ConnectedEvent)) == 2)


@run
async def test_reconnect_under_traffic_loses_and_duplicates_nothing() -> None:
    channels = ["alpha", "beta", "gamma"]
    async with ChatSimulator(channels=channels, rate=3000, seed=9) as sim:
        events = Recorder()
        options = _options(sim, overlap_linger_s=0.3)
        async with Connection(options, on_event=events) as connection:
            await connection.join(channels)
            await events.until(lambda: all(len(sim.joined(c)) == 1 for c in channels))
            await events.until(lambda: len(events.of(MessageEvent)) > 50)
            sim.reconnect(close_after_s=1.0)
            await events.until(lambda: connection.reconnects == 1)
            await events.until(lambda: all(len(sim.joined(c)) == 1 for c in channels))
            await events.until(lambda: len(events.of(MessageEvent)) > 3000)
            await every_message_exactly_once(events, sim, channels)
            assert not events.of(DisconnectedEvent)  # make-before-break: never down
            overlap = [d for c in channels for d in sim.deliveries(c) if len(d.connections) == 2]
            assert overlap, "the test should cover messages sent during the overlap"
            assert connection.dedupe_keys == 0  # de-duplication keeps nothing after the overlap


def _open_links(sim: ChatSimulator) -> set[int]:
    return {c.id for c in sim.connections() if c.open}


@run
async def test_a_replacement_that_lags_delivers_nothing_twice() -> None:
    # The new link falls behind: lines the old one delivered are still on their way to it when
    # the old one closes. De-duplication must last until the new link has caught up.
    async with ChatSimulator(channels=["alpha"]) as sim:
        events = Recorder()
        options = _options(sim, overlap_linger_s=0.0)
        async with Connection(options, on_event=events) as connection:
            await connection.join(["alpha"])
            [old] = sim.joined("alpha")
            sim.reconnect(close_after_s=60)  # the server would keep the old link a long while
            await events.until(lambda: len(events.of(JoinEvent)) == 2)  # the new link joined
            [new] = set(sim.joined("alpha")) - {old}
            sim.hold([new])
            sim.generate(20, "alpha")  # both links get these; the new one late
            await sim.wait_until(lambda: old not in _open_links(sim))  # the old one retired
            sim.hold([new], held=False)
            await every_message_exactly_once(events, sim, ["alpha"])
            await events.until(lambda: connection.dedupe_keys == 0)


@run
async def test_an_old_link_that_lags_loses_nothing() -> None:
    # The old link falls behind: lines sent before the new one joined are only there. It must
    # not be closed before it has delivered them.
    async with ChatSimulator(channels=["alpha"]) as sim:
        events = Recorder()
        options = _options(sim, overlap_linger_s=0.0)
        async with Connection(options, on_event=events) as connection:
            await connection.join(["alpha"])
            [old] = sim.joined("alpha")
            sim.reconnect(close_after_s=60)
            sim.hold([old])  # after the RECONNECT, before anything else
            sim.generate(20, "alpha")  # only the old link is joined: only it can deliver these
            await events.until(lambda: len(events.of(JoinEvent)) == 2)  # the new link joined
            await events.until(lambda: connection.reconnects == 1)  # and took over
            sim.hold([old], held=False)
            await every_message_exactly_once(events, sim, ["alpha"])
            await sim.wait_until(lambda: old not in _open_links(sim))
            assert not events.of(DisconnectedEvent)


@run
async def test_a_channel_the_replacement_is_refused_is_read_until_the_old_link_closes() -> None:
    # The replacement is refused a channel (suspended meanwhile) that the old link still holds:
    # the old link delivers it until it is closed, then the channel is lost, and nothing after.
    async with ChatSimulator(channels=["alpha", "beta"]) as sim:
        events = Recorder()
        options = _options(sim, overlap_linger_s=1.0)
        async with Connection(options, on_event=events) as connection:
            await connection.join(["alpha", "beta"])
            [old] = sim.joined("alpha")
            sim.suspend("beta")  # a suspension keeps those joined, refuses new joins
            sim.reconnect([old], close_after_s=60)
            await events.until(lambda: len(events.of(JoinEvent)) == 3)  # the new link: alpha
            assert sim.joined("beta") == (old,)
            lines = sim.generate(10, "beta")  # only the old link can deliver these
            await events.until(lambda: bool(events.of(ChannelLostEvent)))
            [lost] = events.of(ChannelLostEvent)
            assert (lost.channel, lost.reason) == ("beta", "msg_channel_suspended")
            late = sim.generate(10, "beta")
            await sim.wait_until(lambda: old not in _open_links(sim))
            wanted = {line.message_id for line in lines if line.message_id}
            kinds = (MessageEvent, UserNoticeEvent)
            got = [e.tags["id"] for e in events.events if type(e) in kinds]
            assert set(got) == wanted  # before the loss, once each
            assert len(got) == len(wanted)
            assert not {line.message_id for line in late} & set(got)  # after it, nothing
            # the loss came after the last of them
            order = [type(e) for e in events.events if type(e) in (*kinds, ChannelLostEvent)]
            assert order[-1] is ChannelLostEvent
            assert "beta" not in connection.channels


@run
async def test_a_replacement_lost_during_the_overlap_keeps_the_old_link() -> None:
    channels = ["alpha", "beta"]
    async with ChatSimulator(channels=channels, rate=3000, seed=11) as sim:
        events = Recorder()
        options = _options(sim, overlap_timeout_s=30.0, overlap_linger_s=0.3)
        window = LocalWindow(Rate(2, 60.0))  # the replacement's JOINs wait: it cannot take over
        async with Connection(options, on_event=events, join_window=window) as connection:
            await connection.join(channels)
            [old] = _open_links(sim)
            sim.reconnect(close_after_s=30)  # the old link closes late
            await sim.wait_until(lambda: len(_open_links(sim)) == 2)
            [new] = _open_links(sim) - {old}
            sim.drop([new])  # the replacement dies before it takes over
            # the overlap ends at once (its JOINs stop waiting for the window): no more
            # de-duplication, the old link goes on alone
            await events.until(lambda: connection.dedupe_keys == 0)
            before = len(events.of(MessageEvent))
            await events.until(lambda: len(events.of(MessageEvent)) > before + 300)
            assert not events.of(DisconnectedEvent)  # the old link stayed, nothing went down
            assert _open_links(sim) == {old}
            assert state(connection) is ConnectionState.CONNECTED
            assert connection.reconnects == 0
            assert connection.channels == set(channels) == connection.joined
            assert connection.dedupe_keys == 0  # the overlap really ended


@run
async def test_a_channel_parted_and_joined_again_at_once_is_joined_again() -> None:
    # The server has not answered the PART yet when the JOIN comes: the channel is still in the
    # link's joined set. The JOIN must be sent all the same (after the PART), and the join end.
    async with ChatSimulator(channels=["alpha"]) as sim:
        events = Recorder()
        async with Connection(_options(sim), on_event=events) as connection:
            await connection.join(["alpha"])
            [link] = sim.joined("alpha")
            sim.hold([link])  # the server's answers wait
            await connection.part(["alpha"])
            rejoin = asyncio.ensure_future(connection.join(["alpha"]))
            stats = sim.account(str(connection.nick))
            await sim.wait_until(lambda: stats.joins == 2)  # the JOIN went after the PART
            assert connection.confirmed == set()  # not confirmed while the JOIN waits
            sim.hold([link], held=False)
            assert await asyncio.wait_for(rejoin, TIMEOUT_S) == {"alpha": JoinResult.JOINED}
            assert sim.joined("alpha") == (link,)
            assert connection.confirmed == {"alpha"} == connection.channels
            lines = sim.generate(20, "alpha")
            wanted = {line.message_id for line in lines if line.command == "PRIVMSG"}
            await events.until(lambda: {e.message_id for e in events.of(MessageEvent)} >= wanted)
            assert not events.of(ChannelLostEvent)


async def _hostile_server(lines: list[bytes]) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b":tmi.twitch.tv 001 justinfan1 :Welcome\r\n")
        for line in lines:
            writer.write(line)
            await writer.drain()
        try:
            await reader.read()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


@run
async def test_bad_server_input_never_ends_the_connection() -> None:
    hostile = [
        b"\xff\xfe garbage \x00 line\r\n",
        b"@only=tags\r\n",
        b":src\r\n",
        b"x" * 100_000 + b"\r\n",
        b"@msg-id=msg_channel_suspended :tmi.twitch.tv NOTICE #nobody :suspended\r\n",
        b":a!a@a PRIVMSG #c :caf\xc3\xa9 \xff after a bad byte\r\n",
        b"PING :still-there\r\n",
    ]
    server, port = await _hostile_server(hostile)
    async with server:
        events = Recorder()
        options = ConnectionOptions(
            host="127.0.0.1", port=port, secure=False, capabilities=(), join_timeout_s=60.0
        )
        async with Connection(options, on_event=events) as connection:
            # Held before the lines come (the connection's task logs in first): only a held
            # channel's events are delivered.
            joining = asyncio.create_task(connection.join(["c"]))
            await events.until(
                lambda: any(
                    getattr(e, "text", "").endswith("after a bad byte")
                    for e in events.of(MessageEvent)
                )
            )
            joining.cancel()
            assert state(connection) is ConnectionState.CONNECTED
            assert not events.of(DisconnectedEvent)
            assert connection.oversized_lines == 1
            assert connection.malformed_lines == 3


def test_backoff_grows_with_jitter_and_a_cap() -> None:
    options = ConnectionOptions(backoff_base_s=1.0, backoff_cap_s=8.0)
    assert options.backoff_s(1) == 0.0
    for attempt, ceiling in [(2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (9, 8.0)]:
        delay = options.backoff_s(attempt)
        assert ceiling / 2 <= delay <= ceiling


def test_options_from_settings() -> None:
    from tmi_cluster.config import Settings  # noqa: PLC0415
    from tmi_cluster.worker.worker import connection_options  # noqa: PLC0415

    settings = Settings.model_validate(
        {
            "tmi": {
                "identity": {"username": "Bot", "password": "oauth:tok"},
                "connection": {"transport": "websocket", "ping_interval": 12},
            }
        }
    )
    options = connection_options(settings, name="c1")
    assert (options.login, options.token, options.port, options.transport) == (
        "bot",
        "tok",
        6697,
        "websocket",
    )
    assert options.ping_interval_s == 12
    assert "tok" not in repr(options)


@pytest.mark.parametrize("text", ["hi\r\nJOIN #evil", "hi\nPART #x"])
def test_sending_never_injects(text: str) -> None:
    from tmi_cluster.errors import UnsafeLineError  # noqa: PLC0415

    async def attempt() -> None:
        async with ChatSimulator(channels=["alpha"]) as sim:
            sim.add_account("mybot", "t")
            async with Connection(_options(sim, login="mybot", token="t")) as bot:
                await bot.wait_connected(TIMEOUT_S)
                with pytest.raises(UnsafeLineError):
                    await bot.send("PRIVMSG", ["#alpha", text])
                assert all("evil" not in line for c in sim.connections() for line in c.sent)

    asyncio.run(attempt())


@pytest.fixture
def inspircd(tmp_path: Path) -> Iterator[int]:
    """A real InspIRCd (Debian's package) on a free loopback port, plain TCP."""
    binary = shutil.which("inspircd") or (
        "/usr/sbin/inspircd" if Path("/usr/sbin/inspircd").exists() else None
    )
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("inspircd is not installed and CI is set (.ci/run installs it)")
        pytest.skip("inspircd is not installed (apt-get install inspircd)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    template = (Path(__file__).parent / "inspircd" / "inspircd.conf.template").read_text()
    config = tmp_path / "inspircd.conf"
    config.write_text(template.replace("{port}", str(port)).replace("{folder}", str(tmp_path)))
    process = subprocess.Popen(
        [binary, "--runasroot", "--nofork", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:  # wait for its own word that it runs
        if "is now running" in line:
            break
    else:
        pytest.fail(f"inspircd did not start; see {tmp_path / 'inspircd.log'}")
    yield port
    process.terminate()
    try:
        process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def test_a_real_irc_server_refusing_twitch_capabilities(inspircd: int) -> None:
    async def scenario() -> None:
        events = Recorder()
        options = ConnectionOptions(host="127.0.0.1", port=inspircd, secure=False)
        async with Connection(options, on_event=events) as connection:
            await connection.join(["alpha", "beta"])
            await connection.wait_connected(TIMEOUT_S)
            await events.until(
                lambda: {e.channel for e in events.of(JoinEvent)} == {"alpha", "beta"}
            )
            nak = [e for e in events.of(CapEvent) if e.subcommand == "NAK"]
            assert nak, "InspIRCd refuses the Twitch capabilities"
            reader, writer = await asyncio.open_connection("127.0.0.1", inspircd)
            writer.write(b"NICK other\r\nUSER other 0 * :other\r\n")
            await writer.drain()
            while b" 001 " not in await asyncio.wait_for(reader.readline(), TIMEOUT_S):
                pass
            writer.write(b"JOIN #alpha\r\n")
            await writer.drain()
            while b" 366 " not in await asyncio.wait_for(reader.readline(), TIMEOUT_S):
                pass
            writer.write(b"PRIVMSG #alpha :hello from a second client\r\n")
            await writer.drain()
            await events.until(
                lambda: any(
                    e.text == "hello from a second client" and e.user == "other"
                    for e in events.of(MessageEvent)
                )
            )
            await connection.send("PRIVMSG", ["#alpha", "hello back"])
            while True:
                line = await asyncio.wait_for(reader.readline(), TIMEOUT_S)
                if b"PRIVMSG #alpha :hello back" in line:
                    break
            writer.close()
            await writer.wait_closed()

    asyncio.run(scenario())


FLOOD_SERVER = """
import socket, sys
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
client, _ = server.accept()
client.sendall(b":tmi.twitch.tv 001 justinfan1 :Welcome\\r\\n")
chunk = b"x" * 1_000_000
for _ in range(int(sys.argv[1])):
    client.sendall(chunk)  # megabytes without a line end
    client.sendall(b"\\r\\n")
client.sendall(b":a!a@a PRIVMSG #c :after the flood\\r\\n")
while client.recv(65536):  # until the client closes; an early exit would reset the link
    pass
"""


def test_a_flood_of_long_lines_does_not_grow_memory() -> None:
    import sys  # noqa: PLC0415
    import tracemalloc  # noqa: PLC0415

    megabytes = 60
    server = subprocess.Popen(
        [sys.executable, "-c", FLOOD_SERVER, str(megabytes)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())

        async def scenario() -> int:
            events = Recorder()
            options = ConnectionOptions(
                host="127.0.0.1", port=port, secure=False, capabilities=(), join_timeout_s=120.0
            )
            tracemalloc.start()
            try:
                async with Connection(options, on_event=events) as connection:
                    joining = asyncio.create_task(connection.join(["c"]))  # held: delivered
                    await events.until(
                        lambda: any(e.text == "after the flood" for e in events.of(MessageEvent)),
                        timeout_s=60,
                    )
                    assert connection.oversized_lines == megabytes
                    joining.cancel()
                peak: int = tracemalloc.get_traced_memory()[1]
                return peak
            finally:
                tracemalloc.stop()

        peak = asyncio.run(scenario())
        assert peak < 4 * 1024 * 1024, (
            f"peak {peak} bytes while reading {megabytes} MB of long lines"
        )
    finally:
        server.kill()
        server.communicate()


@run
async def test_a_failing_handler_is_logged_and_the_connection_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with ChatSimulator(channels=["alpha"], seed=2) as sim:
        events = Recorder()

        def handler(event: Event) -> None:
            events(event)
            if isinstance(event, MessageEvent) and len(events.of(MessageEvent)) % 2:
                raise RuntimeError("a bug in the application")

        with caplog.at_level("ERROR", logger="tmi_cluster.chat.connection"):
            async with Connection(_options(sim), on_event=handler) as connection:
                await connection.join(["alpha"])
                await events.until(lambda: len(sim.joined("alpha")) == 1)
                lines = sim.generate(40, "alpha")
                wanted = {line.message_id for line in lines if line.command == "PRIVMSG"}
                await events.until(
                    lambda: {e.message_id for e in events.of(MessageEvent)} >= wanted
                )
                assert not events.of(DisconnectedEvent)  # the bug did not cost the connection
        failures = [r for r in caplog.records if "the event handler failed" in r.getMessage()]
        assert len(failures) == (len(wanted) + 1) // 2


@run
async def test_a_failing_task_of_a_link_drops_the_link_with_the_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tmi_cluster.chat.session import Session  # noqa: PLC0415 - the link under a connection

    async with ChatSimulator() as sim:
        session = Session(_options(sim), lambda message, link: None)
        await session.open()

        async def broken() -> None:
            raise RuntimeError("a bug")

        session.spawn(broken(), "broken-task")
        await asyncio.wait_for(session.closed.wait(), TIMEOUT_S)
        assert session.reason == "broken-task failed: RuntimeError: a bug"
        assert any("broken-task failed" in r.getMessage() for r in caplog.records)
        await session.close()


@run
async def test_closing_sends_what_was_written_first() -> None:
    async with ChatSimulator() as sim:
        connection = await Connection(_options(sim)).start()
        await connection.wait_connected(TIMEOUT_S)
        padding = "x" * 300
        # About 1 MB, unanswered: what neither asyncio's buffer nor the socket has sent yet must
        # still go out (a close that aborts sends a reset, and the server may drop it all).
        for number in range(3000):
            await connection.send("PONG", [f"n{number}{padding}"])
        await connection.aclose()
        await sim.wait_until(lambda: sim.connections()[0].sent[-1] == f"PONG n2999{padding}")
        pings = [line for line in sim.connections()[0].sent if line.startswith("PONG n")]
        assert len(pings) == 3000


@run
async def test_raw_lines_in_and_out_as_events_with_the_token_masked() -> None:
    async with ChatSimulator(channels=["alpha"]) as sim:
        sim.add_account("mybot", "secrettoken")
        events: list[Event] = []
        options = ConnectionOptions(
            host="127.0.0.1",
            port=sim.port,
            secure=False,
            login="mybot",
            token="secrettoken",
            raw_lines=True,
        )
        async with Connection(options, on_event=events.append) as connection:
            await connection.wait_connected(10)
            await connection.join(["alpha"])
            generated = [
                line.data.decode().rstrip("\r\n") for line in sim.generate(3, channel="alpha")
            ]

            def arrived() -> bool:  # each generated line, whatever its command, as it came
                raws = {e.raw for e in events if isinstance(e, IrcMessageEvent)}
                return all(line in raws for line in generated)

            async with asyncio.timeout(10):
                while not arrived():
                    await asyncio.sleep(0.01)
        sent = [e for e in events if isinstance(e, IrcCommandEvent)]
        assert [e.command for e in sent][:2] == ["CAP", "PASS"]
        assert sent[1].raw == "PASS oauth:***"
        assert not any("secrettoken" in e.raw for e in events)
        assert any(e.raw == "JOIN #alpha" for e in sent)
        received = [e for e in events if isinstance(e, IrcMessageEvent)]
        assert {"001", "JOIN", "ROOMSTATE"} <= {e.command for e in received}
        assert all(e.connection == options.name for e in received + sent)
    async with ChatSimulator(channels=["alpha"]) as sim:
        events = []
        async with Connection(_options(sim), on_event=events.append) as connection:
            await connection.wait_connected(10)
        assert not any(isinstance(e, IrcMessageEvent | IrcCommandEvent) for e in events)


@run
async def test_debug_logs_every_line_in_and_out_with_the_token_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tmi_cluster.irc")
    async with ChatSimulator(channels=["alpha"]) as sim:
        sim.add_account("mybot", "secrettoken")
        options = ConnectionOptions(
            host="127.0.0.1",
            port=sim.port,
            secure=False,
            login="mybot",
            token="secrettoken",
            debug=True,
        )
        async with Connection(options) as connection:
            await connection.wait_connected(10)
            await connection.join(["alpha"])
    lines = [r.getMessage() for r in caplog.records if r.name == "tmi_cluster.irc"]
    assert f"{options.name} > PASS oauth:***" in lines
    assert f"{options.name} > JOIN #alpha" in lines
    assert any(line.startswith(f"{options.name} < ") and " 001 " in line for line in lines)
    assert not any("secrettoken" in line for line in lines)


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (socket.gaierror(-2, "Name or service not known"), "the name does not resolve (DNS: "),
        (ConnectionRefusedError(111, "Connection refused"), "the connection was refused"),
        (TimeoutError(), "no answer in time"),
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), "TLS failed"),
    ],
)
def test_a_failed_connection_is_described_as_a_user_acts_on_it(
    error: BaseException, said: str
) -> None:
    assert describe_connect_error(error).startswith(said)

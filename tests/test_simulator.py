"""The chat simulator, driven over real sockets as a Twitch client would."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import pytest

from tmi_cluster.events import MessageEvent, from_message
from tmi_cluster.irc import Message, parse
from tmi_cluster.simulator import ChatSimulator, Limits

from .helpers import run, run_documented_example

P = ParamSpec("P")
T = TypeVar("T")
TIMEOUT_S = 5.0


class Client:
    """A raw Twitch client: write lines, read parsed messages."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls,
        sim: ChatSimulator,
        nick: str = "justinfan123",
        token: str | None = None,
        caps: str = "twitch.tv/tags twitch.tv/commands",
    ) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        client = cls(reader, writer)
        if caps:
            await client.send(f"CAP REQ :{caps}")
        if token is not None:
            await client.send(f"PASS oauth:{token}")
        await client.send(f"NICK {nick}")
        return client

    async def send(self, *lines: str) -> None:
        self.writer.write("".join(f"{line}\r\n" for line in lines).encode())
        await self.writer.drain()

    async def read(self) -> Message | None:
        """The next message, or None at the end of the connection."""
        line = await asyncio.wait_for(self.reader.readline(), TIMEOUT_S)
        return parse(line) if line else None

    async def expect(self, check: Callable[[Message], bool]) -> Message:
        """Read until a message passes ``check``."""
        while True:
            message = await self.read()
            assert message is not None, "the connection closed first"
            if check(message):
                return message

    async def closed(self) -> None:
        """Wait for the server to close the connection, then close ours."""
        with contextlib.suppress(ConnectionError):  # an abort may arrive as a reset
            while await self.read() is not None:
                pass
        await self.close()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def command(name: str, *params: str) -> Callable[[Message], bool]:
    return lambda m: m.command == name and list(m.params[: len(params)]) == list(params)


@run
async def test_anonymous_login_and_capabilities() -> None:
    async with ChatSimulator() as sim:
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        client = Client(reader, writer)
        await client.send("CAP LS 302")
        listed = await client.expect(command("CAP", "*", "LS"))
        assert listed.params[-1].split() == [
            "twitch.tv/tags",
            "twitch.tv/commands",
            "twitch.tv/membership",
        ]
        await client.send("CAP REQ :twitch.tv/tags sasl")
        nak = await client.expect(command("CAP", "*"))
        assert nak.params[1] == "NAK"
        await client.send("CAP REQ :twitch.tv/tags twitch.tv/commands", "NICK justinfan42")
        await client.expect(command("CAP", "*", "ACK"))
        welcome = await client.expect(command("001"))
        assert welcome.params == ["justinfan42", "Welcome, GLHF!"]
        await client.expect(command("376"))
        await client.close()


@run
async def test_account_login_and_its_failures() -> None:
    async with ChatSimulator() as sim:
        sim.add_account("mybot", "s3cret")
        good = await Client.connect(sim, "mybot", "s3cret")
        await good.expect(command("001", "mybot"))
        state = await good.expect(command("GLOBALUSERSTATE"))
        assert state.tags["display-name"] == "mybot"
        await good.close()

        bad = await Client.connect(sim, "mybot", "wrong")
        notice = await bad.expect(command("NOTICE"))
        assert notice.params == ["*", "Login authentication failed"]
        await bad.closed()

        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        no_pass = Client(reader, writer)
        await no_pass.send("NICK mybot")
        notice = await no_pass.expect(command("NOTICE"))
        assert notice.params == ["*", "Improperly formatted auth"]
        await no_pass.closed()
        assert sim.account("mybot").authentications == 2


@run
async def test_join_batch_echo_state_names_and_part() -> None:
    async with ChatSimulator(channels=["alpha", "beta"]) as sim:
        client = await Client.connect(sim)
        await client.send("JOIN #alpha,#Beta")
        for name in ("alpha", "beta"):
            join = await client.expect(command("JOIN"))
            assert (join.nick, join.params) == ("justinfan123", [f"#{name}"])
            userstate = await client.expect(command("USERSTATE"))
            assert userstate.params == [f"#{name}"]
            roomstate = await client.expect(command("ROOMSTATE"))
            assert roomstate.tags["room-id"]
            assert (await client.expect(command("353"))).params[-1] == "justinfan123"
            await client.expect(command("366"))
        assert len(sim.joined("alpha")) == 1
        await client.send("PART #alpha")
        part = await client.expect(command("PART"))
        assert part.params == ["#alpha"]
        assert sim.joined("alpha") == ()
        await client.close()


@run
async def test_suspended_banned_and_nonexistent_channels() -> None:
    async with ChatSimulator(channels=["gone", "strict"]) as sim:
        sim.add_account("mybot", "t")
        sim.suspend("gone")
        sim.ban("mybot", "strict")
        client = await Client.connect(sim, "mybot", "t")
        await client.send("JOIN #gone,#strict,#nowhere", "PING :probe")
        suspended = await client.expect(command("NOTICE"))
        assert (suspended.tags["msg-id"], suspended.params[0]) == ("msg_channel_suspended", "#gone")
        banned = await client.expect(command("NOTICE"))
        assert (banned.tags["msg-id"], banned.params[0]) == ("msg_banned", "#strict")
        # A channel that does not exist gives silence: the next reply is our PONG.
        pong = await client.read()
        assert pong is not None
        assert (pong.command, pong.params[-1]) == ("PONG", "probe")
        await client.close()


@run
async def test_generated_traffic_reaches_the_reader_exactly_once() -> None:
    async with ChatSimulator(channels=[f"channel{i}" for i in range(1, 6)], seed=3) as sim:
        client = await Client.connect(sim)
        await client.send("JOIN #channel1,#channel2,#channel3,#channel4,#channel5")
        for _ in range(5):
            await client.expect(command("366"))
        generated = sim.generate(300)
        assert sim.lines_generated == 300  # every line, with an id or not
        with_ids = [line for line in generated if line.message_id]
        assert len(with_ids) < 300  # CLEARCHAT, CLEARMSG and ROOMSTATE carry none
        received: list[str] = []
        for _ in generated:
            message = await client.read()
            assert message is not None
            if "id" in message.tags:
                received.append(message.tags["id"])
            for event in from_message(message):
                _ = event.dedupe_key
        assert sorted(received) == sorted(line.message_id or "" for line in with_ids)
        assert len(set(received)) == len(received)
        recorded = [d for ch in range(1, 6) for d in sim.deliveries(f"channel{ch}")]
        assert len(recorded) == len(with_ids)
        assert all(d.connections == (1,) for d in recorded)
        busiest = max(range(1, 6), key=lambda ch: len(sim.deliveries(f"channel{ch}")))
        assert busiest == 1  # the skew: the first channel is the busiest
        await client.close()


@run
async def test_traffic_at_a_rate_and_its_realistic_events() -> None:
    async with ChatSimulator(channels=["alpha"], rate=2000, seed=5) as sim:
        client = await Client.connect(sim)
        await client.send("JOIN #alpha")
        await client.expect(command("366"))
        kinds: set[str] = set()
        messages = 0
        while messages < 400:
            message = await client.read()
            assert message is not None
            kinds.add(message.command)
            for event in from_message(message):
                if isinstance(event, MessageEvent):
                    messages += 1
                    assert event.sent_at is not None
                    assert all(0 <= e.start <= e.end < len(event.text) for e in event.emotes)
        assert {"PRIVMSG", "USERNOTICE", "CLEARCHAT"} <= kinds
        await client.close()


def test_every_generated_line_holds_real_values() -> None:
    """No ``{...}`` placeholder survives anywhere in a generated line, and the room id is the
    channel's own, in every kind of line."""
    from tmi_cluster.simulator.traffic import Traffic  # noqa: PLC0415

    rooms = {"alpha": "100000", "beta": "100001"}
    traffic = Traffic(rooms, seed=9)
    kinds: set[str] = set()
    for _ in range(20_000):
        line = traffic.next()
        assert b"{" not in line.data.split(b" :", 1)[0], line.data  # tags and prefix
        assert b"{channel}" not in line.data
        assert b"{room}" not in line.data
        message = parse(line.data)
        kinds.add(message.command)
        assert message.params[0] == f"#{line.channel}"
        assert message.tags["room-id"] == rooms[line.channel], line.data
        for event in from_message(message):
            assert getattr(event, "room_id", rooms[line.channel]) == rooms[line.channel]
    assert {"PRIVMSG", "USERNOTICE", "CLEARCHAT", "CLEARMSG", "ROOMSTATE"} <= kinds


@run
async def test_privmsg_is_relayed_with_tags() -> None:
    async with ChatSimulator(channels=["alpha"]) as sim:
        sim.add_account("mybot", "t")
        reader = await Client.connect(sim)
        sender = await Client.connect(sim, "mybot", "t")
        await reader.send("JOIN #alpha")
        await reader.expect(command("366"))
        await sender.send("JOIN #alpha")
        await sender.expect(command("366"))
        await sender.send("PRIVMSG #alpha :hello there 👋")
        relayed = await reader.expect(command("PRIVMSG"))
        assert relayed.params == ["#alpha", "hello there 👋"]
        assert relayed.nick == "mybot"
        assert relayed.tags["id"]
        assert relayed.tags["display-name"] == "mybot"
        await sender.expect(command("USERSTATE", "#alpha"))
        [delivery] = sim.deliveries("alpha")
        assert delivery.message_id == relayed.tags["id"]
        assert sim.account("mybot").messages == 1
        assert sim.connections()[1].sent[-1] == "PRIVMSG #alpha :hello there 👋"
        await reader.close()
        await sender.close()


@run
async def test_clients_without_capabilities_get_plain_privmsg_only() -> None:
    async with ChatSimulator(channels=["alpha"], seed=2) as sim:
        client = await Client.connect(sim, caps="")
        await client.send("JOIN #alpha")
        await client.expect(command("366"))
        sim.generate(200, "alpha")
        await client.send("PING :end")
        while True:
            message = await client.read()
            assert message is not None
            if message.command == "PONG":
                break
            assert message.command == "PRIVMSG"
            assert message.tags == {}
        await client.close()


@run
async def test_join_budget_disconnects_as_twitch_does() -> None:
    limits = Limits(join_allow=5, join_every_s=60)
    async with ChatSimulator(channels=[f"c{i}" for i in range(10)], limits=limits) as sim:
        sim.add_account("mybot", "t")
        client = await Client.connect(sim, "mybot", "t")
        await client.send("JOIN #c0,#c1,#c2,#c3,#c4")
        for _ in range(5):
            await client.expect(command("366"))
        await client.send("JOIN #c5")
        await client.closed()
        [violation] = sim.account("mybot").violations
        assert violation.kind == "join_rate"
        assert sim.account("mybot").joins == 5


@run
async def test_channel_cap_for_accounts_but_not_where_moderator() -> None:
    limits = Limits(channel_cap=2)
    async with ChatSimulator(channels=["a", "b", "c", "mod"], limits=limits) as sim:
        sim.add_account("mybot", "t", moderator_in=["mod"])
        client = await Client.connect(sim, "mybot", "t")
        await client.send("JOIN #mod,#a,#b,#c")
        for name in ("mod", "a", "b"):
            assert (await client.expect(command("JOIN"))).params == [f"#{name}"]
        notice = await client.expect(command("NOTICE"))
        assert (notice.tags["msg-id"], notice.params[0]) == (
            "msg_concurrent_channel_limit_reached",
            "#c",
        )
        assert [v.kind for v in sim.account("mybot").violations] == ["channel_cap"]
        await client.close()


@run
async def test_message_rules() -> None:
    limits = Limits(message_allow=3, message_every_s=60, channel_interval_s=0)
    async with ChatSimulator(channels=["a", "b"], limits=limits) as sim:
        sim.add_account("mybot", "t")
        client = await Client.connect(sim, "mybot", "t")
        await client.send("PRIVMSG #a :one", "PRIVMSG #a :one")
        duplicate = await client.expect(command("NOTICE"))
        assert duplicate.tags["msg-id"] == "msg_duplicate"
        await client.send(
            "PRIVMSG #a :" + "x" * 501,
            "PRIVMSG #a :two",
            "PRIVMSG #b :three",
            "PRIVMSG #b :four",
            "PING :end",
        )
        await client.expect(command("PONG"))
        stats = sim.account("mybot")
        assert stats.messages == 3
        assert [v.kind for v in stats.violations] == [
            "duplicate",
            "message_too_long",
            "message_rate",
        ]
        assert [d.message_id for d in sim.deliveries("b")][1:] == []  # "four" was never sent
        await client.close()


@run
async def test_one_second_between_messages_in_a_channel() -> None:
    async with ChatSimulator(channels=["a"]) as sim:
        sim.add_account("mybot", "t")
        client = await Client.connect(sim, "mybot", "t")
        await client.send("PRIVMSG #a :first", "PRIVMSG #a :second")
        notice = await client.expect(command("NOTICE"))
        assert notice.tags["msg-id"] == "msg_ratelimit"
        assert len(sim.deliveries("a")) == 1
        await client.close()


@run
async def test_bad_input_never_crashes_the_simulator() -> None:
    async with ChatSimulator(channels=["a"]) as sim:
        client = await Client.connect(sim)
        await client.expect(command("376"))
        await client.send("FOO bar", "@only=tags", "PRIVMSG #a :bare\rcr", ":src", "")
        unknown = await client.expect(command("421"))
        assert unknown.params[:2] == ["justinfan123", "FOO"]
        await client.send("PING :still-here")
        await client.expect(command("PONG"))
        malformed = [v.kind for v in sim.account("justinfan123").violations]
        assert malformed.count("malformed") == 3

        nul = await Client.connect(sim)
        await nul.send("PING :a\0b")
        await nul.closed()

        long = await Client.connect(sim)
        long.writer.write(b"PRIVMSG #a :" + b"x" * 5000 + b"\r\n")
        await long.closed()
        assert any(v.kind == "line_too_long" for v in sim.account("justinfan123").violations)

        fresh = await Client.connect(sim, "justinfan7")
        await fresh.expect(command("001"))
        await fresh.close()
        await client.close()


@run
async def test_slow_reader_is_dropped() -> None:
    limits = Limits(max_send_buffer_bytes=64 * 1024)
    async with ChatSimulator(channels=["a"], limits=limits) as sim:
        client = await Client.connect(sim)
        await client.send("JOIN #a")
        await client.expect(command("366"))
        client.writer.transport.pause_reading()  # type: ignore[attr-defined]
        connection = sim.connections()[0].id
        for _ in range(200):
            sim.generate(500, "a")
            if connection not in {c.id for c in sim.connections() if c.open}:
                break
            await asyncio.sleep(0)  # let the event loop flush what the socket takes
        assert any(v.kind == "slow_reader" for v in sim.account("justinfan123").violations)
        await client.close()


@run
async def test_server_ping_and_client_ping() -> None:
    async with ChatSimulator(limits=Limits(ping_interval_s=0.05)) as sim:
        client = await Client.connect(sim)
        ping = await client.expect(command("PING"))
        assert ping.params == ["tmi.twitch.tv"]
        await client.send("PING :hello")
        pong = await client.expect(command("PONG"))
        assert pong.params == ["tmi.twitch.tv", "hello"]
        await client.close()


@run
async def test_faults_reconnect_drop_and_stall() -> None:
    async with ChatSimulator(channels=["a"]) as sim:
        first = await Client.connect(sim)
        await first.expect(command("376"))
        sim.reconnect(close_after_s=0.05)
        await first.expect(command("RECONNECT"))
        await first.closed()

        second = await Client.connect(sim)
        await second.expect(command("376"))
        sim.drop()
        await second.closed()

        third = await Client.connect(sim)
        await third.expect(command("376"))
        sim.stall()
        await third.send("PING :anyone")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(third.read(), 0.3)  # half-open: no answer, no close
        sim.stall(stalled=False)
        await third.send("PING :back")
        await third.expect(command("PONG"))
        await third.close()


@run
async def test_a_held_link_gets_everything_late_and_in_order() -> None:
    async with ChatSimulator(channels=["a"], limits=Limits(max_send_buffer_bytes=4096)) as sim:
        client = await Client.connect(sim)
        await client.send("JOIN #a")
        await client.expect(command("366"))
        sim.hold()
        await client.send("PING :one")
        await sim.wait_until(lambda: sim.connections()[0].sent[-1] == "PING :one")
        lines = sim.generate(3, "a")
        await client.send("PING :two")
        await sim.wait_until(lambda: sim.connections()[0].sent[-1] == "PING :two")
        sim.hold(held=False)
        first = await client.expect(command("PONG"))
        seen: list[Message] = []
        while (line := await client.read()) is not None and line.command != "PONG":
            seen.append(line)
        assert first.params[-1] == "one"
        assert line is not None
        assert line.params[-1] == "two"
        assert [m.tags.get("id") for m in seen] == [line.message_id for line in lines]
        sim.hold()
        sim.generate(100, "a")  # far more than 4 KiB held: a slow reader, dropped
        await client.closed()
        assert [v.kind for v in sim.account("justinfan123").violations] == ["slow_reader"]


@run
async def test_pause_resume_and_rate() -> None:
    async with ChatSimulator(channels=["a"], rate=0) as sim:
        client = await Client.connect(sim)
        await client.send("JOIN #a")
        await client.expect(command("366"))
        sim.pause()
        sim.set_rate(500)
        assert sim.rate == 500
        sim.resume()
        await client.expect(lambda m: m.command in ("PRIVMSG", "USERNOTICE", "CLEARCHAT"))
        await client.close()


def test_the_documented_example_runs() -> None:
    run_documented_example("simulator.md", "test_my_bot")


@run
async def test_tls_port_with_a_verifiable_certificate() -> None:
    import ssl  # noqa: PLC0415

    async with ChatSimulator(channels=["alpha"], tls_port=0) as sim:
        assert sim.tls_port
        assert sim.ca_file is not None
        assert sim.ca_file.exists()
        context = ssl.create_default_context(cafile=str(sim.ca_file))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", sim.tls_port, ssl=context, server_hostname="localhost"
        )
        client = Client(reader, writer)
        await client.send("NICK justinfan9", "JOIN #alpha")
        await client.expect(command("366"))
        sim.generate(5, "alpha")
        await client.expect(
            lambda m: m.command in ("PRIVMSG", "USERNOTICE", "CLEARCHAT", "CLEARMSG", "ROOMSTATE")
        )
        await client.close()
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection(
                "127.0.0.1",
                sim.tls_port,
                ssl=ssl.create_default_context(),
                server_hostname="localhost",
            )
        folder = sim.ca_file.parent
    assert not folder.exists()


@run
async def test_websocket_transport_several_lines_per_frame_both_ways() -> None:
    from websockets.asyncio.client import connect  # noqa: PLC0415

    async with ChatSimulator(channels=["alpha"], websocket_port=0) as sim:
        assert sim.websocket_port
        async with connect(f"ws://127.0.0.1:{sim.websocket_port}") as socket:
            # One frame with several lines; the last without CR LF, as irc-ws clients send.
            await socket.send(
                "CAP REQ :twitch.tv/tags twitch.tv/commands\r\nNICK justinfan5\r\nJOIN #alpha"
            )
            lines: list[str] = []
            while not any(" 366 " in line for line in lines):
                frame = await asyncio.wait_for(socket.recv(), TIMEOUT_S)
                assert isinstance(frame, str)
                lines += [line for line in frame.split("\r\n") if line]
            assert any(line.endswith("JOIN #alpha") for line in lines)
            sim.generate(20, "alpha")
            received: list[str] = []
            while len(received) < 20:
                frame = await asyncio.wait_for(socket.recv(), TIMEOUT_S)
                assert isinstance(frame, str)
                received += [line for line in frame.split("\r\n") if line]
            assert all(parse(line).command != "" for line in received)
            await socket.send("PING :ws")
            pong = await asyncio.wait_for(socket.recv(), TIMEOUT_S)
            assert isinstance(pong, str)
            assert pong.startswith(":tmi.twitch.tv PONG tmi.twitch.tv :ws")
        assert [c.login for c in sim.connections()] == ["justinfan5"]


def _http(method: str, url: str, body: object = None) -> tuple[int, Any]:
    import json  # noqa: PLC0415
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    data = (
        None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@run
async def test_control_port() -> None:
    async with ChatSimulator(channels=["alpha"], control_port=0) as sim:
        base = f"http://127.0.0.1:{sim.control_port}"

        async def call(method: str, path: str, body: object = None) -> tuple[int, Any]:
            return await asyncio.to_thread(_http, method, base + path, body)

        account_body = {"login": "MyBot", "token": "t", "moderator_in": ["alpha"]}
        assert await call("POST", "/accounts", account_body) == (200, {"ok": True})
        assert (await call("POST", "/channels", {"name": "beta"}))[0] == 200
        client = await Client.connect(sim, "mybot", "t")
        await client.send("JOIN #alpha")
        await client.expect(command("366"))
        status, state = await call("GET", "/state")
        assert status == 200
        assert state["channels"] == {"alpha": [1], "beta": []}
        status, generated = await call("POST", "/generate", {"count": 3, "channel": "alpha"})
        assert (status, len(generated)) == (200, 3)
        status, delivered = await call("GET", "/channels/alpha/deliveries")
        assert [d["message_id"] for d in delivered] == [
            g["message_id"] for g in generated if g["message_id"]
        ]
        status, paused = await call("POST", "/traffic", {"rate": 50, "paused": True})
        assert (paused["rate"], paused["paused"]) == (50.0, True)
        assert sim.paused
        status, account = await call("GET", "/accounts/mybot")
        assert (account["authentications"], account["joins"]) == (1, 1)
        status, connections = await call("GET", "/connections")
        assert connections[0]["login"] == "mybot"
        assert connections[0]["sent"][-1] == "JOIN #alpha"
        assert (await call("POST", "/faults/hold", {"connections": [1]}))[0] == 200
        await client.send("PING :held")
        await sim.wait_until(lambda: sim.connections()[0].sent[-1] == "PING :held")
        assert sim.buffered_bytes() == 0  # kept back, not in the send buffer
        assert (await call("POST", "/faults/hold", {"connections": [1], "held": False}))[0] == 200
        assert (await client.expect(command("PONG"))).params[-1] == "held"
        fault = {"connections": [1], "close_after_s": 0.05}
        assert (await call("POST", "/faults/reconnect", fault))[0] == 200
        await client.expect(command("RECONNECT"))
        await client.closed()

        # Bad input: a clear 400 or 404, never a crash.
        assert await call("POST", "/traffic", b"not json") == (
            400,
            {"error": "the body is not JSON"},
        )
        assert await call("POST", "/traffic", {"rate": -1}) == (
            400,
            {"error": "'rate' must be >= 0"},
        )
        assert await call("POST", "/generate", {"count": "many"}) == (
            400,
            {"error": "'count' has the wrong type"},
        )
        assert await call("POST", "/faults/drop", {"connections": "all"}) == (
            400,
            {"error": "'connections' must be a list of connection ids or null"},
        )
        assert await call("GET", "/channels/nowhere/deliveries") == (
            404,
            {"error": "unknown channel 'nowhere'"},
        )
        status, error = await call("POST", "/channels/bad%20name/suspend", {})
        assert status == 400
        assert "invalid channel name" in error["error"]
        assert (await call("GET", "/state"))[0] == 200


@run
async def test_authentication_budget_and_unsuspend() -> None:
    limits = Limits(auth_allow=2, auth_every_s=60)
    async with ChatSimulator(channels=["alpha"], limits=limits) as sim:
        sim.add_account("mybot", "t")
        for _ in range(2):
            client = await Client.connect(sim, "mybot", "t")
            await client.expect(command("001"))
            await client.close()
        refused = await Client.connect(sim, "mybot", "t")
        notice = await refused.expect(command("NOTICE"))
        assert notice.params == ["*", "Login authentication failed"]
        await refused.closed()
        assert [v.kind for v in sim.account("mybot").violations] == ["auth_rate"]

        sim.suspend("alpha")
        sim.suspend("alpha", suspended=False)
        reader = await Client.connect(sim)
        await reader.send("JOIN #alpha")
        await reader.expect(command("366"))
        await reader.close()


@run
async def test_duplicate_rule_compares_with_the_previous_message_only() -> None:
    async with ChatSimulator(channels=["a"], limits=Limits(channel_interval_s=0)) as sim:
        sim.add_account("mybot", "t")
        client = await Client.connect(sim, "mybot", "t")
        await client.send("PRIVMSG #a :same", "PRIVMSG #a :other", "PRIVMSG #a :same", "PING :end")
        await client.expect(command("PONG"))
        assert sim.account("mybot").messages == 3
        assert sim.account("mybot").violations == []
        await client.close()


@run
async def test_channels_added_later_get_traffic() -> None:
    async with ChatSimulator(channels=["a"], seed=3) as sim:
        sim.add_channels(["b", "#C", "a"])
        sim.add_channel("d")
        assert sorted(sim.channel_names()) == ["a", "b", "c", "d"]
        assert {line.channel for line in sim.generate(500)} == {"a", "b", "c", "d"}

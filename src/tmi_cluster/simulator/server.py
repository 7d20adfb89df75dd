"""The chat server: connections, login, channels, relay, generated traffic, faults, accounting.

One :class:`ChatSimulator` is an asyncio server that behaves like Twitch's chat servers (see
``docs/simulator.md``). Use it as an async context manager; every fault and every account,
channel and rate can be changed while it runs, and everything it did is recorded for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import ssl
import tempfile
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from websockets.asyncio.server import Server as WebSocketServer
from websockets.asyncio.server import serve as websocket_serve

from tmi_cluster.errors import NotAvailableError, ParseError
from tmi_cluster.irc import Message, escape_tag_value, parse, serialize
from tmi_cluster.simulator.control import ControlServer
from tmi_cluster.simulator.limits import Limits, Window
from tmi_cluster.simulator.traffic import GeneratedLine, Traffic
from tmi_cluster.simulator.websocket import serve_connection

__all__ = [
    "AccountStats",
    "ChatSimulator",
    "ConnectionInfo",
    "Delivery",
    "Violation",
]

CAPABILITIES = ("twitch.tv/tags", "twitch.tv/commands", "twitch.tv/membership")
_SERVER = "tmi.twitch.tv"
_TICK_S = 0.01
_WELCOME = [
    ("001", "Welcome, GLHF!"),
    ("002", f"Your host is {_SERVER}"),
    ("003", "This server is rather new"),
    ("004", "-"),
    ("375", "-"),
    ("372", "You are in a maze of twisty passages, all alike."),
    ("376", ">"),
]
_CAPPED = "Your account has reached the maximum number of channels."
_TOO_QUICK = "Your message was not sent because you are sending messages too quickly."
_DUPLICATE = (
    "Your message was not sent because it is identical to the previous one you sent, "
    "less than 30 seconds ago."
)


@dataclass(frozen=True, slots=True)
class Violation:
    """One limit an account or connection exceeded."""

    kind: str
    at: float
    detail: str = ""


@dataclass
class AccountStats:
    """What one login did, across all its connections."""

    login: str
    authentications: int = 0
    joins: int = 0
    messages: int = 0
    violations: list[Violation] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message sent into a channel, and the connections joined to it at that moment."""

    message_id: str
    connections: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """A connection as the simulator sees it."""

    id: int
    login: str | None
    channels: frozenset[str]
    capabilities: frozenset[str]
    sent: tuple[str, ...]
    open: bool


@dataclass
class _Account:
    login: str
    token: str
    moderator_in: set[str]
    joins: Window
    auths: Window
    messages: Window
    moderator_messages: Window


@dataclass
class _Channel:
    name: str
    room_id: str
    suspended: bool = False
    banned: set[str] = field(default_factory=set)
    members: dict[int, _Connection] = field(default_factory=dict)
    snapshot: tuple[int, ...] | None = None
    last_message: dict[str, float] = field(default_factory=dict)
    previous: dict[str, tuple[float, str]] = field(default_factory=dict)  # login -> last message

    def joined(self) -> tuple[int, ...]:
        if self.snapshot is None:
            self.snapshot = tuple(sorted(self.members))
        return self.snapshot


class _Connection(asyncio.Protocol):
    """One client connection (any transport): framing in, buffered writes out."""

    def __init__(self, simulator: ChatSimulator, connection_id: int) -> None:
        self.sim = simulator
        self.id = connection_id
        self.transport: asyncio.WriteTransport | None = None
        self.buffer = bytearray()
        self.capabilities: set[str] = set()
        self.password: str | None = None
        self.login: str | None = None
        self.account: _Account | None = None
        self.channels: set[str] = set()
        self.sent: list[str] = []
        self.half_open = False
        self.closed = False
        self.full = False  # both tags and commands: lines go out as generated
        self.anonymous_joins = Window(
            simulator.limits.anonymous_join_allow, simulator.limits.join_every_s
        )

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self.transport = transport
        self.sim._connections[self.id] = self

    def data_received(self, data: bytes) -> None:
        if self.half_open or self.closed:
            return
        buffer = self.buffer
        buffer += data
        limit = self.sim.limits.max_line_bytes
        while True:
            end = buffer.find(b"\n")
            if end == -1:
                if len(buffer) > limit:
                    self.sim._violation(
                        self, "line_too_long", f"{len(buffer)} bytes without an end"
                    )
                    self.abort()
                return
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            if len(line) > limit:
                self.sim._violation(self, "line_too_long", f"{len(line)} bytes")
                self.abort()
                return
            self.sim._receive(self, line)
            if self.closed:
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.sim._forget(self)

    # -- writing ----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        transport = self.transport
        if self.closed or self.half_open or transport is None:
            return
        transport.write(data)
        if transport.get_write_buffer_size() > self.sim.limits.max_send_buffer_bytes:
            self.sim._violation(self, "slow_reader", "send buffer over its bound")
            self.abort()

    def shape(self, data: bytes, command: str) -> bytes:
        """A tagged line as this connection gets it: without tags unless it asked for them, and
        nothing but PRIVMSG unless it asked for commands (empty: not sent)."""
        if command != "PRIVMSG" and "twitch.tv/commands" not in self.capabilities:
            return b""
        if "twitch.tv/tags" not in self.capabilities and data[:1] == b"@":
            return data[data.index(b" ") + 1 :]
        return data

    def send(self, line: str) -> None:
        self.write(line.encode() + b"\r\n")

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()
            self.sim._forget(self)

    @property
    def prefix(self) -> str:
        login = self.login or "*"
        return f"{login}!{login}@{login}.tmi.twitch.tv"


class ChatSimulator:
    """A Twitch-compatible chat server for tests, demos and benchmarks.

    ``channels`` exist from the start (more with :meth:`add_channel`); ``rate`` is the total of
    generated messages per second across them. ``port`` 0 picks a free port (see :attr:`port`).
    ``record`` keeps, per channel, every message id sent and the connections joined at the
    time (:meth:`deliveries`); turn it off for long benchmarks.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        channels: Iterable[str] = (),
        rate: float = 0.0,
        limits: Limits | None = None,
        seed: int | None = None,
        record: bool = True,
        tls_port: int | None = None,
        websocket_port: int | None = None,
        control_port: int | None = None,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._requested_tls_port = tls_port
        #: The TLS port (after start, when ``tls_port`` was given), and the CA file that
        #: verifies its self-signed certificate (for ``localhost``, 127.0.0.1 and ::1).
        self.tls_port: int | None = None
        self.ca_file: Path | None = None
        self._tls_folder: str | None = None
        self._tls_server: asyncio.Server | None = None
        self._requested_websocket_port = websocket_port
        #: The WebSocket port (after start, when ``websocket_port`` was given).
        self.websocket_port: int | None = None
        self._websocket_server: WebSocketServer | None = None
        self._requested_control_port = control_port
        #: The HTTP control port (after start, when ``control_port`` was given).
        self.control_port: int | None = None
        self._control: ControlServer | None = None
        self._control_task: asyncio.Task[None] | None = None
        self.limits = limits or Limits()
        self.rate = rate
        self.record = record
        self._seed = seed
        self._channels: dict[str, _Channel] = {}
        self._accounts: dict[str, _Account] = {}
        self._stats: dict[str, AccountStats] = {}
        self._connections: dict[int, _Connection] = {}
        self._ids = itertools.count(1)
        self._deliveries: defaultdict[str, list[Delivery]] = defaultdict(list)
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._paused = False
        self._all_connections: dict[int, _Connection] = {}
        self._changed: asyncio.Event | None = None
        self._traffic = Traffic({}, seed=seed)
        self.add_channels(channels)
        self.port = 0

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> Self:
        """Listen and start the traffic and keepalive tasks."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._new_connection, self.host, self._requested_port
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        if self._requested_tls_port is not None:
            context = self._tls_context()
            self._tls_server = await loop.create_server(
                self._new_connection, self.host, self._requested_tls_port, ssl=context
            )
            self.tls_port = int(self._tls_server.sockets[0].getsockname()[1])
        if self._requested_websocket_port is not None:
            self._websocket_server = await websocket_serve(
                lambda socket: serve_connection(socket, self._new_connection),
                self.host,
                self._requested_websocket_port,
                max_size=self.limits.max_line_bytes * 64,
            )
            self.websocket_port = int(next(iter(self._websocket_server.sockets)).getsockname()[1])
        if self._requested_control_port is not None:
            self._control = ControlServer(self, self.host, self._requested_control_port)
            self.control_port = self._control.port
            self._control_task = asyncio.create_task(
                self._control.serve(), name="simulator-control"
            )
        self._tasks = [
            asyncio.create_task(self._generate_forever(), name="simulator-traffic"),
            asyncio.create_task(self._ping_forever(), name="simulator-ping"),
        ]
        return self

    async def aclose(self) -> None:
        """Stop listening, close every connection, stop the tasks. Idempotent."""
        if self._control is not None and self._control_task is not None:
            self._control.stop()
            await self._control_task
            self._control.close_socket()
            self._control = self._control_task = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        servers = [server for server in (self._server, self._tls_server) if server is not None]
        for server in servers:
            server.close()
        if self._websocket_server is not None:
            self._websocket_server.close()
        for connection in list(self._connections.values()):
            connection.abort()
        for server in servers:
            await server.wait_closed()
        if self._websocket_server is not None:
            await self._websocket_server.wait_closed()
        self._server = self._tls_server = self._websocket_server = None
        if self._tls_folder is not None:
            shutil.rmtree(self._tls_folder, ignore_errors=True)
            self._tls_folder = None

    def _tls_context(self) -> ssl.SSLContext:
        """A server context with a fresh self-signed certificate; writes :attr:`ca_file`."""
        try:
            import trustme  # noqa: PLC0415 - optional: the 'tls' extra
        except ImportError as exc:
            raise NotAvailableError(
                "the simulator's TLS port needs the 'tls' extra: pip install 'tmi-cluster[tls]'"
            ) from exc
        authority = trustme.CA()
        certificate = authority.issue_cert("localhost", "127.0.0.1", "::1")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certificate.configure_cert(context)
        self._tls_folder = tempfile.mkdtemp(prefix="tmi-cluster-simulator-")
        self.ca_file = Path(self._tls_folder) / "ca.pem"
        authority.cert_pem.write_to_path(str(self.ca_file))
        return context

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _new_connection(self) -> _Connection:
        connection = _Connection(self, next(self._ids))
        self._all_connections[connection.id] = connection
        return connection

    # -- configuration ----------------------------------------------------------------------

    def add_channel(self, name: str) -> None:
        """Make a channel exist (joining one that does not gives silence, as on Twitch)."""
        self.add_channels([name])

    def add_channels(self, names: Iterable[str]) -> None:
        """Make channels exist; the traffic's channel picks are prepared once for all."""
        added = False
        for name in names:
            login = name.lstrip("#").lower()
            if login not in self._channels:
                self._channels[login] = _Channel(login, str(100_000 + len(self._channels)))
                added = True
        if added:
            self._traffic.set_channels({c.name: c.room_id for c in self._channels.values()})

    def add_account(self, login: str, token: str, *, moderator_in: Iterable[str] = ()) -> None:
        """Accept ``PASS oauth:<token>`` + ``NICK <login>``; a moderator in the given channels."""
        limits = self.limits
        self._accounts[login.lower()] = _Account(
            login.lower(),
            token.removeprefix("oauth:"),
            {c.lstrip("#").lower() for c in moderator_in},
            Window(limits.join_allow, limits.join_every_s),
            Window(limits.auth_allow, limits.auth_every_s),
            Window(limits.message_allow, limits.message_every_s),
            Window(limits.moderator_message_allow, limits.message_every_s),
        )

    def suspend(self, channel: str, suspended: bool = True) -> None:
        """Mark a channel suspended: joins get ``msg_channel_suspended``."""
        self._channels[channel.lstrip("#").lower()].suspended = suspended

    def ban(self, login: str, channel: str) -> None:
        """Ban ``login`` from ``channel``: its joins get ``msg_banned``."""
        self._channels[channel.lstrip("#").lower()].banned.add(login.lower())

    def set_rate(self, rate: float) -> None:
        """Change the total generated messages per second."""
        self.rate = rate

    @property
    def paused(self) -> bool:
        """True while generated traffic is paused."""
        return self._paused

    def channel_names(self) -> list[str]:
        """Every channel that exists, in order of creation (the first ones the busiest)."""
        return list(self._channels)

    def pause(self) -> None:
        """Stop generating traffic (connections stay)."""
        self._paused = True

    def resume(self) -> None:
        """Generate traffic again."""
        self._paused = False

    # -- faults -----------------------------------------------------------------------------

    def _select(self, connections: Iterable[int] | None) -> list[_Connection]:
        if connections is None:
            return list(self._connections.values())
        wanted = set(connections)
        return [c for c in self._connections.values() if c.id in wanted]

    def reconnect(
        self, connections: Iterable[int] | None = None, *, close_after_s: float = 30.0
    ) -> None:
        """Send RECONNECT to some or all connections, and close them ``close_after_s`` later."""
        loop = asyncio.get_running_loop()
        for connection in self._select(connections):
            connection.send(f":{_SERVER} RECONNECT")
            loop.call_later(close_after_s, connection.abort)

    def drop(self, connections: Iterable[int] | None = None) -> None:
        """Close some or all connections abruptly."""
        for connection in self._select(connections):
            connection.abort()

    def stall(self, connections: Iterable[int] | None = None, stalled: bool = True) -> None:
        """Make connections half-open: nothing is sent or answered any more (or again)."""
        for connection in self._select(connections):
            connection.half_open = stalled

    # -- accounting -------------------------------------------------------------------------

    def deliveries(self, channel: str) -> list[Delivery]:
        """Every message sent into ``channel``, with the connections joined at that moment."""
        return list(self._deliveries[channel.lstrip("#").lower()])

    def account(self, login: str) -> AccountStats:
        """What ``login`` did (anonymous logins included)."""
        return self._stats.setdefault(login.lower(), AccountStats(login.lower()))

    def connections(self) -> list[ConnectionInfo]:
        """Every connection ever made, open or closed, oldest first."""
        return [
            ConnectionInfo(c.id, c.login, frozenset(c.channels), frozenset(c.capabilities),
                           tuple(c.sent), not c.closed)
            for c in self._all_connections.values()
        ]  # fmt: skip

    def buffered_bytes(self) -> int:
        """Bytes written to connections that their sockets have not taken yet."""
        return sum(
            c.transport.get_write_buffer_size()
            for c in self._connections.values()
            if c.transport is not None and not c.closed
        )

    def _touch(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def wait_until(self, check: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Wait until ``check()`` holds, re-checking whenever a connection, a membership or a
        delivery changes; TimeoutError after ``timeout_s``."""

        async def wait() -> None:
            while not check():
                self._changed = self._changed or asyncio.Event()
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout_s)

    def joined(self, channel: str) -> tuple[int, ...]:
        """Ids of the connections joined to ``channel`` now."""
        return self._channels[channel.lstrip("#").lower()].joined()

    def _violation(self, connection: _Connection, kind: str, detail: str = "") -> None:
        login = connection.login or f"connection-{connection.id}"
        self._violation_for(self.account(login), kind, detail)

    def _forget(self, connection: _Connection) -> None:
        self._touch()
        self._connections.pop(connection.id, None)
        for name in connection.channels:
            channel = self._channels.get(name)
            if channel is not None and channel.members.pop(connection.id, None) is not None:
                channel.snapshot = None

    # -- traffic ----------------------------------------------------------------------------

    def generate(self, count: int = 1, channel: str | None = None) -> list[GeneratedLine]:
        """Generate and deliver ``count`` lines now (into ``channel``, or picked with skew)."""
        if not self._channels:
            return []
        lines = [
            self._traffic.next(channel.lstrip("#").lower() if channel else None)
            for _ in range(count)
        ]
        self._deliver(lines)
        return lines

    def _deliver(self, lines: list[GeneratedLine]) -> None:
        outgoing: defaultdict[_Connection, list[bytes]] = defaultdict(list)
        channels = self._channels
        for line in lines:
            state = channels[line.channel]
            if self.record and line.message_id is not None:
                self._deliveries[line.channel].append(Delivery(line.message_id, state.joined()))
            for member in state.members.values():
                data = line.data if member.full else member.shape(line.data, line.command)
                if data:
                    outgoing[member].append(data)
        for connection, chunks in outgoing.items():
            connection.write(b"".join(chunks))
        self._touch()

    async def _generate_forever(self) -> None:
        due = 0.0
        last = time.monotonic()
        while True:
            await asyncio.sleep(_TICK_S)
            now = time.monotonic()
            if self._paused or self.rate <= 0 or not self._channels:
                last = now
                continue
            due += self.rate * (now - last)
            last = now
            count = int(due)
            if count:
                due -= count
                self.generate(count)

    async def _ping_forever(self) -> None:
        interval = self.limits.ping_interval_s
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            for connection in list(self._connections.values()):
                if connection.login is not None:
                    connection.send(f"PING :{_SERVER}")

    # -- commands ---------------------------------------------------------------------------

    def _receive(self, connection: _Connection, raw: bytes) -> None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if b"\0" in raw:
            self._violation(connection, "malformed", "NUL in a line")
            connection.abort()
            return
        if not raw.strip():
            return
        try:
            message = parse(raw)
        except ParseError as exc:
            self._violation(connection, "malformed", exc.reason)
            return
        connection.sent.append(message.raw)
        handler = _HANDLERS.get(message.command.upper())
        if handler is None:
            if connection.login is not None:
                connection.send(
                    f":{_SERVER} 421 {connection.login} {message.command[:50]} :Unknown command"
                )
            return
        handler(self, connection, message)

    def _cap(self, connection: _Connection, message: Message) -> None:
        params = message.params
        sub = params[0].upper() if params else ""
        if sub == "LS":
            connection.send(f":{_SERVER} CAP * LS :{' '.join(CAPABILITIES)}")
        elif sub == "REQ":
            wanted = params[-1].split() if len(params) > 1 else []
            if wanted and all(cap in CAPABILITIES for cap in wanted):
                connection.capabilities.update(wanted)
                connection.full = {
                    "twitch.tv/tags",
                    "twitch.tv/commands",
                } <= connection.capabilities
                connection.send(f":{_SERVER} CAP * ACK :{' '.join(wanted)}")
            else:
                connection.send(f":{_SERVER} CAP * NAK :{' '.join(wanted)}")

    def _pass(self, connection: _Connection, message: Message) -> None:
        connection.password = message.params[0] if message.params else ""

    def _nick(self, connection: _Connection, message: Message) -> None:
        if connection.login is not None or not message.params:
            return
        login = message.params[0].lower()
        stats = self.account(login)
        if login.startswith("justinfan") and login[9:].isdigit():
            self._welcome(connection, login)
            return
        password = connection.password
        if password is None or not password.startswith("oauth:"):
            connection.send(f":{_SERVER} NOTICE * :Improperly formatted auth")
            connection.abort()
            return
        account = self._accounts.get(login)
        stats.authentications += 1
        now = time.monotonic()
        if account is not None and not account.auths.take(now):
            self._violation_for(stats, "auth_rate", "over the authentication budget")
            connection.send(f":{_SERVER} NOTICE * :Login authentication failed")
            connection.abort()
            return
        if account is None or account.token != password[len("oauth:") :]:
            connection.send(f":{_SERVER} NOTICE * :Login authentication failed")
            connection.abort()
            return
        connection.account = account
        self._welcome(connection, login)

    def _violation_for(self, stats: AccountStats, kind: str, detail: str) -> None:
        stats.violations.append(Violation(kind, time.monotonic(), detail))

    def _welcome(self, connection: _Connection, login: str) -> None:
        connection.login = login
        for numeric, text in _WELCOME:
            connection.send(f":{_SERVER} {numeric} {login} :{text}")
        if connection.account is not None and "twitch.tv/commands" in connection.capabilities:
            tags = {"badge-info": "", "badges": "", "color": "", "display-name": login,
                    "emote-sets": "0", "user-id": _user_id(login), "user-type": ""}  # fmt: skip
            connection.send(self._tagged(connection, "GLOBALUSERSTATE", [], tags))

    def _tagged(
        self,
        connection: _Connection,
        command: str,
        params: list[str],
        tags: dict[str, str],
        source: str = _SERVER,
    ) -> str:
        line = serialize(command, params, source=source)
        if "twitch.tv/tags" not in connection.capabilities:
            return line
        return _twitch_tags(tags) + " " + line

    def _join(self, connection: _Connection, message: Message) -> None:
        if connection.login is None or not message.params:
            return
        names = [n.strip().lstrip("#").lower() for n in message.params[0].split(",") if n.strip()]
        now = time.monotonic()
        stats = self.account(connection.login)
        account = connection.account
        window = account.joins if account is not None else connection.anonymous_joins
        if not window.take(now, len(names)):
            self._violation_for(stats, "join_rate", f"{len(names)} JOINs over the budget")
            connection.abort()  # as Twitch does
            return
        stats.joins += len(names)
        for name in names:
            self._join_one(connection, name)

    def _join_one(self, connection: _Connection, name: str) -> None:
        channel = self._channels.get(name)
        if channel is None or name in connection.channels:
            return  # a channel that does not exist gives silence
        login = connection.login or ""
        if channel.suspended:
            self._notice(
                connection, name, "msg_channel_suspended", "This channel has been suspended."
            )
            return
        if login in channel.banned:
            self._notice(
                connection,
                name,
                "msg_banned",
                f"You are permanently banned from talking in {name}.",
            )
            return
        account = connection.account
        if account is not None:
            counted = {c for other in self._connections.values() if other.account is account
                       for c in other.channels if c not in account.moderator_in}  # fmt: skip
            if name not in account.moderator_in and len(counted) >= self.limits.channel_cap:
                self._violation_for(self.account(login), "channel_cap", name)
                self._notice(connection, name, "msg_concurrent_channel_limit_reached", _CAPPED)
                return
        connection.channels.add(name)
        channel.members[connection.id] = connection
        channel.snapshot = None
        self._touch()
        connection.send(f":{connection.prefix} JOIN #{name}")
        if "twitch.tv/commands" in connection.capabilities:
            moderator = account is not None and name in account.moderator_in
            connection.send(self._tagged(connection, "USERSTATE", [f"#{name}"], {
                "badge-info": "", "badges": "moderator/1" if moderator else "", "color": "",
                "display-name": login, "emote-sets": "0", "mod": "1" if moderator else "0",
                "subscriber": "0", "user-type": "mod" if moderator else "",
            }))  # fmt: skip
            connection.send(self._tagged(connection, "ROOMSTATE", [f"#{name}"], {
                "emote-only": "0", "followers-only": "-1", "r9k": "0", "room-id": channel.room_id,
                "slow": "0", "subs-only": "0",
            }))  # fmt: skip
        connection.send(f":{login}.tmi.twitch.tv 353 {login} = #{name} :{login}")
        connection.send(f":{login}.tmi.twitch.tv 366 {login} #{name} :End of /NAMES list")

    def _notice(self, connection: _Connection, channel: str, msg_id: str, text: str) -> None:
        connection.send(
            self._tagged(connection, "NOTICE", [f"#{channel}", text], {"msg-id": msg_id})
        )

    def _part(self, connection: _Connection, message: Message) -> None:
        if connection.login is None or not message.params:
            return
        for name in (n.strip().lstrip("#").lower() for n in message.params[0].split(",")):
            channel = self._channels.get(name)
            if name in connection.channels and channel is not None:
                connection.channels.discard(name)
                channel.members.pop(connection.id, None)
                channel.snapshot = None
                self._touch()
                connection.send(f":{connection.prefix} PART #{name}")

    def _privmsg(self, connection: _Connection, message: Message) -> None:
        account = connection.account
        if account is None or len(message.params) < 2:
            return  # anonymous logins cannot send; Twitch ignores them
        name = message.params[0].lstrip("#").lower()
        channel = self._channels.get(name)
        if channel is None:
            return
        text = message.params[1]
        moderator = name in account.moderator_in
        if not self._may_send(connection, account, channel, text, moderator):
            return
        self.account(account.login).messages += 1
        message_id = self._traffic.new_id()
        tags = {"badge-info": "", "badges": "moderator/1" if moderator else "", "color": "",
                "display-name": account.login, "emotes": "", "first-msg": "0", "flags": "",
                "id": message_id, "mod": "1" if moderator else "0", "returning-chatter": "0",
                "room-id": channel.room_id, "subscriber": "0",
                "tmi-sent-ts": str(int(time.time() * 1000)), "turbo": "0",
                "user-id": _user_id(account.login), "user-type": ""}  # fmt: skip
        parent = message.tags.get("reply-parent-msg-id")
        if parent:
            tags["reply-parent-msg-id"] = parent
        line = serialize("PRIVMSG", [f"#{name}", text], source=connection.prefix)
        data = (_twitch_tags(tags) + " " + line).encode() + b"\r\n"
        if self.record:
            self._deliveries[name].append(Delivery(message_id, channel.joined()))
        self._touch()
        for member in channel.members.values():
            if member is not connection:
                member.write(data if member.full else member.shape(data, "PRIVMSG"))
        connection.send(self._tagged(connection, "USERSTATE", [f"#{name}"], {
            "display-name": account.login, "mod": "1" if moderator else "0",
        }))  # fmt: skip

    def _may_send(
        self,
        connection: _Connection,
        account: _Account,
        channel: _Channel,
        text: str,
        moderator: bool,
    ) -> bool:
        """Apply Twitch's message rules; record and answer a refusal as Twitch does."""
        stats = self.account(account.login)
        now = time.monotonic()
        name = channel.name
        if len(text) > self.limits.max_message_chars:
            self._violation_for(stats, "message_too_long", f"{len(text)} characters")
            return False
        if now - channel.last_message.get(account.login, -1e9) < self.limits.channel_interval_s:
            self._violation_for(stats, "channel_rate", name)
            self._notice(connection, name, "msg_ratelimit", _TOO_QUICK)
            return False
        # Twitch compares with the account's previous message in the channel only.
        previous_at, previous_text = channel.previous.get(account.login, (-1e9, ""))
        if text == previous_text and now - previous_at < self.limits.duplicate_window_s:
            self._violation_for(stats, "duplicate", name)
            self._notice(connection, name, "msg_duplicate", _DUPLICATE)
            return False
        window = account.moderator_messages if moderator else account.messages
        if not window.take(now):
            self._violation_for(stats, "message_rate", name)
            return False  # Twitch ignores the account's messages for a while
        if not moderator:
            account.moderator_messages.take(now)  # both buckets count every message
        channel.last_message[account.login] = now
        channel.previous[account.login] = (now, text)
        return True

    def _ping(self, connection: _Connection, message: Message) -> None:
        argument = message.params[-1] if message.params else _SERVER
        connection.send(f":{_SERVER} PONG {_SERVER} :{argument}")

    def _quit(self, connection: _Connection, message: Message) -> None:
        connection.abort()

    def _ignore(self, connection: _Connection, message: Message) -> None:
        return None


def _user_id(login: str) -> str:
    """A stable user id for a login (the same in every process)."""
    return str(zlib.crc32(login.encode()))


def _twitch_tags(tags: dict[str, str]) -> str:
    """Tags as Twitch writes them: every tag with ``=``, even when its value is empty."""
    return "@" + ";".join(f"{key}={escape_tag_value(value)}" for key, value in tags.items())


_HANDLERS = {
    "CAP": ChatSimulator._cap,
    "PASS": ChatSimulator._pass,
    "NICK": ChatSimulator._nick,
    "USER": ChatSimulator._ignore,
    "JOIN": ChatSimulator._join,
    "PART": ChatSimulator._part,
    "PRIVMSG": ChatSimulator._privmsg,
    "PING": ChatSimulator._ping,
    "PONG": ChatSimulator._ignore,
    "QUIT": ChatSimulator._quit,
}

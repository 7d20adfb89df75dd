"""The chat server: listening, channels and accounts, generated traffic, faults, accounting.

One :class:`ChatSimulator` is an asyncio server that behaves like Twitch's chat servers (see
``docs/simulator.md``). Use it as an async context manager; every fault and every account,
channel and rate can be changed while it runs, and everything it did is recorded for tests.
What clients send is answered by :mod:`~tmi_cluster.simulator.commands`; the state kept per
account, channel and connection lives in :mod:`~tmi_cluster.simulator.peers`.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import ssl
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Self

from websockets.asyncio.server import Server as WebSocketServer
from websockets.asyncio.server import serve as websocket_serve

from tmi_cluster.errors import NotAvailableError
from tmi_cluster.irc import parse
from tmi_cluster.simulator.commands import SERVER, Commands
from tmi_cluster.simulator.conduits import Conduits
from tmi_cluster.simulator.control import ControlServer
from tmi_cluster.simulator.limits import Limits
from tmi_cluster.simulator.oauth import OAuthServer
from tmi_cluster.simulator.peers import (
    AccountStats,
    ConnectionInfo,
    Delivery,
    Violation,
    _Account,
    _Channel,
    _Connection,
    user_id,
)
from tmi_cluster.simulator.traffic import GeneratedLine, Traffic
from tmi_cluster.simulator.websocket import serve_connection
from tmi_cluster.tasks import cancel_and_wait

__all__ = [
    "AccountStats",
    "ChatSimulator",
    "ConnectionInfo",
    "Delivery",
    "Violation",
]

_TICK_S = 0.01


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
        eventsub_port: int | None = None,
        open_channels: bool = False,
    ) -> None:
        self.host = host
        #: A JOIN of a channel that does not exist creates it (else: silence, as on Twitch).
        self.open_channels = open_channels
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
        #: Every line generated since the start (messages with an id, and the lines without one:
        #: CLEARCHAT, CLEARMSG, ROOMSTATE): the rate a benchmark achieved is its difference.
        self.lines_generated = 0
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
        #: The handlers of what clients send.
        self.commands = Commands(self)
        #: Twitch's OAuth server, served on the control port (applications, codes, tokens).
        self.oauth = OAuthServer()
        #: EventSub: conduits, subscriptions (Helix on the control port) and WebSocket
        #: sessions (on the EventSub port, when ``eventsub_port`` was given).
        self._uids: dict[str, str] = {}  # user id -> login, as far as looked up
        self.conduits = Conduits(
            self.oauth.authorized, login_of=self._login_of, moderates=self._moderates
        )
        self.oauth.on_deauthorized = self.conduits.deauthorized
        self._requested_eventsub_port = eventsub_port
        #: The EventSub WebSocket port (after start, when ``eventsub_port`` was given).
        self.eventsub_port: int | None = None
        self._eventsub_server: WebSocketServer | None = None
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
        if self._requested_eventsub_port is not None:
            self._eventsub_server = await websocket_serve(
                self.conduits.serve, self.host, self._requested_eventsub_port
            )
            self.eventsub_port = int(next(iter(self._eventsub_server.sockets)).getsockname()[1])
            self.conduits.url = f"ws://{self.host}:{self.eventsub_port}/ws"
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
        await cancel_and_wait(*self._tasks, what="the simulator's traffic")
        self._tasks = []
        servers = [server for server in (self._server, self._tls_server) if server is not None]
        for server in servers:
            server.close()
        for ws_server in (self._websocket_server, self._eventsub_server):
            if ws_server is not None:
                ws_server.close()
        for connection in list(self._connections.values()):
            connection.abort()
        for server in servers:
            await server.wait_closed()
        for ws_server in (self._websocket_server, self._eventsub_server):
            if ws_server is not None:
                await ws_server.wait_closed()
        self._server = self._tls_server = self._websocket_server = self._eventsub_server = None
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
                # a channel's id is its broadcaster's user id (the OAuth server's too)
                self._channels[login] = _Channel(login, user_id(login))
                added = True
        if added:
            self._traffic.set_channels({c.name: c.room_id for c in self._channels.values()})

    def add_account(self, login: str, token: str, *, moderator_in: Iterable[str] = ()) -> None:
        """Accept ``PASS oauth:<token>`` + ``NICK <login>``; a moderator in the given channels
        (an account added again is replaced: a channel no longer listed is unmodded, see
        :meth:`moderate`)."""
        name = login.lower()
        before = self._accounts.get(name)
        channels = {c.lstrip("#").lower() for c in moderator_in}
        self._accounts[name] = _Account.fresh(
            name, token.removeprefix("oauth:"), channels, self.limits
        )
        for channel in sorted(before.moderator_in - channels) if before is not None else ():
            self.conduits.unmodded(name, channel)

    def moderate(self, login: str, channel: str, moderator: bool = True) -> None:
        """Make account ``login`` a moderator of ``channel``, or no longer one: then its
        EventSub subscriptions there that only its moderator status authorized are revoked, as
        Twitch does. KeyError for an unknown account."""
        account = self._accounts[login.lower()]
        name = channel.lstrip("#").lower()
        if moderator:
            account.moderator_in.add(name)
        elif name in account.moderator_in:
            account.moderator_in.discard(name)
            self.conduits.unmodded(login.lower(), name)

    def moderator_in(self, login: str) -> list[str]:
        """The channels account ``login`` moderates (KeyError for an unknown account)."""
        return sorted(self._accounts[login.lower()].moderator_in)

    def suspend(self, channel: str, suspended: bool = True) -> None:
        """Mark a channel suspended: joins get ``msg_channel_suspended``."""
        self._channels[channel.lstrip("#").lower()].suspended = suspended

    def ban(self, login: str, channel: str, banned: bool = True) -> None:
        """Ban ``login`` from ``channel`` (or lift the ban): its joins get ``msg_banned``."""
        names = self._channels[channel.lstrip("#").lower()].banned
        (names.add if banned else names.discard)(login.lower())

    def kick(self, channel: str, login: str | None = None) -> int:
        """Part ``channel`` server-side for the connections joined to it (only ``login``'s,
        when given): each gets a PART it did not ask for. Returns how many were parted."""
        name = channel.lstrip("#").lower()
        room = self._channels[name]
        parted = 0
        for connection in list(room.members.values()):
            if login is not None and connection.login != login.lower():
                continue
            connection.channels.discard(name)
            room.members.pop(connection.id, None)
            room.snapshot = None
            connection.send(f":{connection.prefix} PART #{name}")
            parted += 1
        self._touch()
        return parted

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
            connection.send(f":{SERVER} RECONNECT")
            loop.call_later(close_after_s, connection.abort)

    def drop(self, connections: Iterable[int] | None = None) -> None:
        """Close some or all connections abruptly."""
        for connection in self._select(connections):
            connection.abort()

    def stall(self, connections: Iterable[int] | None = None, stalled: bool = True) -> None:
        """Make connections half-open: nothing is sent or answered any more (or again)."""
        for connection in self._select(connections):
            connection.half_open = stalled

    def hold(self, connections: Iterable[int] | None = None, held: bool = True) -> None:
        """Make connections lag: what the server sends them is kept, in order, and arrives
        when they are released (``held=False``); they still read what the client sends. Held
        data counts against the send buffer's bound (``slow_reader`` over it)."""
        for connection in self._select(connections):
            connection.hold(held)

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
            ConnectionInfo(
                c.id,
                c.login,
                frozenset(c.channels),
                frozenset(c.capabilities),
                tuple(c.sent),
                not c.closed,
                c.peer,
            )
            for c in self._all_connections.values()
        ]

    def peer(self, connection: int) -> tuple[str, int]:
        """The address and port connection ``connection`` came from (("", 0): unknown)."""
        found = self._all_connections.get(connection)
        return found.peer if found is not None else ("", 0)

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
        delivery changes or a line arrives; TimeoutError after ``timeout_s``."""

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
        self.lines_generated += len(lines)
        self._deliver(lines)
        return lines

    def _deliver(self, lines: list[GeneratedLine]) -> None:
        outgoing: defaultdict[_Connection, list[bytes]] = defaultdict(list)
        channels = self._channels
        now = time.monotonic()
        for line in lines:
            state = channels[line.channel]
            if self.record and line.message_id is not None:
                self._deliveries[line.channel].append(
                    Delivery(line.message_id, state.joined(), now)
                )
            for member in state.members.values():
                data = line.data if member.full else member.shape(line.data, line.command)
                if data:
                    outgoing[member].append(data)
        for connection, chunks in outgoing.items():
            connection.write(b"".join(chunks))
        if self.conduits.subscribed:  # the same chat through EventSub, where subscribed
            for line in lines:
                if self.conduits.wants(channels[line.channel].room_id):
                    self.conduits.deliver(parse(line.data.decode("utf-8", "replace").rstrip()))
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
                    connection.send(f"PING :{SERVER}")

    def _moderates(self, login: str, channel: str) -> bool:
        """Whether account ``login`` moderates ``channel`` (or is its broadcaster)."""
        account = self._accounts.get(login)
        return login == channel or (account is not None and channel in account.moderator_in)

    def _login_of(self, uid: str) -> str | None:
        """The login of a user id the simulator knows (a channel's, an account's, a holder of
        a token), or None."""
        found = self._uids.get(uid)
        if found is None:  # a login new since the last look (ids never change): look again
            self._uids = {
                user_id(login): login
                for login in (*self._channels, *self._accounts, *self.oauth.logins())
            }
            found = self._uids.get(uid)
        return found

    def _violation_for(self, stats: AccountStats, kind: str, detail: str) -> None:
        stats.violations.append(Violation(kind, time.monotonic(), detail))

"""One Twitch chat connection: transports, login, keepalive, reconnect, make-before-break.

A :class:`Connection` is the logical connection an application or a pool holds; underneath,
one :class:`_Session` is one physical link (TCP, TLS or WebSocket) with its login, its reading
and its keepalive. Contracts:

- Login: ``CAP REQ`` for the Twitch capabilities (a NAK is accepted: a plain IRC server still
  works), ``PASS oauth:<token>`` then ``NICK`` for an account, ``NICK justinfan<digits>``
  anonymously, then ``USER`` and ``CAP END`` (which complete registration on a plain IRC
  server; Twitch ignores them). A login counts as confirmed at ``001``; a ``Login
  authentication failed`` or ``Improperly formatted auth`` stops the connection (retrying a
  refused token is useless) with :class:`~tmi_cluster.errors.LoginError`'s message as the
  disconnect reason.
- Reading: lines are framed across reads; a line longer than ``max_line_bytes`` is discarded up
  to its end (counted in ``oversized_lines``), so memory stays bounded; unparsable lines are
  counted in ``malformed_lines`` and skipped. Server ``PING`` is answered at once.
- Keepalive: our own ``PING`` every ``ping_interval_s``; no ``PONG`` within ``ping_timeout_s``
  means the link is dead (a half-open connection is noticed).
- Reconnect: after any loss, immediately, then with exponential backoff (``backoff_base_s``,
  doubling, capped at ``backoff_cap_s``) and jitter; the backoff resets only after a confirmed
  login. Channels are rejoined (``rejoin``).
- ``RECONNECT`` from the server is handled make-before-break: a new session logs in and joins
  every channel (or ``overlap_timeout_s`` passes), both run for ``overlap_linger_s`` more, then
  the old one is closed. Events are
  de-duplicated by ``dedupe_key`` across the overlap, so nothing is lost or seen twice.
- Every JOIN sent is first taken from ``join_window`` (when given), rejoins included; every
  login of an account from ``auth_window`` (when given), reconnects included.
- Every line sent goes through :func:`~tmi_cluster.irc.serialize`: no text can inject a second
  command. The token is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import random
import secrets
import ssl
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as websocket_connect
from websockets.exceptions import WebSocketException

from tmi_cluster.config import Settings
from tmi_cluster.errors import LoginError, ParseError
from tmi_cluster.events import ConnectedEvent, DisconnectedEvent, Event, from_message
from tmi_cluster.irc import Message, parse, serialize
from tmi_cluster.logins import normalise_logins
from tmi_cluster.ratelimit import Window

__all__ = ["Connection", "ConnectionOptions", "ConnectionState"]

log = logging.getLogger(__name__)

CAPABILITIES = ("twitch.tv/tags", "twitch.tv/commands")
_DEDUPE_MEMORY = 50_000
_JOIN_LINE_BYTES = 500
_FAILED_LOGINS = ("Login authentication failed", "Improperly formatted auth")


class ConnectionState(enum.StrEnum):
    """Lifecycle of a :class:`Connection`."""

    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@dataclass(frozen=True)
class ConnectionOptions:
    """How to connect; :meth:`from_settings` reads them from the settings."""

    host: str = "irc.chat.twitch.tv"
    port: int = 6697
    secure: bool = True
    transport: Literal["tcp", "websocket"] = "tcp"
    ca_file: str | None = None
    login: str | None = None
    token: str = field(default="", repr=False)
    capabilities: tuple[str, ...] = CAPABILITIES
    ping_interval_s: float = 30.0
    ping_timeout_s: float = 5.0
    login_timeout_s: float = 10.0
    reconnect: bool = True
    rejoin: bool = True
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    max_line_bytes: int = 16_384
    overlap_timeout_s: float = 10.0
    overlap_linger_s: float = 1.0
    name: str = "connection"

    @classmethod
    def from_settings(cls, settings: Settings, *, name: str = "connection") -> ConnectionOptions:
        """Options from ``tmi.connection`` and ``tmi.identity``."""
        connection = settings.tmi.connection
        identity = settings.tmi.identity
        return cls(
            host=connection.server,
            port=connection.effective_port,
            secure=connection.secure,
            transport=connection.transport,
            ca_file=connection.ca_file or None,
            login=None if identity.anonymous else identity.username,
            token=identity.token,
            ping_interval_s=connection.ping_interval,
            ping_timeout_s=connection.ping_timeout,
            reconnect=connection.reconnect,
            rejoin=connection.rejoin,
            name=name,
        )

    def backoff_s(self, attempt: int) -> float:
        """The wait before reconnect attempt ``attempt`` (1: at once), with jitter."""
        if attempt <= 1:
            return 0.0
        delay = min(self.backoff_cap_s, self.backoff_base_s * 2.0 ** (attempt - 2))
        return float(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not cryptography


class _Framer:
    """Lines out of a byte stream, with a bound on a line's length."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buffer = bytearray()
        self.skipping = False
        self.oversized = 0

    def feed(self, data: bytes) -> list[bytes]:
        """The complete lines in ``data`` (with what came before), without CR LF; a line longer
        than ``limit`` is dropped and counted, and so is everything up to its end."""
        if self.buffer:
            data = bytes(self.buffer) + data
            self.buffer.clear()
        parts = data.split(b"\n")
        rest = parts.pop()  # after the last LF: the start of a line still to come
        lines: list[bytes] = []
        limit = self.limit
        for part in parts:
            if self.skipping:  # the end of a line that was too long
                self.skipping = False
                continue
            line = part[:-1] if part[-1:] == b"\r" else part
            if len(line) > limit:
                self.oversized += 1
                continue
            lines.append(line)
        if self.skipping or len(rest) > limit:
            if not self.skipping:
                self.oversized += 1
            self.skipping = True
        else:
            self.buffer += rest
        return lines


class _Reading(asyncio.Protocol):
    """The TCP (or TLS) side of a session: bytes go straight to the session's framer as they
    arrive, with no task switch per read (which matters with hundreds of connections)."""

    def __init__(self, session: _Session) -> None:
        self.session = session
        self.writable = asyncio.Event()
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        self.session.received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable.set()  # nobody waits for a transport that is gone
        reason = f"connection lost: {exc.__class__.__name__}" if exc else "closed by the server"
        self.session.lost(reason)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()


class _Session:
    """One physical link: connect, log in, read, keep alive, close."""

    _numbers = itertools.count(1)

    def __init__(
        self, options: ConnectionOptions, deliver: Callable[[Message, _Session], None]
    ) -> None:
        self.options = options
        self.deliver = deliver
        self.number = next(self._numbers)
        self.nick = options.login or f"justinfan{secrets.randbelow(90_000) + 10_000}"
        self.joined: set[str] = set()
        self.join_changed = asyncio.Event()
        self.malformed = 0
        self._framer = _Framer(options.max_line_bytes)
        self._transport: asyncio.Transport | None = None  # TCP or TLS
        self._reading: _Reading | None = None
        self._socket: ClientConnection | None = None
        self._logged_in: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pong = asyncio.Event()
        self._ping_token = ""
        self._tasks: set[asyncio.Task[None]] = set()  # owned here; cancelled by close()
        self.closed = asyncio.Event()
        self.reason = ""

    @property
    def oversized(self) -> int:
        return self._framer.oversized

    def _ssl(self) -> ssl.SSLContext | None:
        if not self.options.secure:
            return None
        return ssl.create_default_context(cafile=self.options.ca_file)

    async def open(self) -> None:
        """Connect and log in; raise LoginError, OSError, TimeoutError or a WebSocket error."""
        options = self.options
        if options.transport == "websocket":
            scheme = "wss" if options.secure else "ws"
            self._socket = await websocket_connect(
                f"{scheme}://{options.host}:{options.port}",
                ssl=self._ssl(),
                open_timeout=options.login_timeout_s,
            )
        else:
            loop = asyncio.get_running_loop()
            transport, self._reading = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Reading(self), options.host, options.port, ssl=self._ssl(),
                    server_hostname=options.host if options.secure else None,
                ),
                options.login_timeout_s,
            )  # fmt: skip
            assert isinstance(transport, asyncio.Transport)
            self._transport = transport
        if self._socket is not None:
            self._spawn(self._read_forever(), f"read-{self.number}")
        lines = []
        if options.capabilities:
            lines.append(serialize("CAP", ["REQ", " ".join(options.capabilities)]))
        if options.login:
            lines.append(serialize("PASS", [f"oauth:{options.token}"]))
        lines.append(serialize("NICK", [self.nick]))
        # USER and CAP END complete registration on plain IRC servers; Twitch ignores them.
        lines.append(serialize("USER", [self.nick, "0", "*", self.nick]))
        if options.capabilities:
            lines.append(serialize("CAP", ["END"]))
        await self.send_lines(lines)
        try:
            await asyncio.wait_for(asyncio.shield(self._logged_in), options.login_timeout_s)
        except BaseException:
            await self.close("login failed")
            raise
        self._spawn(self._keep_alive(), f"ping-{self.number}")

    async def send_lines(self, lines: Sequence[str]) -> None:
        """Write whole lines (already serialised)."""
        data = "".join(f"{line}\r\n" for line in lines)
        if self._socket is not None:
            await self._socket.send(data)
        elif self._transport is not None and self._reading is not None:
            if self._transport.is_closing():
                raise ConnectionError(self.reason or "the connection is closed")
            self._transport.write(data.encode())
            await self._reading.writable.wait()

    def received(self, data: bytes) -> None:
        """Handle what the server sent (any number of lines, or part of one)."""
        for line in self._framer.feed(data):
            self._handle(line)

    def lost(self, reason: str) -> None:
        """The link is gone (TCP or TLS)."""
        self._finish(self.reason or reason)

    async def _read_forever(self) -> None:
        """WebSocket reading: each frame holds whole lines."""
        assert self._socket is not None
        reason = "closed by the server"
        try:
            while True:
                frame = await self._socket.recv()
                data = frame.encode() if isinstance(frame, str) else bytes(frame)
                self.received(data if data.endswith(b"\n") else data + b"\r\n")
        except (OSError, WebSocketException) as exc:
            reason = f"connection lost: {exc.__class__.__name__}"
        finally:
            self._finish(self.reason or reason)

    def _handle(self, line: bytes) -> None:
        try:
            message = parse(line)
        except ParseError:
            self.malformed += 1
            return
        command = message.command
        if command == "PING":
            argument = message.params[-1] if message.params else "tmi.twitch.tv"
            self._spawn(self._quietly(serialize("PONG", [argument])), f"pong-{self.number}")
        elif command == "PONG":
            if message.params and message.params[-1] == self._ping_token:
                self._pong.set()
        elif command == "001" and not self._logged_in.done():
            self._logged_in.set_result(None)
        elif command == "NOTICE" and not self._logged_in.done():
            text = message.params[-1] if message.params else ""
            if text in _FAILED_LOGINS:
                self._logged_in.set_exception(LoginError(f"{self.nick}: {text}"))
        elif command in ("JOIN", "PART") and message.nick == self.nick and message.params:
            channel = message.params[0].lstrip("#").lower()
            (self.joined.add if command == "JOIN" else self.joined.discard)(channel)
            self.join_changed.set()
        self.deliver(message, self)

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coroutine`` as a task this session owns (kept until done, cancelled by close)."""
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quietly(self, line: str) -> None:
        with contextlib.suppress(OSError, WebSocketException):
            await self.send_lines([line])

    async def _keep_alive(self) -> None:
        options = self.options
        while not self.closed.is_set():
            await asyncio.sleep(options.ping_interval_s)
            self._ping_token = f"tmi-cluster-{secrets.token_hex(4)}"
            self._pong.clear()
            await self._quietly(serialize("PING", [self._ping_token]))
            try:
                await asyncio.wait_for(self._pong.wait(), options.ping_timeout_s)
            except TimeoutError:
                self._abort(f"no PONG within {options.ping_timeout_s:g} s")
                return

    def _abort(self, reason: str) -> None:
        self.reason = self.reason or reason
        if self._transport is not None:
            self._transport.abort()
        if self._socket is not None:
            self._socket.transport.abort()

    def _finish(self, reason: str) -> None:
        self.reason = self.reason or reason
        if not self._logged_in.done():
            self._logged_in.set_exception(ConnectionError(self.reason))
            self._logged_in.exception()  # retrieved: no "never retrieved" warning
        self.closed.set()

    async def close(self, reason: str = "closed") -> None:
        """Close the link and stop its tasks. Idempotent."""
        self.reason = self.reason or reason
        self._abort(reason)
        current = asyncio.current_task()
        tasks = list(self._tasks)
        for task in tasks:
            if task is not current:
                task.cancel()
        for task in tasks:
            if task is not current:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._socket is not None:
            with contextlib.suppress(OSError, WebSocketException):
                await self._socket.close()
        self._finish(reason)


class Connection:
    """A Twitch chat connection that stays up: use ``async with``, or :meth:`start` and
    :meth:`aclose`. Events (chat, Connected, Disconnected) go to ``on_event``; an exception
    it raises is logged and does not end the connection."""

    def __init__(
        self,
        options: ConnectionOptions,
        *,
        on_event: Callable[[Event], None] | None = None,
        join_window: Window | None = None,
        auth_window: Window | None = None,
    ) -> None:
        self.options = options
        #: Every JOIN this connection sends (joins, rejoins, make-before-break) is taken from
        #: this window first; share one across connections of an account (None: no limit).
        self.join_window = join_window
        #: Every login of an account (first, reconnects, RECONNECT replacements) is taken from
        #: this window first; anonymous logins are not counted (None: no limit).
        self.auth_window = auth_window
        self.state = ConnectionState.IDLE
        self.channels: set[str] = set()
        #: Receives every event (replaceable until :meth:`start`).
        self.on_event: Callable[[Event], None] = on_event or (lambda event: None)
        self._session: _Session | None = None
        self._task: asyncio.Task[None] | None = None
        self._replacing: asyncio.Task[None] | None = None
        # Keys of the events delivered while two sessions overlap (a RECONNECT), and only then:
        # one session never delivers an event twice, so nothing is kept the rest of the time.
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._deduping = False
        #: Why the connection stopped for good (a refused login), else None.
        self.failure: LoginError | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self.reconnects = 0

    async def start(self) -> Self:
        """Start connecting in the background (see :meth:`wait_connected`)."""
        if self._task is None:
            self.state = ConnectionState.CONNECTING
            self._task = asyncio.create_task(self._run(), name=f"connection-{self.options.name}")
        return self

    async def wait_connected(self, timeout_s: float | None = None) -> None:
        """Wait until the connection is logged in. Raises LoginError when Twitch refused the
        login, ConnectionError when the connection ended for good (or was never started),
        TimeoutError after ``timeout_s``."""
        if self._connected.is_set():
            return
        task = self._task
        if task is None:
            raise ConnectionError(f"{self.options.name} was not started")
        connected = asyncio.ensure_future(self._connected.wait())
        try:
            await asyncio.wait({connected, task}, timeout=timeout_s,
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        finally:
            connected.cancel()
        if self._connected.is_set():
            return
        if self.failure is not None:
            raise self.failure
        if task.done():
            raise ConnectionError(f"{self.options.name} is closed")
        raise TimeoutError(f"{self.options.name} did not log in within {timeout_s} s")

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close for good. Idempotent."""
        self._closing = True
        for task in (self._replacing, self._task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._session is not None:
            await self._session.close("closed by the application")
        self.state = ConnectionState.CLOSED

    # -- application side -------------------------------------------------------------------

    @property
    def nick(self) -> str | None:
        """The login in use, once connected."""
        return self._session.nick if self._session else None

    async def join(self, channels: Iterable[str]) -> None:
        """Join channels (remembered, and rejoined after a reconnect)."""
        names = [n for n in normalise_logins(channels) if n not in self.channels]
        self.channels.update(names)
        if self._session is not None and self._connected.is_set():
            await self._join_on(self._session, names)

    async def part(self, channels: Iterable[str]) -> None:
        """Part channels."""
        names = [n for n in normalise_logins(channels) if n in self.channels]
        self.channels.difference_update(names)
        if self._session is not None and self._connected.is_set() and names:
            await self._session.send_lines([serialize("PART", [",".join(f"#{n}" for n in names)])])

    async def send(
        self,
        command: str,
        params: Sequence[str] = (),
        *,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Send one command (with client tags, if given); UnsafeLineError if it would not be
        exactly one line, ConnectionError when not connected."""
        line = serialize(command, params, tags=tags)
        if self._session is None or not self._connected.is_set():
            raise ConnectionError(f"{self.options.name} is not connected")
        await self._session.send_lines([line])

    # -- internals ----------------------------------------------------------------------------

    @staticmethod
    def _join_lines(channels: Sequence[str]) -> list[str]:
        lines: list[str] = []
        batch: list[str] = []
        for name in channels:
            if batch and len(",".join(batch)) + len(name) + 2 > _JOIN_LINE_BYTES:
                lines.append(serialize("JOIN", [",".join(batch)]))
                batch = []
            batch.append(f"#{name}")
        if batch:
            lines.append(serialize("JOIN", [",".join(batch)]))
        return lines

    async def _join_on(self, session: _Session, channels: Sequence[str]) -> None:
        window = self.join_window
        step = window.rate.allow if window is not None else max(len(channels), 1)
        for start in range(0, len(channels), step):
            group = channels[start : start + step]
            if window is not None:
                await window.take(len(group))
            await session.send_lines(self._join_lines(group))

    def _deliver(self, message: Message, session: _Session) -> None:
        if message.command == "RECONNECT":
            replacing = self._replacing is not None and not self._replacing.done()
            if session is self._session and not self._closing and not replacing:
                self._replacing = asyncio.create_task(self._replace(session))
        deduping = self._deduping
        for event in from_message(message):
            if deduping:
                key = event.dedupe_key
                if key is not None:
                    if key in self._seen:
                        continue
                    self._seen[key] = None
                    if len(self._seen) > _DEDUPE_MEMORY:
                        self._seen.popitem(last=False)
            self._emit(event)

    def _emit(self, event: Event) -> None:
        """Hand ``event`` to the application; a failing handler is logged, and the connection
        goes on (an application bug must not cost the chat)."""
        try:
            self.on_event(event)
        except Exception:
            log.exception(
                "%s: the event handler failed on %s", self.options.name, type(event).__name__
            )

    async def _open(self, session: _Session) -> None:
        if self.auth_window is not None and self.options.login:
            await self.auth_window.take()
        await session.open()

    async def _replace(self, old: _Session) -> None:
        """Make-before-break: log a new session in, join everything there, then drop the old."""
        self._deduping = True
        try:
            await self._overlap(old)
        finally:
            self._deduping = False
            self._seen.clear()

    async def _overlap(self, old: _Session) -> None:
        new = _Session(self.options, self._deliver)
        try:
            await self._open(new)
        except (OSError, TimeoutError, LoginError, WebSocketException, ConnectionError) as exc:
            log.warning("%s: replacement after RECONNECT failed: %s", self.options.name, exc)
            return  # the old session's end will trigger a normal reconnect
        await self._join_on(new, sorted(self.channels))
        deadline = asyncio.get_running_loop().time() + self.options.overlap_timeout_s
        while not self.channels <= new.joined:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            new.join_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(new.join_changed.wait(), remaining)
        self._session = new
        self.reconnects += 1
        # Keep the old link a moment: lines Twitch already sent on it are still arriving, and
        # the new link's first lines may lag its JOIN confirmations. De-duplication covers both.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(old.closed.wait(), self.options.overlap_linger_s)
        await old.close("replaced after RECONNECT")

    async def _run(self) -> None:
        attempt = 0
        first_login = True
        options = self.options
        while not self._closing:
            attempt += 1
            await asyncio.sleep(options.backoff_s(attempt))
            session = _Session(options, self._deliver)
            try:
                await self._open(session)
            except LoginError as exc:
                self.failure = exc
                self._emit(DisconnectedEvent(connection=options.name, reason=str(exc)))
                self.state = ConnectionState.CLOSED
                return
            except (OSError, TimeoutError, WebSocketException, ConnectionError) as exc:
                reason = f"cannot connect: {exc.__class__.__name__}: {exc}"
                self._emit(DisconnectedEvent(connection=options.name, reason=reason,
                                             reconnecting=options.reconnect))  # fmt: skip
                if not options.reconnect:
                    self.state = ConnectionState.CLOSED
                    return
                self.state = ConnectionState.RECONNECTING
                continue
            attempt = 0  # reset only after a confirmed login
            self._session = session
            self.state = ConnectionState.CONNECTED
            self._connected.set()
            self._emit(ConnectedEvent(connection=options.name, user=session.nick))
            if options.rejoin or first_login:
                await self._join_on(session, sorted(self.channels))
            first_login = False
            reason = await self._until_lost()
            self._connected.clear()
            if self._closing:
                return
            reconnecting = options.reconnect
            self._emit(
                DisconnectedEvent(connection=options.name, reason=reason, reconnecting=reconnecting)
            )
            if not reconnecting:
                self.state = ConnectionState.CLOSED
                return
            self.state = ConnectionState.RECONNECTING
            self.reconnects += 1

    async def _until_lost(self) -> str:
        """Wait until the current session ends for good (a replaced one does not count)."""
        while True:
            session = self._session
            assert session is not None
            await session.closed.wait()
            replacing = self._replacing
            if replacing is not None and not replacing.done():
                await replacing  # a RECONNECT replacement decides who is current
            if self._session is session:
                await session.close(session.reason)
                return session.reason

"""What the simulator keeps about its peers: accounts, channels, client connections, and the
records it hands to tests (violations, per-account statistics, deliveries, connections)."""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tmi_cluster.simulator.limits import Limits, Window

if TYPE_CHECKING:
    from tmi_cluster.simulator.server import ChatSimulator


def user_id(login: str) -> str:
    """A stable user id for a login (the same in every process)."""
    return str(zlib.crc32(login.encode()))


__all__ = ["AccountStats", "ConnectionInfo", "Delivery", "Violation", "user_id"]


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
    #: Every message accepted from the login, as (channel, text), when the simulator records.
    said: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message sent into a channel, the connections joined to it at that moment, and when
    (``time.monotonic()`` of the simulator's process)."""

    message_id: str
    connections: tuple[int, ...]
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """A connection as the simulator sees it."""

    id: int
    login: str | None
    channels: frozenset[str]
    capabilities: frozenset[str]
    sent: tuple[str, ...]
    open: bool
    #: The client's address and port, ("", 0) when the transport does not tell.
    peer: tuple[str, int] = ("", 0)


@dataclass
class _Account:
    login: str
    token: str
    moderator_in: set[str]
    joins: Window
    auths: Window
    messages: Window
    moderator_messages: Window

    @classmethod
    def fresh(cls, login: str, token: str, moderator_in: set[str], limits: Limits) -> _Account:
        """An account with Twitch's budgets, none of them used."""
        return cls(
            login,
            token,
            moderator_in,
            Window(limits.join_allow, limits.join_every_s),
            Window(limits.auth_allow, limits.auth_every_s),
            Window(limits.message_allow, limits.message_every_s),
            Window(limits.moderator_message_allow, limits.message_every_s),
        )


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
        self.peer: tuple[str, int] = ("", 0)
        self.held: list[bytes] | None = None  # a lagging link: what is written waits here
        self.held_bytes = 0
        self.closed = False
        self.full = False  # both tags and commands: lines go out as generated
        self.anonymous_joins = Window(
            simulator.limits.anonymous_join_allow, simulator.limits.join_every_s
        )

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = (str(peer[0]), int(peer[1]))
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
            self.sim.commands.receive(self, line)
            if self.closed:
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.sim._forget(self)

    # -- writing ----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        transport = self.transport
        if self.closed or self.half_open or transport is None or transport.is_closing():
            return  # closing: a reset seen by the transport before connection_lost() runs
        if self.held is not None:
            self.held.append(data)
            self.held_bytes += len(data)
            if self.held_bytes > self.sim.limits.max_send_buffer_bytes:
                self.sim._violation(self, "slow_reader", "held data over the send buffer bound")
                self.abort()
            return
        transport.write(data)
        if transport.get_write_buffer_size() > self.sim.limits.max_send_buffer_bytes:
            self.sim._violation(self, "slow_reader", "send buffer over its bound")
            self.abort()

    def hold(self, held: bool) -> None:
        """Start keeping what is written (a lagging link), or write all of it out now."""
        if held:
            if self.held is None:
                self.held, self.held_bytes = [], 0
            return
        waiting, self.held, self.held_bytes = self.held, None, 0
        if waiting:
            self.write(b"".join(waiting))

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

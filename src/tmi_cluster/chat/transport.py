"""The byte streams under a chat connection: one small interface, one implementation a kind.

A connection's session logic (login, keepalive, channels) speaks to a :class:`Transport` only:
it hands received bytes to a :class:`Receiver` as they arrive and tells it once when the link is
gone. :func:`open_transport` picks the implementation by :attr:`Endpoint.kind` from
:data:`TRANSPORTS`; a new kind of transport (Twitch's EventSub, later) is one more entry there,
with no change to the session logic.

- ``tcp``: IRC over TCP, or TLS when ``secure`` (certificates verified, ``ca_file`` or the
  system's). Bytes reach the receiver straight from the event loop's protocol callback, with no
  task switch per read (which matters with hundreds of connections).
- ``websocket``: IRC over WebSocket (``ws://`` or ``wss://``) as Twitch's ``irc-ws`` serves it;
  each frame holds whole lines (a missing final line end is added).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as websocket_connect
from websockets.exceptions import WebSocketException

from tmi_cluster.tasks import cancel_and_wait

__all__ = [
    "TRANSPORTS",
    "Endpoint",
    "Receiver",
    "TcpTransport",
    "Transport",
    "TransportError",
    "WebSocketTransport",
    "describe_connect_error",
    "open_transport",
]


class TransportError(ConnectionError):
    """A link could not be opened or written to (the reason in the message)."""


@dataclass(frozen=True)
class Endpoint:
    """Where to connect and how: the transport's kind, the address, TLS and a time limit."""

    kind: str
    host: str
    port: int
    secure: bool
    ca_file: str | None = None
    timeout_s: float = 10.0

    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying TLS context when ``secure``, else None."""
        return ssl.create_default_context(cafile=self.ca_file) if self.secure else None


class Receiver(Protocol):
    """What a transport hands its bytes to."""

    def received(self, data: bytes) -> None:
        """Bytes arrived (any number of lines, or part of one)."""

    def lost(self, reason: str) -> None:
        """The link is gone, for the reason given; called once."""


class Transport(Protocol):
    """An open link. Writes are whole lines; :meth:`abort` and :meth:`close` are idempotent."""

    async def write(self, data: bytes) -> None:
        """Write ``data``; wait while the link's buffer is full. TransportError once closed."""

    def abort(self) -> None:
        """Drop the link at once (the receiver's ``lost`` follows)."""

    async def close(self) -> None:
        """Close the link and stop what it runs."""

    async def finish(self, timeout_s: float) -> None:
        """Send what is still buffered, then close; drop the link after ``timeout_s``."""


class _Protocol(asyncio.Protocol):
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.writable = asyncio.Event()
        self.writable.set()
        self.ended = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.receiver.received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable.set()  # nobody waits for a transport that is gone
        self.ended.set()
        self.receiver.lost(
            f"connection lost: {exc.__class__.__name__}" if exc else "closed by the server"
        )

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()


class TcpTransport:
    """IRC over TCP or TLS."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol

    @classmethod
    async def open(cls, endpoint: Endpoint, receiver: Receiver) -> TcpTransport:
        """Connect within ``endpoint.timeout_s``; OSError or TimeoutError when it fails."""
        loop = asyncio.get_running_loop()
        transport, protocol = await asyncio.wait_for(
            loop.create_connection(
                lambda: _Protocol(receiver),
                endpoint.host,
                endpoint.port,
                ssl=endpoint.ssl_context(),
                server_hostname=endpoint.host if endpoint.secure else None,
            ),
            endpoint.timeout_s,
        )
        assert isinstance(transport, asyncio.Transport)
        return cls(transport, protocol)

    async def write(self, data: bytes) -> None:
        if self._transport.is_closing():
            raise TransportError("the connection is closed")
        self._transport.write(data)
        await self._protocol.writable.wait()

    def abort(self) -> None:
        self._transport.abort()

    async def close(self) -> None:
        self._transport.abort()

    async def finish(self, timeout_s: float) -> None:
        self._transport.close()  # asyncio writes out its buffer, then closes
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._protocol.ended.wait(), timeout_s)
        self._transport.abort()


class WebSocketTransport:
    """IRC over WebSocket: a task reads frames and hands their lines on."""

    def __init__(self, socket: ClientConnection, receiver: Receiver) -> None:
        self._socket = socket
        self._receiver = receiver
        self._reader = asyncio.create_task(self._read_forever(), name="websocket-read")

    @classmethod
    async def open(cls, endpoint: Endpoint, receiver: Receiver) -> WebSocketTransport:
        """Connect within ``endpoint.timeout_s``; OSError, TimeoutError or TransportError."""
        scheme = "wss" if endpoint.secure else "ws"
        try:
            socket = await websocket_connect(
                f"{scheme}://{endpoint.host}:{endpoint.port}",
                ssl=endpoint.ssl_context(),
                open_timeout=endpoint.timeout_s,
            )
        except WebSocketException as exc:
            raise TransportError(f"WebSocket handshake failed: {exc}") from exc
        return cls(socket, receiver)

    async def _read_forever(self) -> None:
        reason = "closed by the server"
        try:
            while True:
                frame = await self._socket.recv()
                data = frame.encode() if isinstance(frame, str) else bytes(frame)
                self._receiver.received(data if data.endswith(b"\n") else data + b"\r\n")
        except (OSError, WebSocketException) as exc:
            reason = f"connection lost: {exc.__class__.__name__}"
        finally:
            self._receiver.lost(reason)

    async def write(self, data: bytes) -> None:
        try:
            await self._socket.send(data.decode())
        except (OSError, WebSocketException) as exc:
            raise TransportError(f"cannot write: {exc.__class__.__name__}") from exc

    def abort(self) -> None:
        self._socket.transport.abort()

    async def finish(self, timeout_s: float) -> None:
        with contextlib.suppress(OSError, WebSocketException, TimeoutError):
            await asyncio.wait_for(self._socket.close(), timeout_s)  # frames out, then close
        await self.close()

    async def close(self) -> None:
        self.abort()
        await cancel_and_wait(self._reader, what="a WebSocket's reader")
        with contextlib.suppress(OSError, WebSocketException):
            await self._socket.close()


#: The transports by kind: each opens a link to an endpoint for a receiver.
TRANSPORTS: dict[str, Callable[[Endpoint, Receiver], Awaitable[Transport]]] = {
    "tcp": TcpTransport.open,
    "websocket": WebSocketTransport.open,
}


async def open_transport(endpoint: Endpoint, receiver: Receiver) -> Transport:
    """Open a link of ``endpoint.kind``; ValueError for an unknown kind, OSError, TimeoutError
    or TransportError when the link cannot be made."""
    opener = TRANSPORTS.get(endpoint.kind)
    if opener is None:
        raise ValueError(f"unknown transport {endpoint.kind!r}; known: {', '.join(TRANSPORTS)}")
    return await opener(endpoint, receiver)


def describe_connect_error(error: BaseException) -> str:
    """Why a connection could not be made, in words a user acts on: a name that does not
    resolve, a refused or timed-out connection, a TLS failure."""
    if isinstance(error, socket.gaierror):
        return f"the name does not resolve (DNS: {error.strerror or error})"
    if isinstance(error, ssl.SSLError):
        return f"TLS failed ({getattr(error, 'reason', None) or error})"
    if isinstance(error, ConnectionRefusedError):
        return "the connection was refused (nothing listens there)"
    if isinstance(error, TimeoutError):
        return "no answer in time (a firewall, no route, or a machine too busy to answer)"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return f"{type(error).__name__}: {error}"

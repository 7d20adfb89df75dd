"""The simulator's WebSocket transport, in the style of ``wss://irc-ws.chat.twitch.tv``.

Each text frame from a client holds one IRC line or several (CR LF optional after the last);
the server sends text frames of one or more whole lines. :class:`WebSocketTransport` adapts a
``websockets`` connection to the ``asyncio.WriteTransport`` that the chat protocol writes to,
so that TCP, TLS and WebSocket connections share one implementation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

__all__ = ["WebSocketTransport", "serve_connection"]


class WebSocketTransport(asyncio.WriteTransport):
    """Buffered writes to a WebSocket: ``write`` queues, a sender task sends whole frames."""

    def __init__(self, socket: ServerConnection) -> None:
        super().__init__()
        self._socket = socket
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._sender: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None  # kept: a task nobody holds may vanish
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        self._pending.append(bytes(data))
        self._pending_bytes += len(data)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        while self._pending and not self._closing:
            chunks, self._pending = self._pending, []
            size = sum(len(chunk) for chunk in chunks)
            try:
                await self._socket.send(b"".join(chunks).decode("utf-8", "replace"))
            except ConnectionClosed:
                self._closing = True
            finally:
                self._pending_bytes -= size

    def get_write_buffer_size(self) -> int:
        """Bytes queued here plus those the socket has not taken yet."""
        return self._pending_bytes + self._socket.transport.get_write_buffer_size()

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._closer = asyncio.get_running_loop().create_task(self._socket.close())

    def abort(self) -> None:
        self._closing = True
        self._socket.transport.abort()


async def serve_connection(
    socket: ServerConnection, make_protocol: Callable[[], asyncio.Protocol]
) -> None:
    """Run one WebSocket client through a chat protocol until either side closes."""
    protocol = make_protocol()
    transport = WebSocketTransport(socket)
    protocol.connection_made(transport)
    try:
        async for frame in socket:
            data = frame.encode("utf-8") if isinstance(frame, str) else bytes(frame)
            if not data.endswith(b"\n"):
                data += b"\r\n"
            protocol.data_received(data)
            if transport.is_closing():
                break
    except ConnectionClosed:
        pass
    finally:
        with contextlib.suppress(ConnectionClosed):
            await socket.close()
        protocol.connection_lost(None)

"""One physical link of a connection: connect, log in, read lines, keep alive, close.

Internal to :mod:`tmi_cluster.chat.connection`, which owns the sessions and their channels. A
:class:`Session` speaks to its :class:`~tmi_cluster.chat.transport.Transport` only; every parsed
line goes to its ``deliver`` callback after the session's own handling (PING, PONG, login).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from tmi_cluster.chat.transport import Transport, TransportError, open_transport
from tmi_cluster.errors import LoginError, ParseError
from tmi_cluster.irc import Message, parse, serialize

if TYPE_CHECKING:
    from tmi_cluster.chat.options import ConnectionOptions
    from tmi_cluster.chat.ratelimit import Window

__all__ = ["FAILED_LOGINS", "RETRIABLE", "Framer", "Session", "join_lines", "take_for"]

log = logging.getLogger(__name__)

#: The NOTICE texts with which Twitch refuses a login.
FAILED_LOGINS = ("Login authentication failed", "Improperly formatted auth")
#: What ends a connect attempt without ending the connection: it is retried.
RETRIABLE = (OSError, TimeoutError, ConnectionError)
#: A JOIN or PART line lists channels up to about this many bytes.
_JOIN_LINE_BYTES = 500


class Framer:
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


_MASKED_PASS = "PASS oauth:***"  # noqa: S105 - what is shown instead of the token


class Session:
    """One physical link: connect, log in, read, keep alive, close; and the channels the server
    confirmed on it (``joined``), is confirming (``awaiting``) or is parting (``parting``)."""

    _numbers = itertools.count(1)

    def __init__(
        self,
        options: ConnectionOptions,
        deliver: Callable[[Message, Session], None],
        sent: Callable[[Sequence[str]], None] | None = None,
    ) -> None:
        self.options = options
        self.deliver = deliver
        #: Told of every batch of lines written (a PASS line's token masked), when given.
        self.sent = sent
        self.number = next(self._numbers)
        self.nick = options.login or f"justinfan{secrets.randbelow(90_000) + 10_000}"
        self.joined: set[str] = set()
        self.awaiting: dict[str, asyncio.TimerHandle] = {}
        self.parting: set[str] = set()
        self.join_changed = asyncio.Event()
        self.malformed = 0
        self._framer = Framer(options.max_line_bytes)
        self._transport: Transport | None = None
        self._logged_in: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pong = asyncio.Event()
        self._ping_token = ""
        self._barriers: dict[str, asyncio.Future[None]] = {}  # PING token -> its PONG
        self._tasks: set[asyncio.Task[None]] = set()  # owned here; cancelled by close()
        self.closed = asyncio.Event()
        self.reason = ""

    @property
    def oversized(self) -> int:
        return self._framer.oversized

    async def open(self) -> None:
        """Connect and log in; raise LoginError, OSError, TimeoutError or ConnectionError."""
        options = self.options
        self._transport = await open_transport(options.endpoint, self)
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
        try:
            await self.send_lines(lines)
            await asyncio.wait_for(asyncio.shield(self._logged_in), options.login_timeout_s)
        except BaseException:
            await self.close("login failed")
            raise
        self.spawn(self._keep_alive(), f"ping-{self.number}")

    async def send_lines(self, lines: Sequence[str]) -> None:
        """Write whole lines (already serialised); TransportError when the link is gone."""
        if self._transport is None or self.closed.is_set():
            raise TransportError(self.reason or "the connection is closed")
        if self.sent is not None:
            self.sent([_MASKED_PASS if line.startswith("PASS ") else line for line in lines])
        await self._transport.write("".join(f"{line}\r\n" for line in lines).encode())

    def received(self, data: bytes) -> None:
        """Handle what the server sent (any number of lines, or part of one)."""
        for line in self._framer.feed(data):
            self._handle(line)

    def lost(self, reason: str) -> None:
        """The link is gone."""
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
            self.spawn(self.quietly(serialize("PONG", [argument])), f"pong-{self.number}")
        elif command == "PONG" and message.params:
            token = message.params[-1]
            if token == self._ping_token:
                self._pong.set()
            elif (barrier := self._barriers.get(token)) is not None and not barrier.done():
                barrier.set_result(None)
        elif command == "001" and not self._logged_in.done():
            self._logged_in.set_result(None)
        elif command == "NOTICE" and not self._logged_in.done():
            text = message.params[-1] if message.params else ""
            if text in FAILED_LOGINS:
                self._logged_in.set_exception(LoginError(f"{self.nick}: {text}"))
        self.deliver(message, self)

    def spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coroutine`` as a task this session owns (kept until done, cancelled by close)."""
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A task of ours ended: an unexpected error drops the link (the connection reconnects)
        and is logged with its traceback, never lost."""
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("%s: %s failed", self.nick, task.get_name(), exc_info=error)
            self.abort(f"{task.get_name()} failed: {error.__class__.__name__}: {error}")

    async def quietly(self, line: str) -> None:
        """Send one line; a link that is gone is not an error here."""
        with contextlib.suppress(ConnectionError):
            await self.send_lines([line])

    async def caught_up(self, timeout_s: float) -> bool:
        """Wait until this link has delivered every line the server sent on it before now.

        A PING is sent and its PONG awaited: the server answers in order, so when the PONG
        arrives every line it wrote earlier has been read and delivered, however far the link
        lags behind. True then; False when the link closes first or ``timeout_s`` passes.
        """
        if self.closed.is_set():
            return False
        token = f"tmi-cluster-sync-{secrets.token_hex(4)}"
        answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._barriers[token] = answered
        closing = asyncio.ensure_future(self.closed.wait())
        either: set[asyncio.Future[Any]] = {answered, closing}
        try:
            await self.send_lines([serialize("PING", [token])])
            await asyncio.wait(either, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        except ConnectionError:
            return False
        finally:
            closing.cancel()
            del self._barriers[token]
        return answered.done()

    async def _keep_alive(self) -> None:
        options = self.options
        while not self.closed.is_set():
            await asyncio.sleep(options.ping_interval_s)
            self._ping_token = f"tmi-cluster-{secrets.token_hex(4)}"
            self._pong.clear()
            await self.quietly(serialize("PING", [self._ping_token]))
            try:
                await asyncio.wait_for(self._pong.wait(), options.ping_timeout_s)
            except TimeoutError:
                self.abort(f"no PONG within {options.ping_timeout_s:g} s")
                return

    def abort(self, reason: str) -> None:
        """Drop the link at once."""
        self.reason = self.reason or reason
        if self._transport is not None:
            self._transport.abort()

    def _finish(self, reason: str) -> None:
        self.reason = self.reason or reason
        if not self._logged_in.done():
            self._logged_in.set_exception(TransportError(self.reason))
            self._logged_in.exception()  # retrieved: no "never retrieved" warning
        for timer in self.awaiting.values():
            timer.cancel()
        self.awaiting.clear()
        self.joined.clear()
        self.closed.set()

    async def close(self, reason: str = "closed", *, flush_s: float = 0.0) -> None:
        """Close the link and stop its tasks. Idempotent. With ``flush_s``, what is still
        buffered is sent first (for at most that long): a line written is not lost."""
        self.reason = self.reason or reason
        if flush_s > 0 and self._transport is not None and not self.closed.is_set():
            await self._transport.finish(flush_s)
        self.abort(reason)
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        for task in tasks:
            task.cancel()
        if tasks:  # waited for, not awaited: a cancellation of ours must not be swallowed
            await asyncio.wait(tasks, timeout=5.0)
        if self._transport is not None:
            await self._transport.close()
        self._finish(reason)


def _retrieved(task: asyncio.Future[None]) -> None:
    """Done callback of an abandoned task: its outcome is read, so that none is reported as
    never retrieved (a cancelled one has none)."""
    if not task.cancelled():
        task.exception()


def join_lines(command: str, channels: Sequence[str]) -> list[str]:
    """``command`` (JOIN or PART) for ``channels``, as few lines as fit in
    :data:`_JOIN_LINE_BYTES` each (every line through :func:`~tmi_cluster.irc.serialize`)."""
    lines: list[str] = []
    batch: list[str] = []
    for name in channels:
        if batch and len(",".join(batch)) + len(name) + 2 > _JOIN_LINE_BYTES:
            lines.append(serialize(command, [",".join(batch)]))
            batch = []
        batch.append(f"#{name}")
    if batch:
        lines.append(serialize(command, [",".join(batch)]))
    return lines


async def take_for(session: Session, window: Window, count: int) -> bool:
    """Take ``count`` from ``window`` for ``session``'s JOINs; False when the link closes
    first (its place in the window's queue is given up: a dead link's JOINs must not hold
    up the next link's). A cancellation of ours cancels the take and goes on."""
    if session.closed.is_set():
        return False
    taking = asyncio.ensure_future(window.take(count))
    closing = asyncio.ensure_future(session.closed.wait())
    try:
        await asyncio.wait({taking, closing}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        closing.cancel()
        if not taking.done():
            taking.cancel()  # not awaited: awaiting it could swallow our own cancellation
            taking.add_done_callback(_retrieved)
    if not taking.done() or taking.cancelled():
        return False
    taking.result()  # an error of the window's is the connection's
    return not session.closed.is_set()

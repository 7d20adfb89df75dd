"""One Twitch chat connection: login, keepalive, reconnect, make-before-break, its channels.

A :class:`Connection` is the logical connection an application or a pool holds; underneath,
one session (:mod:`tmi_cluster.chat.session`) is one physical link (a
:mod:`~tmi_cluster.chat.transport`: TCP, TLS or WebSocket) with its login, its reading and its
keepalive. Contracts:

- Login: ``CAP REQ`` for the Twitch capabilities (a NAK is accepted: a plain IRC server still
  works), ``PASS oauth:<token>`` then ``NICK`` for an account, ``NICK justinfan<digits>``
  anonymously, then ``USER`` and ``CAP END`` (which complete registration on a plain IRC
  server; Twitch ignores them). A login counts as confirmed at ``001``; a ``Login
  authentication failed`` or ``Improperly formatted auth`` stops the connection for good
  (retrying a refused token is useless): state ``failed``, :attr:`Connection.failure` holds the
  :class:`~tmi_cluster.errors.LoginError`.
- Reading: lines are framed across reads; a line longer than ``max_line_bytes`` is discarded up
  to its end (counted in :attr:`Connection.oversized_lines`), so memory stays bounded;
  unparsable lines are counted in :attr:`Connection.malformed_lines` and skipped. Server
  ``PING`` is answered at once.
- Keepalive: our own ``PING`` every ``ping_interval_s``; no ``PONG`` within ``ping_timeout_s``
  means the link is dead (a half-open connection is noticed).
- Reconnect: after any loss, immediately, then with exponential backoff (``backoff_base_s``,
  doubling, capped at ``backoff_cap_s``) and jitter; the backoff resets only after a confirmed
  login. Channels are rejoined (``rejoin``).
- ``RECONNECT`` from the server is handled make-before-break: a new session logs in and joins
  every channel (or ``overlap_timeout_s`` passes) and takes over. The old one is closed once it
  has caught up (a PING answered on it: every line the server sent it before the new link
  covered its channels has been read, however far it lags) and ``overlap_linger_s`` has passed;
  de-duplication by ``dedupe_key`` ends once the new link has caught up in turn (a PING answered
  there: every line it still owed that the old link delivered has come). The handover goes by
  the order of each link's lines, not by time, so nothing is lost or seen twice however the
  links lag (each wait is bounded by ``overlap_timeout_s``). A channel the replacement is
  refused (or whose JOIN there times out) while the old link still holds it is delivered by the
  old link until that link is closed, and only then lost. A replacement lost before it took
  over leaves the old link in place, its channels made to match.
- Only held channels deliver: an event of a channel not in :attr:`Connection.channels` (parted,
  failed, lost, or joined late after a timeout) is dropped, so a channel that went elsewhere is
  never delivered by two connections. JOIN, PART, NOTICE and ROOMSTATE events always pass.
- Channels: :attr:`Connection.channels` is always what the server confirmed or is confirming,
  never more. Every JOIN sent (joins, rejoins, make-before-break) is confirmed by the server's
  echo or the channel's ROOMSTATE within ``join_timeout_s``, or fails: a refusing NOTICE, a
  timeout (then the channel is parted, in case a late confirmation comes). A channel that was
  held and is lost without :meth:`Connection.part` (a refused or timed-out rejoin, a
  server-side PART, a connection that gives up) leaves :attr:`Connection.channels` and is
  reported as a :class:`~tmi_cluster.events.ChannelLostEvent` with its reason; a join that a
  caller awaits gets its :class:`~tmi_cluster.outcomes.JoinResult` instead.
- Every JOIN is first taken from ``join_window`` (when given), rejoins included; every login of
  an account from ``auth_window`` (when given), reconnects included.
- No task dies silently: an unexpected error in the connection's own task is logged with its
  traceback and ends the connection in state ``failed``, with the reason in
  :attr:`Connection.failure`, a final DisconnectedEvent and a ChannelLostEvent per channel.
- Every line sent goes through :func:`~tmi_cluster.irc.serialize`: no text can inject a second
  command. The token is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Self

from tmi_cluster.chat.options import CAPABILITIES, ConnectionOptions, ConnectionState
from tmi_cluster.chat.ratelimit import Window
from tmi_cluster.chat.reconnect import Reconnect
from tmi_cluster.chat.session import RETRIABLE, Session, join_lines, take_for
from tmi_cluster.chat.transport import describe_connect_error
from tmi_cluster.errors import LoginError, TmiClusterError
from tmi_cluster.events import (
    ChannelLostEvent,
    ConnectedEvent,
    DisconnectedEvent,
    Event,
    IrcCommandEvent,
    IrcMessageEvent,
    from_message,
)
from tmi_cluster.irc import Message, serialize
from tmi_cluster.logins import normalise_logins
from tmi_cluster.outcomes import JOIN_REFUSALS, JoinResult

__all__ = ["CAPABILITIES", "Connection", "ConnectionOptions", "ConnectionState"]

log = logging.getLogger(__name__)
#: Every IRC line in and out, with ``debug`` (``tmi.options.debug``).
irc_log = logging.getLogger("tmi_cluster.irc")

_MEMBERSHIP = frozenset({"JOIN", "PART", "NOTICE", "ROOMSTATE"})
#: At most this long, a closing connection sends what it still has buffered.
_FLUSH_S = 2.0


class Connection:
    """A Twitch chat connection that stays up: use ``async with``, or :meth:`start` and
    :meth:`aclose`. Events (chat, Connected, Disconnected, ChannelLost) go to ``on_event``; an
    exception it raises is logged and does not end the connection."""

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
        #: The channels held: confirmed by the server, or being (re)joined.
        self.channels: set[str] = set()
        #: Receives every event (replaceable until :meth:`start`).
        self.on_event: Callable[[Event], None] = on_event or (lambda event: None)
        self._session: Session | None = None
        self._task: asyncio.Task[None] | None = None
        self._waiters: dict[str, asyncio.Future[JoinResult]] = {}
        #: A RECONNECT handled make-before-break (its sessions while it runs).
        self.reconnect = Reconnect(self)
        #: Why the connection ended for good (a refused login, an unexpected error), else None.
        self.failure: TmiClusterError | None = None
        #: Why the chat server cannot be reached now (DNS, refused, TLS...), else None.
        self.connect_problem: str | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._ended_lines = [0, 0]  # malformed, oversized lines of sessions that ended
        self.reconnects = 0

    async def start(self) -> Self:
        """Start connecting in the background (see :meth:`wait_connected`)."""
        if self._task is None:
            self.state = ConnectionState.CONNECTING
            self._task = asyncio.create_task(self._guarded(), name=f"connection-{self.name}")
        return self

    @property
    def name(self) -> str:
        """The connection's name (``options.name``), used in events and logs."""
        return self.options.name

    async def wait_connected(self, timeout_s: float | None = None) -> None:
        """Wait until the connection is logged in. Raises LoginError when Twitch refused the
        login, ConnectionError naming the reason when the connection ended for good (or was
        never started), TimeoutError after ``timeout_s``."""
        if self._connected.is_set():
            return
        task = self._task
        if task is None:
            raise ConnectionError(f"{self.name} was not started")
        connected = asyncio.ensure_future(self._connected.wait())
        try:
            await asyncio.wait(
                {connected, task}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            connected.cancel()
        if self._connected.is_set():
            return
        if isinstance(self.failure, LoginError):
            raise self.failure
        if self.failure is not None:
            raise ConnectionError(f"{self.name} failed: {self.failure}") from self.failure
        if task.done():
            raise ConnectionError(f"{self.name} is {self.state}")
        raise TimeoutError(f"{self.name} did not log in within {timeout_s} s")

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
        """Close for good: what was written is sent first (at most 2 s); joins still waiting
        end ``closed``; no ChannelLostEvent (the application asked). Idempotent."""
        self._closing = True
        for task in (self.reconnect.task, self._task):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=5.0)  # never a wait without a deadline
                if not task.done():
                    log.error("%s: %s did not stop within 5 s", self.name, task.get_name())
        for session in (self.reconnect.incoming, self.reconnect.leaving, self._session):
            if session is not None:  # what the application wrote still goes out
                await session.close("closed by the application", flush_s=_FLUSH_S)
        for channel in list(self.channels):
            self._resolve(channel, JoinResult.CLOSED)
        self.channels.clear()
        if self.state is not ConnectionState.FAILED:
            self.state = ConnectionState.CLOSED

    # -- application side -------------------------------------------------------------------

    @property
    def nick(self) -> str | None:
        """The login in use, once connected."""
        return self._session.nick if self._session else None

    @property
    def joined(self) -> set[str]:
        """The channels the server has confirmed on the current link (empty while down)."""
        return set(self._session.joined) if self._session is not None else set()

    @property
    def confirmed(self) -> set[str]:
        """:attr:`joined`, less the channels whose JOIN still waits for its answer (a channel
        parted and joined again at once is still in :attr:`joined` until the server has
        answered the PART: not confirmed yet)."""
        if self._session is None:
            return set()
        return set(self._session.joined) - self._waiters.keys()

    @property
    def dedupe_keys(self) -> int:
        """Event keys kept for de-duplication now: only while a RECONNECT overlap runs."""
        return self.reconnect.dedupe_keys

    @property
    def malformed_lines(self) -> int:
        """Received lines that were not valid IRC and were skipped, over every link."""
        current = self._session.malformed if self._session else 0
        return self._ended_lines[0] + current

    @property
    def oversized_lines(self) -> int:
        """Received lines over ``max_line_bytes``, discarded, over every link."""
        current = self._session.oversized if self._session else 0
        return self._ended_lines[1] + current

    async def join(self, channels: Iterable[str]) -> dict[str, JoinResult]:
        """Join channels and wait for each one's result (held ones: ``joined`` at once).

        Each is confirmed or failed within ``join_timeout_s`` of its JOIN being sent; while
        the connection is down, the JOIN is sent when it is up again. A channel whose join is
        under way shares that join's result. Failed channels are not held. On a connection that
        ended for good, every channel ends ``login_refused`` or ``closed`` at once.
        """
        names = normalise_logins(channels)
        if self.state in (ConnectionState.FAILED, ConnectionState.CLOSED):
            ended = (
                JoinResult.LOGIN_REFUSED
                if isinstance(self.failure, LoginError)
                else JoinResult.CLOSED
            )
            return dict.fromkeys(names, ended)
        loop = asyncio.get_running_loop()
        fresh = [name for name in names if name not in self.channels]
        for name in fresh:
            self.channels.add(name)
            self._waiters[name] = loop.create_future()
        # Taken now: a result may arrive (and leave ``_waiters``) before it is awaited.
        waiters = {name: self._waiters[name] for name in names if name in self._waiters}
        session, incoming = self._session, self.reconnect.incoming
        if fresh and session is not None and self._connected.is_set():
            await self._join_on(session, fresh)
        if fresh and incoming is not None:  # a RECONNECT replacement needs them too
            await self._join_on(incoming, fresh)
        results: dict[str, JoinResult] = {}
        try:
            for name in names:
                results[name] = await self._result_of(name, waiters.get(name))
        except asyncio.CancelledError:
            for name in fresh:  # nobody waits for these any more: a failure becomes an event
                if name not in results:
                    waiters[name].cancel()
            raise
        return results

    async def _result_of(
        self, channel: str, waiter: asyncio.Future[JoinResult] | None
    ) -> JoinResult:
        if waiter is not None:
            try:
                return await asyncio.shield(waiter)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # our own cancellation, not the other caller's
        return JoinResult.JOINED if channel in self.channels else JoinResult.PARTED

    async def part(self, channels: Iterable[str]) -> None:
        """Part channels (a join under way ends ``parted``); others are ignored."""
        names = [n for n in normalise_logins(channels) if n in self.channels]
        for name in names:
            self.channels.discard(name)
            self._resolve(name, JoinResult.PARTED)
        for session in (self._session, self.reconnect.incoming, self.reconnect.leaving):
            if session is None or not names:
                continue
            for name in names:
                timer = session.awaiting.pop(name, None)
                if timer is not None:
                    timer.cancel()
            session.parting.update(names)
            if self._connected.is_set() or session is not self._session:
                with contextlib.suppress(ConnectionError):
                    await session.send_lines(join_lines("PART", names))

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
            raise ConnectionError(f"{self.name} is not connected")
        await self._session.send_lines([line])

    async def caught_up(self, timeout_s: float | None = None) -> bool:
        """Wait until every line the server sent this connection before now has been read
        and delivered (a PING answered on each live link; a RECONNECT replacement included).
        True then; False if a link closed first, the connection is down, or ``timeout_s``
        (default ``overlap_timeout_s``) passed. A make-before-break move waits on this before
        it parts the old side and before it stops de-duplicating."""
        timeout = self.options.overlap_timeout_s if timeout_s is None else timeout_s
        sessions = [s for s in (self._session, self.reconnect.incoming) if s is not None]
        if not sessions or not self._connected.is_set():
            return False
        results = await asyncio.gather(*(session.caught_up(timeout) for session in sessions))
        return all(results)

    # -- channels -----------------------------------------------------------------------------

    async def _join_on(self, session: Session, channels: Sequence[str]) -> None:
        """Send JOINs for ``channels`` on ``session`` under the join window, each with its
        confirmation deadline. Channels parted meanwhile or awaited there are skipped; those
        joined there already count as joined at once (a waiting join ends); one still joined
        there only because the server has not answered its PART yet is joined again (the JOIN
        follows the PART). A link that is gone ends quietly (the next link rejoins). No join
        waits without a JOIN under way or a result."""
        window = self.join_window
        step = window.rate.allow if window is not None else max(len(channels), 1)
        loop = asyncio.get_running_loop()
        for start in range(0, len(channels), step):
            if session.closed.is_set():
                return
            if window is not None and not await take_for(
                session, window, len(channels[start : start + step])
            ):
                return  # the link went while its JOINs waited for the window
            group = []
            for name in channels[start : start + step]:
                if name not in self.channels or name in session.awaiting:
                    continue
                if name in session.joined and name not in session.parting:
                    self._resolve(name, JoinResult.JOINED)  # held there already: no JOIN
                else:
                    group.append(name)
            if not group or session.closed.is_set():
                continue
            for name in group:
                session.parting.discard(name)
                session.awaiting[name] = loop.call_later(
                    self.options.join_timeout_s, self._timed_out, session, name
                )
            try:
                await session.send_lines(join_lines("JOIN", group))
            except ConnectionError:
                return  # the session is gone; its end cancelled the deadlines

    def _authoritative(self, session: Session) -> bool:
        """Whether ``session``'s failures count: the replacement while a RECONNECT overlap
        runs, else the current session."""
        return session is (self.reconnect.incoming or self._session)

    def _membership(self, message: Message, session: Session) -> None:
        """Follow the server's word on our channels (JOIN/PART echoes, ROOMSTATE, NOTICE)."""
        if not message.params:
            return
        # Interned: the name ``joined`` keeps is the string the connection and the pool hold
        # (normalise_login interns too), not a third copy per channel.
        channel = sys.intern(message.params[0].lstrip("#").lower())
        command = message.command
        if command == "NOTICE":
            self._on_notice(message, session, channel)
        elif command == "ROOMSTATE":
            if channel in session.awaiting:  # else a mode change
                self._on_confirmed(session, channel)
        elif message.nick == session.nick:  # not another user's (the membership capability)
            if command == "JOIN":
                session.joined.add(channel)
                self._on_confirmed(session, channel)
            else:
                self._on_parted(session, channel)

    def _on_notice(self, message: Message, session: Session, channel: str) -> None:
        result = JOIN_REFUSALS.get(message.tags.get("msg-id", ""))
        if result is None:
            return
        timer = session.awaiting.pop(channel, None)
        if timer is not None:
            timer.cancel()
            if self._authoritative(session) or channel in self._waiters:
                self._refused(session, channel, result)

    def _on_parted(self, session: Session, channel: str) -> None:
        session.joined.discard(channel)
        session.join_changed.set()
        if channel in session.parting:
            session.parting.discard(channel)
        elif channel in session.awaiting:
            pass  # our own earlier PART, echoed before the JOIN sent after it
        elif channel in self.channels and self._authoritative(session):
            self._fail(channel, JoinResult.REMOVED)

    def _on_confirmed(self, session: Session, channel: str) -> None:
        timer = session.awaiting.pop(channel, None)
        if timer is not None:
            timer.cancel()
            if not session.awaiting:
                session.awaiting = {}  # a dict keeps the room of its largest size: give it back
        session.join_changed.set()
        if channel in self.channels:
            self._resolve(channel, JoinResult.JOINED)
        elif channel not in session.parting:  # parted while the JOIN was on its way
            session.parting.add(channel)
            session.spawn(session.quietly(serialize("PART", [f"#{channel}"])), "part-late")

    def _timed_out(self, session: Session, channel: str) -> None:
        if session.awaiting.pop(channel, None) is None or channel not in self.channels:
            return
        if not (self._authoritative(session) or channel in self._waiters):
            return
        self._refused(session, channel, JoinResult.TIMEOUT)
        session.parting.add(channel)  # a late confirmation must not leave it joined
        session.spawn(session.quietly(serialize("PART", [f"#{channel}"])), "part-timeout")

    def _resolve(self, channel: str, result: JoinResult) -> bool:
        """Give a waiting join its result; False when nobody waits for it."""
        waiter = self._waiters.pop(channel, None)
        if not self._waiters:
            self._waiters = {}  # a dict keeps the room of its largest size: give it back
        if waiter is None or waiter.done():
            return False
        waiter.set_result(result)
        return True

    def _refused(self, session: Session, channel: str, result: JoinResult) -> None:
        """A JOIN of ``channel`` on ``session`` was refused or timed out: the channel is lost,
        but only once no link of this connection holds it any more (while a RECONNECT's two
        links overlap, the other one may still deliver it until it is closed)."""
        if not self.reconnect.defer(session, channel, result):
            self._fail(channel, result)

    def _fail(self, channel: str, result: JoinResult) -> None:
        """``channel`` is not held any more: tell its waiting join, else report it lost."""
        self.channels.discard(channel)
        if not self._resolve(channel, result):
            self._emit(ChannelLostEvent(channel=channel, connection=self.name, reason=result.value))

    def _lose_all(self, result: JoinResult) -> None:
        for channel in sorted(self.channels):
            self._fail(channel, result)

    # -- events -------------------------------------------------------------------------------

    def _raw_in(self, message: Message) -> None:
        """A line received, for ``debug`` (logged) and ``raw_lines`` (an event)."""
        if self.options.debug:
            irc_log.info("%s < %s", self.name, message.raw)
        if self.options.raw_lines:
            self._emit(
                IrcMessageEvent(raw=message.raw, command=message.command, connection=self.name)
            )

    @property
    def _sent_hook(self) -> Callable[[Sequence[str]], None] | None:
        return self._sent if self.options.raw_lines or self.options.debug else None

    def _sent(self, lines: Sequence[str]) -> None:
        for line in lines:
            if self.options.debug:
                irc_log.info("%s > %s", self.name, line)
            if self.options.raw_lines:
                command = line.split(" ", 2)[1] if line.startswith("@") else line.partition(" ")[0]
                self._emit(IrcCommandEvent(raw=line, command=command, connection=self.name))

    def _deliver(self, message: Message, session: Session) -> None:
        command = message.command
        if self.options.raw_lines or self.options.debug:
            self._raw_in(message)
        if command in _MEMBERSHIP:
            self._membership(message, session)
        elif command == "RECONNECT" and session is self._session and not self._closing:
            self.reconnect.asked(session)
        reconnect = self.reconnect
        deduping = reconnect.deduping
        held = None if command in _MEMBERSHIP else self.channels
        for event in from_message(message):
            if held is not None and event.channel is not None and event.channel not in held:
                continue  # not ours (any more): another connection may hold it now
            if deduping and reconnect.seen_before(event):
                continue
            self._emit(event)

    def _emit(self, event: Event) -> None:
        """Hand ``event`` to the application; a failing handler is logged, and the connection
        goes on (an application bug must not cost the chat)."""
        try:
            self.on_event(event)
        except Exception:
            log.exception("%s: the event handler failed on %s", self.name, type(event).__name__)

    # -- sessions -----------------------------------------------------------------------------

    async def _open(self, session: Session) -> None:
        if self.auth_window is not None and self.options.login:
            await self.auth_window.take()
        await session.open()

    def _retire(self, session: Session) -> None:
        self._ended_lines[0] += session.malformed
        self._ended_lines[1] += session.oversized

    async def _guarded(self) -> None:
        """The connection's task: :meth:`_run`, and a visible failure if it ever raises."""
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s failed", self.name)
            self.failure = TmiClusterError(f"unexpected {exc.__class__.__name__}: {exc}")
            self._end(ConnectionState.FAILED, str(self.failure), JoinResult.CLOSED)
        finally:
            self._connected.clear()
            if self._session is not None and not self._closing:
                await self._session.close(self._session.reason or "ended")

    def _end(self, state: ConnectionState, reason: str, result: JoinResult) -> None:
        """End for good: a final DisconnectedEvent, then every channel lost with ``result``."""
        self.state = state
        self._emit(DisconnectedEvent(connection=self.name, reason=reason))
        self._lose_all(result)

    async def _run(self) -> None:
        attempt = 0
        options = self.options
        while not self._closing:
            attempt += 1
            await asyncio.sleep(options.backoff_s(attempt))
            session = Session(options, self._deliver, self._sent_hook)
            try:
                await self._open(session)
            except LoginError as exc:
                self.failure = exc
                log.error(
                    "%s: Twitch refused the login of %s (%s); the connection stops (check "
                    "tmi.identity.username and tmi.identity.password, or the account's entry "
                    "in tmi.identities)",
                    self.name,
                    options.login,
                    exc,
                )
                self._end(ConnectionState.FAILED, str(exc), JoinResult.LOGIN_REFUSED)
                return
            except RETRIABLE as exc:
                reason = f"cannot connect: {exc.__class__.__name__}: {exc}"
                self._unreachable(exc)
                if not options.reconnect:
                    self._end(ConnectionState.CLOSED, reason, JoinResult.CLOSED)
                    return
                self._emit(
                    DisconnectedEvent(connection=self.name, reason=reason, reconnecting=True)
                )
                self.state = ConnectionState.RECONNECTING
                continue
            attempt = 0  # reset only after a confirmed login
            if self.connect_problem is not None:
                log.warning("%s: %s:%d reached again", self.name, options.host, options.port)
                self.connect_problem = None
            first_login = self._session is None
            if self._session is not None:
                self._retire(self._session)
            self._session = session
            self.state = ConnectionState.CONNECTED
            self._connected.set()
            self._emit(ConnectedEvent(connection=self.name, user=session.nick))
            if not options.rejoin and not first_login:
                self._lose_all(JoinResult.CLOSED)  # not rejoined: not held any more
            await self._join_on(session, sorted(self.channels))
            reason = await self._until_lost()
            self._connected.clear()
            if self._closing:
                return
            if not options.reconnect:
                self._end(ConnectionState.CLOSED, reason, JoinResult.CLOSED)
                return
            self._emit(DisconnectedEvent(connection=self.name, reason=reason, reconnecting=True))
            self.state = ConnectionState.RECONNECTING
            self.reconnects += 1

    def _unreachable(self, error: BaseException) -> None:
        """A connection attempt failed: say why once (logged at the first failure of an
        outage, kept in :attr:`connect_problem`), and end the first joins waiting for this
        connection (``unreachable``; held channels are rejoined once it is back)."""
        options = self.options
        problem = f"cannot reach the chat server {options.host}:{options.port}: " + (
            describe_connect_error(error)
        )
        if self.connect_problem is None:
            log.warning("%s: %s (retrying with backoff)", self.name, problem)
        self.connect_problem = problem
        for channel in sorted(self._waiters):
            self._fail(channel, JoinResult.UNREACHABLE)

    async def _until_lost(self) -> str:
        """Wait until the current session ends for good (a replaced one does not count)."""
        while True:
            session = self._session
            assert session is not None
            await session.closed.wait()
            await self.reconnect.settled()  # a RECONNECT replacement decides who is current
            if self._session is session:
                await session.close(session.reason)
                return session.reason

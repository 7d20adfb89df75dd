"""A worker's connections: which channel lives on which, joins under the budget, their outcome.

Contracts:

- Each connection holds at most ``channels_per_connection`` channels; a new connection is opened
  when all are full: ``connect_burst`` at once, then one per ``connect_interval_s`` (a leaky
  bucket: after a quiet spell, a burst again). With ``connection_join_rate`` (each connection
  its own JOIN budget), a channel goes where its JOIN can be sent soonest: on an open
  connection with room whose budget admits it, else on a new connection when the connection
  pacing lets one open (and log in, :data:`NEW_CONNECTION_S`) before any open connection's
  budget frees; so a failover's 1,000 channels are spread over fresh connections and joined in
  seconds instead of waiting out windows of 10 s, every connection within its own budget.
- Joins are sent in batches (``JOIN #a,#b,...`` within the line limit), each batch taken from
  the account's join window first (:mod:`tmi_cluster.chat.ratelimit`; shared through Redis when the
  pool is given a shared window), so the budget holds however many pools share the account.
  With ``connection_join_rate``, each connection has a window of its own instead (anonymous
  connections: each is its own ``justinfan`` identity with its own budget).
- A join is confirmed by the server's echo of our JOIN or by the channel's ROOMSTATE, and fails
  with its reason (:class:`~tmi_cluster.outcomes.JoinResult`): ``msg_channel_suspended``,
  ``msg_banned``, ``tos_ban``, ``msg_concurrent_channel_limit_reached`` (NOTICEs), or
  ``timeout`` after ``join_timeout_s`` (a channel that does not exist gives silence). A failed
  channel is not kept.
- The pool tells the truth about its channels: :attr:`Pool.channels` and :meth:`Pool.where`
  hold exactly what its connections hold (confirmed by the server, or being rejoined after a
  reconnect). Every channel lost without :meth:`part` (a refused or timed-out rejoin, a
  server-side PART, a ban, a connection that gives up) leaves the map and reaches ``on_event``
  as a :class:`~tmi_cluster.events.ChannelLostEvent` with its reason; a connection that ended
  for good leaves the pool.
- Events of every connection go to ``on_event``; :meth:`join` returns each channel's outcome.
- :meth:`move` moves a channel to another connection make-before-break: the new connection
  joins and is confirmed; the old one parts once it has caught up (everything the server sent
  it before then delivered: :meth:`Connection.caught_up`) and ``overlap_linger_s`` has passed;
  the move ends once the new one has caught up in turn. During the move, events of the channel
  are de-duplicated across the two connections (by ``dedupe_key``; JOIN, PART and state events
  only from the connection that holds the channel), so the application sees none twice and
  loses none, however far either connection lags (each wait bounded by the connections'
  ``overlap_timeout_s``).
- Reading and sending are separate: the pool reads through ``options`` (anonymous when it has
  no login) and sends through ``sender`` (one authenticated connection, opened at the first
  :meth:`say`). :func:`tmi_cluster.worker.worker.build_pool` builds both from the settings.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Self

from aiolimiter import AsyncLimiter

from tmi_cluster.chat.connection import Connection, ConnectionOptions
from tmi_cluster.chat.ratelimit import LocalWindow, Rate, WaitTally, Window
from tmi_cluster.chat.sender import Sender
from tmi_cluster.errors import DeadlineError, LoginError, NoIdentityError
from tmi_cluster.events import ChannelLostEvent, DisconnectedEvent, Event
from tmi_cluster.logins import normalise_login, normalise_logins
from tmi_cluster.outcomes import JoinResult

__all__ = ["ANONYMOUS_ACCOUNT", "NEW_CONNECTION_S", "JoinOutcome", "Pool", "PoolState"]

#: The account name under which anonymous connections share their windows.
ANONYMOUS_ACCOUNT = "justinfan"

#: Seconds a new connection is reckoned to take to connect and log in, when the pool weighs
#: opening one against waiting for an open connection's own JOIN budget.
NEW_CONNECTION_S = 0.5

#: Events the pool's own map follows (they have no subclasses).
_BOOKKEEPING = frozenset({ChannelLostEvent, DisconnectedEvent})


class PoolState(enum.StrEnum):
    """Lifecycle of a :class:`Pool`: usable while ``open``; ``closed`` after :meth:`Pool.aclose`."""

    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class JoinOutcome:
    """How one join ended (a :class:`~tmi_cluster.outcomes.JoinResult`), on which connection."""

    channel: str
    result: JoinResult
    connection: str | None = None

    @property
    def ok(self) -> bool:
        """True when the channel was joined."""
        return self.result is JoinResult.JOINED


@dataclass
class _Move:
    """A channel on its way from ``source`` to ``target``; ``seen`` de-duplicates the overlap."""

    source: str
    target: str
    seen: set[str] = field(default_factory=set)
    parted: bool = False  # the application parted the channel while it moved


class Pool:
    """The connections of one worker. Use ``async with``; :meth:`join`, :meth:`part`,
    :meth:`move` and :meth:`say`."""

    def __init__(
        self,
        options: ConnectionOptions,
        *,
        channels_per_connection: int = 50,
        join_window: Window | None = None,
        connection_join_rate: Rate | None = None,
        auth_window: Window | None = None,
        connect_interval_s: float = 0.5,
        connect_burst: int = 1,
        join_timeout_s: float | None = None,
        sender: Sender | None = None,
        senders: Sequence[Sender] = (),
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        if channels_per_connection < 1:
            raise ValueError("channels_per_connection must be at least 1")
        if join_timeout_s is not None:
            options = replace(options, join_timeout_s=join_timeout_s)
        self.options = options
        self.state = PoolState.OPEN
        self.channels_per_connection = channels_per_connection
        self.join_window = join_window or LocalWindow(Rate(20, 10.0))
        #: With a rate, each connection has a JOIN window of its own instead of
        #: :attr:`join_window` (anonymous connections: each is its own identity).
        self.connection_join_rate = connection_join_rate
        self.auth_window = auth_window
        #: The waits of the connections' own JOIN budgets (``connection_join_rate``), all of
        #: them, those closed since included.
        self.connection_join_waits = WaitTally()
        #: With ``connection_join_rate``: each connection's JOINs as the pool placed them, sent or
        #: still to be (planned times included), in a window of the same rate: the pool takes the
        #: later of this and the connection's own window (which also counts its rejoins after a
        #: reconnect) to choose where a channel goes.
        self._planned: dict[str, LocalWindow] = {}
        self._connect_interval_s = connect_interval_s
        if connect_burst < 1:
            raise ValueError("connect_burst must be at least 1")
        # A leaky bucket, not a window: after a quiet spell a failover may open a burst at once.
        self._opens = (
            AsyncLimiter(connect_burst, connect_interval_s * connect_burst)
            if connect_interval_s > 0
            else None
        )
        #: Sends for :meth:`say`; None when the pool has no identity to send with.
        self.sender = sender
        if senders and sender is None:
            raise ValueError("further senders need a first one (sender)")
        #: Every bot account's sender by its login, the first (:attr:`sender`) included.
        self.senders: dict[str, Sender] = {
            s.connection.options.login or "": s for s in ([sender] if sender else []) + [*senders]
        }
        #: Where every event of every connection goes (on the read path: it must not wait); the
        #: owner may set it after construction (a Worker does).
        self.on_event: Callable[[Event], None] = on_event or (lambda event: None)
        self.connections: dict[str, Connection] = {}
        self._where: dict[str, str] = {}  # channel -> connection name
        self._moving: dict[str, _Move] = {}
        self._pending: dict[str, asyncio.Future[JoinOutcome]] = {}  # joins under way
        self._names = itertools.count(1)
        self._lock = asyncio.Lock()
        self._login_refused: str | None = None
        for each in self.senders.values():
            each.connection.on_event = functools.partial(self._sender_event, each)

    @property
    def login_problem(self) -> str | None:
        """Why Twitch refused the identity's login (the sender's, or a reading connection's
        that ended so), else None; never the token."""
        for sender in self.senders.values():
            if isinstance(sender.connection.failure, LoginError):
                return _refused(sender.connection, further=sender is not self.sender)
        return self._login_refused

    @property
    def problem(self) -> str | None:
        """What keeps the pool from its work, for the worker's heartbeat: a refused login
        (:attr:`login_problem`), else a chat server that cannot be reached (any connection's
        ``connect_problem``), else None."""
        login = self.login_problem
        if login is not None:
            return login
        connections = [*self.connections.values()]
        connections.extend(sender.connection for sender in self.senders.values())
        return next((c.connect_problem for c in connections if c.connect_problem), None)

    def _sender_event(self, sender: Sender, event: Event) -> None:
        sender.observe(event)
        self.on_event(event)

    def sender_for(self, account: str | None = None) -> Sender:
        """The sender of bot account ``account`` (None: the first); NoIdentityError when the
        pool has no such account."""
        if self.sender is None:
            raise NoIdentityError(
                "sending needs a Twitch identity: set tmi.identity.username and "
                "tmi.identity.password"
            )
        if account is None:
            return self.sender
        found = self.senders.get(account)
        if found is None:
            raise NoIdentityError(
                f"no bot account {account!r} is configured: add it to tmi.identities "
                f"(configured: {', '.join(sorted(self.senders))})"
            )
        return found

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection, the sender's too. Idempotent; the pool cannot be reopened."""
        self.state = PoolState.CLOSED
        for connection in list(self.connections.values()):
            await connection.aclose()
        for sender in self.senders.values():
            await sender.connection.aclose()
            if sender.api is not None:
                await sender.api.aclose()
        self.connections.clear()
        self._planned.clear()
        self._where.clear()
        self._moving.clear()

    def _check_open(self) -> None:
        if self.state is PoolState.CLOSED:
            raise RuntimeError(f"{self.options.name} is closed")

    def where(self, channel: str) -> str | None:
        """The name of the connection holding ``channel``, or None."""
        return self._where.get(channel.lstrip("#").lower())

    @property
    def channels(self) -> set[str]:
        """Every channel the pool holds or is joining."""
        return set(self._where)

    @property
    def held(self) -> set[str]:
        """The channels the pool holds: confirmed by the server (or being rejoined after a
        reconnect), not those whose first join is still under way."""
        return self._where.keys() - self._pending.keys()

    def confirmed(self, channels: Iterable[str]) -> set[str]:
        """Of ``channels``, those the server has confirmed on their connection already, first
        joins still under way included (:attr:`held` counts those only once their whole join
        has ended, which can be seconds later for a large one)."""
        by_connection: dict[str, list[str]] = {}
        for channel in channels:
            name = self._where.get(channel)
            if name is not None:
                by_connection.setdefault(name, []).append(channel)
        found: set[str] = set()
        for name, names in by_connection.items():
            connection = self.connections.get(name)
            if connection is not None:
                confirmed = connection.confirmed
                found.update(c for c in names if c in confirmed)
        return found

    # -- joining --------------------------------------------------------------------------

    async def join(self, channels: Iterable[str]) -> dict[str, JoinOutcome]:
        """Join channels not held yet; return each one's outcome (held ones: ``joined``).

        Concurrent calls never join a channel twice: a channel whose join is under way gets
        that join's outcome. A channel parted before its join is confirmed ends ``parted``.
        RuntimeError once the pool is closed."""
        self._check_open()
        wanted = normalise_logins(channels)
        loop = asyncio.get_running_loop()
        async with self._lock:
            others = {c: self._pending[c] for c in wanted if c in self._pending}
            outcomes = {
                c: JoinOutcome(c, JoinResult.JOINED, self._where[c])
                for c in wanted
                if c in self._where and c not in others
            }
            todo = [c for c in wanted if c not in self._where and c not in others]
            placed = await self._place(todo)
            mine: dict[str, asyncio.Future[JoinOutcome]] = {c: loop.create_future() for c in todo}
            self._pending.update(mine)
        try:
            async with asyncio.TaskGroup() as group:  # the batches succeed or fail together
                batches = [group.create_task(self._join_batch(n, b)) for n, b in placed]
            for batch in batches:
                for channel, outcome in batch.result().items():
                    outcomes[channel] = outcome
                    mine[channel].set_result(outcome)
        finally:
            for channel, future in mine.items():
                self._pending.pop(channel, None)
                future.cancel()  # no-op when done; else those waiting on it stop too
            if not self._pending:
                self._pending = {}  # a dict keeps the room of its largest join: give it back
        for channel, future in others.items():
            outcomes[channel] = await asyncio.shield(future)
        return {c: outcomes[c] for c in wanted}

    def _load(self) -> dict[str, int]:
        """Channels per live connection, counting reservations and moves in flight."""
        load = dict.fromkeys(self.connections, 0)
        for name in self._where.values():
            if name in load:
                load[name] += 1
        for move in self._moving.values():
            if move.target in load:
                load[move.target] += 1
        return load

    async def _place(
        self, channels: list[str], *, avoid: str | None = None
    ) -> list[tuple[str, list[str]]]:
        """Assign channels to connections with room (not ``avoid``), opening connections as
        needed (with ``connection_join_rate``: where each JOIN can be sent soonest). Reserves
        them in ``_where`` unless ``avoid`` is given (a move reserves its own).
        """
        placed: dict[str, list[str]] = {}
        load = self._load()
        for channel in channels:
            room = (
                n for n, used in load.items() if used < self.channels_per_connection and n != avoid
            )
            if self.connection_join_rate is None:
                name = next(room, None)
            else:
                name, at = self._soonest(room, time.monotonic())
                if name is not None:
                    self._planned[name].try_take_at(at)
            if name is None:
                name = await self._open()
                load[name] = 0
                if (planned := self._planned.get(name)) is not None:
                    planned.try_take_at(time.monotonic())
            load[name] += 1
            placed.setdefault(name, []).append(channel)
            if avoid is None:
                self._where[channel] = name  # reserved; released again if the join fails
        return list(placed.items())

    def _soonest(self, room: Iterable[str], now: float) -> tuple[str | None, float]:
        """The open connection (of ``room``) whose own JOIN budget admits one more JOIN
        soonest, and when; (None, 0) when a new connection would be sooner."""
        best, at = None, 0.0
        for name in room:
            planned = self._planned.get(name)
            if planned is None:
                continue
            wait_s = planned.wait_at(now)
            window = getattr(self.connections.get(name), "join_window", None)
            if isinstance(window, LocalWindow):  # what it took that the pool did not place
                wait_s = max(wait_s, window.wait_at(now))  # (a rejoin after a reconnect)
            when = now + wait_s
            if best is None or when < at:
                best, at = name, when
                if when <= now:
                    break  # it fits now: nothing is sooner
        if best is None or at <= now:
            return best, at
        if now + self._open_wait_s() + NEW_CONNECTION_S < at:
            return None, 0.0
        return best, at

    def _open_wait_s(self) -> float:
        """Seconds until the connection pacing lets one more connection open (at most one
        connection's interval: the leaky bucket drains one per interval)."""
        limiter = self._opens
        if limiter is None or limiter.has_capacity():
            return 0.0
        return self._connect_interval_s

    async def _open(self) -> str:
        if self._opens is not None:
            await self._opens.acquire()
        name = f"{self.options.name}-{next(self._names)}"
        options = replace(self.options, name=name)
        connection = Connection(
            options,
            on_event=lambda event: self._event(name, event),
            join_window=(
                LocalWindow(self.connection_join_rate, tally=self.connection_join_waits)
                if self.connection_join_rate is not None
                else self.join_window
            ),
            auth_window=self.auth_window,
        )
        self.connections[name] = connection
        if self.connection_join_rate is not None:
            self._planned[name] = LocalWindow(self.connection_join_rate)
        await connection.start()
        return name

    async def _join_batch(self, name: str, channels: list[str]) -> dict[str, JoinOutcome]:
        connection = self.connections.get(name)
        if connection is None:  # it ended for good while the batch waited
            results = dict.fromkeys(channels, JoinResult.CLOSED)
        else:
            results = await connection.join(channels)
        outcomes = {}
        for channel, confirmed in results.items():
            result = confirmed
            held = self._where.get(channel) == name
            if result.ok and not held and connection is not None:  # parted before it began
                await connection.part([channel])
                result = JoinResult.PARTED
            elif not result.ok and held:
                del self._where[channel]
            outcomes[channel] = JoinOutcome(channel, result, name if result.ok else None)
        return outcomes

    def _event(self, name: str, event: Event) -> None:
        if not self._moving and type(event) not in _BOOKKEEPING:  # the hot path
            self.on_event(event)
            return
        if self._moving:
            channel = event.channel
            if channel is not None and (move := self._moving.get(channel)) is not None:
                key = event.dedupe_key
                if key is None:
                    if name != self._where.get(channel) and not isinstance(event, ChannelLostEvent):
                        return  # the other side's JOIN, PART or state: the holder has its own
                elif key in move.seen:
                    return
                else:
                    move.seen.add(key)
        if isinstance(event, ChannelLostEvent):
            if not self._lost(name, event.channel):
                return  # not lost for the pool: the other side of a move holds it
        elif isinstance(event, DisconnectedEvent) and not event.reconnecting:
            self._ended(name)
        self.on_event(event)

    def _ended(self, name: str) -> None:
        """Connection ``name`` ended for good (its channels were reported): forget it, and
        remember a refused login."""
        ended = self.connections.pop(name, None)
        self._planned.pop(name, None)
        if ended is not None and isinstance(ended.failure, LoginError):
            self._login_refused = _refused(ended)

    def _lost(self, name: str, channel: str | None) -> bool:
        """Connection ``name`` lost ``channel``: True when the pool lost it (the map follows)."""
        if channel is None or self._where.get(channel) != name:
            return False  # not the holder (the other side of a move): nothing was lost
        move = self._moving.get(channel)
        if move is not None:
            other = self.connections.get(move.target if name == move.source else move.source)
            if other is not None and channel in other.channels:
                self._where[channel] = other.name  # held, or being joined, there: the move
                return False  # settles it (and reports a loss if that side fails too)
        del self._where[channel]
        return True

    async def part(self, channels: Iterable[str]) -> None:
        """Part channels the pool holds (others are ignored); one that is being moved is parted
        on both sides."""
        by_connection: dict[str, list[str]] = {}
        for channel in normalise_logins(channels):
            name = self._where.pop(channel, None)
            if name is None:
                continue
            by_connection.setdefault(name, []).append(channel)
            if (move := self._moving.get(channel)) is not None:
                move.parted = True
                other = move.target if name == move.source else move.source
                by_connection.setdefault(other, []).append(channel)
        for name, batch in by_connection.items():
            connection = self.connections.get(name)
            if connection is not None:
                await connection.part(batch)

    # -- moving ---------------------------------------------------------------------------

    async def move(self, channel: str, to: str | None = None) -> JoinOutcome:
        """Move a held channel to connection ``to`` (default: one with room, opened if need be)
        make-before-break; return the new join's outcome. On failure the channel stays where
        it was. ValueError if the pool does not hold the channel or ``to`` is unknown;
        RuntimeError once the pool is closed."""
        self._check_open()
        name = normalise_login(channel)
        source = self._where.get(name)
        if source is None:
            raise ValueError(f"the pool does not hold #{name}")
        if name in self._moving:
            raise ValueError(f"#{name} is already being moved")
        if to is not None and to not in self.connections:
            raise ValueError(f"no connection named {to!r} in the pool")
        if to == source:
            return JoinOutcome(name, JoinResult.JOINED, source)
        async with self._lock:
            target = to or (await self._place([name], avoid=source))[0][0]
            self._moving[name] = _Move(source, target)
        try:
            return await self._move(name, source, target)
        finally:
            self._moving.pop(name, None)

    async def _move(self, name: str, source: str, target: str) -> JoinOutcome:
        move = self._moving[name]
        arriving = self.connections.get(target)
        result = (await arriving.join([name]))[name] if arriving else JoinResult.CLOSED
        if result.ok and not move.parted and name in self._where:
            self._where[name] = target
            # What the old side was sent before the new one joined must arrive before it parts
            # (only a held channel delivers), and not before the linger: a margin for lines
            # that reach the two connections by different ways.
            leaving = self.connections.get(source)
            await asyncio.gather(
                leaving.caught_up() if leaving is not None else asyncio.sleep(0),
                asyncio.sleep(self.options.overlap_linger_s),
            )
        return await self._settle_move(name, move, result)

    async def _settle_move(self, name: str, move: _Move, result: JoinResult) -> JoinOutcome:
        """End a move by what the two connections hold now, whatever happened meanwhile."""
        leaving, arriving = self.connections.get(move.source), self.connections.get(move.target)
        on_source = leaving is not None and name in leaving.channels
        on_target = arriving is not None and name in arriving.channels
        failed = result if not result.ok else JoinResult.CLOSED
        if move.parted or name not in self._where:  # parted, or lost and reported meanwhile
            for connection, holds in ((leaving, on_source), (arriving, on_target)):
                if connection is not None and holds:
                    await connection.part([name])
            return JoinOutcome(name, JoinResult.PARTED if move.parted else failed)
        if result.ok and on_target:
            self._where[name] = move.target
            if leaving is not None and on_source:
                await leaving.part([name])
            if arriving is not None:  # what it still owes of the old side's lines, de-duplicated
                await arriving.caught_up()
            return JoinOutcome(name, JoinResult.JOINED, move.target)
        if on_source:  # the move failed: the channel stays where it was
            self._where[name] = move.source
            if arriving is not None and on_target:
                await arriving.part([name])
            return JoinOutcome(name, failed)
        del self._where[name]  # lost on both sides while it moved
        self.on_event(ChannelLostEvent(channel=name, connection=move.source, reason=failed.value))
        return JoinOutcome(name, failed)

    # -- sending --------------------------------------------------------------------------

    async def say(
        self,
        channel: str,
        text: str,
        *,
        reply_to: str | None = None,
        action: bool = False,
        deadline: float | None = None,
        begin: Callable[[], Awaitable[None]] | None = None,
        account: str | None = None,
    ) -> int:
        """Send through the authenticated identity ``account`` (None: the first; see
        :meth:`Sender.say`, whose ``deadline`` and ``begin`` this passes on); return the
        number of messages sent. NoIdentityError when the pool has no such account;
        RuntimeError once closed.

        Waits while the sending connection (opened at the first message) logs in, however
        long its login window makes it wait (a Redis outage is waited out), or until
        ``deadline`` (DeadlineError, nothing sent); LoginError when Twitch refuses the token.
        Wrap it in ``asyncio.timeout`` for a deadline of your own."""
        self._check_open()
        sender = self.sender_for(account)
        sender.check(text, reply_to)  # refused at once, before any wait
        # "/me ..." is an action on IRC; Twitch's API would say it as written
        via = await sender.via(channel, action=action or text.startswith("/me "))
        if via is not None:  # through Twitch's API: no IRC connection needed
            return await sender.say(
                channel,
                text,
                reply_to=reply_to,
                action=action,
                deadline=deadline,
                begin=begin,
                via=via,
            )
        connection = sender.connection
        try:
            async with asyncio.timeout_at(deadline):
                await connection.start()  # at the first message; idempotent
                await connection.wait_connected()  # until up, or ended for good
        except TimeoutError:
            raise DeadlineError(
                f"{connection.name} did not log in before the deadline; nothing was sent"
            ) from None
        return await sender.say(
            channel, text, reply_to=reply_to, action=action, deadline=deadline, begin=begin
        )


def _refused(connection: Connection, *, further: bool = False) -> str:
    """A refused login in words, without the token (``further``: an account of
    ``tmi.identities``)."""
    if further:
        return (
            f"Twitch refused the bot's login as {connection.options.login} "
            f"({connection.failure}): check its username and password in tmi.identities"
        )
    return (
        f"Twitch refused the bot's login ({connection.failure}): check "
        "tmi.identity.username and tmi.identity.password"
    )

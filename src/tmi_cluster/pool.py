"""A worker's connections: which channel lives on which, joins under the budget, their outcome.

Contracts:

- Each connection holds at most ``channels_per_connection`` channels; a new connection is opened
  when all are full, no faster than one per ``connect_interval_s``.
- Joins are sent in batches (``JOIN #a,#b,...`` within the line limit), each batch taken from
  the account's join window first (:mod:`tmi_cluster.ratelimit`; shared through Redis when the
  pool is given a shared window), so the budget holds however many pools share the account.
- A join is confirmed by the server's echo of our JOIN or by the channel's ROOMSTATE, and fails
  with its reason: ``msg_channel_suspended``, ``msg_banned``, ``tos_ban``,
  ``msg_concurrent_channel_limit_reached`` (NOTICEs), or ``timeout`` after ``join_timeout_s``
  (a channel that does not exist gives silence). A failed channel is not kept.
- Events of every connection go to ``on_event``; :meth:`join` returns each channel's outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Self

from tmi_cluster.connection import Connection, ConnectionOptions
from tmi_cluster.events import Event, JoinEvent, NoticeEvent, RoomStateEvent
from tmi_cluster.logins import normalise_logins
from tmi_cluster.ratelimit import LocalWindow, Rate, Window

__all__ = ["JOIN_FAILURES", "JoinOutcome", "Pool"]

#: NOTICE msg-ids that end a join attempt, as Twitch sends them.
JOIN_FAILURES = frozenset(
    {"msg_channel_suspended", "msg_banned", "tos_ban", "msg_concurrent_channel_limit_reached"}
)


@dataclass(frozen=True)
class JoinOutcome:
    """How one join ended: ``joined``, a NOTICE msg-id, or ``timeout``; on which connection."""

    channel: str
    result: str
    connection: str | None = None

    @property
    def ok(self) -> bool:
        """True when the channel was joined."""
        return self.result == "joined"


class Pool:
    """The connections of one worker. Use ``async with``; :meth:`join` and :meth:`part`."""

    def __init__(
        self,
        options: ConnectionOptions,
        *,
        channels_per_connection: int = 50,
        join_window: Window | None = None,
        connect_interval_s: float = 2.0,
        join_timeout_s: float = 10.0,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        if channels_per_connection < 1:
            raise ValueError("channels_per_connection must be at least 1")
        self.options = options
        self.channels_per_connection = channels_per_connection
        self.join_window = join_window or LocalWindow(Rate(20, 10.0))
        self._opens = LocalWindow(Rate(1, connect_interval_s)) if connect_interval_s > 0 else None
        self.join_timeout_s = join_timeout_s
        self._on_event = on_event or (lambda event: None)
        self.connections: dict[str, Connection] = {}
        self._where: dict[str, str] = {}  # channel -> connection name
        self._waiting: dict[tuple[str, str], asyncio.Future[str]] = {}
        self._names = itertools.count(1)
        self._lock = asyncio.Lock()

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
        """Close every connection. Idempotent."""
        for connection in list(self.connections.values()):
            await connection.aclose()
        self.connections.clear()
        self._where.clear()

    def where(self, channel: str) -> str | None:
        """The name of the connection holding ``channel``, or None."""
        return self._where.get(channel.lstrip("#").lower())

    @property
    def channels(self) -> set[str]:
        """Every channel the pool holds."""
        return set(self._where)

    # -- joining --------------------------------------------------------------------------

    async def join(self, channels: Iterable[str]) -> dict[str, JoinOutcome]:
        """Join channels not held yet; return each one's outcome (held ones: ``joined``)."""
        wanted = normalise_logins(channels)
        outcomes = {c: JoinOutcome(c, "joined", self._where[c]) for c in wanted if c in self._where}
        todo = [c for c in wanted if c not in self._where]
        async with self._lock:
            placed = await self._place(todo)
        waits = []
        for name, batch in placed:
            waits.append(self._join_batch(name, batch))
        for result in await asyncio.gather(*waits):
            outcomes.update(result)
        return {c: outcomes[c] for c in wanted}

    async def _place(self, channels: list[str]) -> list[tuple[str, list[str]]]:
        """Assign channels to connections with room, opening connections as needed."""
        placed: dict[str, list[str]] = {}
        load = {name: len(c.channels) for name, c in self.connections.items()}
        for channel in channels:
            name = next(
                (n for n, used in load.items() if used < self.channels_per_connection), None
            )
            if name is None:
                name = await self._open()
                load[name] = 0
            load[name] += 1
            placed.setdefault(name, []).append(channel)
            self._where[channel] = name  # reserved; released again if the join fails
        return list(placed.items())

    async def _open(self) -> str:
        if self._opens is not None:
            await self._opens.take()
        name = f"{self.options.name}-{next(self._names)}"
        options = replace(self.options, name=name)
        connection = Connection(
            options, on_event=lambda event: self._event(name, event), join_window=self.join_window
        )
        self.connections[name] = connection
        await connection.start()
        return name

    async def _join_batch(self, name: str, channels: list[str]) -> dict[str, JoinOutcome]:
        connection = self.connections[name]
        loop = asyncio.get_running_loop()
        futures = {}
        for channel in channels:
            future: asyncio.Future[str] = loop.create_future()
            self._waiting[(name, channel)] = future
            futures[channel] = future
        await connection.join(channels)  # the connection takes them from the join window
        outcomes = {}
        for channel, future in futures.items():
            try:
                result = await asyncio.wait_for(future, self.join_timeout_s)
            except TimeoutError:
                result = "timeout"
            finally:
                self._waiting.pop((name, channel), None)
            if result != "joined":
                self._where.pop(channel, None)
                await connection.part([channel])
            outcomes[channel] = JoinOutcome(channel, result, name if result == "joined" else None)
        return outcomes

    def _event(self, name: str, event: Event) -> None:
        channel = event.channel
        if channel is not None and (name, channel) in self._waiting:
            future = self._waiting[(name, channel)]
            if not future.done():
                connection = self.connections.get(name)
                own = connection is not None and connection.nick
                if (isinstance(event, JoinEvent) and event.user == own) or isinstance(
                    event, RoomStateEvent
                ):
                    future.set_result("joined")
                elif isinstance(event, NoticeEvent) and event.msg_id in JOIN_FAILURES:
                    future.set_result(event.msg_id)
        self._on_event(event)

    async def part(self, channels: Iterable[str]) -> None:
        """Part channels the pool holds (others are ignored)."""
        by_connection: dict[str, list[str]] = {}
        for channel in normalise_logins(channels):
            name = self._where.pop(channel, None)
            if name is not None:
                by_connection.setdefault(name, []).append(channel)
        for name, batch in by_connection.items():
            with contextlib.suppress(ConnectionError):
                await self.connections[name].part(batch)

"""The application's handle on a running cluster: :class:`Cluster` (asyncio) and
:class:`SyncCluster` (its synchronous twin, for scripts and WSGI frameworks).

Any Python process that reaches the cluster's Redis and database can use one, on any host.
It holds one Redis client (plus one that waits for the results of its sends) and one store
(the database, opened at the first ``join``, ``part``, ``channels``, ``authorize``, ``revoke``,
``acknowledged`` or ``scale``) for its life; :meth:`Cluster.aclose` closes them. Channel arguments
accept ``name``, ``#name`` and any case; an invalid login raises
:class:`~tmi_cluster.errors.InvalidChannelError` before anything is queued, as do text with CR,
LF or NUL (:class:`~tmi_cluster.errors.UnsafeLineError`), text over the length limit under
``long_text = "refuse"`` (:class:`~tmi_cluster.errors.MessageTooLongError`) and an unknown event
type in a filter (:class:`~tmi_cluster.errors.UnknownEventTypeError`).

``send`` returns a :class:`~tmi_cluster.outcomes.SendResult` that is true to what happened
(see :mod:`tmi_cluster.bus.commands` for how): ``written``, ``refused`` with the reason, or
``timed_out`` (with no reason: it was not sent and never will be; with ``in_flight``: a worker
began writing it and ended before saying so). ``key`` makes a send idempotent: a second send
with the same key answers with the first one's result and sends nothing (for an hour).
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import tmi_cluster.events as events_module
from tmi_cluster.bus import AsyncRedis, Keys, close_client, connect_async, ping
from tmi_cluster.bus.commands import (
    GRACE_S,
    MAX_TIMEOUT_S,
    DeadLetter,
    SendClient,
    SendCommand,
    timed_out,
)
from tmi_cluster.bus.events import EventReader
from tmi_cluster.bus.heartbeat import alive
from tmi_cluster.chat.sender import check_text
from tmi_cluster.config import Settings, load_settings
from tmi_cluster.errors import RedisUnavailableError, UnknownEventTypeError
from tmi_cluster.events import ALL_EVENT_TYPES, LOCAL_EVENTS, RAW_LINE_EVENTS, Event, covers
from tmi_cluster.logins import normalise_login, normalise_logins
from tmi_cluster.outcomes import (
    IN_FLIGHT,
    ChannelJoin,
    Grant,
    SendRefusal,
    SendResult,
    SendStatus,
)
from tmi_cluster.tasks import cancel_and_wait

if TYPE_CHECKING:
    # Imported where used: an application that only sends or reads events (and ``tmi-cluster
    # send``) loads neither SQLAlchemy nor the chat connection's modules.
    from tmi_cluster.channels import ChannelManager
    from tmi_cluster.cluster import admin
    from tmi_cluster.store import Store

__all__ = ["Cluster", "SyncCluster", "event_type_names"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
#: Seconds a look at which workers can send is reused.
_SENDERS_S = 2.0
_BY_NAME: dict[str, type[Event]] = {t.__name__: t for t in ALL_EVENT_TYPES}
_STREAM_ID = re.compile(r"\$|\d{1,20}(-\d{1,20})?")


def event_type_names(types: Iterable[type[Event] | str] | None) -> frozenset[str] | None:
    """The class names of every concrete event type of the stream that ``types`` (classes or
    class names, ``Event`` and the bases included) covers (:func:`~tmi_cluster.events.covers`:
    subclasses, but a line once); None for None. UnknownEventTypeError for a name that is no
    event type (with the closest names), or for types never published to the stream."""
    if types is None:
        return None
    wanted: list[type[Event]] = []
    for item in [types] if isinstance(types, str) else types:
        if isinstance(item, str):
            found = _BY_NAME.get(item) or getattr(events_module, item, None)
            if not (isinstance(found, type) and issubclass(found, Event)):
                close = difflib.get_close_matches(item, list(_BY_NAME), n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise UnknownEventTypeError(
                    f"unknown event type {item!r}{hint} "
                    "(the types: docs/events.md, online with the package's documentation)"
                )
            wanted.append(found)
        elif isinstance(item, type) and issubclass(item, Event):
            wanted.append(item)
        else:
            raise UnknownEventTypeError(f"{item!r} is not an event type of tmi_cluster.events")
    streamed = [t for t in ALL_EVENT_TYPES if t not in (*RAW_LINE_EVENTS, *LOCAL_EVENTS)]
    names = frozenset(t.__name__ for t in streamed if any(covers(w, t) for w in wanted))
    if not names:
        raise UnknownEventTypeError(
            f"{', '.join(t.__name__ for t in wanted)}: never published to the event stream "
            "(the raw-line events, PeriodicTimerCalled and SupervisorLooped are for handlers in "
            "the process where they happen)"
        )
    return names


class Cluster:
    """A running cluster, seen from an application; see the module. Use ``async with
    Cluster.from_config() as cluster`` (or call :meth:`aclose`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys.from_settings(settings)
        self._client: AsyncRedis | None = None
        self._replies_client: AsyncRedis | None = None
        self._sends: SendClient | None = None
        self._waiting: dict[str, asyncio.Future[SendResult]] = {}
        self._fallback: dict[str, SendResult] = {}
        self._replies: asyncio.Task[None] | None = None
        self._wanted = asyncio.Event()  # set while sends wait for their results
        self._senders: tuple[float, bool | None] = (-1e9, None)
        self._lock = asyncio.Lock()
        self._senders_lock = asyncio.Lock()
        self._manager: tuple[Store, ChannelManager] | None = None
        self._store: Store | None = None
        self._closed = False

    @classmethod
    def from_config(cls, config: str | os.PathLike[str] | None = None) -> Cluster:
        """A cluster from the settings (``config``, else ``$TMI_CLUSTER_CONFIG`` or
        ``./tmi-cluster.toml``, then ``TMI_CLUSTER_*`` variables)."""
        return cls(load_settings(config))

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
        """Close the connections; sends still waiting end as timed out. Idempotent."""
        self._closed = True
        if self._replies is not None:
            await cancel_and_wait(self._replies, what="the reader of send replies")
            self._replies = None
        for client in (self._client, self._replies_client):
            if client is not None:
                await close_client(client)
        self._client = self._replies_client = None
        self._manager = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def _handles(self) -> admin.Handles:
        """This cluster's one client and one store, for the commands (opened on first use)."""
        if self._closed:
            raise RuntimeError("this Cluster is closed")
        from tmi_cluster.cluster import admin
        from tmi_cluster.store import Store

        if self._store is None:
            self._store = Store.from_settings(self.settings)
        return admin.Handles(redis=self._redis, store=self._store)

    async def _redis(self) -> AsyncRedis:
        if self._closed:
            raise RuntimeError("this Cluster is closed")
        if self._client is None:
            self._client = connect_async(self.settings, name="tmi-cluster:app")
        return self._client

    # -- channels -----------------------------------------------------------------------------

    async def join(
        self, channels: str | Iterable[str], *, timeout_s: float = 10.0
    ) -> dict[str, ChannelJoin]:
        """Join ``channels``; each one's outcome, a :class:`~tmi_cluster.ChannelJoin`
        (``status``: joined, already, failed with Twitch's ``result``, no_answer, paused,
        unauthorized; ``process``; ``ok``; ``str()`` in words). They are recorded as wanted
        first and stay wanted whatever the outcome. NotAvailableError when no worker runs
        (they are joined once one does)."""
        from tmi_cluster.cluster import admin

        return await admin.join(
            self.settings, _names(channels), timeout_s=timeout_s, handles=self._handles()
        )

    async def part(self, channels: str | Iterable[str]) -> dict[str, str | None]:
        """Part ``channels`` (no longer wanted); each one's owner until now."""
        from tmi_cluster.cluster import admin

        return await admin.part(self.settings, _names(channels), handles=self._handles())

    async def authorize(
        self, channels: str | Iterable[str], *, reconnect: bool = False
    ) -> dict[str, Grant]:
        """Grant ``channels`` through the channel manager (``channel_manager.use``; with
        ``reconnect`` they are wanted again after any restart); each one's change
        (``authorized``, ``already authorized``, ``reconnect set``, ``reconnect cleared``:
        each grant sets reconnect anew). Nothing is joined: :meth:`join` does."""
        from tmi_cluster.cluster import admin

        return await admin.authorize(
            self.settings, _names(channels), reconnect=reconnect, handles=self._handles()
        )

    async def revoke(self, channels: str | Iterable[str]) -> dict[str, Grant]:
        """Withdraw ``channels``' authorization: they are no longer wanted and are parted
        within seconds; each one's change (``revoked``, ``was not authorized``)."""
        from tmi_cluster.cluster import admin

        return await admin.authorize(
            self.settings, _names(channels), revoke=True, handles=self._handles()
        )

    async def acknowledged(self, channels: str | Iterable[str]) -> None:
        """Fresh interest in ``channels`` (say on an EventSub ``stream.online``): their part by
        the stale cleanup is pushed back. Nothing is joined (:meth:`join` acknowledges too)."""
        from tmi_cluster.channels import load_manager

        names = _names(channels)
        if self._manager is None:
            store = self._handles().store
            assert store is not None
            self._manager = (store, load_manager(self.settings, store=store))
        await self._manager[1].acknowledged(names)

    async def channels(
        self, names: str | Iterable[str] = (), *, state: str | None = None
    ) -> list[dict[str, Any]]:
        """Each known channel's state, as ``tmi-cluster channels --json`` shows it."""
        from tmi_cluster.cluster import admin

        return await admin.channels(
            self.settings, _names(names), state=state, handles=self._handles()
        )

    async def scale(
        self,
        supervisor: str | None = None,
        processes: int | None = None,
        *,
        paused: bool | None = None,
    ) -> dict[str, Any]:
        """Set ``supervisor``'s number of workers (with ``processes``), pause or resume the
        auto-scaler (``paused``); then the auto-scaler's state (paused, cause, targets,
        processes)."""
        if (supervisor is None) != (processes is None):
            raise ValueError("scale() takes a supervisor and a number of processes together")
        from tmi_cluster.cluster import admin

        if supervisor is not None and processes is not None:
            await admin.scale(self.settings, supervisor, processes, handles=self._handles())
        if paused is not None:
            await admin.pause_scaling(self.settings, paused, handles=self._handles())
        return await admin.scaling(self.settings, handles=self._handles())

    # -- sending ------------------------------------------------------------------------------

    async def send(
        self,
        channel: str,
        text: str,
        *,
        reply_to: str | None = None,
        action: bool = False,
        timeout_s: float = 10.0,
        key: str | None = None,
        sender: str | None = None,
    ) -> SendResult:
        """Send ``text`` to ``channel`` through a worker with the bot's identity; the result
        (see the module). ``sender`` names the bot account that sends it (one of
        ``tmi.identity`` and ``tmi.identities``; None: the channel's, see
        :mod:`tmi_cluster.worker.senders`). Bad input raises before anything is queued."""
        name = normalise_login(channel)
        if sender is not None:
            sender = self.settings.tmi.account(sender)
        messages = self.settings.throttle.messages
        check_text(text, reply_to, max_length=messages.max_length, long_text=messages.long_text)
        if not 0 < timeout_s <= MAX_TIMEOUT_S:
            raise ValueError(f"timeout_s must be more than 0 and at most {MAX_TIMEOUT_S:g}")
        if key is not None and (not key or len(key) > 200 or any(c.isspace() for c in key)):
            raise ValueError("key must be 1 to 200 characters without spaces")
        sends = await self._sending()
        command = SendCommand(
            id=key or secrets.token_hex(12),
            channel=name,
            text=text,
            reply_to=reply_to,
            action=action,
            timeout_s=timeout_s,
            reply=sends.client_id,
            sender=sender,
        )
        if key is not None and (known := await sends.known(key)) is not None:
            return known
        if await self._no_sender():
            return SendResult(
                id=command.id,
                channel=name,
                status=SendStatus.REFUSED,
                reason=SendRefusal.NO_IDENTITY.value,
                detail="no worker has a Twitch identity: set tmi.identity."
                "username and tmi.identity.password",
            )
        future: asyncio.Future[SendResult] = asyncio.get_running_loop().create_future()
        self._waiting[command.id] = future
        self._wanted.set()
        try:
            await sends.submit(command)
            try:
                return await asyncio.wait_for(asyncio.shield(future), timeout_s + GRACE_S)
            except TimeoutError:
                pass
            marker = await sends.abandon(command.id)
            if marker.begun_by is not None:  # a worker began it: give it a last moment
                with contextlib.suppress(TimeoutError):
                    return await asyncio.wait_for(asyncio.shield(future), GRACE_S)
                marker = await sends.abandon(command.id)
            return self._fallback.get(command.id) or timed_out(command, marker)
        finally:
            self._waiting.pop(command.id, None)
            self._fallback.pop(command.id, None)

    async def _sending(self) -> SendClient:
        async with self._lock:
            if self._sends is None:
                self._sends = SendClient(await self._redis(), self.keys)
            if self._replies is None or self._replies.done():
                if self._replies_client is None:
                    self._replies_client = connect_async(self.settings, name="tmi-cluster:replies")
                replies = SendClient(self._replies_client, self.keys, self._sends.client_id)
                self._replies = asyncio.create_task(self._collect(replies), name="send replies")
            return self._sends

    async def _collect(self, replies: SendClient) -> None:
        """Hand each result to the send waiting for it (an ``in_flight`` one only if nothing
        better comes); a Redis outage is waited out. Reads Redis only while sends wait: with
        none, it waits on an event, so that closing the cluster cancels it at once (a blocking
        read of redis-py may swallow a cancellation and run to its timeout). Ends once the
        cluster is closed (a cancelled blocking read may come back as a connection error)."""
        while not self._closed:
            if not self._waiting:
                self._wanted.clear()
                await self._wanted.wait()
                continue
            try:
                results = await replies.replies(1.0)
            except RedisUnavailableError as error:
                if self._closed:
                    return
                log.warning("waiting for send results: %s", error)
                await asyncio.sleep(1.0)
                continue
            for result in results:
                future = self._waiting.get(result.id)
                if future is None or future.done():
                    continue
                if result.status is SendStatus.TIMED_OUT and result.reason == IN_FLIGHT:
                    self._fallback[result.id] = result
                else:
                    future.set_result(result)
                    del self._waiting[result.id]  # answered: not waited for any more

    async def _no_sender(self) -> bool:
        """True when workers run and none of them has an identity to send with (no worker at
        all: the send waits for one, as a restarting cluster has none for a moment). Two keys
        the workers keep alive, read at most every :data:`_SENDERS_S` by one send at a time."""
        async with self._senders_lock:
            read_at, answer = self._senders
            if time.monotonic() - read_at < _SENDERS_S and answer is not None:
                return answer
            workers, senders = await alive(await self._redis(), self.keys)
            answer = workers and not senders
            self._senders = (time.monotonic(), answer)
            return answer

    async def dead_letters(self, count: int = 100) -> list[DeadLetter]:
        """The newest commands that could not be carried out, newest first."""
        sends = await self._sending()
        return await sends.dead_letters(count)

    async def pending_sends(self) -> dict[str, int]:
        """Send commands read by a worker and not yet answered, by worker."""
        sends = await self._sending()
        return await sends.pending()

    # -- events -------------------------------------------------------------------------------

    def events(
        self,
        *,
        channels: str | Iterable[str] | None = None,
        types: Iterable[type[Event] | str] | type[Event] | str | None = None,
        group: str | None = None,
        consumer: str | None = None,
        since: str | None = None,
    ) -> EventReader:
        """The cluster's events, as an async iterator (``async for event in ...``), from now
        (or from entry id ``since``); only those of ``channels`` and of ``types`` (classes or
        names; a class covers its subclasses) when given. With ``group``, the readers of the
        group share the events, and each event is acknowledged when the next one is asked
        for; ``consumer`` names this reader in the group (stable across restarts: it resumes
        with what it had not finished). Close it with ``aclose()``."""
        names = None if channels is None else frozenset(_names(channels))
        if since is not None and not _STREAM_ID.fullmatch(since):
            raise ValueError(
                f"since must be a stream entry id such as 0 or 1700000000000-0, got {since!r}"
            )
        kinds = event_type_names([types] if isinstance(types, str | type) else types)
        if group is not None and not group.strip():
            raise ValueError("group must not be empty")
        if self._closed:
            raise RuntimeError("this Cluster is closed")
        client = connect_async(self.settings, name="tmi-cluster:events")
        return EventReader(
            client,
            self.keys,
            channels=names,
            types=kinds,
            group=group,
            consumer=consumer,
            since=since,
            owns_client=True,
        )

    async def ping(self) -> None:
        """RedisUnavailableError unless the cluster's Redis answers."""
        await ping(await self._redis())


def _names(channels: str | Iterable[str]) -> list[str]:
    return normalise_logins([channels] if isinstance(channels, str) else channels)


class SyncCluster:
    """:class:`Cluster` for code without an event loop (scripts, WSGI): every method blocks
    until done. It runs its own event loop in a thread, and is safe to share between threads.
    Use ``with SyncCluster.from_config() as cluster`` (or call :meth:`close`)."""

    def __init__(self, settings: Settings) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tmi-cluster", daemon=True
        )
        self._thread.start()
        self._cluster = self._call(_make(settings))
        self.settings = settings

    @classmethod
    def from_config(cls, config: str | os.PathLike[str] | None = None) -> SyncCluster:
        """As :meth:`Cluster.from_config`."""
        return cls(load_settings(config))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        if not self._thread.is_alive():
            coroutine.close()
            raise RuntimeError("this SyncCluster is closed")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self) -> None:
        """Close the connections and stop the thread. Idempotent."""
        if self._thread.is_alive():
            self._call(self._cluster.aclose())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()

    def join(
        self, channels: str | Iterable[str], *, timeout_s: float = 10.0
    ) -> dict[str, ChannelJoin]:
        """As :meth:`Cluster.join`."""
        return self._call(self._cluster.join(channels, timeout_s=timeout_s))

    def part(self, channels: str | Iterable[str]) -> dict[str, str | None]:
        """As :meth:`Cluster.part`."""
        return self._call(self._cluster.part(channels))

    def authorize(
        self, channels: str | Iterable[str], *, reconnect: bool = False
    ) -> dict[str, Grant]:
        """As :meth:`Cluster.authorize`."""
        return self._call(self._cluster.authorize(channels, reconnect=reconnect))

    def revoke(self, channels: str | Iterable[str]) -> dict[str, Grant]:
        """As :meth:`Cluster.revoke`."""
        return self._call(self._cluster.revoke(channels))

    def acknowledged(self, channels: str | Iterable[str]) -> None:
        """As :meth:`Cluster.acknowledged`."""
        return self._call(self._cluster.acknowledged(channels))

    def channels(
        self, names: str | Iterable[str] = (), *, state: str | None = None
    ) -> list[dict[str, Any]]:
        """As :meth:`Cluster.channels`."""
        return self._call(self._cluster.channels(names, state=state))

    def scale(
        self,
        supervisor: str | None = None,
        processes: int | None = None,
        *,
        paused: bool | None = None,
    ) -> dict[str, Any]:
        """As :meth:`Cluster.scale`."""
        return self._call(self._cluster.scale(supervisor, processes, paused=paused))

    def send(
        self,
        channel: str,
        text: str,
        *,
        reply_to: str | None = None,
        action: bool = False,
        timeout_s: float = 10.0,
        key: str | None = None,
        sender: str | None = None,
    ) -> SendResult:
        """As :meth:`Cluster.send`."""
        return self._call(
            self._cluster.send(
                channel,
                text,
                reply_to=reply_to,
                action=action,
                timeout_s=timeout_s,
                key=key,
                sender=sender,
            )
        )

    def dead_letters(self, count: int = 100) -> list[DeadLetter]:
        """As :meth:`Cluster.dead_letters`."""
        return self._call(self._cluster.dead_letters(count))

    @contextlib.contextmanager
    def events(
        self,
        *,
        channels: str | Iterable[str] | None = None,
        types: Iterable[type[Event] | str] | type[Event] | str | None = None,
        group: str | None = None,
        consumer: str | None = None,
        since: str | None = None,
    ) -> Iterator[Iterator[Event]]:
        """As :meth:`Cluster.events`, as a context manager giving a plain iterator::

        with cluster.events(types=["MessageEvent"]) as events:
            for event in events: ...
        """
        reader = self._cluster.events(
            channels=channels, types=types, group=group, consumer=consumer, since=since
        )

        def iterate() -> Iterator[Event]:
            while True:
                try:
                    yield self._call(_next(reader))
                except StopAsyncIteration:
                    return

        try:
            yield iterate()
        finally:
            self._call(reader.aclose())


async def _make(settings: Settings) -> Cluster:
    return Cluster(settings)


async def _next(reader: AsyncIterator[Event]) -> Event:
    return await reader.__anext__()

"""A worker's composition: the one place where its parts are built from the settings.

Everything below this module takes small option objects (:class:`ConnectionOptions`, rates,
windows); settings are read here, at the edge:

- :func:`connection_options`: ``tmi.connection`` and ``tmi.identity`` as connection options.
- :func:`build_pool`: a :class:`~tmi_cluster.pool.Pool` as ``tmi.*`` and ``throttle.*``
  describe it. Reading is anonymous when no identity is configured or
  ``tmi.connection.read_anonymously`` is set; sending goes through one authenticated connection
  (opened at the first ``say``) when there is an identity. With a Redis client, every window of
  an account is shared with every other process of the cluster using it; without, the windows
  are this process's own. Each anonymous connection is its own ``justinfan`` identity: its JOINs
  have a window of their own, ``throttle.join.anonymous_allow`` per ``throttle.join.every``.
  This is also the library's entry point for a pool of one's own (``tmi_cluster.build_pool``).
- :class:`EventQueue`: the bounded queue between the read path and the application's handlers.
- :class:`Worker`: pool + queue + handler dispatch, an async context manager. The worker
  process (the supervisor's child), the command consumer and the event stream build on it.

The event path: socket -> framing -> parse -> typed event -> the pool (truth about channels,
de-duplication during moves) -> :meth:`EventQueue.put` (never waits) -> the dispatch task,
which takes everything waiting in one batch at each turn of the event loop -> each handler in
turn, event by event. At most ``handlers.queue_size`` events wait, plus the batch being
handled. A slow handler therefore never stalls reading: it fills the queue, and a
full queue drops by ``handlers.queue_full`` (``drop_oldest`` by default), counting every dropped
event in :attr:`EventQueue.dropped` and logging once per overflow.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Literal, Self

from tmi_cluster.bus import AsyncRedis, Keys, Outage, SharedWindow, shared_account_windows
from tmi_cluster.bus.windows import SharedLastMessages
from tmi_cluster.config import Settings
from tmi_cluster.connection import Connection, ConnectionOptions
from tmi_cluster.events import Event
from tmi_cluster.logins import normalise_login
from tmi_cluster.pool import ANONYMOUS_ACCOUNT, Pool
from tmi_cluster.ratelimit import AccountRates, AccountWindows, Rate
from tmi_cluster.sender import Sender
from tmi_cluster.tasks import cancel_and_wait

__all__ = [
    "EventQueue",
    "Handler",
    "Worker",
    "WorkerState",
    "build_pool",
    "connection_options",
]

log = logging.getLogger(__name__)

#: An application's handler: a plain function or a coroutine function of one event.
Handler = Callable[[Event], Awaitable[None] | None]


def connection_options(settings: Settings, *, name: str = "connection") -> ConnectionOptions:
    """Connection options from ``tmi.connection`` and ``tmi.identity``."""
    connection = settings.tmi.connection
    identity = settings.tmi.identity
    return ConnectionOptions(
        host=connection.server,
        port=connection.effective_port,
        secure=connection.secure,
        transport=connection.transport,
        ca_file=connection.ca_file or None,
        login=None if identity.anonymous else identity.username,
        token=identity.token,
        ping_interval_s=connection.ping_interval,
        ping_timeout_s=connection.ping_timeout,
        join_timeout_s=connection.join_timeout,
        reconnect=connection.reconnect,
        rejoin=connection.rejoin,
        name=name,
        debug=settings.tmi.options.debug,
    )


def build_pool(
    settings: Settings,
    *,
    redis_client: AsyncRedis | None = None,
    on_event: Callable[[Event], None] | None = None,
    name: str = "pool",
    raw_lines: bool = False,
) -> Pool:
    """A pool as the settings describe it (``tmi.*`` and ``throttle.*``); see the module
    docstring. The caller enters it (``async with``) and closes it. ``raw_lines``: its
    connections also emit IrcMessageEvent and IrcCommandEvent."""
    rates = AccountRates.from_settings(settings)
    keys = Keys.from_settings(settings)
    identity = settings.tmi.identity
    outage = Outage()

    def windows(account: str) -> AccountWindows:
        if redis_client is None:
            return AccountWindows.local(rates)
        return shared_account_windows(redis_client, keys, account, rates, outage=outage)

    connection = settings.tmi.connection
    options = replace(connection_options(settings, name=name), raw_lines=raw_lines)
    account = None if identity.anonymous else windows(normalise_login(identity.username))
    if account is None or connection.read_anonymously:
        read, read_options = windows(ANONYMOUS_ACCOUNT), replace(options, login=None, token="")
    else:
        read, read_options = account, options
    sender = None
    if account is not None:
        messages = settings.throttle.messages
        sending = Connection(replace(options, name=f"{name}-send"), auth_window=account.auth)
        channel_window = last_messages = None
        if redis_client is not None:  # a channel's interval and duplicate rule, cluster-wide
            login = normalise_login(identity.username)
            channel_window = _channel_windows(redis_client, keys, login, outage)
            window_s = settings.throttle.messages.duplicate_window
            last_messages = SharedLastMessages(redis_client, keys, login, window_s)
        sender = Sender(
            sending,
            channel_window=channel_window,
            last_messages=last_messages,
            messages=account.messages,
            moderator_messages=account.moderator_messages,
            channel_interval_s=messages.channel_interval,
            duplicate_window_s=messages.duplicate_window,
            max_length=messages.max_length,
            long_text=messages.long_text,
        )
    anonymous = account is None or connection.read_anonymously
    join = settings.throttle.join
    return Pool(
        read_options,
        channels_per_connection=connection.channels_per_connection,
        join_window=read.join,
        # Each anonymous connection is its own justinfan identity: a JOIN budget of its own.
        connection_join_rate=Rate(join.anonymous_allow, join.every) if anonymous else None,
        auth_window=read.auth,  # counted for logins with an account only
        connect_interval_s=connection.connect_interval,
        connect_burst=connection.connect_burst,
        sender=sender,
        on_event=on_event,
    )


def _channel_windows(
    client: AsyncRedis, keys: Keys, account: str, outage: Outage
) -> Callable[[str, float], SharedWindow]:
    """A factory of the account's per-channel message interval, shared by every process."""

    def window(channel: str, interval_s: float) -> SharedWindow:
        return SharedWindow(
            client,
            keys.ratelimit(account, f"channel:{channel}"),
            Rate(1, interval_s),
            epoch_key=keys.ratelimit_epoch,
            margin_s=0.0,
            outage=outage,
        )

    return window


class EventQueue:
    """A bounded queue of events: :meth:`put` never waits (it is called on the read path),
    :meth:`get_batch` waits for events and takes all that wait. When full, ``policy`` decides:
    ``drop_oldest`` makes room by dropping the oldest waiting event, ``drop_newest`` drops the
    new one; either way :attr:`dropped` counts it, and the overflow is logged once until the
    handlers take what waits.
    """

    def __init__(
        self, maxsize: int, *, policy: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    ) -> None:
        if maxsize < 1:
            raise ValueError("an event queue needs room for at least one event")
        self.maxsize = maxsize
        self.policy = policy
        #: Events dropped because the queue was full, since it was made.
        self.dropped = 0
        #: Events put, since it was made (dropped ones included).
        self.put_count = 0
        self._items: deque[Event] = deque()
        self._ready = asyncio.Event()
        self._overflowing = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, event: Event) -> None:
        """Queue ``event``; when full, drop by the policy (counted). Never waits."""
        self.put_count += 1
        items = self._items
        if not items:
            self._ready.set()  # the consumer waits only on an empty queue
        elif len(items) >= self.maxsize:
            self.dropped += 1
            if not self._overflowing:
                self._overflowing = True
                log.warning(
                    "the handlers fall behind: %d events wait; dropping the %s (%s)",
                    len(items),
                    "oldest" if self.policy == "drop_oldest" else "newest",
                    "handlers.queue_full",
                )
            if self.policy == "drop_newest":
                return
            items.popleft()
        items.append(event)

    async def get_batch(self) -> list[Event]:
        """Every waiting event, oldest first (at least one); waits for one."""
        items = self._items
        while not items:
            self._ready.clear()
            await self._ready.wait()
        batch = list(items)
        items.clear()
        if self._overflowing:
            self._overflowing = False
            log.warning("the handlers caught up; %d events dropped so far", self.dropped)
        return batch


class WorkerState(enum.StrEnum):
    """Lifecycle of a :class:`Worker`."""

    IDLE = "idle"
    RUNNING = "running"
    #: The dispatch task ended on an error of ours (``failure`` says which).
    FAILED = "failed"
    CLOSED = "closed"


class Worker:
    """A pool whose events reach ``handlers`` through a bounded :class:`EventQueue`.

    Use ``async with Worker.from_settings(settings, handlers=[...]) as worker`` and
    ``worker.pool``. Handlers run one event at a time, in order, in the dispatch task (never on
    the read path); one that raises is logged with its traceback and counted in
    :attr:`handler_errors`, and the others and the connections go on.
    """

    def __init__(self, pool: Pool, queue: EventQueue, handlers: Sequence[Handler] = ()) -> None:
        self.pool = pool
        self.queue = queue
        self.handlers = list(handlers)
        self.state = WorkerState.IDLE
        #: Handler calls that raised, since the worker started.
        self.handler_errors = 0
        #: Events every handler has been given, since the worker started (counted per batch).
        self.dispatched = 0
        self.failure: BaseException | None = None
        self._dispatch: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        handlers: Sequence[Handler] = (),
        redis_client: AsyncRedis | None = None,
        name: str = "pool",
    ) -> Worker:
        """A worker as the settings describe it (``build_pool`` and ``handlers.queue_*``)."""
        queue = EventQueue(settings.handlers.queue_size, policy=settings.handlers.queue_full)
        pool = build_pool(settings, redis_client=redis_client, on_event=queue.put, name=name)
        return cls(pool, queue, handlers)

    async def __aenter__(self) -> Self:
        if self.state is WorkerState.IDLE:
            self._dispatch = asyncio.create_task(self._dispatch_forever(), name="dispatch")
            self.state = WorkerState.RUNNING
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pool, then stop dispatching (events still queued are dropped).
        Idempotent."""
        await self.pool.aclose()
        if self._dispatch is not None:
            await cancel_and_wait(self._dispatch, what=f"{self.pool.options.name}'s dispatch")
        if self.state is not WorkerState.FAILED:
            self.state = WorkerState.CLOSED

    async def _dispatch_forever(self) -> None:
        handlers = self.handlers
        try:
            while True:
                # Everything waiting, at once: one wake-up for all that the sockets read in one
                # turn of the loop, and the sockets get their turn between batches.
                batch = await self.queue.get_batch()
                for event in batch:
                    for handler in handlers:
                        try:
                            result = handler(event)
                            if result is not None and inspect.isawaitable(result):
                                await result
                        except Exception:
                            self._failed(handler, event)
                self.dispatched += len(batch)
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of ours: visible, not silent
            log.exception("the worker's event dispatch failed")
            self.failure = exc
            self.state = WorkerState.FAILED

    def _failed(self, handler: Handler, event: Event) -> None:
        self.handler_errors += 1
        log.exception(
            "handler %s failed on %s",
            getattr(handler, "__qualname__", repr(handler)),
            type(event).__name__,
        )

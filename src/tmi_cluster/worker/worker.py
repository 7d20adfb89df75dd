"""A worker's composition: the one place where its parts are built from the settings.

Everything below this module takes small option objects (:class:`ConnectionOptions`, rates,
windows); settings are read here, at the edge:

- :func:`connection_options`: ``tmi.connection`` and ``tmi.identity`` as connection options.
- :func:`build_pool`: a :class:`~tmi_cluster.chat.pool.Pool` as ``tmi.*`` and ``throttle.*``
  describe it. Reading is anonymous when no identity is configured or
  ``tmi.connection.read_anonymously`` is set; sending goes through one authenticated connection
  (opened at the first ``say``) when there is an identity. With a Redis client, every window of
  an account is shared with every other process of the cluster using it; without, the windows
  are this process's own. Each anonymous connection is its own ``justinfan`` identity: its JOINs
  have a window of their own, ``throttle.join.anonymous_allow`` per ``throttle.join.every``.
  This is also the library's entry point for a pool of one's own (``tmi_cluster.build_pool``).
- :class:`Worker`: a pool and everything after it: the duplicate check of channels under a
  hand-over, the handlers' dispatcher, the event stream and the consumer of the cluster's sends.
  The worker process (:mod:`tmi_cluster.worker.process`) runs one built by
  :meth:`Worker.in_cluster`; an application or a test runs the same class with the parts it wants
  (:meth:`Worker.from_settings`, or the constructor).

The event path: socket -> framing -> parse -> typed event -> the pool (truth about channels,
de-duplication within the process) -> :meth:`Worker.put` (never waits) -> the duplicate check
(guarded channels only) -> the :class:`~tmi_cluster.worker.handlers.Dispatcher` (a bounded queue per
channel: a slow handler delays its channel only and never stalls reading; a full queue drops
by ``handlers.queue_full``, counted and logged once per overflow) and the stream's
:class:`~tmi_cluster.bus.events.EventPublisher`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any, Self

from tmi_cluster.bus import AsyncRedis, Keys, Outage, SharedWindow, shared_account_windows
from tmi_cluster.bus.commands import SendQueue
from tmi_cluster.bus.events import EventPublisher, Seen
from tmi_cluster.bus.routes import EventSubRoutes
from tmi_cluster.bus.windows import SharedLastMessages
from tmi_cluster.channels import load_manager
from tmi_cluster.chat.connection import Connection, ConnectionOptions
from tmi_cluster.chat.pool import ANONYMOUS_ACCOUNT, Pool
from tmi_cluster.chat.ratelimit import AccountRates, AccountWindows, Rate
from tmi_cluster.chat.sender import Sender
from tmi_cluster.config import Settings
from tmi_cluster.events import Event, IrcCommandEvent, IrcMessageEvent
from tmi_cluster.eventsub.helix import Helix
from tmi_cluster.eventsub.sending import ApiChat, BotToken
from tmi_cluster.logins import normalise_login
from tmi_cluster.routes import eventsub_configured
from tmi_cluster.tasks import cancel_and_wait
from tmi_cluster.worker.delivery import RECENT_S, Delivery, event_key
from tmi_cluster.worker.handlers import Dispatcher, Handler, Handlers, load_handlers
from tmi_cluster.worker.outbox import Outbox
from tmi_cluster.worker.senders import SenderChoice

__all__ = [
    "SENDS_STOP_S",
    "Worker",
    "WorkerState",
    "build_pool",
    "connection_options",
]

log = logging.getLogger(__name__)

#: Seconds the sends under way get to finish when a worker stops (the rest stays pending).
SENDS_STOP_S = 5.0


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
    senders: list[Sender] = []
    for number, bot in enumerate(settings.tmi.accounts):
        login = normalise_login(bot.username)
        windows_of = account if number == 0 and account is not None else windows(login)
        senders.append(
            _sender(
                settings,
                replace(options, login=login, token=bot.token),
                windows_of,
                redis_client=redis_client,
                keys=keys,
                outage=outage,
                name=f"{name}-send" if number == 0 else f"{name}-send-{login}",
                # Twitch's API sends as the first account (its grant is the bot's)
                api=number == 0,
            )
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
        sender=senders[0] if senders else None,
        senders=senders[1:],
        on_event=on_event,
    )


def _sender(
    settings: Settings,
    options: ConnectionOptions,
    account: AccountWindows,
    *,
    redis_client: AsyncRedis | None,
    keys: Keys,
    outage: Outage,
    name: str,
    api: bool,
) -> Sender:
    """One bot account's sender: its own connection and budgets (shared by every process
    through Redis when there is a client)."""
    messages = settings.throttle.messages
    login = options.login or ""
    sending = Connection(replace(options, name=name), auth_window=account.auth)
    channel_window = last_messages = None
    if redis_client is not None:  # a channel's interval and duplicate rule, cluster-wide
        channel_window = _channel_windows(redis_client, keys, login, outage)
        last_messages = SharedLastMessages(redis_client, keys, login, messages.duplicate_window)
    chat = None
    send_with = settings.tmi.transport.send_with
    if api and redis_client is not None and send_with != "irc":
        routes = EventSubRoutes(redis_client, keys).send_target
        if send_with == "user":  # every channel through the API, as the bot's own user
            chat = ApiChat(Helix(settings), routes, as_user=BotToken(settings))
        elif eventsub_configured(settings):
            chat = ApiChat(Helix(settings), routes)
    return Sender(
        sending,
        api=chat,
        channel_window=channel_window,
        last_messages=last_messages,
        messages=account.messages,
        moderator_messages=account.moderator_messages,
        channel_interval_s=messages.channel_interval,
        duplicate_window_s=messages.duplicate_window,
        max_length=messages.max_length,
        long_text=messages.long_text,
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


class WorkerState(enum.StrEnum):
    """Lifecycle of a :class:`Worker`."""

    IDLE = "idle"
    RUNNING = "running"
    #: One of its tasks (the duplicate check, the stream, the sends) ended on an error of ours
    #: (:attr:`Worker.failure` says which).
    FAILED = "failed"
    CLOSED = "closed"


class Worker:
    """A pool and everything that follows its events: what a worker process runs, and what an
    application or a test runs on its own.

    The event path: the pool -> :meth:`put` (on the read path; never waits) -> the
    ``observer`` (the worker process counts messages and notes lost channels there) -> the
    duplicate check of the channels under a hand-over (:attr:`delivery`; with ``seen``, else
    every event passes at once) -> the handlers (:attr:`dispatcher`: in order per channel,
    channels independently, a bounded queue per channel) and the event stream
    (:attr:`publisher`, optional). Beside it, :attr:`outbox` carries out the cluster's send
    commands (optional, with an identity).

    ``async with worker`` starts its tasks (the check, the stream, the sends); leaving it, or
    :meth:`aclose`, stops them in order: the sends under way finish, the pool closes, the last
    events reach the stream, the handlers stop. A task that ends on an error of ours puts the
    worker in :attr:`WorkerState.FAILED` with :attr:`failure`, logs it and calls
    ``on_failure``; the others go on until the owner stops the worker.
    """

    def __init__(
        self,
        pool: Pool,
        dispatcher: Dispatcher,
        *,
        seen: Seen | None = None,
        shared_chat_once: bool = False,
        publisher: EventPublisher | None = None,
        outbox: Outbox | None = None,
        observer: Callable[[Event], None] | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
        recent_s: float = 0.0,
        replicated: bool = False,
    ) -> None:
        self.pool = pool
        self.dispatcher = dispatcher
        self.publisher = publisher
        self.outbox = outbox
        #: Every channel has a second copy elsewhere (``coordinator.replicas = 2``): every
        #: event is checked, the handlers' here, the stream's by the publisher as it writes.
        self.replicated = replicated and seen is not None
        direct = publisher is not None and self.replicated
        sinks = [dispatcher.put, *([publisher.put] if publisher is not None and not direct else [])]
        self.delivery = Delivery(
            sinks,
            seen,
            shared_chat_once=shared_chat_once,
            recent_s=recent_s,
            check_all=self.replicated,
            wanted=dispatcher.wants if self.replicated else None,
        )
        self._direct = publisher.put if direct and publisher is not None else None
        self.state = WorkerState.IDLE
        #: The error a task of the worker ended with, else None.
        self.failure: BaseException | None = None
        #: What the worker's stop is doing (for a watchdog's report).
        self.phase = "idle"
        self._observer = observer
        self._on_failure = on_failure
        self._stop_sending = asyncio.Event()
        self._stop_publishing = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closed = False
        # put() is the pool's destination; without an observer (nor a publisher of its own),
        # straight to the check (a call less per event on the read path).
        direct_path = observer is None and self._direct is None
        pool.on_event = self.delivery.put if direct_path else self.put

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        handlers: Handlers | Sequence[Handler] | None = None,
        redis_client: AsyncRedis | None = None,
        name: str = "pool",
    ) -> Worker:
        """A worker of one's own, as the settings describe it: :func:`build_pool` (windows
        shared through ``redis_client`` when given), the dispatcher of ``handlers.queue_size``,
        ``queue_full`` and ``threads``. ``handlers``: a registry, or a list registered as
        ``handlers.modules`` would register it (a function marked with ``@on`` gets its event
        classes, a subscriber what it subscribes, any other function every event); None loads
        ``handlers.modules``. No duplicate check, stream or sends: those
        belong to a member of a cluster (:meth:`in_cluster`)."""
        registry = _registry(handlers, settings)
        dispatcher = Dispatcher.from_settings(registry, settings.handlers)
        pool = build_pool(
            settings, redis_client=redis_client, name=name, raw_lines=_wants_raw(registry)
        )
        return cls(pool, dispatcher)

    @classmethod
    def in_cluster(
        cls,
        settings: Settings,
        client: AsyncRedis,
        process_id: str,
        *,
        handlers: Handlers | None = None,
        outage: Outage | None = None,
        observer: Callable[[Event], None] | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> Worker:
        """The worker of worker process ``process_id``: the pool with windows shared through
        ``client``, the handlers of ``handlers.modules`` (or ``handlers``), the cluster-wide
        duplicate check, the event stream (``handlers.stream``) and, with an identity, the
        consumer of the cluster's send commands (restricted to the channel manager's channels
        with ``channel_manager.channel.restrict_messages``)."""
        options = settings.handlers
        keys = Keys.from_settings(settings)
        outage = outage or Outage()
        registry = _registry(handlers, settings)
        replicated = settings.coordinator.replicas > 1
        publisher = None
        if options.stream:
            once = options.shared_chat == "once"
            publisher = EventPublisher.from_settings(
                client,
                keys,
                options,
                outage=outage,
                dedupe_key=(
                    (lambda e: event_key(e, shared_chat=once and "source-id" in e.tags))
                    if replicated
                    else None
                ),
            )
        pool = build_pool(
            settings, redis_client=client, name=process_id, raw_lines=_wants_raw(registry)
        )
        outbox = None
        if pool.sender is not None:
            restrict = settings.channel_manager.channel.restrict_messages
            several = len(settings.tmi.accounts) > 1
            manager = load_manager(settings) if restrict or several else None
            queue = SendQueue(client, keys, process_id)
            outbox = Outbox(
                queue,
                pool,
                outage=outage,
                restrict_to=manager if restrict else None,
                senders=SenderChoice(settings, manager) if several else None,
            )
        return cls(
            pool,
            Dispatcher.from_settings(registry, options),
            seen=Seen(client, keys),
            shared_chat_once=options.shared_chat == "once",
            publisher=publisher,
            outbox=outbox,
            observer=observer,
            on_failure=on_failure,
            recent_s=RECENT_S if eventsub_configured(settings) else 0.0,
            replicated=replicated,
        )

    # -- counters ------------------------------------------------------------------------------

    @property
    def handler_errors(self) -> int:
        """Handler calls that raised, since the worker was made."""
        return self.dispatcher.errors

    @property
    def dispatched(self) -> int:
        """Events every handler has been given, since the worker was made."""
        return self.dispatcher.dispatched

    @property
    def events_published(self) -> int:
        """Events written to the stream (0 without one)."""
        return self.publisher.published if self.publisher is not None else 0

    @property
    def events_dropped(self) -> int:
        """Events the stream dropped (its buffer full while Redis was away)."""
        return self.publisher.dropped if self.publisher is not None else 0

    @property
    def duplicates_dropped(self) -> int:
        """Events the duplicate check found seen by another process first (the handlers', and
        with second copies the stream's)."""
        published = self.publisher.duplicates if self.publisher is not None else 0
        return self.delivery.duplicates + published

    # -- the event path ------------------------------------------------------------------------

    def put(self, event: Event) -> None:
        """An event of the pool (the pool's ``on_event``): to the observer, then on through the
        duplicate check. Never waits."""
        observer = self._observer
        if observer is not None:
            observer(event)
        if self._direct is not None:
            self._direct(event)
        self.delivery.put(event)

    def put_checked(self, events: list[Event]) -> None:
        """Events of the EventSub route: to the observer, then each through the cluster-wide
        check (a notification may come twice, on two shards). Never waits."""
        observer = self._observer
        for event in events:
            if observer is not None:
                observer(event)
            if self._direct is not None:
                self._direct(event)
            self.delivery.put_checked(event)

    # -- life ----------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start the worker's tasks; a worker that started already (or closed) stays as it is."""
        if self.state is not WorkerState.IDLE:
            return
        if self.delivery.seen is not None:
            self._start("duplicate check", self.delivery.run())
        if self.publisher is not None:
            self._start("stream", self.publisher.run(self._stop_publishing))
        if self.outbox is not None:
            self._start("sends", self.outbox.run(self._stop_sending))
        self.state = WorkerState.RUNNING
        self.phase = "running"

    def _start(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name=f"{self.pool.options.name}'s {name}")
        task.add_done_callback(self._ended)
        self._tasks[name] = task

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A task of the worker ended: an error is a failure of the worker, never silent."""
        error = None if task.cancelled() else task.exception()
        if error is None:
            return
        log.error("the worker's task %s failed", task.get_name(), exc_info=error)
        if self.failure is None:
            self.failure = error
        self.state = WorkerState.FAILED
        if self._on_failure is not None:
            self._on_failure(error)

    def stop_sending(self) -> None:
        """Take no new send command from now on (those under way go on)."""
        self._stop_sending.set()

    async def aclose(self, within_s: float | None = None) -> None:
        """Stop, within ``within_s`` seconds for the waits below (None: the defaults): the sends
        under way finish (at most :data:`SENDS_STOP_S`; what is not begun stays pending for the
        other workers), the pool closes, the last events reach the stream (at least 0.2 s), the
        duplicate check and the handlers stop (events still waiting are dropped). Idempotent."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        deadline = None if within_s is None else loop.time() + within_s

        def remaining(default: float) -> float:
            return default if deadline is None else min(default, max(0.0, deadline - loop.time()))

        self.stop_sending()
        sending = self._tasks.get("sends")
        if sending is not None:
            self.phase = "finishing the sends under way"
            await asyncio.wait({sending}, timeout=remaining(SENDS_STOP_S))
            await cancel_and_wait(sending, what="the worker's sends", timeout_s=1.0, report=False)
        self.phase = "closing its connections"
        await self.pool.aclose()
        self._stop_publishing.set()
        publishing = self._tasks.get("stream")
        if publishing is not None:
            self.phase = "writing the last events to the stream"
            await asyncio.wait({publishing}, timeout=max(0.2, remaining(SENDS_STOP_S)))
            await cancel_and_wait(
                publishing, what="the worker's stream", timeout_s=1.0, report=False
            )
        self.phase = "stopping its handlers"
        await cancel_and_wait(*self._tasks.values(), what="the worker's tasks", report=False)
        await self.dispatcher.aclose()
        self.phase = "closed"
        if self.state is not WorkerState.FAILED:
            self.state = WorkerState.CLOSED


def _registry(handlers: Handlers | Sequence[Handler] | None, settings: Settings) -> Handlers:
    """``handlers`` as a registry (:meth:`Handlers.of`); None: ``handlers.modules``."""
    if handlers is None:
        return load_handlers(settings.handlers.modules)
    return Handlers.of(handlers)


def _wants_raw(handlers: Handlers) -> bool:
    """Whether a handler wants the raw-line events (the connections emit them only then)."""
    return handlers.wants(IrcMessageEvent) or handlers.wants(IrcCommandEvent)

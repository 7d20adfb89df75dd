"""The supervisor of one host: its services, its worker processes, its record, its heartbeat,
its shutdown.

It migrates the database, starts the private Redis server when ``redis.url`` is empty, records
itself in SQL (state changes, with history), keeps a heartbeat key in Redis (its value a JSON
status: pid, host, state, processes, target, problem, whether it coordinates), runs as many
worker processes as its target in ``P scale:targets`` (:mod:`tmi_cluster.processes`), runs
the coordinator's loop (:mod:`tmi_cluster.coordinator.coordinator`; one supervisor of the cluster acts),
takes orders from its command stream (:mod:`tmi_cluster.bus.control`: terminate, restart,
pause, continue, scale), purges the dead of the cluster (once for the whole cluster, under a
lock: :mod:`tmi_cluster.housekeeping`), and on stop hands its channels over, stops its workers
within ``process.timeout``, shields its final writes, stops Redis and cleans up.

Lifecycle (:attr:`Supervisor.state`, a :class:`~tmi_cluster.store.RunState`)::

    STARTING  migrate; load the channel manager (ConfigError when it does not load); start
              the embedded Redis; wait for Redis (at most ``redis_wait_s``); claim the id
              (refused when a live supervisor has it); record "running"; want again the
              channels authorized with ``reconnect``
    RUNNING   heartbeat; workers kept running and replaced; orders; purges; a Redis outage is
              logged once and waited out
    STOPPING  its heartbeat says so: its workers drain, the coordinator moves their channels
              to the workers of other live supervisors (make-before-break: the workers part
              them once the new owners hold them), at most ``process.timeout``; stop the
              workers (killed after ``process.timeout``), stop the coordinator's loop (the
              lease goes), delete the heartbeat, record "stopped" (shielded; a database
              outage is logged, never raised), stop the embedded Redis
    STOPPED   everything released; aclose() again does nothing

Use it as an async context manager (``async with Supervisor(settings) as supervisor``), or let
:meth:`Supervisor.run_until_signalled` do all of it: the first SIGINT or SIGTERM stops gracefully,
a second one ends the process at once by that signal (no final writes; the heartbeat then expires,
the workers see their supervisor gone and stop within seconds, and ``tmi-cluster list`` shows the
supervisor dead); SIGUSR1 replaces the workers one by one, SIGUSR2 pauses them (they keep their
channels and take no new work), SIGCONT lets them go on. A supervisor over ``memory_limit``
stops and asks to be started again (:attr:`Supervisor.restart_wanted`; ``tmi-cluster run`` then
starts itself again with the same id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import signal
import socket
import time
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import psutil

from tmi_cluster.bus import (
    Assignment,
    AsyncRedis,
    Coordination,
    Heartbeat,
    Keys,
    Order,
    Outage,
    SupervisorStatus,
    close_client,
    connect_async,
    forget_supervisor,
    live,
    read_orders,
    refused_password,
    wake,
    wanted_changed,
)
from tmi_cluster.bus.events import EventPublisher
from tmi_cluster.channels import (
    ChannelManager,
    cleans_up,
    load_manager,
    restricts,
    stale_horizon,
)
from tmi_cluster.config import Settings, mask_url
from tmi_cluster.coordinator.coordinator import Coordinator
from tmi_cluster.embedded import EmbeddedRedis, check_folder
from tmi_cluster.errors import (
    ConfigError,
    EmbeddedRedisError,
    RedisUnavailableError,
    StorageError,
    TmiClusterError,
)
from tmi_cluster.events import ClusterEvent, SupervisorLooped
from tmi_cluster.handlers import Dispatcher, Handlers, load_handlers
from tmi_cluster.housekeeping import PURGE_EVERY_S, purge_once
from tmi_cluster.listing import CLAIMS_ALIVE
from tmi_cluster.processes import (
    RECORD_EVERY_S,
    Processes,
    worker_environment,
)
from tmi_cluster.simulator import ChatSimulator
from tmi_cluster.store import RunState, Store
from tmi_cluster.tasks import cancel_and_wait

__all__ = [
    "MEMORY_GRACE_S",
    "REDIS_WAIT_S",
    "SIMULATED_BOT",
    "STOP_SIGNALS",
    "IdInUseError",
    "Supervisor",
    "check_supervisor_id",
    "new_supervisor_id",
    "wants_simulator",
]

log = logging.getLogger(__name__)

#: Seconds a starting supervisor waits for Redis to answer before it gives up.
REDIS_WAIT_S = 30.0
#: Seconds between two attempts to reach Redis while starting.
_REDIS_RETRY_S = 1.0
#: Seconds between two checks that the private Redis server still runs.
_REDIS_WATCH_S = 0.5
#: Seconds a stopping supervisor's coordinator gets to give its lease up before it is cancelled.
_COORDINATOR_STOP_S = 3.0
#: Seconds a supervisor runs before its memory counts (no restart loop at start).
MEMORY_GRACE_S = 60.0
#: The signals that stop a supervisor run by :meth:`Supervisor.run_until_signalled`.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class IdInUseError(TmiClusterError):
    """A live supervisor already has the id asked for."""


#: What a supervisor id may be: it names keys, records and worker ids (``<id>-<n>``).
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,47}")


def check_supervisor_id(value: str) -> str:
    """``value`` if it is a valid supervisor id (1 to 48 ASCII letters, digits, ``.``, ``_``
    or ``-``, not starting with ``.``, ``_`` or ``-``), else ValueError saying so."""
    if not _ID.fullmatch(value):
        shown = value if len(value) <= 40 else value[:37] + "..."
        raise ValueError(
            f"invalid supervisor id {shown!r}: expected 1 to 48 ASCII letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return value


#: The bot's login on the built-in simulator when no identity is configured.
SIMULATED_BOT = "tmibot"


def wants_simulator(settings: Settings) -> bool:
    """Whether ``tmi.connection.simulate`` asks for the built-in simulator: 'always', or 'auto'
    with no identity and Twitch's own server."""
    mode = settings.tmi.connection.simulate
    if mode != "auto":
        return mode == "always"
    default_server = type(settings.tmi.connection).model_fields["server"].default
    return not settings.tmi.identity.username and settings.tmi.connection.server == default_server


def new_supervisor_id() -> str:
    """A unique supervisor id: the host name and random hex."""
    host = "".join(c if c.isalnum() or c in "-." else "-" for c in socket.gethostname())[:48]
    return f"{host}-{secrets.token_hex(4)}"


class Supervisor:
    """One host's supervisor: an async context manager whose ``state`` is a :class:`RunState`.

    ``start()`` (or ``async with``) brings it to RUNNING, or raises (RedisUnavailableError when
    Redis does not answer within ``redis_wait_s``, StorageError, EmbeddedRedisError) after
    releasing what it had started. ``stop()`` asks for a graceful stop, ``wait()`` returns once
    one is asked for, ``aclose()`` carries it out: idempotent, safe to call concurrently.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        supervisor_id: str | None = None,
        redis_wait_s: float = REDIS_WAIT_S,
        config_path: str | None = None,
        on_event: Callable[[ClusterEvent], None] | None = None,
        simulate: bool | None = None,
        memory_grace_s: float = MEMORY_GRACE_S,
    ) -> None:
        self.settings = settings
        #: Whether the workers read from the built-in simulator (run by the supervisor).
        self.simulate = wants_simulator(settings) if simulate is None else simulate
        self.simulator: ChatSimulator | None = None
        self.config_path = config_path
        self.memory_grace_s = memory_grace_s
        self.on_event = on_event
        self.id = (
            check_supervisor_id(supervisor_id)
            if supervisor_id is not None
            else (new_supervisor_id())
        )
        self.state = RunState.STARTING
        self.keys = Keys.from_settings(settings)
        self.redis_url: str | None = None
        self.redis_wait_s = redis_wait_s
        #: Logs each Redis outage once, at start and during the heartbeat.
        self.outage = Outage()
        #: The stop signals received, in order.
        self.signals: list[signal.Signals] = []
        #: Why the supervisor stopped on its own (its heartbeat task failed), else None.
        self.failure: BaseException | None = None
        self._stop = asyncio.Event()
        self._store: Store | None = None
        self._embedded: EmbeddedRedis | None = None
        self._client: AsyncRedis | None = None
        self._heartbeat: Heartbeat[SupervisorStatus] | None = None
        self._beat_task: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._recorded = False
        self._claimed = False  # the heartbeat key is ours (never delete another's)
        #: The worker processes (once running).
        self.processes: Processes | None = None
        #: This supervisor's coordinator candidate (once running).
        self.coordinator: Coordinator | None = None
        self._coordinator_stop = asyncio.Event()
        self._beat_stop = asyncio.Event()
        #: Set when the supervisor stopped to be started again (over ``memory_limit``).
        self.restart_wanted = False
        #: The supervisor's long-running tasks, each held by its role; restarts (rolls) apart.
        self._workers_task: asyncio.Task[None] | None = None
        self._orders_task: asyncio.Task[None] | None = None
        self._housekeeping_task: asyncio.Task[None] | None = None
        self._coordinator_task: asyncio.Task[None] | None = None
        self._redis_watch_task: asyncio.Task[None] | None = None
        self._rolls: set[asyncio.Task[None]] = set()
        self._dispatcher: Dispatcher | None = None
        self._coordination: Coordination | None = None
        self._publisher: EventPublisher | None = None
        self._publishing: asyncio.Task[None] | None = None
        self._publish_stop = asyncio.Event()
        self._started_at = time.time()
        self._me = psutil.Process()

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start the services and the heartbeat, and record the supervisor as running.

        Returns early, still STARTING, when a stop is asked for meanwhile. On an error the
        caller must still ``aclose()`` (``async with`` does).
        """
        if self._store is not None or self._closing is not None:
            raise RuntimeError("a Supervisor starts once")
        settings = self.settings
        if settings.embedded_redis:  # checked before the database is made or migrated
            check_folder(settings.redis.embedded_dir)
        store = self._store = Store.from_settings(settings)
        applied = await asyncio.to_thread(store.migrate)
        if applied:
            log.info("database migrated to %s", applied[-1])
        await asyncio.to_thread(_claim_database, store, settings)  # one cluster, one database
        manager = load_manager(settings, store=store)  # ConfigError: it does not load
        self._dispatcher = self._new_dispatcher()
        if settings.channel_manager.auto_cleanup.enabled and not cleans_up(manager):
            log.warning(
                "channel_manager.auto_cleanup.enabled has no effect with the %s "
                "channel manager (it has no auto join and part)",
                settings.channel_manager.use,
            )
        if settings.embedded_redis:
            self._embedded = EmbeddedRedis(
                settings.redis.embedded_dir, executable=settings.redis.embedded_server
            )
            await asyncio.to_thread(self._embedded.start)
            self.redis_url = self._embedded.url
        else:
            self.redis_url = settings.redis.url
        self._client = connect_async(settings, url=self.redis_url, name=f"supervisor:{self.id}")
        self._heartbeat = self._new_heartbeat(self._client)
        if not await self._wait_for_redis(self._heartbeat):
            return
        await asyncio.to_thread(store.record_supervisor, self.id, RunState.RUNNING, pid=os.getpid())
        self._recorded = True
        self.state = RunState.RUNNING
        self._beat_task = asyncio.create_task(
            self._beat(self._heartbeat), name=f"supervisor {self.id} heartbeat"
        )
        if settings.handlers.stream:  # the cluster's events of interest to other processes
            self._publisher = EventPublisher.from_settings(
                self._client, self.keys, settings.handlers, outage=self.outage
            )
            self._publishing = self._spawn_task(self._publisher.run(self._publish_stop), "stream")
        assert self.redis_url is not None
        env = worker_environment(self.redis_url, self.config_path)
        if self.simulate:
            self.simulator = await ChatSimulator(open_channels=True, rate=20.0).start()
            env.update(
                {
                    "TMI_CLUSTER_TMI__CONNECTION__SERVER": self.simulator.host,
                    "TMI_CLUSTER_TMI__CONNECTION__PORT": str(self.simulator.port),
                    "TMI_CLUSTER_TMI__CONNECTION__SECURE": "false",
                    "TMI_CLUSTER_TMI__CONNECTION__SIMULATE": "never",
                }
            )
            env.update(self._simulated_identity(self.simulator))
        earlier = await asyncio.to_thread(store.processes)
        numbers = [
            int(p.id.rsplit("-", 1)[1])
            for p in earlier
            if p.supervisor_id == self.id and p.id.rsplit("-", 1)[-1].isdigit()
        ]
        self.processes = Processes(
            settings,
            self.id,
            assignment=Assignment(self._client, self.keys),
            store=store,
            env=env,
            on_event=self._cluster_event,
            first_number=max(numbers, default=0) + 1,
        )
        # A new run starts with no workers of its own until the coordinator gives it some
        # (a target left by an earlier run of this id is not this run's).
        await self._coordination_of(self._client).forget_target(self.id)
        self.processes.target = 0
        await self._want_reconnect(store, manager)
        self.coordinator = Coordinator.from_settings(
            self._client, store, settings, self.id, manager=manager
        )
        self._workers_task = self._spawn_task(self.processes.run(self._stop), "workers")
        self._orders_task = self._spawn_task(self._take_orders(), "orders")
        self._housekeeping_task = self._spawn_task(self._housekeeping(), "housekeeping")
        self._coordinator_task = self._spawn_task(
            self.coordinator.run(self._coordinator_stop), "coordinator"
        )
        if self._embedded is not None:
            self._redis_watch_task = self._spawn_task(self._watch_redis(), "private Redis")

    async def _want_reconnect(self, store: Store, manager: ChannelManager) -> None:
        """A restart: the channels authorized with ``reconnect`` are wanted again (not one the
        stale cleanup would part), and the coordinator told."""
        if not restricts(manager):
            return
        cleanup = self.settings.channel_manager.auto_cleanup.enabled and cleans_up(manager)
        horizon = stale_horizon(self.settings) if cleanup else None
        again = await asyncio.to_thread(store.want_reconnect, horizon=horizon)
        if again:
            log.info(
                "%d channel(s) authorized with reconnect wanted again: %s",
                len(again),
                ", ".join(again[:10]) + (" ..." if len(again) > 10 else ""),
            )
            assert self._client is not None
            await wanted_changed(self._client, self.keys)

    def stop(self) -> None:
        """Ask for a graceful stop (``wait()`` returns; ``aclose()`` carries it out)."""
        self._stop.set()

    async def wait(self) -> None:
        """Return once a stop is asked for (by ``stop()``, a signal, or a failed heartbeat)."""
        await self._stop.wait()

    async def aclose(self) -> None:
        """Stop gracefully and release everything. Idempotent; concurrent calls share one stop.

        The final writes (heartbeat key deleted, "stopped" recorded) are shielded from
        cancellation; a database or Redis outage at this point is logged, never raised.
        """
        self._stop.set()
        if self._closing is None:
            self._closing = asyncio.create_task(self._close(), name=f"supervisor {self.id} stop")
        await asyncio.shield(self._closing)

    async def run_until_signalled(self, *, on_ready: Callable[[str], None] | None = None) -> None:
        """Start, run until SIGINT or SIGTERM, then stop gracefully.

        ``on_ready`` is called once with :meth:`describe` when the supervisor runs. A second
        signal, during the start or the stop, ends the process at once by that signal. Raises
        TmiClusterError, after a clean stop, when the supervisor stopped because it failed.
        """
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self._on_signal, signum)
        others = {
            signal.SIGUSR1: Order.RESTART,
            signal.SIGUSR2: Order.PAUSE,
            signal.SIGCONT: Order.CONTINUE,
        }
        for signum, order in others.items():
            loop.add_signal_handler(signum, self.order, order)
        try:
            async with self:
                if self.state is RunState.RUNNING and on_ready is not None:
                    on_ready(self.describe())
                await self.wait()
        finally:
            for signum in (*STOP_SIGNALS, *others):
                loop.remove_signal_handler(signum)
        if self.failure is not None:
            raise TmiClusterError(
                f"supervisor {self.id} stopped after a failure: {self.failure}"
            ) from self.failure

    def order(self, order: Order | str, fields: Mapping[str, str] | None = None) -> None:
        """Carry out an order (from a signal or the supervisor's command stream; ``scale``
        carries ``processes`` and ``cause`` in ``fields``)."""
        processes = self.processes
        if order is Order.SCALE and processes is not None:
            self._scale(processes, dict(fields or {}))
        elif order is Order.TERMINATE:
            log.info("supervisor %s: told to terminate", self.id)
            self.stop()
        elif processes is None or self.state is not RunState.RUNNING:
            log.info("supervisor %s: %s ignored while %s", self.id, order, self.state)
        elif order is Order.RESTART:
            log.info("supervisor %s: replacing the workers one by one", self.id)
            roll = self._spawn_task(processes.roll(), "restart")
            self._rolls.add(roll)
            roll.add_done_callback(self._rolls.discard)
        elif order in (Order.PAUSE, Order.CONTINUE):
            log.info("supervisor %s: %s", self.id, "paused" if order is Order.PAUSE else "going on")
            processes.pause(order is Order.PAUSE)
        else:
            log.warning("supervisor %s: unknown order %r ignored", self.id, order)

    def _scale(self, processes: Processes, fields: dict[str, str]) -> None:
        try:
            target = int(fields.get("processes", ""))
        except ValueError:
            log.warning(
                "supervisor %s: a scale order without a number ignored: %r", self.id, fields
            )
            return
        if target >= 0:
            processes.set_target(target, fields.get("cause", "manual"))

    async def _target(self) -> int | None:
        """This supervisor's target in ``P scale:targets`` (None: none yet)."""
        assert self._client is not None
        return await self._coordination_of(self._client).target_of(self.id)

    def _simulated_identity(self, simulator: ChatSimulator) -> dict[str, str]:
        """An account on the built-in simulator, so that sending works offline too: the
        configured identity, or :data:`SIMULATED_BOT` with a random token when none is (the
        workers then read anonymously, as without one, and send as that bot)."""
        identity = self.settings.tmi.identity
        if identity.username:
            simulator.add_account(identity.username, identity.token)
            return {}
        token = secrets.token_hex(12)
        simulator.add_account(SIMULATED_BOT, token)
        return {
            "TMI_CLUSTER_TMI__IDENTITY__USERNAME": SIMULATED_BOT,
            "TMI_CLUSTER_TMI__IDENTITY__PASSWORD": f"oauth:{token}",
            "TMI_CLUSTER_TMI__CONNECTION__READ_ANONYMOUSLY": "true",
        }

    def describe(self) -> str:
        """One line: the id, state, Redis and database (passwords masked)."""
        where = mask_url(self.redis_url or "")
        redis_shown = "embedded " + where if self.settings.embedded_redis else where
        identity = self.settings.tmi.identity.username
        if self.simulator is not None:
            chat = (
                f"; chat: the built-in simulator at {self.simulator.host}:{self.simulator.port}, "
                f"sending as {identity or SIMULATED_BOT}"
            )
        elif self._chat() == "twitch":
            chat = f"; chat: Twitch, {'as ' + identity if identity else 'read anonymously'}"
        else:
            chat = f"; chat: the server at {self._chat()}"
        return (
            f"supervisor {self.id} {self.state.value} (Redis: {redis_shown}; "
            f"database: {mask_url(self.settings.database.url)}{chat})"
        )

    # -- inside -----------------------------------------------------------------------------

    def _status(self) -> SupervisorStatus:
        """The heartbeat's status: what ``list`` and ``health`` show of a live supervisor."""
        processes = self.processes
        return SupervisorStatus(
            pid=os.getpid(),
            host=socket.gethostname(),
            state=self.state.value,
            processes=len(processes.running()) if processes is not None else 0,
            paused=processes.paused if processes is not None else False,
            problem=self._problem(),
            coordinator=self.coordinator is not None and self.coordinator.leading,
            target=processes.target if processes is not None else 0,
            started=self._started_at,
            chat=self._chat(),
        )

    def _chat(self) -> str:
        """Where the workers read chat, for ``list``: the simulator, Twitch, or a server."""
        if self.simulator is not None:
            return "simulator"
        connection = self.settings.tmi.connection
        if connection.server == type(connection).model_fields["server"].default:
            return "twitch"
        return f"{connection.server}:{connection.effective_port}"

    def _new_dispatcher(self) -> Dispatcher:
        """The handlers of ``handlers.modules`` for the cluster's events of this supervisor."""
        options = self.settings.handlers
        try:
            handlers = load_handlers(options.modules)
        except ConfigError as error:  # the workers cannot start either: they report it
            log.error(
                "supervisor %s: the cluster's events reach no handler here: %s",
                self.id,
                "; ".join(error.problems),
            )
            handlers = Handlers()
        return Dispatcher.from_settings(handlers, options)

    def _coordination_of(self, client: AsyncRedis) -> Coordination:
        """The cluster's coordination state through the supervisor's client, made once."""
        if self._coordination is None:
            self._coordination = Coordination(client, self.keys)
        return self._coordination

    def _cluster_event(self, event: ClusterEvent) -> None:
        """One of the cluster's events of this supervisor: to ``on_event``, to the handlers of
        ``handlers.modules``, and (unless it is local) to the event stream. Never raises."""
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                log.exception("the cluster event handler failed on %s", type(event).__name__)
        if self._dispatcher is not None:
            self._dispatcher.put(event)
        if self._publisher is not None:
            self._publisher.put(event)

    def _problem(self) -> str | None:
        """What is wrong, for ``list`` and ``health``: the workers', else the coordinator's."""
        if self.processes is not None and self.processes.problem:
            return self.processes.problem
        if self.coordinator is not None and self.coordinator.problem:
            return f"coordinator: {self.coordinator.problem}"
        if self.coordinator is not None and self.coordinator.cleanup_problem:
            return f"coordinator: {self.coordinator.cleanup_problem}"
        return None

    def _spawn_task(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A task of the supervisor's, its failure reported by :meth:`_task_done`; the caller
        holds the handle."""
        task = asyncio.create_task(work, name=f"supervisor {self.id} {name}")
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A task of the supervisor ended: an unexpected error stops the supervisor, visibly."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        log.error("supervisor %s: %s failed; stopping", self.id, task.get_name(), exc_info=error)
        self.failure = error
        self._stop.set()

    async def _take_orders(self) -> None:
        assert self._client is not None
        after = "$"
        while not self._stop.is_set():
            try:
                after, orders = await read_orders(self._client, self.keys, self.id, after, 2.0)
            except RedisUnavailableError as error:
                self.outage.began(error, f"supervisor {self.id}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 1.0)
                continue
            for received in orders:
                self.order(received.order, received.fields)

    async def _watch_redis(self) -> None:
        """The private Redis server is this supervisor's: when it ends by itself (killed,
        crashed), it is started again at once on the same port with the same password (every
        client reconnects; the cluster rebuilds as after any Redis restart). When that fails,
        the supervisor stops with the reason (a non-zero exit for its process manager)."""
        embedded = self._embedded
        assert embedded is not None
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), _REDIS_WATCH_S)
            status = embedded.exited()
            if status is None or self._stop.is_set():
                continue
            log.error(
                "supervisor %s: the private Redis server ended (exit status %s); starting it again",
                self.id,
                status,
            )
            await asyncio.to_thread(embedded.restart)  # EmbeddedRedisError: the stop's reason
            log.warning("supervisor %s: the private Redis server runs again", self.id)

    async def _housekeeping(self) -> None:
        """The periodic chores, every :data:`PURGE_EVERY_S` seconds until the stop: each its own
        method, one failing on an outage never keeps the others from running."""
        next_record = time.monotonic() + RECORD_EVERY_S
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), PURGE_EVERY_S)
            if self._stop.is_set():
                return
            self._cluster_event(SupervisorLooped(supervisor=self.id))
            await self._purge()
            await self._resync_target()
            rss = self._me.memory_info().rss
            if time.monotonic() >= next_record:  # figures in SQL at most every 30 s
                next_record = time.monotonic() + RECORD_EVERY_S
                await self._record_metrics(rss)
            self._restart_if_over_memory(rss)

    async def _purge(self) -> None:
        """Purge the dead of the cluster (once per period for the whole cluster)."""
        assert self._client is not None
        assert self._store is not None
        try:
            result = await purge_once(self._store, self._client, self.keys)
        except (RedisUnavailableError, StorageError) as error:
            log.warning("supervisor %s: the purge waits: %s", self.id, error)
            return
        if result is not None and (result.dead_supervisors or result.dead_processes):
            log.warning(
                "purged the dead: supervisors %s, processes %s (%d channels released)",
                result.dead_supervisors or "none",
                result.dead_processes or "none",
                result.released,
            )

    async def _resync_target(self) -> None:
        """Follow the target in Redis when an order was lost (the hash is the truth)."""
        with contextlib.suppress(RedisUnavailableError):  # the next period tries again
            target = await self._target()
            processes = self.processes
            if target is not None and processes is not None and target != processes.target:
                self._scale(processes, {"processes": str(target), "cause": "resync"})

    async def _record_metrics(self, rss: int) -> None:
        """The supervisor's figures in its SQL record (a database outage: the next time)."""
        assert self._store is not None
        processes = self.processes
        with contextlib.suppress(StorageError):
            await asyncio.to_thread(
                self._store.set_supervisor_metrics,
                self.id,
                {
                    "processes": len(processes.running()) if processes else 0,
                    "problem": processes.problem if processes else None,
                    "memory_bytes": rss,
                },
            )

    def _restart_if_over_memory(self, rss: int) -> None:
        """Over ``memory_limit`` (after the grace at start): stop, to be started again."""
        limit = self.settings.memory_limit * 1024 * 1024
        if rss <= limit or time.time() - self._started_at < self.memory_grace_s:
            return
        log.warning(
            "supervisor %s uses %d MiB (over memory_limit %d): restarting",
            self.id,
            rss // 1048576,
            self.settings.memory_limit,
        )
        self.restart_wanted = True
        self._stop.set()

    async def _hand_over(self) -> None:
        """While stopping: let the coordinator move this supervisor's channels to the workers
        of other live supervisors (the heartbeat says "stopping": its workers drain; each
        part follows the new owner's join), and wait until they hold none, at most
        ``process.timeout``. Nothing to wait for without another live supervisor."""
        processes, client, heartbeat = self.processes, self._client, self._heartbeat
        if processes is None or client is None or heartbeat is None:
            return
        mine = sorted(processes.children)
        deadline = time.monotonic() + self.settings.process.timeout
        try:
            await heartbeat.beat()  # "stopping", now
            if not mine or not await self._someone_to_take_over(client, mine):
                return
            await wake(client, self.keys)
            held = 0
            coordination = self._coordination_of(client)
            while time.monotonic() < deadline:
                sizes = await coordination.sizes(mine)
                held = sum(h for _, h in sizes.values())
                if not any(a or h for a, h in sizes.values()):
                    log.info("supervisor %s: its channels are handed over", self.id)
                    return
                if not await self._someone_to_take_over(client, mine):
                    return  # the others stop too: nobody to wait for
                await asyncio.sleep(0.1)
            log.warning(
                "supervisor %s: %d channels not handed over within %g s",
                self.id,
                held,
                self.settings.process.timeout,
            )
        except RedisUnavailableError as error:
            log.warning("supervisor %s: cannot hand its channels over: %s", self.id, error)

    async def _someone_to_take_over(self, client: AsyncRedis, mine: list[str]) -> bool:
        """Whether a worker of another live supervisor that is not stopping could take this
        supervisor's channels."""
        supervisors = await live(client, self.keys, "supervisor")
        going_on = {
            s
            for s, beat in supervisors.items()
            if s != self.id and beat.status.state not in ("stopping", "stopped")
        }
        workers = await live(client, self.keys, "process")
        return any(
            p not in mine and beat.status.supervisor in going_on for p, beat in workers.items()
        )

    def _new_heartbeat(self, client: AsyncRedis) -> Heartbeat[SupervisorStatus]:
        ttl_s = self.keys.supervisor_ttl_s
        return Heartbeat(
            client,
            self.keys,
            "supervisor",
            self.id,
            ttl_s=ttl_s,
            interval_s=min(self.settings.process.periodic_timer, ttl_s / 3),
            status_of=self._status,
            outage=self.outage,
        )

    async def _wait_for_redis(self, heartbeat: Heartbeat[SupervisorStatus]) -> bool:
        """Beat once, retrying for at most ``redis_wait_s``; False when a stop came first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.redis_wait_s
        while not self._stop.is_set():
            try:
                claimed = await heartbeat.claim()
            except RedisUnavailableError as error:
                remaining = deadline - loop.time()
                if refused_password(error):
                    raise RedisUnavailableError(
                        f"{error}: check the password in redis.url (waiting would not help)"
                    ) from error
                if remaining <= 0:
                    raise RedisUnavailableError(
                        f"{error} (waited {self.redis_wait_s:g} s): start Redis, or check redis.url"
                    ) from error
                self.outage.began(error, f"supervisor {self.id}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), min(_REDIS_RETRY_S, remaining))
            else:
                self.outage.ended()
                if claimed:
                    self._claimed = True
                else:
                    raise IdInUseError(
                        f"a live supervisor already has the id {self.id!r}: choose another "
                        f"--id, or stop that one first ('tmi-cluster terminate {self.id}')"
                    )
                return True
        return False

    async def _beat(self, heartbeat: Heartbeat[SupervisorStatus]) -> None:
        try:
            await heartbeat.run(self._beat_stop)  # beats on while stopping: alive until the end
        except Exception as error:  # a bug, not an outage (outages are waited out): stop
            log.exception("supervisor %s: its heartbeat failed; stopping", self.id)
            self.failure = error
            self._stop.set()

    def _on_signal(self, signum: int) -> None:
        received = signal.Signals(signum)
        self.signals.append(received)
        if len(self.signals) > 1:
            log.warning("%s again: forcing the exit now, without the final writes", received.name)
            _force_exit(received)
            return
        log.info(
            "%s received: stopping gracefully (a second signal forces the exit)", received.name
        )
        self.stop()

    async def _close(self) -> None:
        self.state = RunState.STOPPING
        try:
            # no new orders, chores or rolls while the workers stop (their errors were reported
            # by _task_done already)
            chores = (
                self._orders_task,
                self._housekeeping_task,
                self._redis_watch_task,
                *self._rolls,
            )
            await cancel_and_wait(*chores, what=f"supervisor {self.id}'s chores", report=False)
            if self.processes is not None:
                await self._hand_over()
                await self.processes.stop(self.settings.process.timeout)
            await self._stop_coordinator()
            self._publish_stop.set()  # the last events out (2 s at most), then the handlers
            if self._publishing is not None:
                await asyncio.wait({self._publishing}, timeout=3.0)
            await cancel_and_wait(
                self._publishing, what=f"supervisor {self.id}'s stream", report=False
            )
            await cancel_and_wait(
                self._workers_task, what=f"supervisor {self.id}'s workers", report=False
            )
            if self.simulator is not None:
                await self.simulator.aclose()
            self._beat_stop.set()
            await cancel_and_wait(self._beat_task, what=f"supervisor {self.id}'s heartbeat")
            await self._final_writes()
        finally:
            if self._dispatcher is not None:
                await self._dispatcher.aclose()
            if self._store is not None:
                self._store.close()
            if self._embedded is not None:
                try:
                    await asyncio.to_thread(self._embedded.stop)
                except EmbeddedRedisError as error:
                    log.error("supervisor %s: %s", self.id, error)
            self.state = RunState.STOPPED

    async def _stop_coordinator(self) -> None:
        """The coordinator ran during the hand-over; now it stops and gives the lease up."""
        self._coordinator_stop.set()
        task = self._coordinator_task
        if task is None:
            return
        await asyncio.wait({task}, timeout=_COORDINATOR_STOP_S)  # its own end: the lease given up
        await cancel_and_wait(task, what=f"supervisor {self.id}'s coordinator", report=False)

    async def _final_writes(self) -> None:
        if self._heartbeat is not None and self._claimed:
            await self._heartbeat.clear()  # an unreachable Redis lets the key expire instead
            if self._client is not None:
                try:  # its orders, its target: nobody's now
                    await forget_supervisor(self._client, self.keys, self.id)
                    await wake(self._client, self.keys)  # the lease is free: take it now
                except RedisUnavailableError as error:
                    log.warning(
                        "supervisor %s: its orders and scale target stay until they "
                        "expire or are purged: %s",
                        self.id,
                        error,
                    )
        if self._client is not None:
            await close_client(self._client)
        if self._store is None or not self._recorded:
            return
        detail = "stopped" if self.failure is None else f"failed: {self.failure}"
        if self.signals:
            detail += f" ({self.signals[0].name})"
        try:
            await asyncio.to_thread(
                self._store.record_supervisor,
                self.id,
                RunState.STOPPED,
                pid=os.getpid(),
                detail=detail,
            )
        except StorageError as error:
            log.error(
                "supervisor %s stopped, but its stop could not be recorded: %s "
                "(its record says running until 'tmi-cluster list' finds no heartbeat)",
                self.id,
                error,
            )


def _force_exit(received: signal.Signals) -> None:
    """End the process at once by ``received`` (its default action), as if never handled."""
    signal.signal(received, signal.SIG_DFL)
    os.kill(os.getpid(), received)


#: The key of the cluster's state that names the Redis of the cluster a database serves.
_CLUSTER_STATE = "cluster"
#: Seconds a supervisor record counts as alive after its last write (records are written at
#: least every RECORD_EVERY_S while a supervisor runs).
_RECORD_ALIVE_S = 3 * RECORD_EVERY_S


def redis_identity(settings: Settings) -> str:
    """Which Redis (and prefix) a cluster uses, as its database records it: two clusters must
    not share one database (each would join every channel, and purge the other's workers)."""
    if settings.embedded_redis:
        return (
            f"the private Redis server in {os.path.abspath(settings.redis.embedded_dir)} "
            f"on {socket.gethostname()}, prefix {settings.prefix!r}"
        )
    return f"Redis at {mask_url(settings.redis.url)}, prefix {settings.prefix!r}"


def _claim_database(store: Store, settings: Settings) -> None:
    """Record that the database serves the cluster of this Redis; ConfigError when it serves
    another cluster whose supervisors ran moments ago (a database left by a cluster that is
    gone is taken over)."""
    mine = redis_identity(settings)
    recorded = (store.state(_CLUSTER_STATE) or {}).get("redis")
    if recorded not in (None, mine):
        now = datetime.now(UTC)
        live = [
            r.id
            for r in store.supervisors()
            if r.state in CLAIMS_ALIVE and (now - r.last_seen_at).total_seconds() < _RECORD_ALIVE_S
        ]
        if live:
            raise ConfigError(
                f"database.url: {mask_url(settings.database.url)} serves the cluster on "
                f"{recorded} (supervisor {', '.join(live)} running): one database serves one "
                "cluster. To add a supervisor to that cluster, use its Redis (redis.url, or the "
                "same redis.embedded_dir on its host); for a second cluster, give it a database "
                "of its own (run it in another folder)"
            )
        log.warning(
            "the database served the cluster on %s, whose supervisors are gone; it "
            "serves this one now",
            recorded,
        )
    if recorded != mine:
        store.set_state(_CLUSTER_STATE, {"redis": mine})

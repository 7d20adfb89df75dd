"""The supervisor of one host: its services, its worker processes, its record, its heartbeat,
its shutdown.

It migrates the database, starts the private Redis server when ``redis.url`` is empty, records
itself in SQL (state changes, with history), keeps a heartbeat key in Redis (its value a JSON
status: pid, host, state, processes, target, problem, whether it coordinates), runs as many
worker processes as its target in ``P scale:targets`` (:mod:`tmi_cluster.supervisor.processes`),
runs the coordinator's loop (:mod:`tmi_cluster.coordinator.coordinator`; one supervisor of the
cluster acts), takes orders from its command stream (:mod:`tmi_cluster.bus.control`: terminate,
restart, pause, continue, scale), does its chores (:mod:`tmi_cluster.supervisor.chores`: the
purge of the cluster's dead, once for the whole cluster, under a lock), and on stop hands its
channels over, stops its workers within ``process.timeout``, shields its final writes, stops
Redis and cleans up.

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
import signal
import socket
import time
from collections.abc import Callable, Coroutine, Mapping
from types import TracebackType
from typing import Any, Self

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
    read_orders,
    wake,
    wanted_changed,
)
from tmi_cluster.bus.events import EventPublisher
from tmi_cluster.bus.streams import remember_scaled
from tmi_cluster.channels import (
    cleans_up,
    load_manager,
    want_again,
)
from tmi_cluster.config import Settings, mask_url
from tmi_cluster.coordinator.coordinator import Coordinator
from tmi_cluster.embedded import EmbeddedRedis, check_folder, keep_running
from tmi_cluster.errors import (
    EmbeddedRedisError,
    RedisUnavailableError,
    StorageError,
    TmiClusterError,
)
from tmi_cluster.events import ClusterEvent, ProcessScaled
from tmi_cluster.simulator import ChatSimulator
from tmi_cluster.store import RunState, Store
from tmi_cluster.supervisor.chat import (
    chat_of,
    describe_chat,
    start_simulator,
    wants_simulator,
)
from tmi_cluster.supervisor.chores import Chores
from tmi_cluster.supervisor.claims import (
    check_supervisor_id,
    claim_heartbeat,
    new_supervisor_id,
    open_database,
)
from tmi_cluster.supervisor.handover import hand_over
from tmi_cluster.supervisor.notifications import Notifier
from tmi_cluster.supervisor.processes import (
    Processes,
    next_number,
    worker_environment,
)
from tmi_cluster.supervisor.web import WebPages
from tmi_cluster.tasks import cancel_and_wait
from tmi_cluster.worker.handlers import Dispatcher
from tmi_cluster.worker.watchdog import force_exit

__all__ = ["MEMORY_GRACE_S", "REDIS_WAIT_S", "STOP_SIGNALS", "Supervisor"]

log = logging.getLogger(__name__)

#: Seconds a starting supervisor waits for Redis to answer before it gives up.
REDIS_WAIT_S = 30.0
#: Seconds a stopping supervisor's coordinator gets to give its lease up before it is cancelled.
_COORDINATOR_STOP_S = 3.0
#: Seconds a supervisor runs before its memory counts (no restart loop at start).
MEMORY_GRACE_S = 60.0
#: The signals that stop a supervisor run by :meth:`Supervisor.run_until_signalled`.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
        self._notifier_task: asyncio.Task[None] | None = None
        self._rolls: set[asyncio.Task[None]] = set()
        self._dispatcher: Dispatcher | None = None
        self._coordination: Coordination | None = None
        self._publisher: EventPublisher | None = None
        self._publishing: asyncio.Task[None] | None = None
        self._publish_stop = asyncio.Event()
        self._started_at = time.time()
        #: The web pages served (``web.enabled``), once started.
        self.web: WebPages | None = None

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
        await asyncio.to_thread(open_database, store, settings)  # migrated; one cluster's
        manager = load_manager(settings, store=store)  # ConfigError: it does not load
        self._dispatcher = Dispatcher.for_cluster_events(settings.handlers, f"supervisor {self.id}")
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
        if not await claim_heartbeat(
            self._heartbeat, self._stop, wait_s=self.redis_wait_s, outage=self.outage
        ):
            return
        self._claimed = True
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
            self.simulator, simulated = await start_simulator(settings)
            env.update(simulated)
        self.processes = Processes(
            settings,
            self.id,
            assignment=Assignment(self._client, self.keys),
            store=store,
            env=env,
            on_event=self._cluster_event,
            first_number=await asyncio.to_thread(next_number, store, self.id),
        )
        # A new run starts with no workers of its own until the coordinator gives it some
        # (a target left by an earlier run of this id is not this run's).
        await self._coordination_of(self._client).forget_target(self.id)
        self.processes.target = 0
        if self.processes.fixed:  # its own size: the auto-scaler leaves it alone
            self.processes.set_target(self.processes.fixed, "fixed")
        again = await asyncio.to_thread(want_again, self.settings, store, manager)
        if again:  # a restart: the channels authorized with reconnect
            log.info(
                "%d channel(s) authorized with reconnect wanted again: %s",
                len(again),
                ", ".join(again[:10]) + (" ..." if len(again) > 10 else ""),
            )
            await wanted_changed(self._client, self.keys)
        self.coordinator = Coordinator.from_settings(
            self._client, store, settings, self.id, manager=manager
        )
        await self._start_tasks()

    async def _start_tasks(self) -> None:
        """The long-running tasks of a supervisor that has started, and its web pages."""
        assert self.processes is not None
        assert self.coordinator is not None
        assert self._store is not None
        assert self._client is not None
        self._workers_task = self._spawn_task(self.processes.run(self._stop), "workers")
        self._orders_task = self._spawn_task(self._take_orders(), "orders")
        self._housekeeping_task = self._spawn_task(
            self._chores(self._store, self._client), "chores"
        )
        self._coordinator_task = self._spawn_task(
            self.coordinator.run(self._coordinator_stop), "coordinator"
        )
        if self._embedded is not None:
            self._redis_watch_task = self._spawn_task(
                keep_running(self._embedded, self._stop, f"supervisor {self.id}"), "private Redis"
            )
        if self.settings.notifications.urls:  # URLs that cannot be used fail the start
            coordinator = self.coordinator
            notifier = Notifier(
                self.settings, self.id, self._client, leading=lambda: coordinator.leading
            )
            self._notifier_task = self._spawn_task(notifier.run(self._stop), "notifications")
        if self.settings.web.enabled:  # a web server that cannot listen fails the start
            self.web = WebPages(self.settings)
            (await self.web.start()).add_done_callback(self._task_done)

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
            processes.scale_order(dict(fields or {}))
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

    def describe(self) -> str:
        """One line: the id, state, Redis and database (passwords masked)."""
        where = mask_url(self.redis_url or "")
        redis_shown = "embedded " + where if self.settings.embedded_redis else where
        web = f"; web pages: {self.web.url}" if self.web is not None and self.web.url else ""
        return (
            f"supervisor {self.id} {self.state.value} (Redis: {redis_shown}; "
            f"database: {mask_url(self.settings.database.url)}; "
            f"chat: {describe_chat(self.settings, self.simulator)}{web})"
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
            fixed=self.settings.supervisor.processes > 0,
            started=self._started_at,
            restarts_total=processes.restarts if processes is not None else 0,
            coordinator_passes_total=self.coordinator.passes if self.coordinator else 0,
            chat=chat_of(self.settings, self.simulator),
        )

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
        running = self.state is RunState.RUNNING  # not at the stop: its chores are cancelled
        if isinstance(event, ProcessScaled) and running and self._client is not None:
            task = self._spawn_task(self._remember_scaled(self._client, event), "scale history")
            self._rolls.add(task)  # held, and cancelled at the stop, like a roll
            task.add_done_callback(self._rolls.discard)

    async def _remember_scaled(self, client: AsyncRedis, event: ProcessScaled) -> None:
        """The change of size in the cluster's history (the dashboard's); an outage of Redis
        loses only this line of history, said in the log."""
        try:
            await remember_scaled(client, self.keys, event)
        except RedisUnavailableError as error:
            log.warning(
                "supervisor %s: the change of size is not in the history: %s", self.id, error
            )

    def _problem(self) -> str | None:
        """What is wrong, for ``list`` and ``health``: the workers', else the coordinator's."""
        if self.processes is not None and self.processes.problem:
            return self.processes.problem
        if self.coordinator is not None and self.coordinator.problem:
            return f"coordinator: {self.coordinator.problem}"
        if self.coordinator is not None and self.coordinator.cleanup_problem:
            return f"coordinator: {self.coordinator.cleanup_problem}"
        if self.coordinator is not None and self.coordinator.copies_problem:
            return f"coordinator: {self.coordinator.copies_problem}"
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

    async def _chores(self, store: Store, client: AsyncRedis) -> None:
        """The periodic chores (:class:`~tmi_cluster.supervisor.chores.Chores`) until the stop; over
        ``memory_limit``, a stop to be started again."""
        assert self.processes is not None
        chores = Chores(
            self.id,
            self.settings,
            store,
            client,
            self.processes,
            coordination=self._coordination_of(client),
            emit=self._cluster_event,
            memory_grace_s=self.memory_grace_s,
        )
        if await chores.run(self._stop):
            self.restart_wanted = True
            self._stop.set()

    async def _hand_over_all(self) -> None:
        """While stopping: the workers' channels to other supervisors' workers (see
        :func:`~tmi_cluster.supervisor.handover.hand_over`), at most ``process.timeout``."""
        processes, client, heartbeat = self.processes, self._client, self._heartbeat
        if processes is None or client is None or heartbeat is None:
            return
        await hand_over(
            self.id,
            sorted(processes.children),
            client=client,
            keys=self.keys,
            coordination=self._coordination_of(client),
            heartbeat=heartbeat,
            timeout_s=self.settings.process.timeout,
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
            force_exit(received)
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
                self._notifier_task,
                *self._rolls,
            )
            await cancel_and_wait(*chores, what=f"supervisor {self.id}'s chores", report=False)
            if self.processes is not None:
                await self._hand_over_all()
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
            if self.web is not None:
                await self.web.aclose()
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

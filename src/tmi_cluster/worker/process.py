"""One worker process, the supervisor's child: ``python -m tmi_cluster.worker.process --id ID
--supervisor SUPERVISOR`` (the original's ``tmi-cluster:process``).

It runs a :class:`~tmi_cluster.worker.worker.Worker`
(:meth:`~tmi_cluster.worker.worker.Worker.in_cluster`: its pool, the duplicate check for channels
under a hand-over, the handlers of ``handlers.modules``, the event stream's publisher and, with a
Twitch identity, the consumer of the send stream): the class an application tests with. Around it,
the process's concerns:

- a heartbeat key in Redis every ``min(process.periodic_timer, process.stale / 3)`` seconds,
  expiring after ``process.stale``, whose value is the process's status as JSON (supervisor, pid,
  state, channels, connections, memory_bytes, messages_per_s): what ``tmi-cluster list`` shows;
- the assignment (:mod:`tmi_cluster.bus.assignment`): it joins the channels assigned to it, on
  each ``sync`` notice and at least every ``process.periodic_timer``, reports every outcome and
  every lost channel, and records what it holds. A channel assigned elsewhere is parted once its
  new owner holds it (make-before-break), or after ``process.timeout``; an unassigned one at once.
  A failed join is retried with backoff (5 s, doubling, at most 5 minutes) while it stays assigned.
  What it holds is recorded in full every :data:`HELD_REFRESH_S` seconds, after every Redis
  outage, and whenever the assignment's epoch is missing or new (a restarted Redis forgot
  everything): until the epoch has been seen twice in a row it parts nothing, so that the
  coordinator can adopt each channel where it is held rather than move it;
- its parent: the supervisor holds the other end of the process's standard input, so the
  process sees its supervisor end, however it ends (even SIGKILL), as the end of its input, and
  stops within :data:`_ORPHAN_STOP_S` (on Linux, the parent's death also sends it
  :data:`PARENT_DEATH_SIGNAL`). No orphans;
- signals: SIGTERM or SIGINT stops gracefully (joins stop, pending hand-overs finish, the pool
  closes) within ``process.timeout``; another one while stopping ends the process at once;
  SIGUSR2 pauses (channels kept, nothing new joined) and SIGCONT continues;
- a stop deadline that always holds: a :class:`~tmi_cluster.worker.watchdog.StopWatchdog` thread
  ends the process at the deadline, whatever the stop waits for, even with the event loop blocked.

It prints ``ready`` on its standard output once it runs. Exit codes: 0 after a stop, 1 after an
unexpected error (logged with its traceback), 70 when its stop overran the deadline (the
watchdog logged what it waited for), 78 when it cannot start at all (invalid settings, a
handler module that does not import; the reason is the last line on standard error).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import importlib
import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import NoReturn

import psutil

from tmi_cluster.bus import (
    Assignment,
    AsyncRedis,
    Heartbeat,
    Keys,
    Outage,
    ProcessStatus,
    close_client,
    connect_async,
)
from tmi_cluster.bus.heartbeat import mark_alive
from tmi_cluster.bus.keys import ADOPT_GRACE_S
from tmi_cluster.bus.routes import is_shard
from tmi_cluster.channels import load_manager
from tmi_cluster.chat.pool import Pool
from tmi_cluster.config import Settings, load_settings
from tmi_cluster.errors import ConfigError, RedisUnavailableError, TmiClusterError
from tmi_cluster.events import (
    ChannelLostEvent,
    ClusterClientRegistered,
    ClusterClientTerminated,
    Event,
    MessageEvent,
    PeriodicTimerCalled,
)
from tmi_cluster.outcomes import JoinResult
from tmi_cluster.routes import eventsub_configured
from tmi_cluster.store import Store
from tmi_cluster.tasks import cancel_and_wait
from tmi_cluster.worker.handlers import load_handlers
from tmi_cluster.worker.handover import HandOver
from tmi_cluster.worker.shards import RouteGate, Shards
from tmi_cluster.worker.watchdog import (
    PARENT_DEATH_SIGNAL,
    StopWatchdog,
    force_exit,
    stop_times,
    watch_parent,
)
from tmi_cluster.worker.worker import Worker

__all__ = [
    "EXIT_LAUNCH",
    "HELD_REFRESH_S",
    "READY",
    "ProcessState",
    "WorkerProcess",
    "import_handlers",
    "main",
]

#: Named, not ``__name__``: run as ``python -m``, the module is ``__main__``, whose logger
#: would miss the configuration of ``tmi_cluster``.
log = logging.getLogger("tmi_cluster.worker.process")

#: Exit code of a worker that cannot start at all (sysexits EX_CONFIG).
EXIT_LAUNCH = 78
#: The line a worker prints on its standard output once it runs.
READY = "ready"
#: A failed join is tried again after this, doubling up to :data:`_RETRY_CAP_S`.
_RETRY_S = 5.0
_RETRY_CAP_S = 300.0
#: Seconds between two full records of what a worker holds.
HELD_REFRESH_S = 10.0
#: Seconds a worker whose supervisor is gone takes at most to stop.
_ORPHAN_STOP_S = 2.0


class ProcessState(enum.StrEnum):
    """What a worker process says of itself in its heartbeat."""

    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"


def import_handlers(paths: Sequence[str]) -> list[object]:
    """Import ``handlers.modules`` and check that each holds something to register (see
    :mod:`tmi_cluster.worker.handlers`); ConfigError naming the first one that does not. The loaded
    modules (or named objects), in order."""
    load_handlers(paths)
    loaded: list[object] = []
    for path in paths:
        module_name, _, attribute = path.partition(":")
        module = importlib.import_module(module_name)
        loaded.append(getattr(module, attribute) if attribute else module)
    return loaded


class WorkerProcess:
    """The worker process's life: see the module's docstring. :meth:`run` returns its exit
    code."""

    def __init__(
        self, settings: Settings, process_id: str, supervisor_id: str, *, paused: bool = False
    ) -> None:
        self.settings = settings
        self.id = process_id
        self.supervisor_id = supervisor_id
        self.state = ProcessState.PAUSED if paused else ProcessState.STARTING
        self.paused = paused
        self.keys = Keys.from_settings(settings)
        self.outage = Outage()
        self._stop = asyncio.Event()
        self._stop_deadline: float | None = None  # monotonic: the graceful part's end
        self._watchdog: StopWatchdog | None = None
        self._phase = "running"  # what a stop is doing, for the watchdog's report
        self._wake = asyncio.Event()
        self._messages = 0
        # when; messages then, messages per second; commands answered then, commands per second
        self._rate = (time.monotonic(), 0, 0.0, 0, 0.0)
        self._join_results: Counter[str] = Counter()  # joins by result, for the metrics
        self._retry: dict[str, tuple[float, float]] = {}  # channel -> (next try, delay)
        self._lost: dict[str, str] = {}  # reported by the pool, to be reported on
        self._outcomes: dict[str, str] = {}  # join results, to be reported and recorded
        # the join batch under way, and those of its channels recorded as held already
        self._batch: set[str] = set()
        self._batch_recorded: set[str] = set()
        self._joining: asyncio.Task[None] | None = None
        self._held_recorded_at = 0.0  # monotonic; 0: record in full at the next reconcile
        self._beat_at = time.monotonic()  # the last heartbeat that Redis took
        self._fenced_at: float | None = None  # when the worker fenced itself (see _fence)
        self._epoch: str | None = None  # the assignment's epoch seen at the last reconcile
        self._epoch_at = -ADOPT_GRACE_S  # when it replaced another (monotonic)
        self._stop_epoch: str | None = None  # a new epoch it reported its held set for, stopping
        self._worker: Worker | None = None
        self._handover: HandOver | None = None
        #: The conduit shards it holds (None: the EventSub route is not configured).
        self._shards: Shards | None = None
        self._process = psutil.Process()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._orphan_logged = False
        self._stop_asked = False  # plain: read by signal handlers and the stdin watcher
        self._stop_why = ""  # why it stops, for ClusterClientTerminated
        #: Why the process stopped on its own (an unexpected error), else None.
        self.failure: BaseException | None = None

    # -- control ------------------------------------------------------------------------------

    def stop(self, within_s: float | None = None, why: str = "asked to stop") -> None:
        """Stop within ``within_s`` (default ``process.timeout``); a later call can only make
        the stop sooner. The hand-over gets the time but a closing reserve; the watchdog ends
        the process just before ``within_s`` (before the supervisor's SIGKILL), whatever the
        stop still waits for."""
        within = self.settings.process.timeout if within_s is None else within_s
        hard, soft = stop_times(within)
        deadline = time.monotonic() + soft
        if self._stop_deadline is None or deadline < self._stop_deadline:
            self._stop_deadline = deadline
        self._arm(hard, why)
        if not self._stop.is_set():
            self._stop_why = why
        self._stop.set()
        self._wake.set()

    def _arm(self, within_s: float, why: str) -> None:
        self._stop_asked = True
        if self._phase == "running":  # until the event loop begins the stop (if it can)
            self._phase = "asked to stop, its event loop not yet stopping (blocked?)"
        if self._watchdog is not None:
            self._watchdog.arm(within_s, why)

    def orphaned(self) -> None:
        """The supervisor is gone: stop within :data:`_ORPHAN_STOP_S`. Safe from any thread:
        the watchdog is armed at once, without the event loop (which may be what hangs)."""
        self._arm(stop_times(_ORPHAN_STOP_S)[0], "its supervisor is gone")
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: the process is ending
            loop.call_soon_threadsafe(self._orphaned_in_loop)

    def _orphaned_in_loop(self) -> None:
        if not self._orphan_logged:
            self._orphan_logged = True
            log.warning("worker process %s: its supervisor is gone; stopping", self.id)
        self.stop(_ORPHAN_STOP_S, "its supervisor is gone")

    def _on_stop_signal(self, signum: int, _frame: object = None) -> None:
        """SIGTERM or SIGINT (a plain signal handler: it runs between two bytecodes of the main
        thread even while the event loop is blocked): the first arms the watchdog and stops
        gracefully, another one while stopping ends the process at once (as the supervisor's
        second signal does)."""
        received = signal.Signals(signum)
        if self._stop_asked:
            log.warning(
                "worker process %s: %s while stopping (%s): ending now",
                self.id,
                received.name,
                self._phase,
            )
            force_exit(received)
            return
        why = f"{received.name} received"
        self._arm(stop_times(self.settings.process.timeout)[0], why)
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: the process ends
                self._loop.call_soon_threadsafe(self.stop, None, why)

    def _on_parent_death(self, _signum: int, _frame: object = None) -> None:
        self.orphaned()

    def pause(self, paused: bool = True) -> None:
        """Keep the channels held, join nothing new (``paused=False``: go on)."""
        self.paused = paused
        if self.state in (ProcessState.RUNNING, ProcessState.PAUSED):
            self.state = ProcessState.PAUSED if paused else ProcessState.RUNNING
        self._wake.set()

    def status(self) -> ProcessStatus:
        """The heartbeat's status (its time is stamped by Redis)."""
        worker = self._worker
        pool = worker.pool if worker is not None else None
        now = time.monotonic()
        outbox = worker.outbox if worker is not None else None
        commands = sum(outbox.answered.values()) if outbox is not None else 0
        since, counted, rate, commands_counted, commands_rate = self._rate
        if now - since >= 1.0:
            rate = (self._messages - counted) / (now - since)
            commands_rate = (commands - commands_counted) / (now - since)
            self._rate = (now, self._messages, rate, commands, commands_rate)
        return ProcessStatus(
            supervisor=self.supervisor_id,
            pid=os.getpid(),
            state=self.state.value,
            channels=len(pool.channels) if pool is not None else 0,
            connections=len(pool.connections) if pool is not None else 0,
            memory_bytes=self._process.memory_info().rss,
            messages_per_s=round(rate, 1),
            sends=pool is not None and pool.sender is not None,
            problem=(pool.problem if pool is not None else None)
            or (self._shards.problem if self._shards is not None else None),
            handler_errors=worker.handler_errors if worker is not None else 0,
            events_published=worker.events_published if worker is not None else 0,
            events_dropped=worker.events_dropped if worker is not None else 0,
            duplicates_dropped=worker.duplicates_dropped if worker is not None else 0,
            messages_total=self._messages,
            commands_total=commands,
            commands_per_s=round(commands_rate, 1),
            replicas=self.settings.coordinator.replicas,
            joins=dict(self._join_results),
            rate_limit_waits=_rate_limit_waits(pool) if pool is not None else {},
            reconnects_total=(
                sum(c.reconnects for c in pool.connections.values()) if pool is not None else 0
            ),
        )

    # -- the run ------------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until stopped; the exit code."""
        loop = self._loop = asyncio.get_running_loop()
        self._watchdog = StopWatchdog(
            f"worker process {self.id}", loop=loop, describe=self._describe
        )
        if self._stop.is_set():  # asked before it ran: the deadline holds from now
            self.stop(why="asked to stop before it ran")
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_stop_signal)
        signal.signal(PARENT_DEATH_SIGNAL, self._on_parent_death)
        loop.add_signal_handler(signal.SIGUSR2, self.pause, True)
        loop.add_signal_handler(signal.SIGCONT, self.pause, False)
        watch_parent(self.orphaned)
        client = connect_async(self.settings, name=f"process:{self.id}")
        try:
            return await self._run(client)
        except Exception:
            log.exception("worker process %s failed", self.id)
            return 1
        finally:
            await close_client(client)

    async def _run(self, client: AsyncRedis) -> int:
        settings = self.settings
        assignment = Assignment(client, self.keys)
        heartbeat = Heartbeat(
            client,
            self.keys,
            "process",
            self.id,
            ttl_s=self.keys.process_ttl_s,
            interval_s=min(settings.process.periodic_timer, self.keys.process_ttl_s / 3),
            status_of=self.status,
            outage=self.outage,
        )
        worker = self._worker = Worker.in_cluster(
            settings,
            client,
            self.id,
            outage=self.outage,
            observer=self._on_event,
            on_failure=self._worker_failed,
        )
        gate = None
        if eventsub_configured(settings):
            gate = RouteGate(client, self.keys, worker.put_checked)
            self._shards = Shards(settings, client, self.keys, gate.put, on_bound=self._shard_bound)
        self._handover = HandOver(
            worker,
            self.id,
            self.keys,
            timeout_s=settings.process.timeout,
            stopping=self._stop.is_set,
            eventsub=self._shards is not None,
            checks_all=worker.replicated,
        )
        with contextlib.suppress(TmiClusterError):  # an earlier life's guards mean nothing now
            await assignment.clear_guards(self.id)
        async with worker, asyncio.TaskGroup() as tasks:
            beating = tasks.create_task(self._beat(heartbeat, client), name="heartbeat")
            following = tasks.create_task(self._follow(assignment), name="assignment")
            ticking = tasks.create_task(self._tick(worker), name="periodic timer")
            fencing = tasks.create_task(self._fence(worker), name="fencing")
            gating = tasks.create_task(gate.run(), name="EventSub gate") if gate else None
            if not self.paused:
                self.state = ProcessState.RUNNING
            print(READY, flush=True)
            worker.put(ClusterClientRegistered(supervisor=self.supervisor_id, process=self.id))
            await self._stop.wait()
            self.state = ProcessState.STOPPING
            self._phase = "stopping"
            ticking.cancel()
            worker.put(
                ClusterClientTerminated(
                    supervisor=self.supervisor_id, process=self.id, reason=self._stop_why
                )
            )
            following.cancel()
            worker.stop_sending()
            await self._hand_over(assignment)
            if self._shards is not None:
                self._phase = "handing its EventSub shards over"
                await self._shards.hand_over(assignment, self.id, self._remaining())
                await self._shards.aclose()
            await cancel_and_wait(gating, what="the EventSub gate")
            if gate is not None and self._shards is not None:
                log.info(
                    "worker process %s: %d EventSub notifications, %d events too old at the "
                    "gate, %d duplicates dropped",
                    self.id,
                    self._shards.notifications,
                    gate.expired,
                    worker.delivery.duplicates,
                )
            self._phase = "closing its worker"
            await worker.aclose(self._remaining())
            beating.cancel()
            fencing.cancel()
        self._phase = "clearing its records in Redis"
        try:
            await assignment.set_held(self.id, ())
            await assignment.clear_guards(self.id)
        except TmiClusterError as error:
            log.warning(
                "worker process %s: its held channels stay recorded until they "
                "expire or are purged: %s",
                self.id,
                error,
            )
        await heartbeat.clear()
        return 0 if self.failure is None else 1

    def _remaining(self) -> float:
        """Seconds left of the stop's graceful part (0 once over)."""
        if self._stop_deadline is None:
            return self.settings.process.timeout
        return max(0.0, self._stop_deadline - time.monotonic())

    def _describe(self) -> str:
        """What the process does now, for the watchdog's report."""
        worker = self._worker
        if self._phase == "closing its worker" and worker is not None:
            return f"{self._phase}: {worker.phase}"
        return self._phase

    def _worker_failed(self, error: BaseException) -> None:
        """A task of the worker ended on an error (logged by the worker): the process fails."""
        if self.failure is None:
            self.failure = error
        self.stop(_ORPHAN_STOP_S, f"its worker failed: {error}")

    async def _beat(self, heartbeat: Heartbeat[ProcessStatus], client: AsyncRedis) -> None:
        pool = self._require_pool()
        self._beat_at = time.monotonic()  # the fence counts from the first beat's attempt
        while True:
            try:
                await heartbeat.beat()
                await mark_alive(
                    client, self.keys, sends=pool.sender is not None, ttl_s=self.keys.process_ttl_s
                )
            except RedisUnavailableError as error:
                self.outage.began(error, f"worker process {self.id}")
            else:
                self._beat_at = time.monotonic()
                self.outage.ended()
            await asyncio.sleep(heartbeat.interval_s)

    async def _fence(self, worker: Worker) -> None:
        """Fence the worker once its last heartbeat is older than ``process.stale`` (the
        cluster may have declared it dead and given its channels away: a host cut off, or a
        Redis call that hangs), however its Redis calls fare: from then on every event is
        checked cluster-wide (:meth:`~tmi_cluster.worker.delivery.Delivery.fence`) until a
        reconcile begun after the fence has handed over what went elsewhere."""
        stale = self.settings.process.stale
        while True:
            await asyncio.sleep(max(stale / 3, 0.1))
            silent = time.monotonic() - self._beat_at
            if self._fenced_at is None and silent > stale:
                self._fenced_at = time.monotonic()
                worker.delivery.fence()
                log.warning(
                    "worker process %s: no heartbeat taken for %.1f s (process.stale %g s): "
                    "the cluster may have given its channels to others; every event is checked "
                    "until its assignment is read again",
                    self.id,
                    silent,
                    stale,
                )

    async def _tick(self, worker: Worker) -> None:
        """PeriodicTimerCalled to the handlers every ``process.periodic_timer`` seconds (the
        original's hook for periodic work; never on the stream)."""
        every = self.settings.process.periodic_timer
        while True:
            await asyncio.sleep(every)
            worker.dispatcher.put(
                PeriodicTimerCalled(supervisor=self.supervisor_id, process=self.id)
            )

    def _on_event(self, event: Event) -> None:
        """Every event of the pool, on the read path (the worker's observer, before the
        duplicate check, the handlers and the stream): counted, lost channels noted."""
        kind = type(event)
        if kind is MessageEvent:
            self._messages += 1
        elif kind is ChannelLostEvent and event.channel is not None:
            self._lost[event.channel] = event.reason  # type: ignore[attr-defined]
            self._wake.set()

    # -- following the assignment ----------------------------------------------------------------

    async def _follow(self, assignment: Assignment) -> None:
        """Follow the assignment until cancelled; an outage is waited out."""
        after = "$"
        # Each wait is short: redis-py may finish a blocking read that it was told to cancel,
        # so the loop also ends by itself, within one wait, once the process stops.
        period = min(self.settings.process.periodic_timer, 0.5)
        while not self._stop.is_set():
            try:
                await self._reconcile(assignment)
                joining = self._joining is not None and not self._joining.done()
                pending = (
                    joining or self._outcomes or self._lost or self._require_handover().pending
                )
                timeout = 0.1 if pending else period  # results go out within 0.1 s
                after, _ = await assignment.notices(self.id, after, timeout)
                self.outage.ended()
            except RedisUnavailableError as error:
                self.outage.began(error, f"worker process {self.id}")
                self._held_recorded_at = 0.0  # Redis may come back empty
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                self._wake.clear()

    async def _flush(self, assignment: Assignment) -> None:
        """Report and record the join results and losses noted since the last time (kept for
        the next time if Redis does not answer). The channels of a join batch under way are
        recorded as held as soon as each one's join is confirmed, not when the whole batch
        ends (seconds later, under load): meanwhile the others would see nobody else holding
        them, and stop checking their copies of the channels' events."""
        if self._batch:
            early = sorted(self._require_pool().confirmed(self._batch) - self._batch_recorded)
            if early:
                await assignment.record_held(self.id, joined=early)
                self._batch_recorded.update(early)
        if self._outcomes:
            outcomes = dict(self._outcomes)
            held = self._require_pool().held | (
                self._shards.held if self._shards is not None else set()
            )
            # a join confirmed, and not parted since (a part is recorded before it is sent)
            joined = [
                c for c, result in outcomes.items() if c in held and result == JoinResult.JOINED
            ]
            await assignment.record_held(self.id, joined=joined)
            await assignment.report(self.id, outcomes)
            for channel in outcomes:
                self._outcomes.pop(channel, None)
        if self._lost:
            lost = dict(self._lost)
            await assignment.record_held(self.id, left=lost)
            await assignment.report(self.id, lost)
            for channel in lost:
                self._lost.pop(channel, None)

    async def _reconcile(self, assignment: Assignment) -> None:
        began = time.monotonic()
        pool = self._require_pool()
        handover = self._require_handover()
        await self._flush(assignment)
        epoch = await assignment.epoch()
        settled = epoch is not None and epoch == self._epoch
        if not settled:  # a new assignment: say what is held, part nothing until it settles
            if self._epoch is not None:  # Redis forgot the last one: the adoption grace runs
                self._epoch_at = time.monotonic()
            self._epoch = epoch
            await handover.keep(assignment, list(handover.leaving))
        if not settled or time.monotonic() - self._held_recorded_at >= HELD_REFRESH_S:
            # confirmed ones only; under a new epoch, saying that this is all
            held_now = pool.held | (self._shards.held if self._shards is not None else set())
            await assignment.set_held(self.id, held_now, epoch=None if settled else epoch)
            self._held_recorded_at = time.monotonic()
        wanted = await assignment.of(self.id)
        shards = {name for name in wanted if is_shard(name)}
        if shards or self._shards is not None:
            wanted -= shards
            if self._shards is not None:
                await self._shards.follow(shards, assignment)
        held = pool.channels
        busy = self._joining is not None and not self._joining.done()
        now = time.monotonic()
        fresh = sorted(c for c in wanted - held if c not in self._retry or self._retry[c][0] <= now)
        if fresh and not busy and not self.paused and not self._stop.is_set():
            fresh = await handover.ready_to_take(assignment, fresh)
            if fresh:
                self._joining = asyncio.create_task(self._join(fresh), name="joins")
                self._joining.add_done_callback(self._joined)
        await handover.keep(assignment, sorted(wanted & handover.leaving.keys()))  # ours again
        await handover.lift_taken(assignment)
        if not settled:
            return
        await handover.start_leaving(assignment, sorted(held - wanted - handover.leaving.keys()))
        # within the coordinator's adoption grace, a channel nobody owns may only not be
        # adopted yet (this worker's report may have come after the plan): not parted for that
        adopted = now - self._epoch_at >= ADOPT_GRACE_S
        self._parted(await handover.part_handed_over(assignment, now, settled=adopted))
        if self._fenced_at is not None and began > self._fenced_at:
            # read after the fence: what went elsewhere is being handed over (guarded)
            log.warning(
                "worker process %s: its assignment read again %.1f s after its fence; "
                "channels given to others are handed over",
                self.id,
                time.monotonic() - self._fenced_at,
            )
            self._fenced_at = None
            assert self._worker is not None
            # what it keeps, or was given back, others may hold too (they took it while it
            # was away): checked as taken over until they have parted it, then unfenced
            handover.recheck(sorted((held & wanted) - handover.leaving.keys()))
            self._worker.delivery.unfence()

    def _shard_bound(self, name: str) -> None:
        """A shard's session was bound: held, reported like a join."""
        self._outcomes[name] = JoinResult.JOINED.value
        self._wake.set()

    async def _join(self, channels: list[str]) -> None:
        """Join ``channels``; the results are reported by the next reconciliation."""
        log.debug("%s joins %d channels (such as %s)", self.id, len(channels), channels[:3])
        self._batch, self._batch_recorded = set(channels), set()
        try:
            outcomes = await self._require_pool().join(channels)
        finally:
            self._batch = set()
        failed: Counter[str] = Counter()
        for channel, outcome in outcomes.items():
            self._outcomes[channel] = outcome.result.value
            self._join_results[outcome.result.value] += 1
            if outcome.ok:
                self._retry.pop(channel, None)
            else:
                failed[outcome.result.value] += 1
                self._retry_later(channel)
        log.debug(
            "%s joined %d of %d channels%s",
            self.id,
            len(outcomes) - failed.total(),
            len(channels),
            f"; failed: {dict(failed)}" if failed else "",
        )
        self._wake.set()

    def _joined(self, task: asyncio.Task[None]) -> None:
        """A join batch ended: an unexpected error is a failure of the process, never silent."""
        if task.cancelled() or task.exception() is None:
            return
        log.error("worker process %s: a join failed", self.id, exc_info=task.exception())
        self.failure = task.exception()
        self.stop(_ORPHAN_STOP_S)

    def _retry_later(self, channel: str) -> None:
        _, delay = self._retry.get(channel, (0.0, _RETRY_S / 2))
        delay = min(_RETRY_CAP_S, delay * 2)
        self._retry[channel] = (time.monotonic() + delay, delay)

    async def _hand_over(self, assignment: Assignment) -> None:
        """While stopping: finish hand-overs under way, within the stop's deadline."""
        self._phase = "stopping its joins"
        await cancel_and_wait(self._joining, what=f"{self.id}'s joins", timeout_s=self._remaining())
        leaving = self._require_handover().leaving
        while leaving and self._remaining() > 0:
            self._phase = f"handing {len(leaving)} channels over"
            try:
                await self._reconcile_leaving(assignment)
            except RedisUnavailableError:
                break
            if leaving:
                await asyncio.sleep(0.1)

    async def _reconcile_leaving(self, assignment: Assignment) -> None:
        pool = self._require_pool()
        await self._flush(assignment)
        epoch = await assignment.epoch()
        # Redis forgot the assignment (a restart while this one stops): its channels are
        # placed again after the coordinator's adoption grace; until their new owners hold
        # them, they are not "owned by nobody" (parting them then would leave them unread)
        settled = epoch is not None and epoch == self._epoch
        if not settled and epoch is not None and epoch != self._stop_epoch:
            # say what it holds under the new epoch: the coordinator then places those
            # channels on others at once (it adopts nothing onto a worker that stops)
            await assignment.set_held(self.id, pool.held, epoch=epoch)
            self._stop_epoch = epoch
        wanted = await assignment.of(self.id)
        now = time.monotonic()
        handover = self._require_handover()
        leaving = sorted(pool.channels - wanted - handover.leaving.keys())
        await handover.start_leaving(assignment, leaving)
        for channel in leaving:
            handover.leaving[channel] = min(handover.leaving[channel], now + self._remaining())
        self._parted(await handover.part_handed_over(assignment, now, settled=settled))

    def _parted(self, channels: list[str]) -> None:
        """``channels`` were parted after their hand-over: no retry of theirs is due."""
        for channel in channels:
            self._retry.pop(channel, None)

    def _require_handover(self) -> HandOver:
        assert self._handover is not None
        return self._handover

    def _require_pool(self) -> Pool:
        assert self._worker is not None
        return self._worker.pool


def _rate_limit_waits(pool: Pool) -> dict[str, float]:
    """Seconds the pool's takes from Twitch's rate windows waited, by bucket."""
    join = pool.join_window.tally.waited_s + pool.connection_join_waits.waited_s
    waits = {"join": round(join, 3)}
    if pool.auth_window is not None:
        waits["auth"] = round(pool.auth_window.tally.waited_s, 3)
    if pool.senders:
        messages = sum(
            sender.messages.tally.waited_s + sender.moderator_messages.tally.waited_s
            for sender in pool.senders.values()
        )
        waits["messages"] = round(messages, 3)
    return waits


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of a worker process; the exit code."""
    parser = argparse.ArgumentParser(prog="python -m tmi_cluster.worker.process")
    parser.add_argument("--id", required=True, help="this process's id")
    parser.add_argument("--supervisor", required=True, help="the supervisor's id")
    parser.add_argument("--paused", action="store_true", help="start paused")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        import_handlers(settings.handlers.modules)
        with Store.from_settings(settings) as store:  # one that does not load: a launch failure
            load_manager(settings, store=store)
    except ConfigError as error:
        for problem in error.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_LAUNCH
    from tmi_cluster.logs import configure_logging  # noqa: PLC0415

    configure_logging(settings)
    process = WorkerProcess(settings, args.id, args.supervisor, paused=args.paused)
    return asyncio.run(process.run())


def _exit(code: int) -> NoReturn:
    """Leave at once once everything is closed: a plain handler still blocked in its thread
    must not hold the process (the interpreter would join the thread at exit)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    _exit(main())

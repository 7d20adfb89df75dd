"""A supervisor's worker processes: spawn, watch, restart, replace, stop.

Contracts:

- A worker is ``python -m tmi_cluster.worker.process`` (:mod:`tmi_cluster.worker.process`) in a
  session of its own (a Ctrl-C on the terminal reaches the supervisor only, which decides), its
  standard input a pipe the supervisor holds (its end ends the worker), its id ``<supervisor>-<n>``.
- An exit is seen at once (the child's end is awaited); a hung worker when its last heartbeat
  is more than ``process.stale`` seconds old while Redis answers (it is then killed; checked
  twice a second). Either way the
  process is replaced: the first time at once, after repeated failures more slowly
  (:func:`restart_delay`: 1, 2, 4, ... s, at most 60 s; a worker that ran
  :data:`HEALTHY_S` seconds resets the count), each with a :class:`WorkerProcessRestarting`,
  or an :class:`UnableToLaunchProcess` when it ended before it was ready (its last line on
  standard error is the reason, kept in :attr:`Processes.problem` until a worker runs again).
- The coordinator (:mod:`tmi_cluster.coordinator.coordinator`) owns the assignment; the
  supervisor never writes it. A dead worker's heartbeat is deleted the moment its end is seen
  and the coordinator is woken, so that its channels are placed elsewhere within a pass.
- Draining: a worker in ``P draining`` (marked by the coordinator for a scale-in, or here for a
  replacement or a surplus over :attr:`Processes.target`) takes no new channels; the
  coordinator moves its channels away (make-before-break), and once it is assigned and holds
  none it is stopped gracefully (after :data:`DRAIN_LIMIT_S` at the latest).
- A worker over ``process.memory`` (and under it when it started: a limit below a fresh
  worker's size is warned about once, not acted on) is replaced gracefully: the replacement
  starts, and once it is ready the old one drains. :meth:`Processes.roll` does the same for
  every worker, one by one (SIGUSR1).
- Records in SQL on every state change and at most every 30 s, never per heartbeat; a database
  outage is logged and the work goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import psutil

from tmi_cluster.bus import Assignment, Coordination, Keys, ProcessStatus, read, wake
from tmi_cluster.config import Settings
from tmi_cluster.errors import RedisUnavailableError, StorageError
from tmi_cluster.events import (
    ClusterEvent,
    ProcessScaled,
    UnableToLaunchProcess,
    WorkerProcessRestarting,
)
from tmi_cluster.store import RunState, Store
from tmi_cluster.tasks import cancel_and_wait, log_outcome
from tmi_cluster.worker.process import EXIT_LAUNCH, READY

__all__ = [
    "DRAIN_LIMIT_S",
    "HEALTHY_S",
    "RECORD_EVERY_S",
    "Child",
    "Processes",
    "next_number",
    "restart_delay",
    "worker_environment",
]

log = logging.getLogger(__name__)

#: A worker that ran this long resets its supervisor's count of failures in a row.
HEALTHY_S = 30.0
#: The longest wait before a failed worker is started again.
RESTART_CAP_S = 60.0
#: Seconds between two records of a worker's figures in SQL.
RECORD_EVERY_S = 30.0
#: Lines of a worker's standard error kept for the reason of its end.
_TAIL_LINES = 20
#: Seconds a draining worker is stopped after at the latest, emptied or not.
DRAIN_LIMIT_S = 600.0


def restart_delay(failures: int) -> float:
    """The wait before starting a worker again after ``failures`` failures in a row: none after
    the first, then 1, 2, 4, ... seconds, at most :data:`RESTART_CAP_S`."""
    if failures <= 1:
        return 0.0
    return float(min(RESTART_CAP_S, 2.0 ** (failures - 2)))


@dataclass
class Child:
    """One worker process of the supervisor."""

    id: str
    proc: asyncio.subprocess.Process
    started: float
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=_TAIL_LINES))
    #: Asked to stop: its end is expected.
    stopping: bool = False
    #: The worker whose channels it takes over once ready (a graceful replacement).
    replaces: str | None = None
    #: Being replaced (by the worker of that id).
    replaced_by: str | None = None
    #: Being emptied since this time (monotonic), else None.
    draining_since: float | None = None
    last_seen: float = 0.0
    last_record: float = 0.0
    #: Its process has ended (its end is being handled).
    ended: bool = False
    #: Its memory when first checked after it was ready (None: not yet).
    first_rss: int | None = None
    #: Its last heartbeat's status (None until one is read).
    status: ProcessStatus | None = None
    #: Its reader of standard error (the reason of an end), held to wait for its last lines.
    stderr_task: asyncio.Task[None] | None = None
    #: Every task the supervisor runs for it (readers, the wait for its end).
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class Processes:
    """The worker processes of supervisor ``supervisor_id``; see the module's docstring."""

    def __init__(
        self,
        settings: Settings,
        supervisor_id: str,
        *,
        assignment: Assignment,
        store: Store,
        env: Mapping[str, str],
        on_event: Callable[[ClusterEvent], None] | None = None,
        first_number: int = 1,
    ) -> None:
        self.settings = settings
        self.supervisor_id = supervisor_id
        self.assignment = assignment
        self.coordination = Coordination(assignment.client, assignment.keys)
        self.keys: Keys = assignment.keys
        self.store = store
        self.env = dict(env)
        self.on_event = on_event or (lambda event: None)
        #: How many workers should run.
        self.target = settings.auto_scale.processes.min
        #: The fixed number of workers (``supervisor.processes``; 0: the target follows the
        #: coordinator's orders).
        self.fixed = settings.supervisor.processes
        self.children: dict[str, Child] = {}
        #: Why workers cannot start (the last UnableToLaunchProcess), until one runs again.
        self.problem: str | None = None
        self.paused = False
        self.restarts = 0
        self._numbers = first_number - 1  # ids go on after those of earlier runs
        self._failures = 0
        self._next_start = 0.0
        self._changed = asyncio.Event()
        self._stopping = False
        self._redis_ok_since = time.monotonic()
        self._storage_failing = False
        self._memory_warned = False

    # -- the watch ----------------------------------------------------------------------------

    def scale_order(self, fields: dict[str, str]) -> None:
        """A scale order's ``processes`` (a number, else the order is ignored, logged) and
        ``cause`` (default ``manual``): :meth:`set_target`."""
        try:
            target = int(fields.get("processes", ""))
        except ValueError:
            log.warning(
                "supervisor %s: a scale order without a number ignored: %r",
                self.supervisor_id,
                fields,
            )
            return
        if target >= 0:
            self.set_target(target, fields.get("cause", "manual"))

    def set_target(self, target: int, cause: str) -> None:
        """Run ``target`` workers from now on (the coordinator's decision, or a size set by
        hand), said in the log and as a :class:`ProcessScaled` event with ``cause``. With a
        fixed number of workers (``supervisor.processes``), that number whatever ``target``."""
        if self.fixed and target != self.fixed:
            log.info(
                "supervisor %s: a target of %d ignored: it runs %d worker processes "
                "(supervisor.processes)",
                self.supervisor_id,
                target,
                self.fixed,
            )
            target = self.fixed
        before = self.target
        if target == before:
            return
        self.target = target
        self._changed.set()
        log.info(
            "supervisor %s: %d worker processes -> %d (%s)",
            self.supervisor_id,
            before,
            target,
            cause,
        )
        self._emit(
            ProcessScaled(supervisor=self.supervisor_id, before=before, after=target, cause=cause)
        )

    def running(self) -> list[Child]:
        """The workers that are up and not on their way out (stopping, replaced, draining)."""
        return [
            c
            for c in self.children.values()
            if not c.stopping and not c.ended and c.replaced_by is None and c.draining_since is None
        ]

    async def run(self, stop: asyncio.Event) -> None:
        """Keep :attr:`target` workers running until ``stop`` is set."""
        check_every = min(0.5, self.keys.process_ttl_s / 6)
        next_check = 0.0
        while not stop.is_set():
            now = time.monotonic()
            if not self._stopping and len(self.running()) < self.target and now >= self._next_start:
                await self._spawn()
            if now >= next_check:
                await self._check()
                next_check = now + check_every
            self._changed.clear()
            wait = max(
                0.05,
                min(check_every, self._next_start - now if self._next_start > now else check_every),
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wait)

    async def _spawn(self, *, replaces: str | None = None) -> Child:
        self._numbers += 1
        process_id = f"{self.supervisor_id}-{self._numbers}"
        argv = [
            sys.executable,
            "-m",
            "tmi_cluster.worker.process",
            f"--id={process_id}",
            f"--supervisor={self.supervisor_id}",
        ]
        if self.paused:
            argv.append("--paused")
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
            start_new_session=True,
        )
        child = Child(process_id, proc, time.monotonic(), replaces=replaces)
        child.last_seen = child.started
        self.children[process_id] = child
        child.stderr_task = asyncio.create_task(
            self._read_stderr(child), name=f"{process_id} stderr"
        )
        child.tasks = [
            asyncio.create_task(self._read_stdout(child), name=f"{process_id} stdout"),
            child.stderr_task,
            asyncio.create_task(self._await_exit(child), name=f"{process_id} exit"),
        ]
        log.info("worker process %s started (pid %d)", process_id, proc.pid)
        await self._record(child, RunState.STARTING, detail="started")
        return child

    async def _read_stdout(self, child: Child) -> None:
        stream = child.proc.stdout
        assert stream is not None
        while line := await stream.readline():
            if line.strip() == READY.encode() and not child.ready.is_set():
                child.ready.set()
                child.last_seen = time.monotonic()
                self._changed.set()
                await self._on_ready(child)
            else:  # a handler's print(): shown, as its log lines are, with the worker's id
                text = line.decode(errors="replace").rstrip()
                sys.stdout.write(f"[{child.id}] {text}\n")
                sys.stdout.flush()

    async def _read_stderr(self, child: Child) -> None:
        stream = child.proc.stderr
        assert stream is not None
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip()
            child.tail.append(text)
            sys.stderr.write(f"[{child.id}] {text}\n")

    async def _await_exit(self, child: Child) -> None:
        code = await child.proc.wait()
        if child.stderr_task is not None:  # its last lines: the reason
            done, _ = await asyncio.wait({child.stderr_task}, timeout=1.0)
            for task in done:
                log_outcome(task, what=f"the reader of {child.id}'s standard error", logger=log)
        child.ended = True  # not running any more; still listed until its end is handled,
        try:  # so that the watch loop starts no replacement before the backoff is set
            await self._on_exit(child, code)
        finally:
            self.children.pop(child.id, None)
            self._changed.set()

    async def _on_ready(self, child: Child) -> None:
        self.problem = None
        await self._record(child, RunState.RUNNING, detail="ready")
        old = self.children.get(child.replaces) if child.replaces is not None else None
        if old is not None:
            await self._drain(old, "replaced")
        with contextlib.suppress(RedisUnavailableError):
            await wake(self.assignment.client, self.keys)  # a new worker to give channels to

    async def _drain(self, child: Child, why: str) -> None:
        """Mark ``child`` to be emptied (the coordinator moves its channels away)."""
        if child.draining_since is None:
            child.draining_since = time.monotonic()
            log.info("worker process %s drains (%s)", child.id, why)
        try:
            await self.coordination.mark_draining(child.id, why)
            await wake(self.assignment.client, self.keys)
        except RedisUnavailableError as error:
            log.warning("worker process %s cannot drain yet: %s", child.id, error)

    async def _on_exit(self, child: Child, code: int) -> None:
        how = _describe_exit(code)
        state = RunState.STOPPED if child.stopping or self._stopping else RunState.DEAD
        await self._record(child, state, exit_code=code, detail=how)
        if child.stopping or self._stopping:
            log.info("worker process %s stopped (%s)", child.id, how)
            await self._release(child)
            return
        ran_s = time.monotonic() - child.started
        self._failures = 1 if ran_s >= HEALTHY_S else self._failures + 1
        delay = restart_delay(self._failures)
        self._next_start = time.monotonic() + delay
        self.restarts += 1
        event: ClusterEvent
        if code == EXIT_LAUNCH or (not child.ready.is_set() and code > 0):
            reason = _last_error(child.tail) or how
            self.problem = f"worker processes cannot start: {reason}"
            event = UnableToLaunchProcess(
                supervisor=self.supervisor_id, process=child.id, error=reason, delay_s=delay
            )
            shown = reason if reason == how else f"{how}: {reason}"
            log.error(
                "worker process %s could not start (%s); trying again in %g s",
                child.id,
                shown,
                delay,
            )
        else:
            event = WorkerProcessRestarting(
                supervisor=self.supervisor_id, process=child.id, reason=how, delay_s=delay
            )
            log.warning("worker process %s %s; restarting in %g s", child.id, how, delay)
        self._emit(event)
        await self._release(child)

    async def _release(self, child: Child) -> None:
        """A worker ended: its death known at once (heartbeat, held channels, draining mark
        and notices deleted), the coordinator woken to place its channels elsewhere. Without
        Redis, its heartbeat expires and the purge deletes the rest."""
        try:
            await self.assignment.forget(child.id)
            await wake(self.assignment.client, self.keys)
        except RedisUnavailableError as error:
            log.warning("the end of %s waits for Redis: %s", child.id, error)

    async def _check(self) -> None:
        """Heartbeats (a hung worker is killed) and memory (a big one is replaced)."""
        ready = [c for c in self.children.values() if c.ready.is_set() and not c.ended]
        now = time.monotonic()
        try:
            found = await read(self.assignment.client, self.keys, "process", [c.id for c in ready])
        except RedisUnavailableError:
            self._redis_ok_since = float("inf")
            return
        if self._redis_ok_since == float("inf"):
            self._redis_ok_since = now  # Redis is back: every worker gets a fresh grace
        stale = self.keys.process_ttl_s
        for child in ready:
            beat = found.get(child.id)
            if beat is not None:  # its age on Redis's clock
                child.status = beat.status
                child.last_seen = min(now, now - beat.age_s)
            if now - max(child.last_seen, self._redis_ok_since) > stale and not child.stopping:
                log.error("worker process %s: no heartbeat for %g s; killing it", child.id, stale)
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
                continue
            await self._check_memory(child)
            if now - child.last_record >= RECORD_EVERY_S:
                await self._record(child, RunState.RUNNING, history=False)
        with contextlib.suppress(RedisUnavailableError):  # the next check tries again
            await self._check_draining(ready)

    async def _check_draining(self, ready: list[Child]) -> None:
        """Follow ``P draining``: a surplus over the target drains, the least loaded first; a
        drained worker (assigned and holding nothing) stops."""
        marks = await self.coordination.draining()
        now = time.monotonic()
        for child in ready:
            if child.id in marks and child.draining_since is None and not child.stopping:
                child.draining_since = now
                log.info("worker process %s drains (%s)", child.id, marks[child.id])
        await self._drain_surplus()
        draining = [c for c in ready if c.draining_since is not None and not c.stopping]
        if draining:
            await self._stop_drained(draining, now)

    async def _drain_surplus(self) -> None:
        """Workers over the target drain, the least loaded first."""
        surplus = len([c for c in self.running() if c.ready.is_set()]) - self.target
        if surplus <= 0 or self._stopping:
            return
        loads = sorted(self.running(), key=lambda c: (c.status.channels if c.status else 0, c.id))
        for child in loads[:surplus]:
            await self._drain(child, "surplus")

    async def _stop_drained(self, draining: list[Child], now: float) -> None:
        """Of the ``draining`` workers, stop those that hold and are assigned nothing (as Redis
        says, and as the worker's own last status says), or that drained for longer than
        :data:`DRAIN_LIMIT_S`. Not while Redis has just forgotten everything (a restart: every
        worker's sets read empty there while it still holds its channels)."""
        sizes = await self.coordination.sizes([c.id for c in draining])
        forgot = await self.coordination.forgot_recently()
        for child in draining:
            assigned, held = sizes[child.id]
            own = child.status.channels if child.status is not None else 0
            late = now - (child.draining_since or now) > DRAIN_LIMIT_S
            if (assigned == 0 and held == 0 and own == 0 and not forgot) or late:
                if late:
                    log.warning(
                        "worker process %s: %d channels left after draining %g s; stopping it",
                        child.id,
                        assigned + held,
                        DRAIN_LIMIT_S,
                    )
                await self._ask_to_stop(child)

    async def _check_memory(self, child: Child) -> None:
        limit = self.settings.process.memory * 1024 * 1024
        if child.replaced_by is not None or child.stopping or self._stopping:
            return
        try:
            rss = psutil.Process(child.proc.pid).memory_info().rss
        except psutil.Error:
            return
        if child.first_rss is None:
            child.first_rss = rss
            if rss > limit and not self._memory_warned:
                self._memory_warned = True
                log.warning(
                    "process.memory (%d MB) is below what a worker needs from the start "
                    "(%d MiB): workers are not replaced for their memory; raise it",
                    self.settings.process.memory,
                    rss // 1048576,
                )
        if rss > limit and child.first_rss <= limit:
            log.warning(
                "worker process %s uses %d MiB (over process.memory %d): replacing it",
                child.id,
                rss // 1048576,
                self.settings.process.memory,
            )
            await self.replace(child)

    # -- replacing and stopping ------------------------------------------------------------------

    async def replace(self, child: Child) -> Child:
        """Start a worker that takes ``child``'s channels over, then stops it (gracefully)."""
        new = await self._spawn(replaces=child.id)
        child.replaced_by = new.id
        return new

    async def roll(self) -> None:
        """Replace every worker, one after the other: each replacement ready and the worker
        it replaces drained and stopped (at most ``process.timeout`` each) before the next."""
        timeout = self.settings.process.timeout
        for child in list(self.running()):
            if self._stopping:
                return
            new = await self.replace(child)
            ready = asyncio.ensure_future(new.ready.wait())
            ended = asyncio.ensure_future(new.proc.wait())
            try:
                await asyncio.wait(
                    {ready, ended}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                ready.cancel()
                ended.cancel()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(child.proc.wait()), timeout)

    def pause(self, paused: bool) -> None:
        """Pause (``True``) or continue every worker: SIGUSR2 or SIGCONT to each."""
        self.paused = paused
        for child in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGUSR2 if paused else signal.SIGCONT)

    async def _ask_to_stop(self, child: Child) -> None:
        """SIGTERM once: a second one would end the worker at once, without its hand-over."""
        if child.stopping:
            return
        child.stopping = True
        with contextlib.suppress(ProcessLookupError):
            child.proc.terminate()
        await self._record(child, RunState.STOPPING, detail="asked to stop")

    async def stop(self, within_s: float) -> None:
        """Stop every worker gracefully within ``within_s``; kill those still running then."""
        self._stopping = True
        deadline = time.monotonic() + within_s
        tasks = [task for child in self.children.values() for task in child.tasks]
        for child in list(self.children.values()):
            await self._ask_to_stop(child)
        waits = [asyncio.ensure_future(c.proc.wait()) for c in list(self.children.values())]
        if waits:
            await asyncio.wait(waits, timeout=max(0.0, deadline - time.monotonic()))
        for child in list(self.children.values()):
            if child.proc.returncode is None:
                log.warning("worker process %s did not stop in time; killing it", child.id)
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
        waits = [asyncio.ensure_future(c.proc.wait()) for c in list(self.children.values())]
        if waits:
            _, late = await asyncio.wait(waits, timeout=5.0)
            if late:
                log.error("%d worker processes did not end within 5 s of SIGKILL", len(late))
            await cancel_and_wait(*late, what="waiting for a killed worker")
        if tasks:  # their exits recorded and their channels released, before Redis goes
            await asyncio.wait(tasks, timeout=5.0)

    # -- records -----------------------------------------------------------------------------

    def _emit(self, event: ClusterEvent) -> None:
        try:
            self.on_event(event)
        except Exception:
            log.exception("the cluster event handler failed on %s", type(event).__name__)

    async def _record(
        self,
        child: Child,
        state: RunState,
        *,
        exit_code: int | None = None,
        detail: str = "",
        history: bool = True,
    ) -> None:
        child.last_record = time.monotonic()
        status = child.status
        try:
            await asyncio.to_thread(
                self.store.record_process,
                child.id,
                self.supervisor_id,
                state,
                pid=child.proc.pid,
                channels=status.channels if status is not None else 0,
                metrics={}
                if status is None
                else {
                    "connections": status.connections,
                    "memory_bytes": status.memory_bytes,
                    "messages_per_s": status.messages_per_s,
                },
                exit_code=exit_code,
                detail=detail,
                history=history,
            )
        except StorageError as error:
            if not self._storage_failing:
                log.error("the records of the worker processes cannot be written: %s", error)
            self._storage_failing = True
        else:
            self._storage_failing = False


def _channels(child: Child) -> int:
    return child.status.channels if child.status is not None else 0


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _last_error(tail: deque[str]) -> str:
    """The reason a worker gave on standard error: its last ``error:`` line, else its last."""
    for line in reversed(tail):
        if line.startswith("error: "):
            return line.removeprefix("error: ")
    return tail[-1] if tail else ""


def next_number(store: Store, supervisor_id: str) -> int:
    """The number of supervisor ``supervisor_id``'s next worker (``<id>-<n>``): one more than
    any its records show, so that a restarted supervisor never reuses a worker's id."""
    numbers = [
        int(p.id.rsplit("-", 1)[1])
        for p in store.processes()
        if p.supervisor_id == supervisor_id and p.id.rsplit("-", 1)[-1].isdigit()
    ]
    return max(numbers, default=0) + 1


def worker_environment(redis_url: str, config: str | None) -> dict[str, str]:
    """The environment of a worker: the supervisor's, with the Redis server it uses and its
    configuration file made explicit."""
    env = dict(os.environ)
    env["TMI_CLUSTER_REDIS__URL"] = redis_url
    if config is not None:
        env["TMI_CLUSTER_CONFIG"] = os.path.abspath(config)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env

"""The supervisor of one host: its services, its record, its heartbeat, its shutdown.

This release runs the supervisor's shell: it migrates the database, starts the private Redis
server when ``redis.url`` is empty, records itself in SQL (start and stop, with history), keeps a
heartbeat key in Redis, and on stop shields its final writes, stops Redis and cleans up. Worker
processes, scaling and the command streams build on it in later releases.

Lifecycle (:attr:`Supervisor.state`, a :class:`~tmi_cluster.store.RunState`)::

    STARTING  migrate; start the embedded Redis; wait for Redis (at most ``redis_wait_s``);
              first heartbeat; record "running"
    RUNNING   the heartbeat renews its key; a Redis outage is logged once and waited out
    STOPPING  stop the heartbeat, delete its key, record "stopped" (shielded; a database
              outage is logged, never raised), stop the embedded Redis
    STOPPED   everything released; aclose() again does nothing

Use it as an async context manager (``async with Supervisor(settings) as supervisor``), or let
:meth:`Supervisor.run_until_signalled` do all of it: the first SIGINT or SIGTERM stops gracefully,
a second one ends the process at once by that signal (no final writes; the heartbeat then expires
and ``tmi-cluster list`` shows the supervisor dead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
from collections.abc import Callable
from types import TracebackType
from typing import Self

import redis.asyncio

from tmi_cluster.bus import Heartbeat, Keys, Outage, connect_async
from tmi_cluster.config import Settings, mask_url
from tmi_cluster.embedded import EmbeddedRedis
from tmi_cluster.errors import (
    EmbeddedRedisError,
    RedisUnavailableError,
    StorageError,
    TmiClusterError,
)
from tmi_cluster.store import RunState, Store

__all__ = ["REDIS_WAIT_S", "STOP_SIGNALS", "Supervisor", "new_supervisor_id"]

log = logging.getLogger(__name__)

#: Seconds a starting supervisor waits for Redis to answer before it gives up.
REDIS_WAIT_S = 30.0
#: Seconds between two attempts to reach Redis while starting.
_REDIS_RETRY_S = 1.0
#: The signals that stop a supervisor run by :meth:`Supervisor.run_until_signalled`.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
    ) -> None:
        self.settings = settings
        self.id = supervisor_id or new_supervisor_id()
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
        self._client: redis.asyncio.Redis | None = None
        self._heartbeat: Heartbeat | None = None
        self._beat_task: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._recorded = False

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
        store = self._store = Store.from_settings(settings)
        applied = await asyncio.to_thread(store.migrate)
        if applied:
            log.info("database migrated to %s", applied[-1])
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
        try:
            async with self:
                if self.state is RunState.RUNNING and on_ready is not None:
                    on_ready(self.describe())
                await self.wait()
        finally:
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)
        if self.failure is not None:
            raise TmiClusterError(
                f"supervisor {self.id} stopped after a failure: {self.failure}"
            ) from self.failure

    def describe(self) -> str:
        """One line: the id, state, Redis and database (passwords masked)."""
        where = mask_url(self.redis_url or "")
        redis_shown = "embedded " + where if self.settings.embedded_redis else where
        return (
            f"supervisor {self.id} {self.state.value} (Redis: {redis_shown}; "
            f"database: {mask_url(self.settings.database.url)})"
        )

    # -- inside -----------------------------------------------------------------------------

    def _new_heartbeat(self, client: redis.asyncio.Redis) -> Heartbeat:
        ttl_s = self.keys.supervisor_ttl_s
        return Heartbeat(
            client,
            self.keys.supervisor_heartbeat(self.id),
            ttl_s=ttl_s,
            interval_s=min(self.settings.process.periodic_timer, ttl_s / 3),
            value=str(os.getpid()),
            outage=self.outage,
        )

    async def _wait_for_redis(self, heartbeat: Heartbeat) -> bool:
        """Beat once, retrying for at most ``redis_wait_s``; False when a stop came first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.redis_wait_s
        while not self._stop.is_set():
            try:
                await heartbeat.beat()
            except RedisUnavailableError as error:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise RedisUnavailableError(
                        f"{error} (waited {self.redis_wait_s:g} s): start Redis, or check redis.url"
                    ) from error
                self.outage.began(error, f"supervisor {self.id}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), min(_REDIS_RETRY_S, remaining))
            else:
                self.outage.ended()
                return True
        return False

    async def _beat(self, heartbeat: Heartbeat) -> None:
        try:
            await heartbeat.run(self._stop)
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
            if self._beat_task is not None:
                self._beat_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._beat_task
            await self._final_writes()
        finally:
            if self._store is not None:
                self._store.close()
            if self._embedded is not None:
                try:
                    await asyncio.to_thread(self._embedded.stop)
                except EmbeddedRedisError as error:
                    log.error("supervisor %s: %s", self.id, error)
            self.state = RunState.STOPPED

    async def _final_writes(self) -> None:
        if self._heartbeat is not None:
            await self._heartbeat.clear()  # an unreachable Redis lets the key expire instead
        if self._client is not None:
            with contextlib.suppress(Exception):  # closing sockets of a server that is gone
                await self._client.aclose()
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

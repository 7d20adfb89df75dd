"""The supervisor of one host: its services, its record, its heartbeat.

This release runs the supervisor's shell: it migrates the database, starts the private Redis
server when ``redis.url`` is empty, records itself in SQL (start and stop, with history), keeps a
heartbeat key in Redis, and on stop shields its final writes, stops Redis and cleans up. Worker
processes, scaling and the command streams build on it in later releases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable

import redis.asyncio

from tmi_cluster.bus import Heartbeat, Keys, connect_async, translate_errors
from tmi_cluster.config import Settings, mask_url
from tmi_cluster.embedded import EmbeddedRedis
from tmi_cluster.store import RunState, Store

__all__ = ["Supervisor", "new_supervisor_id"]

log = logging.getLogger(__name__)


def new_supervisor_id() -> str:
    """A unique supervisor id: the host name and random hex."""
    host = "".join(c if c.isalnum() or c in "-." else "-" for c in socket.gethostname())[:48]
    return f"{host}-{secrets.token_hex(4)}"


class Supervisor:
    """One host's supervisor. ``await run(stop)`` until ``stop`` is set.

    ``state`` moves STARTING -> RUNNING -> STOPPING -> STOPPED. ``on_ready`` is called once with a
    one-line description when the supervisor runs.
    """

    def __init__(self, settings: Settings, *, supervisor_id: str | None = None) -> None:
        self.settings = settings
        self.id = supervisor_id or new_supervisor_id()
        self.state = RunState.STARTING
        self.keys = Keys.from_settings(settings)
        self.redis_url: str | None = None

    async def run(
        self, stop: asyncio.Event, *, on_ready: Callable[[str], None] | None = None
    ) -> None:
        """Start the services, beat until ``stop`` is set, then shut down cleanly."""
        settings = self.settings
        store = Store.from_settings(settings)
        embedded: EmbeddedRedis | None = None
        try:
            applied = await asyncio.to_thread(store.migrate)
            if applied:
                log.info("database migrated to %s", applied[-1])
            if settings.embedded_redis:
                embedded = EmbeddedRedis(
                    settings.redis.embedded_dir, executable=settings.redis.embedded_server
                )
                await asyncio.to_thread(embedded.start)
                self.redis_url = embedded.url
            else:
                self.redis_url = settings.redis.url
            await self._serve(store, stop, on_ready)
        finally:
            if embedded is not None:
                await asyncio.shield(asyncio.to_thread(embedded.stop))
            store.close()
            self.state = RunState.STOPPED

    async def _serve(
        self, store: Store, stop: asyncio.Event, on_ready: Callable[[str], None] | None
    ) -> None:
        assert self.redis_url is not None
        client = connect_async(self.settings, url=self.redis_url, name=f"supervisor:{self.id}")
        try:
            with translate_errors(self.redis_url):
                await client.ping()
                await asyncio.to_thread(
                    store.record_supervisor, self.id, RunState.RUNNING, pid=os.getpid()
                )
                await self._heartbeat(client).beat()  # alive before it says so
                self.state = RunState.RUNNING
                if on_ready is not None:
                    on_ready(self._describe())
                await self._beat(client, stop)
        finally:
            self.state = RunState.STOPPING
            await asyncio.shield(self._final_writes(store, client))

    def _heartbeat(self, client: redis.asyncio.Redis) -> Heartbeat:
        ttl_s = self.keys.supervisor_ttl_s
        return Heartbeat(
            client,
            self.keys.supervisor_heartbeat(self.id),
            ttl_s=ttl_s,
            interval_s=min(self.settings.process.periodic_timer, ttl_s / 3),
            value=str(os.getpid()),
        )

    async def _beat(self, client: redis.asyncio.Redis, stop: asyncio.Event) -> None:
        await self._heartbeat(client).run(stop)

    async def _final_writes(self, store: Store, client: redis.asyncio.Redis) -> None:
        await self._heartbeat(client).clear()
        with contextlib.suppress(Exception):
            await client.aclose()
        await asyncio.to_thread(
            store.record_supervisor, self.id, RunState.STOPPED, pid=os.getpid(), detail="stopped"
        )

    def _describe(self) -> str:
        redis = (
            "embedded " + mask_url(self.redis_url or "")
            if self.settings.embedded_redis
            else (mask_url(self.redis_url or ""))
        )
        return (
            f"supervisor {self.id} running (Redis: {redis}; "
            f"database: {mask_url(self.settings.database.url)})"
        )

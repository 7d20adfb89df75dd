"""A cluster of ``tmi-cluster run`` processes against a simulator of the test's own, for the
tests of the application's side (sends, events, handlers)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import redis.asyncio
import redis.exceptions

from tmi_cluster.bus import Beat, Keys, ProcessStatus, live, wanted_changed
from tmi_cluster.config import Settings, load_settings
from tmi_cluster.errors import RedisUnavailableError
from tmi_cluster.simulator import ChatSimulator
from tmi_cluster.store import Store

from .test_cli import SCRIPT, _env

BOT = "tmibot"
TOKEN = "sometoken123"
#: The settings of a cluster that sends as BOT and reads anonymously.
IDENTITY = {
    "TMI_CLUSTER_TMI__IDENTITY__USERNAME": BOT,
    "TMI_CLUSTER_TMI__IDENTITY__PASSWORD": f"oauth:{TOKEN}",
    "TMI_CLUSTER_TMI__CONNECTION__READ_ANONYMOUSLY": "true",
}


class ProcessCluster:
    """Supervisors as processes, reading from ``sim``; ``extra`` settings as variables."""

    def __init__(
        self, folder: Path, sim: ChatSimulator, redis_url: str, prefix: str, **extra: str
    ) -> None:
        self.folder = folder
        self.db = f"sqlite:///{folder / 'cluster.db'}"
        self.vars = {
            "TMI_CLUSTER_REDIS__URL": redis_url,
            "TMI_CLUSTER_PREFIX": prefix,
            "TMI_CLUSTER_DATABASE__URL": self.db,
            "TMI_CLUSTER_TMI__CONNECTION__SERVER": sim.host,
            "TMI_CLUSTER_TMI__CONNECTION__PORT": str(sim.port),
            "TMI_CLUSTER_TMI__CONNECTION__SECURE": "false",
            "TMI_CLUSTER_TMI__CONNECTION__SIMULATE": "never",
            "TMI_CLUSTER_TMI__CONNECTION__CONNECT_INTERVAL": "0",
            "TMI_CLUSTER_THROTTLE__JOIN__ANONYMOUS_ALLOW": "200",
            "TMI_CLUSTER_SUPERVISOR__STALE": "2",
            "TMI_CLUSTER_PROCESS__TIMEOUT": "10",
            "TMI_CLUSTER_AUTO_SCALE__COOLDOWN": "0",
            "TMI_CLUSTER_LOG__LEVEL": "info",
            **extra,
        }
        self.env = _env(**self.vars)
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.client = redis.asyncio.Redis.from_url(redis_url)
        self.keys = Keys(prefix, 2.0, 3.0)

    def settings(self) -> Settings:
        """The cluster's settings, as an application would load them."""
        return load_settings(environ=self.vars, cwd=self.folder)

    def start(self, supervisor_id: str) -> None:
        log = (self.folder / f"{supervisor_id}.log").open("ab")
        self.running[supervisor_id] = subprocess.Popen(
            [SCRIPT, "run", "--id", supervisor_id],
            cwd=self.folder,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    async def workers(self) -> dict[str, ProcessStatus]:
        found: dict[str, Beat[ProcessStatus]] = await live(self.client, self.keys, "process")
        return {p: beat.status for p, beat in found.items()}

    async def worker_pids(self) -> dict[str, int]:
        return {p: s.pid for p, s in (await self.workers()).items()}

    async def want(self, names: list[str]) -> None:
        with Store(self.db) as store:
            await asyncio.to_thread(store.want, names)
        await wanted_changed(self.client, self.keys)

    async def held(self) -> dict[str, set[str]]:
        found = {}
        for process_id in await self.workers():
            raw: Any = await self.client.smembers(self.keys.process_held(process_id))
            found[process_id] = {m.decode() for m in raw}
        return found

    def logs(self) -> str:
        return "\n".join(
            f"== {p.name}\n{p.read_text()[-8000:]}" for p in sorted(self.folder.glob("*.log"))
        )

    async def until(self, check: Callable[[], Any], timeout_s: float, what: str) -> None:
        """Poll ``check`` (other processes' state) until it holds; the logs on a timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                result = check()
                if asyncio.iscoroutine(result):
                    result = await result
            except (RedisUnavailableError, redis.exceptions.ConnectionError):
                result = False
            if result:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s:g} s: {what}\n{self.logs()}")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        pids = [c.pid for p in self.running.values() for c in _children(p.pid)]
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running.values():
            try:
                await asyncio.to_thread(process.wait, 30)
            except subprocess.TimeoutExpired:
                process.kill()
        for pid in pids:  # every worker ended: no orphan left
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).wait(10)
        await self.client.aclose()


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return []

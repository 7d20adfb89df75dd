"""``tmi-cluster demo``: the whole cluster on this machine, with nothing set up and nothing left.

A folder of its own in the system's temporary folder holds a SQLite database and a private
Redis server; a supervisor runs there with its worker processes, reading from the built-in Twitch
chat simulator (never from Twitch: the demo's configuration file says so, whatever the current
folder or the environment holds); a few hundred simulated channels are joined; a one-screen
summary (channels joined, messages per second, the workers, the last chat lines) is redrawn every
second on a terminal, or printed every few seconds elsewhere, with a progress bar while the
channels are joined. The supervisor serves the dashboard (on 127.0.0.1:8080, or a free port when
that one is taken), behind a password made for the run and printed with its address. Ctrl-C (or
SIGTERM) stops it all: the workers, the web pages, the Redis server, and the folder is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import psutil

from tmi_cluster.bus import (
    AsyncRedis,
    Beat,
    Keys,
    ProcessStatus,
    close_client,
    connect_async,
    live,
    wanted_changed,
)
from tmi_cluster.bus.events import EventReader
from tmi_cluster.config import ENV_PREFIX, load_settings
from tmi_cluster.errors import RedisUnavailableError
from tmi_cluster.events import MessageEvent
from tmi_cluster.store import Store
from tmi_cluster.tasks import cancel_and_wait

if TYPE_CHECKING:
    from tmi_cluster.supervisor.supervisor import Supervisor

__all__ = ["DEMO_CHANNELS", "DEMO_WEB_PORT", "Demo", "demo_toml", "progress"]

#: The demo's folders, in the system's temporary folder.
_PREFIX = "tmi-cluster-demo-"
#: The file naming the process that owns a demo folder.
_OWNER = "demo.pid"

#: Simulated channels the demo joins unless told otherwise.
DEMO_CHANNELS = 2_000
#: The dashboard's port, when it is free.
DEMO_WEB_PORT = 8080
#: Chat lines the summary shows.
_LINES = 6


def demo_toml(
    folder: Path, *, replicas: int = 1, web_port: int = DEMO_WEB_PORT, password: str = ""
) -> str:
    """The demo's whole configuration: everything in ``folder``, the simulator always,
    ``replicas`` copies of each channel, the dashboard on ``web_port`` (0: any free) behind
    ``password`` (empty: one made by the web pages)."""
    return (
        "# tmi-cluster demo: written by 'tmi-cluster demo', deleted when it stops\n"
        f"[coordinator]\nreplicas = {replicas}\n\n"
        f'[web]\nenabled = true\nport = {web_port}\npassword = "{password}"\n\n'
        f'[database]\nurl = "sqlite:///{folder / "demo.db"}"\n\n'
        f'[redis]\nembedded_dir = "{folder / "redis"}"\n\n'
        '[tmi.connection]\nsimulate = "always"\nconnect_interval = 0.05\n\n'
        "[throttle.join]\nanonymous_allow = 200\n\n"
        "[auto_scale]\ncooldown = 0\n\n[auto_scale.processes]\nmin = 2\nmax = 2\n\n"
        '[log]\nlevel = "warning"\n'
    )


class Demo:
    """One demo run: :meth:`run` until ``stop`` is set; the folder is gone when it returns."""

    def __init__(
        self, *, channels: int = DEMO_CHANNELS, out: TextIO = sys.stdout, replicas: int = 1
    ) -> None:
        self.channels = [f"demo{n:04}" for n in range(1, channels + 1)]
        self.out = out
        #: Copies of each channel (``coordinator.replicas``): 2 holds each on both workers.
        self.replicas = replicas
        _remove_stale_folders()
        self.folder = Path(tempfile.mkdtemp(prefix=_PREFIX))
        (self.folder / _OWNER).write_text(str(os.getpid()), encoding="utf-8")
        self.config = self.folder / "tmi-cluster.toml"
        self.lines: deque[str] = deque(maxlen=_LINES)
        #: The dashboard's sign-in: made for this run, shown with its address.
        self.password = secrets.token_urlsafe(12)
        #: Where the dashboard is, once served.
        self.url: str | None = None
        #: Why the summary could not be read last time (Redis did not answer), else None.
        self.waiting: str | None = None

    async def run(self, stop: asyncio.Event, on_ready: Callable[[str], None] | None = None) -> None:
        """Start everything, show the summary until ``stop``, then stop everything and delete
        the folder (also after an error)."""
        from tmi_cluster.supervisor import supervisor as supervisors

        try:
            self.config.write_text(
                demo_toml(
                    self.folder,
                    replicas=self.replicas,
                    web_port=DEMO_WEB_PORT if _free(DEMO_WEB_PORT) else 0,
                    password=self.password,
                ),
                encoding="utf-8",
            )
            # the workers inherit the environment: nothing of the user's cluster leaks in
            ignored = sorted(n for n in os.environ if n.startswith(ENV_PREFIX))
            for name in ignored:
                del os.environ[name]
            if ignored:
                print(
                    f"note: the demo runs on its own settings; ignored: {', '.join(ignored)}",
                    file=self.out,
                )
            os.environ[f"{ENV_PREFIX}CONFIG"] = str(self.config)
            settings = load_settings(self.config, environ={}, cwd=self.folder)
            supervisor = supervisors.Supervisor(
                settings, supervisor_id="demo", config_path=str(self.config)
            )
            async with supervisor:
                self.url = supervisor.web.url if supervisor.web is not None else None
                if on_ready is not None:
                    on_ready(
                        f"{supervisor.describe()}\nfolder: {self.folder}\n"
                        f"{self.dashboard()}\n{self.hints()}"
                    )
                with Store.from_settings(settings) as store:
                    await asyncio.to_thread(store.want, self.channels)
                client = connect_async(settings, url=supervisor.redis_url, name="demo")
                keys = Keys.from_settings(settings)
                try:
                    await _patiently(lambda: wanted_changed(client, keys), stop)
                    await self._show(client, keys, stop, supervisor)
                finally:
                    await close_client(client)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    async def _show(
        self, client: AsyncRedis, keys: Keys, stop: asyncio.Event, supervisor: Supervisor
    ) -> None:
        reader = EventReader(client, keys, types=frozenset({MessageEvent.__name__}))
        await _patiently(reader.start, stop)
        terminal = self.out.isatty()
        every = 1.0 if terminal else 5.0
        reading = asyncio.create_task(self._read(reader), name="demo chat")
        stopped = asyncio.create_task(supervisor.wait(), name="demo supervisor")
        try:
            workers: dict[str, Beat[ProcessStatus]] = {}
            while not stop.is_set() and not stopped.done():
                try:
                    workers = await live(client, keys, "process")
                except RedisUnavailableError as error:  # a slow moment: shown, and waited out
                    self.waiting = str(error)
                else:
                    self.waiting = None
                self._draw(workers, terminal)
                waiting = asyncio.create_task(stop.wait())
                await asyncio.wait(
                    {waiting, stopped}, timeout=every, return_when=asyncio.FIRST_COMPLETED
                )
                await cancel_and_wait(waiting)
        finally:
            await reader.aclose()  # its loop ends at its next turn, cancelled or not
            await cancel_and_wait(reading, stopped, what="the demo's readers", timeout_s=5.0)

    async def _read(self, reader: EventReader) -> None:
        async for event in reader:
            if isinstance(event, MessageEvent):
                who = event.display_name or event.user
                self.lines.append(f"#{event.channel} <{who}> {event.text}"[:100])

    def dashboard(self) -> str:
        """Where the dashboard is and how to sign in."""
        if self.url is None:
            return "dashboard: not served"
        return f"dashboard: {self.url}  (sign in as admin, password {self.password})"

    def hints(self) -> str:
        """What to try in another terminal (from any folder)."""
        command = f"tmi-cluster --config {self.config}"
        return (
            "try in another terminal:\n"
            f"  {command} list\n  {command} tail\n  {command} send demo0001 hello\n"
            f"  {command} channels --json"
        )

    def _draw(self, workers: dict[str, Beat[ProcessStatus]], terminal: bool) -> None:
        held = sum(beat.status.channels for beat in workers.values())
        rate = sum(beat.status.messages_per_s for beat in workers.values())
        copies = ""
        if self.replicas > 1:  # each channel held twice; each message read twice, shown once
            copies = f" (each on {self.replicas} workers: {held} held)"
            rate /= self.replicas
        joined = min(len(self.channels), held // self.replicas)
        head = (
            f"tmi-cluster demo: {joined} of {len(self.channels)} simulated channels "
            f"joined{copies}, {rate:.0f} messages/s, {len(workers)} worker processes"
        )
        if self.waiting is not None:
            head += f" (waiting for Redis: {self.waiting})"
        if not terminal:
            print(head, file=self.out, flush=True)
            return
        screen = [
            head,
            progress(joined, len(self.channels)),
            self.dashboard(),
            "",
            *(
                f"  {p}: {b.status.state}, {b.status.channels} channels, "
                f"{b.status.memory_bytes // 1048576} MiB"
                for p, b in sorted(workers.items())
            ),
            "",
            "last chat lines:",
            *(f"  {line}" for line in self.lines),
            "",
            self.hints(),
            f"Ctrl-C stops everything and deletes {self.folder} ({time.strftime('%H:%M:%S')})",
        ]
        self.out.write("\x1b[H\x1b[2J" + "\n".join(screen) + "\n")
        self.out.flush()


async def _patiently(call: Callable[[], Awaitable[object]], stop: asyncio.Event) -> None:
    """``call()`` until Redis answers it (a loaded machine can make the private server slow
    for a moment: the demo waits, it does not end), or until ``stop``."""
    while not stop.is_set():
        try:
            await call()
        except RedisUnavailableError:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        else:
            return


def progress(done: int, total: int, width: int = 40) -> str:
    """A progress bar: ``[#####.....]  50 % joined``; ``all joined`` once done."""
    if total <= 0 or done >= total:
        return "all joined"
    filled = width * done // total
    return f"[{'#' * filled}{'.' * (width - filled)}] {100 * done // total:3d} % joined"


def _free(port: int) -> bool:
    """Whether ``port`` can be listened on at 127.0.0.1 now."""
    with socket.socket() as probe, contextlib.suppress(OSError):
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server does
        probe.bind(("127.0.0.1", port))
        return True
    return False


def _remove_stale_folders() -> None:
    """Delete the folders of demos whose process is gone (killed, or its terminal closed
    before it could clean up)."""
    for folder in Path(tempfile.gettempdir()).glob(_PREFIX + "*"):
        try:
            owner = int((folder / _OWNER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not ours to judge (no owner file: another version, or being made)
        if not psutil.pid_exists(owner):
            shutil.rmtree(folder, ignore_errors=True)

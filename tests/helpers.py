"""What the tests share: running an async test, waiting for a condition, running a documented
example. Waits synchronise on an event where the code offers one (:func:`until_set`), and poll
another process's state otherwise (:func:`until`, :func:`wait_for`), always with a deadline."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import inspect
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import redis.asyncio

from tmi_cluster.bus import Heartbeat, Keys, ProcessStatus

if TYPE_CHECKING:
    from tmi_cluster import Cluster

P = ParamSpec("P")
T = TypeVar("T")

__all__ = [
    "Foreground",
    "beat_process",
    "run",
    "run_documented_example",
    "until",
    "until_set",
    "wait_for",
]


class Foreground:
    """A command in the foreground, as a user runs it in a terminal: its lines read as they
    come (:meth:`line`), stopped with Ctrl-C (SIGINT) by :meth:`stop` or at the end of the
    ``with`` block."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def __enter__(self) -> Foreground:
        return self

    def __exit__(self, *_: object) -> None:
        if self.process.poll() is None:
            self.stop()

    def line(self) -> str:
        """Its next line of standard output ("" once it ended)."""
        assert self.process.stdout is not None
        return self.process.stdout.readline()

    def stop(self) -> tuple[int, str]:
        """Ctrl-C, then its exit code and standard error."""
        self.process.send_signal(signal.SIGINT)
        _, err = self.process.communicate(timeout=60)
        return self.process.returncode, err


def run(test: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """Run an async test on a fresh event loop."""

    @functools.wraps(test)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return asyncio.run(test(*args, **kwargs))

    return wrapper


async def until(
    check: Callable[[], Any | Awaitable[Any]], timeout_s: float = 15.0, what: str = ""
) -> Any:
    """Poll ``check`` (state of other processes or sockets, which have no event to wait on)
    until it returns something true, and return it; AssertionError naming ``what`` after
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what or check}")
        await asyncio.sleep(0.02)


async def until_set(check: Callable[[], bool], changed: asyncio.Event, timeout_s: float) -> None:
    """Wait until ``check()`` holds, woken by ``changed`` (set by the code under test whenever
    what ``check`` reads changes); TimeoutError after ``timeout_s``."""

    async def wait() -> None:
        while not check():
            changed.clear()
            await changed.wait()

    await asyncio.wait_for(wait(), timeout_s)


def wait_for(check: Callable[[], Any], timeout_s: float = 20.0, what: str = "") -> Any:
    """:func:`until` for synchronous tests."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or check}")
        time.sleep(0.02)


def run_documented_example(document: str, test: str) -> None:
    """Run the Python block of ``docs/<document>`` that defines ``test``, then ``test``."""
    text = (Path(__file__).parent.parent / "docs" / document).read_text(encoding="utf-8")
    blocks = [part.split("```", 1)[0] for part in text.split("```python\n")[1:]]
    code = next(block for block in blocks if f"def {test}(" in block)
    namespace: dict[str, Any] = {}
    exec(compile(code, f"docs/{document}", "exec"), namespace)  # noqa: S102 - our own docs
    namespace[test]()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server a test starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def streamed_keys(app: Cluster) -> AsyncIterator[collections.Counter[str]]:
    """How often each de-duplication key comes through the event stream, counted from now
    until the block ends."""
    reader = await app.events().start()
    counts: collections.Counter[str] = collections.Counter()

    async def read() -> None:
        async for event in reader:
            if event.dedupe_key is not None:
                counts[event.dedupe_key] += 1

    reading = asyncio.create_task(read())
    try:
        yield counts
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        await reader.aclose()


async def beat_process(client: redis.asyncio.Redis, keys: Keys, process_id: str) -> None:
    """A live heartbeat of worker process ``process_id`` (one beat, alive for 30 s)."""
    await Heartbeat(
        client, keys, "process", process_id, ttl_s=30.0, interval_s=1.0, status_of=ProcessStatus
    ).beat()

"""A stop deadline that always holds: a thread that ends the process when its stop overruns.

A graceful stop waits for things (a hand-over nobody takes, Redis, a socket, a handler in a
thread); any of them can hang, and a hang inside the event loop cannot be ended from the
event loop. :class:`StopWatchdog` is a plain thread, blocked on a condition until it is armed;
once armed, if the process has not ended by the deadline, it logs what the process was still
doing (the stop's phase, every asyncio task's innermost await, every thread's stack) and ends
the process at once with :data:`EXIT_STOP_DEADLINE`. Arming again can only bring the deadline
forward, never push it back, and arming is safe from any thread (the worker's watcher of its
standard input arms it without the event loop, which may be the thing that hangs).

Around it, the rest of a worker's stop that must hold whatever the event loop does:
:func:`stop_times` (a stop's hard and soft deadlines), :func:`watch_parent` (the supervisor's
end seen as the end of standard input, on a thread, and on Linux as
:data:`PARENT_DEATH_SIGNAL`), :func:`force_exit` (a second signal ends the process at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import CoroutineType, FrameType, GeneratorType
from typing import Any

__all__ = [
    "EXIT_STOP_DEADLINE",
    "PARENT_DEATH_SIGNAL",
    "StopWatchdog",
    "describe_tasks",
    "force_exit",
    "stop_times",
    "watch_parent",
]

log = logging.getLogger(__name__)

#: Exit code of a process ended by its watchdog (sysexits EX_SOFTWARE).
EXIT_STOP_DEADLINE = 70
#: Of a stop's time, the part kept for closing once the hand-over ends (at most).
_CLOSE_RESERVE_S = 1.0
_PR_SET_PDEATHSIG = 1
#: The signal the kernel sends a worker when its supervisor dies (Linux): an orphan's stop.
PARENT_DEATH_SIGNAL = signal.SIGHUP


class StopWatchdog:
    """Ends the process when a stop overruns its deadline; see the module's docstring.

    ``describe`` (called on the watchdog's thread) says what the stop was doing; ``loop`` is
    the event loop whose tasks are described; ``exit`` ends the process (``os._exit``)."""

    def __init__(
        self,
        name: str,
        *,
        describe: Callable[[], str] = lambda: "",
        loop: asyncio.AbstractEventLoop | None = None,
        exit: Callable[[int], object] = os._exit,
    ) -> None:
        self.name = name
        self._describe = describe
        self._loop = loop
        self._exit = exit
        self._condition = threading.Condition()
        self._deadline: float | None = None  # monotonic
        self._why = ""
        self._thread = threading.Thread(target=self._watch, name="stop-watchdog", daemon=True)
        self._thread.start()

    @property
    def deadline(self) -> float | None:
        """When (monotonic) the process is ended, or None while not armed."""
        return self._deadline

    def arm(self, within_s: float, why: str) -> None:
        """End the process in ``within_s`` seconds unless it ends first; an earlier deadline
        stays. Safe from any thread."""
        deadline = time.monotonic() + max(0.0, within_s)
        with self._condition:
            if self._deadline is None or deadline < self._deadline:
                self._deadline = deadline
                self._why = why
                self._condition.notify()

    def _watch(self) -> None:
        with self._condition:
            while True:
                if self._deadline is None:
                    self._condition.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
            why = self._why
        self._end(why)

    def _end(self, why: str) -> None:
        try:
            doing = self._describe()
        except Exception as error:  # a description is a courtesy; the exit is the contract
            doing = f"(not described: {error!r})"
        tasks = describe_tasks(self._loop) if self._loop is not None else []
        log.error(
            "%s: its stop (%s) overran its deadline; ending the process now (exit %d). "
            "It was %s; still waiting: %s",
            self.name,
            why,
            EXIT_STOP_DEADLINE,
            doing or "stopping",
            "; ".join(tasks) or "no asyncio task",
        )
        for handler in logging.getLogger().handlers:
            try:
                handler.flush()
            except Exception:  # noqa: S112  # a closed stream: nothing more to say there
                continue
        with contextlib.suppress(OSError, ValueError, AttributeError):  # no usable stderr
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        self._exit(EXIT_STOP_DEADLINE)


def describe_tasks(loop: asyncio.AbstractEventLoop) -> list[str]:
    """Each unfinished task of ``loop``: its name and where it waits (the innermost frame of its
    chain of awaits). Read from another thread while the loop may be running: a snapshot that
    may be slightly off, good enough to say what a stop hangs on."""
    try:
        tasks = list(asyncio.all_tasks(loop))
    except RuntimeError:  # the set changed size under us, many times over
        return ["(the tasks could not be listed)"]
    lines = []
    for task in sorted(tasks, key=lambda t: t.get_name()):
        if task.done():
            continue
        lines.append(f"{task.get_name()} at {_innermost(task.get_coro())}")
    return lines


def _innermost(coro: Any) -> str:
    """Where a coroutine's chain of awaits waits: the deepest frame of this package (the code
    that decided to wait) and, when deeper, the innermost frame (the library's wait)."""
    frames: list[str] = []
    ours = -1
    awaiting = ""
    while coro is not None and len(frames) < 100:
        frame: FrameType | None = None
        if isinstance(coro, CoroutineType):
            frame, coro = coro.cr_frame, coro.cr_await
        elif isinstance(coro, GeneratorType):
            frame, coro = coro.gi_frame, coro.gi_yieldfrom
        elif isinstance(coro, asyncio.Task):
            awaiting = f" (awaiting the task {coro.get_name()})"
            break
        else:  # a future, or an awaitable of a C extension
            break
        if frame is not None:
            code = frame.f_code
            if "/tmi_cluster/" in code.co_filename:
                ours = len(frames)
            frames.append(
                f"{code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno} in {code.co_name}"
            )
    if not frames:
        return "?" + awaiting
    if 0 <= ours < len(frames) - 1:
        return f"{frames[ours]} -> {frames[-1]}{awaiting}"
    return frames[-1] + awaiting


def watch_parent(orphaned: Callable[[], None]) -> None:
    """Call ``orphaned`` (from a thread) when the parent (the supervisor) ends: the end of
    standard input (the supervisor holds its other end; seen on a thread, which arms the
    watchdog without the event loop), and on Linux the parent-death signal
    (:data:`PARENT_DEATH_SIGNAL`)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, PARENT_DEATH_SIGNAL, 0, 0, 0)

    def read_until_end() -> None:
        with contextlib.suppress(OSError):
            while os.read(0, 4096):  # the raw descriptor: no buffer lock held at exit
                pass
        orphaned()

    threading.Thread(target=read_until_end, name="parent-watch", daemon=True).start()


def stop_times(within_s: float) -> tuple[float, float]:
    """A stop's (hard, soft) deadlines in seconds from now: the watchdog ends the process at the
    hard one, just before the supervisor's SIGKILL; the hand-over ends at the soft one, leaving a
    reserve for closing."""
    hard = within_s - min(0.5, within_s * 0.1)
    return hard, hard - min(_CLOSE_RESERVE_S, hard / 2)


def force_exit(received: signal.Signals) -> None:
    """End the process at once by ``received`` (its default action), as if never handled."""
    logging.shutdown()
    signal.signal(received, signal.SIG_DFL)
    os.kill(os.getpid(), received)

"""Processes started by the tests and benchmarks, and none left behind.

A supervisor starts its workers in sessions of their own (a Ctrl-C on the terminal reaches the
supervisor only), so stopping a supervisor's process group does not reach its workers, and a
worker whose stop hangs outlives whatever started the supervisor. :class:`ProcessHarness` tags
every process it starts with an environment variable that their children inherit
(:data:`TAG_VARIABLE`, outside the ``TMI_CLUSTER_`` settings), so that :meth:`~ProcessHarness.reap`
finds every descendant however it was re-parented, and kills what is still running after a
deadline. Use it as a context manager: the reaping happens also when the test or benchmark
fails.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import IO, Any, Self

import psutil

__all__ = ["TAG_VARIABLE", "ProcessHarness"]

log = logging.getLogger(__name__)

#: The environment variable that marks a process (and its children) as the harness's.
TAG_VARIABLE = "TMI_HARNESS_TAG"  # not TMI_CLUSTER_*: those are settings


class ProcessHarness:
    """Starts commands tagged as this harness's, and reaps every tagged process at the end.

    :meth:`reap` returns the processes it had to kill: a test that expects a clean stop
    asserts it is empty."""

    def __init__(self, *, grace_s: float = 10.0) -> None:
        self.tag = secrets.token_hex(8)
        self.grace_s = grace_s
        self.started: list[subprocess.Popen[bytes]] = []

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) with the harness's tag."""
        env = dict(os.environ if base is None else base)
        env[TAG_VARIABLE] = self.tag
        return env

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        stdout: IO[Any] | int | None = None,
        stderr: IO[Any] | int | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` tagged, in a process group of its own."""
        process = subprocess.Popen(
            list(argv),
            env=self.env(env),
            cwd=cwd,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        self.started.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], *, within_s: float = 60.0) -> list[int]:
        """Stop ``process`` (a supervisor) as a process manager does: SIGTERM, SIGKILL after
        ``within_s``; then :meth:`reap` what it left. The pids the reaping had to kill."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(within_s)
            except subprocess.TimeoutExpired:
                log.warning(
                    "harness: pid %d did not stop within %g s; killing it", process.pid, within_s
                )
                process.kill()
                process.wait()
        return self.reap()

    def tagged(self) -> list[psutil.Process]:
        """Every live process carrying this harness's tag (zombies excluded)."""
        found = []
        for process in psutil.process_iter():
            try:
                if process.status() == psutil.STATUS_ZOMBIE:
                    continue
                if process.environ().get(TAG_VARIABLE) == self.tag:
                    found.append(process)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def reap(self, deadline_s: float | None = None) -> list[int]:
        """Wait up to ``deadline_s`` (default :attr:`grace_s`) for every tagged process to end
        by itself, then kill what is left, each with its process group. The pids killed."""
        deadline = time.monotonic() + (self.grace_s if deadline_s is None else deadline_s)
        while (left := self.tagged()) and time.monotonic() < deadline:
            time.sleep(0.1)
        killed = []
        for process in left:
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError, PermissionError):
                log.warning(
                    "harness: killing %s (pid %d), still running",
                    " ".join(process.cmdline()),
                    process.pid,
                )
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    group = os.getpgid(process.pid)
                    if group != os.getpgrp():  # never the harness's own group
                        os.killpg(group, signal.SIGKILL)
                process.kill()
                killed.append(process.pid)
        for started in self.started:  # collected: no zombie of ours either
            with contextlib.suppress(subprocess.TimeoutExpired):
                started.wait(5)
        return killed

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        killed = self.reap()
        if killed and exc_type is None:
            raise AssertionError(f"processes left running and killed by the harness: {killed}")

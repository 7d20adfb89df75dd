"""The stop watchdog: a deadline that holds whatever the stop waits for, in real processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time

from tmi_cluster.worker.watchdog import EXIT_STOP_DEADLINE, StopWatchdog, describe_tasks

from .helpers import run


def test_an_earlier_deadline_wins_and_a_later_one_never_pushes_it_back() -> None:
    fired = threading.Event()
    codes: list[int] = []

    def end(code: int) -> None:
        codes.append(code)
        fired.set()

    watchdog = StopWatchdog("test", exit=end)
    assert watchdog.deadline is None
    started = time.monotonic()
    watchdog.arm(30.0, "slow")
    watchdog.arm(0.3, "sooner")
    watchdog.arm(60.0, "later")  # ignored: the deadline only comes forward
    assert fired.wait(5.0)
    assert 0.25 <= time.monotonic() - started < 3.0
    assert codes == [EXIT_STOP_DEADLINE]


def test_an_unarmed_watchdog_never_fires() -> None:
    fired = threading.Event()
    StopWatchdog("test", exit=lambda code: fired.set())
    assert not fired.wait(0.5)


@run
async def test_describe_tasks_names_each_task_and_where_it_waits() -> None:
    async def waits_here(event: asyncio.Event) -> None:
        await event.wait()

    event = asyncio.Event()
    task = asyncio.create_task(waits_here(event), name="the waiter")
    await asyncio.sleep(0)
    lines = describe_tasks(asyncio.get_running_loop())
    waiter = [line for line in lines if line.startswith("the waiter at ")]
    assert waiter, lines
    assert "in wait" in waiter[0]  # asyncio.Event.wait, the innermost frame
    event.set()
    await task


def test_a_process_whose_event_loop_hangs_is_ended_at_its_deadline() -> None:
    script = textwrap.dedent(
        """
        import asyncio, logging, time
        from tmi_cluster.worker.watchdog import StopWatchdog

        async def main():
            watchdog = StopWatchdog("hung", loop=asyncio.get_running_loop(),
                                    describe=lambda: "waiting for nothing")
            watchdog.arm(0.5, "asked to stop")
            time.sleep(30)  # the event loop blocked: nothing in it can end the process

        logging.basicConfig(level=logging.INFO)
        asyncio.run(main(), debug=False)
        """
    )
    started = time.monotonic()
    ended = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=20, check=False
    )
    assert ended.returncode == EXIT_STOP_DEADLINE, ended.stderr
    assert time.monotonic() - started < 10.0
    assert "hung: its stop (asked to stop) overran its deadline" in ended.stderr
    assert "It was waiting for nothing" in ended.stderr
    assert "Current thread" in ended.stderr  # every thread's stack follows, for the reader

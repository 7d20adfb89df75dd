"""The worker's composition: a bounded queue between the read path and the handlers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from tmi_cluster import EventQueue, Pool, Settings, Worker, WorkerState
from tmi_cluster.events import Event, MessageEvent
from tmi_cluster.simulator import ChatSimulator

from .helpers import run, until_set
from .test_connection import TIMEOUT_S
from .test_pool import _options


async def _until(check: Callable[[], bool], changed: asyncio.Event) -> None:
    await until_set(check, changed, TIMEOUT_S)


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
@run
async def test_a_stuck_handler_never_stalls_reading(
    policy: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tmi_cluster.worker")
    async with ChatSimulator(channels=["alpha"], seed=3) as sim:
        gate = asyncio.Event()
        changed = asyncio.Event()
        handled: list[str] = []

        async def slow(event: Event) -> None:
            if isinstance(event, MessageEvent):
                await gate.wait()  # stuck until the test opens the gate
                handled.append(event.message_id or "")
                changed.set()

        queue = EventQueue(50, policy=policy)  # type: ignore[arg-type]

        def put(event: Event) -> None:
            queue.put(event)
            changed.set()

        pool = Pool(_options(sim), connect_interval_s=0, on_event=put)
        async with Worker(pool, queue, [slow]) as worker:
            assert (await pool.join(["alpha"]))["alpha"].ok
            lines = [line for line in sim.generate(600, "alpha") if line.command == "PRIVMSG"]
            ids = [line.message_id or "" for line in lines]
            # every line was read while the handler was stuck: the queue filled and dropped
            await _until(lambda: queue.put_count >= len(ids), changed)
            assert queue.dropped > 0
            await sim.wait_until(lambda: sim.buffered_bytes() == 0)
            assert len(queue) == 50
            assert handled == []  # the handler is stuck on the first message
            gate.set()
            await _until(lambda: len(queue) == 0 and len(handled) >= 40, changed)
            assert queue.dropped + len(queue) + worker.dispatched == queue.put_count
            if policy == "drop_oldest":
                assert handled[-1] == ids[-1]  # the newest kept
            else:
                assert handled[1] == ids[1]  # the oldest kept, the newest dropped
                assert ids[-1] not in handled
        assert worker.state is WorkerState.CLOSED
    overflows = [r for r in caplog.records if "fall behind" in r.getMessage()]
    # once per overflow, not once per event: the queue filled before the handler's first
    # batch, and again while it was stuck
    assert 1 <= len(overflows) <= 2 < queue.dropped


@run
async def test_a_failing_handler_is_counted_and_the_others_go_on() -> None:
    async with ChatSimulator(channels=["alpha"], seed=4) as sim:
        changed = asyncio.Event()
        seen: list[str] = []

        def broken(event: Event) -> None:
            raise RuntimeError("an application bug")

        def good(event: Event) -> None:  # a plain function works too
            if isinstance(event, MessageEvent):
                seen.append(event.message_id or "")
                changed.set()

        queue = EventQueue(1000)
        pool = Pool(_options(sim), connect_interval_s=0, on_event=queue.put)
        async with Worker(pool, queue, [broken, good]) as worker:
            await pool.join(["alpha"])
            wanted = {ln.message_id for ln in sim.generate(50, "alpha") if ln.command == "PRIVMSG"}
            await _until(lambda: wanted <= set(seen), changed)
            assert worker.handler_errors >= len(wanted)
            assert worker.state is WorkerState.RUNNING


def test_the_worker_reads_its_queue_settings(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings("[handlers]\nqueue_size = 7\nqueue_full = 'drop_newest'\n")
    worker = Worker.from_settings(settings)
    assert (worker.queue.maxsize, worker.queue.policy) == (7, "drop_newest")
    assert worker.state is WorkerState.IDLE
    with pytest.raises(ValueError, match="at least one event"):
        EventQueue(0)

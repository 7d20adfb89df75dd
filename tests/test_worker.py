"""The worker: a pool and everything after it, the class the worker process runs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import pytest
import redis.asyncio

import tmi_cluster
from tmi_cluster import (
    Dispatcher,
    EventReader,
    Handlers,
    Pool,
    Settings,
    Worker,
    WorkerState,
)
from tmi_cluster.bus import Keys
from tmi_cluster.bus.events import Seen
from tmi_cluster.events import (
    CheerEvent,
    ClusterClientRegistered,
    Event,
    MessageEvent,
    PeriodicTimerCalled,
)
from tmi_cluster.simulator import ChatSimulator
from tmi_cluster.simulator.traffic import GeneratedLine
from tmi_cluster.worker.delivery import event_key

from .helpers import run, run_documented_example, until_set
from .test_connection import TIMEOUT_S
from .test_pool import _options


async def _until(check: Callable[[], bool], changed: asyncio.Event) -> None:
    await until_set(check, changed, TIMEOUT_S)


def _message(line: GeneratedLine) -> bool:
    return line.command == "PRIVMSG" and line.message_id is not None


def _registry(handler: Callable[[Event], object], kind: type[Event] = Event) -> Handlers:
    handlers = Handlers()
    handlers.add(kind, handler)  # type: ignore[arg-type]
    return handlers


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
@run
async def test_a_stuck_handler_never_stalls_reading(
    policy: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tmi_cluster.worker.handlers")
    async with ChatSimulator(channels=["alpha"], seed=3) as sim:
        gate = asyncio.Event()
        changed = asyncio.Event()
        handled: list[str] = []

        async def slow(event: MessageEvent) -> None:
            await gate.wait()  # stuck until the test opens the gate
            handled.append(event.message_id or "")
            changed.set()

        dispatcher = Dispatcher(_registry(slow, MessageEvent), queue_size=50, policy=policy)  # type: ignore[arg-type]
        pool = Pool(_options(sim), connect_interval_s=0)
        async with Worker(pool, dispatcher) as worker:
            observed = pool.on_event  # the worker's: it took the pool's events

            def put(event: Event) -> None:
                observed(event)
                changed.set()

            pool.on_event = put
            assert (await pool.join(["alpha"]))["alpha"].ok
            lines = [line for line in sim.generate(600, "alpha") if line.command == "PRIVMSG"]
            ids = [line.message_id or "" for line in lines]
            # every line was read while the handler was stuck: the queue filled and dropped
            await _until(lambda: dispatcher.put_count >= len(ids), changed)
            assert dispatcher.dropped > 0
            await sim.wait_until(lambda: sim.buffered_bytes() == 0)
            assert dispatcher.waiting == 50
            assert handled == []  # the handler is stuck on the first message
            gate.set()
            assert await dispatcher.drain(TIMEOUT_S)
            assert dispatcher.dropped + worker.dispatched == dispatcher.put_count == len(ids)
            assert len(handled) == worker.dispatched == 51  # the first one, and 50 waiting
            if policy == "drop_oldest":
                assert handled[-1] == ids[-1]  # the newest kept
            else:
                assert handled[1] == ids[1]  # the oldest kept, the newest dropped
                assert ids[-1] not in handled
        assert worker.state is WorkerState.CLOSED
    overflows = [r for r in caplog.records if "fall behind" in r.getMessage()]
    assert len(overflows) == 1 < dispatcher.dropped  # once per overflow, not once per event


@run
async def test_a_failing_handler_is_counted_and_the_others_go_on() -> None:
    async with ChatSimulator(channels=["alpha"], seed=4) as sim:
        changed = asyncio.Event()
        seen: list[str] = []

        def broken(event: Event) -> None:
            raise RuntimeError("an application bug")

        def good(event: Event) -> None:  # a plain function: run in the handlers' threads
            if isinstance(event, MessageEvent):
                seen.append(event.message_id or "")
                sim_loop.call_soon_threadsafe(changed.set)

        sim_loop = asyncio.get_running_loop()
        handlers = Handlers()
        handlers.add(Event, broken)
        handlers.add(Event, good)
        pool = Pool(_options(sim), connect_interval_s=0)
        async with Worker(pool, Dispatcher(handlers)) as worker:
            await pool.join(["alpha"])
            wanted = {ln.message_id for ln in sim.generate(50, "alpha") if ln.command == "PRIVMSG"}
            await _until(lambda: wanted <= set(seen), changed)
            assert worker.handler_errors >= len(wanted)
            assert worker.state is WorkerState.RUNNING


def test_the_worker_reads_its_queue_settings(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings("[handlers]\nqueue_size = 7\nqueue_full = 'drop_newest'\n")
    worker = Worker.from_settings(settings, handlers=[lambda event: None])
    dispatcher = worker.dispatcher
    assert (dispatcher.queue_size, dispatcher.policy) == (7, "drop_newest")
    assert worker.state is WorkerState.IDLE
    assert worker.delivery.seen is None
    assert worker.publisher is None
    assert worker.outbox is None
    with pytest.raises(ValueError, match="at least one event"):
        Dispatcher(Handlers(), queue_size=0)


@run
async def test_the_cluster_composition_reads_checks_handles_and_streams(
    make_settings: Callable[..., Settings], redis_server: str, redis_prefix: str
) -> None:
    """What a worker process runs: the same class, with the duplicate check and the stream."""
    async with ChatSimulator(channels=["alpha"], seed=5) as sim:
        settings = make_settings(
            f"prefix = '{redis_prefix}'\n[redis]\nurl = '{redis_server}'\n"
            f"[tmi.connection]\nserver = '127.0.0.1'\nport = {sim.port}\nsecure = false\n"
            "connect_interval = 0\n"
        )
        client = redis.asyncio.Redis.from_url(redis_server)
        keys = Keys.from_settings(settings)
        changed = asyncio.Event()
        handled: list[Event] = []
        observed: list[Event] = []

        async def handle(event: Event) -> None:
            handled.append(event)
            changed.set()

        try:
            reader = await EventReader(client, keys, types=frozenset({"MessageEvent"})).start()
            worker = Worker.in_cluster(
                settings,
                client,
                "p-test",
                handlers=_registry(handle),
                observer=observed.append,
            )
            assert worker.delivery.seen is not None
            assert worker.publisher is not None
            assert worker.outbox is None  # no identity: nothing to send with
            async with worker:
                worker.put(ClusterClientRegistered(supervisor="s", process="p-test"))
                worker.dispatcher.put(PeriodicTimerCalled(supervisor="s", process="p-test"))
                assert (await worker.pool.join(["alpha"]))["alpha"].ok
                wanted = [ln.message_id for ln in sim.generate(30, "alpha") if _message(ln)]
                worker.delivery.guard(["alpha"])  # as during a hand-over: checked cluster-wide
                again = [ln.message_id for ln in sim.generate(10, "alpha") if _message(ln)]
                ids = {*wanted, *again}

                def got() -> set[str | None]:
                    return {e.message_id for e in handled if isinstance(e, MessageEvent)}

                await _until(lambda: ids <= got(), changed)
                streamed: set[str | None] = set()
                while not ids <= streamed:
                    event = await asyncio.wait_for(reader.__anext__(), TIMEOUT_S)
                    assert isinstance(event, MessageEvent)
                    streamed.add(event.message_id)
                assert worker.events_published >= len(ids)
                assert worker.delivery.checked >= len(again)
                kinds = {type(e) for e in handled}
                assert {ClusterClientRegistered, PeriodicTimerCalled} <= kinds
                assert any(isinstance(e, MessageEvent) for e in observed)
            assert worker.state is WorkerState.CLOSED
            # a second worker that reads the same lines (a hand-over) drops them as seen
            checked = [event_key(e) for e in handled if getattr(e, "message_id", None) in again]
            assert len(checked) == len(again)
            assert not any(await Seen(client, keys).first(checked))
            await reader.aclose()
        finally:
            await client.aclose()


@run
async def test_a_task_of_the_worker_that_fails_is_visible(
    caplog: pytest.LogCaptureFixture, redis_server: str, redis_prefix: str
) -> None:
    """An error of ours in the duplicate check: the worker fails, says why, and tells its
    owner (the worker process then stops and its supervisor starts another)."""

    class BrokenSeen(Seen):
        async def first(self, keys: Sequence[str]) -> list[bool]:
            raise RuntimeError("a bug in the check")

    failures: list[BaseException] = []
    failed = asyncio.Event()

    def on_failure(error: BaseException) -> None:
        failures.append(error)
        failed.set()

    client = redis.asyncio.Redis.from_url(redis_server)
    try:
        async with ChatSimulator(channels=["alpha"], seed=6) as sim:
            pool = Pool(_options(sim), connect_interval_s=0)
            worker = Worker(
                pool,
                Dispatcher(Handlers()),
                seen=BrokenSeen(client, Keys(redis_prefix, 2.0, 3.0)),
                on_failure=on_failure,
            )
            async with worker:
                assert (await pool.join(["alpha"]))["alpha"].ok
                worker.delivery.guard(["alpha"])
                sim.generate(5, "alpha")
                await asyncio.wait_for(failed.wait(), TIMEOUT_S)
                assert len(failures) == 1
                assert worker.state is WorkerState.FAILED
                assert isinstance(worker.failure, RuntimeError)
            assert worker.state is WorkerState.FAILED  # closing keeps the reason
    finally:
        await client.aclose()
    assert "a bug in the check" in caplog.text


def test_the_documented_worker_example_runs() -> None:
    run_documented_example("connections.md", "test_handlers_see_chat")


def test_a_list_of_handlers_is_registered_as_handlers_modules_would() -> None:
    seen: list[str] = []

    @tmi_cluster.on(CheerEvent)
    def cheers(event: Event) -> None: ...

    def everything(event: Event) -> None: ...

    class Bot:
        def subscribe(self) -> dict[type[Event], Callable[[Event], None]]:
            return {MessageEvent: lambda event: seen.append("bot")}

    registry = Handlers.of([cheers, everything, Bot()])
    assert registry.for_type(CheerEvent) == (cheers,)  # each line once: the cheer is its own
    assert everything in registry.for_type(PeriodicTimerCalled)
    assert cheers not in registry.for_type(MessageEvent)
    assert len(registry.for_type(MessageEvent)) == 2  # everything, and the bot's
    assert Dispatcher([everything]).handlers.for_type(MessageEvent) == (everything,)
    with pytest.raises(TypeError, match="a Handlers registry or a list of handlers"):
        Dispatcher(everything)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a handler"):
        Handlers.of([42])

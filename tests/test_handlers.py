"""Handlers: registration by class, loading from ``handlers.modules``, per-channel dispatch."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import pytest

from tmi_cluster.errors import ConfigError
from tmi_cluster.events import (
    CheerEvent,
    Event,
    JoinEvent,
    MessageEvent,
    ResubEvent,
    SubEvent,
    UserEvent,
    UserNoticeEvent,
    WhisperEvent,
    companion_of,
    covers,
)
from tmi_cluster.worker import handlers as handlers_module
from tmi_cluster.worker.handlers import Dispatcher, Handler, Handlers, Subscriber, load_handlers, on

from .helpers import run

TIMEOUT_S = 2.0


def message(channel: str = "a", text: str = "hi", n: int = 1) -> MessageEvent:
    return MessageEvent(channel=channel, user="u", text=text, tags={"id": str(n)})


def sub(channel: str = "a") -> SubEvent:
    return SubEvent(channel=channel, user="u", msg_id="sub", tags={"id": "s"})


def cheer(channel: str = "a") -> CheerEvent:
    return CheerEvent(channel=channel, user="u", text="cheer100", bits=100, tags={"id": "c"})


def handler(name: str, calls: list[str]) -> Handler:
    """A sync handler that records its name."""

    def record(event: Event) -> None:
        calls.append(name)

    record.__qualname__ = name
    return record


async def wait(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), TIMEOUT_S)


# Handlers


def test_a_handler_of_a_base_class_gets_the_subclasses_events() -> None:
    calls: list[str] = []
    handlers = Handlers()
    users, subs = handler("users", calls), handler("subs", calls)
    handlers.add(UserEvent, users)
    handlers.add(SubEvent, subs)

    assert handlers.for_type(MessageEvent) == (users,)
    assert handlers.for_type(WhisperEvent) == (users,)
    assert handlers.for_type(ResubEvent) == (subs,)
    assert handlers.for_type(JoinEvent) == ()
    assert len(handlers) == 2


def test_each_line_reaches_a_handler_once_not_also_as_its_companion() -> None:
    calls: list[str] = []
    handlers = Handlers()
    notices, messages = handler("notices", calls), handler("messages", calls)
    cheers, subs = handler("cheers", calls), handler("subs", calls)
    handlers.add(UserNoticeEvent, notices)
    handlers.add(MessageEvent, messages)
    # a sub's line makes a UserNoticeEvent and a SubEvent: notices get the first only
    assert handlers.for_type(UserNoticeEvent) == (notices,)
    assert handlers.for_type(SubEvent) == ()
    assert handlers.for_type(MessageEvent) == (messages,)
    assert handlers.for_type(CheerEvent) == ()  # its MessageEvent came to messages
    handlers.add(CheerEvent, cheers)
    handlers.add(SubEvent, subs)
    assert handlers.for_type(CheerEvent) == (cheers,)  # asked for by name
    assert handlers.for_type(SubEvent) == (subs,)
    assert handlers.for_type(ResubEvent) == (subs,)
    assert companion_of(CheerEvent) is MessageEvent
    assert companion_of(ResubEvent) is UserNoticeEvent
    assert companion_of(UserNoticeEvent) is None
    assert covers(Event, MessageEvent)
    assert not covers(Event, CheerEvent)


def test_handlers_come_in_the_order_they_were_added_across_classes() -> None:
    calls: list[str] = []
    first, second, third, fourth = (handler(n, calls) for n in ("1", "2", "3", "4"))
    handlers = Handlers()
    handlers.add(MessageEvent, first)
    handlers.add(UserEvent, second)
    handlers.add(Event, third)
    handlers.add(MessageEvent, fourth)

    assert handlers.for_type(MessageEvent) == (first, second, third, fourth)
    assert handlers.for_type(WhisperEvent) == (second, third)
    assert handlers.for_type(JoinEvent) == (third,)


def test_a_handler_added_for_a_class_and_its_subclass_is_called_once() -> None:
    calls: list[str] = []
    both = handler("both", calls)
    handlers = Handlers()
    handlers.add(MessageEvent, both)
    handlers.add(CheerEvent, both)

    assert handlers.for_type(CheerEvent) == (both,)
    assert handlers.for_type(MessageEvent) == (both,)


def test_a_later_add_refreshes_what_for_type_found() -> None:
    calls: list[str] = []
    early, late = handler("early", calls), handler("late", calls)
    handlers = Handlers()
    handlers.add(MessageEvent, early)
    assert handlers.for_type(MessageEvent) == (early,)
    assert handlers.for_type(WhisperEvent) == ()

    handlers.add(UserEvent, late)

    assert handlers.for_type(MessageEvent) == (early, late)
    assert handlers.for_type(WhisperEvent) == (late,)


@pytest.mark.parametrize("event_type", [int, object, message()], ids=["int", "object", "event"])
def test_add_refuses_what_is_not_an_event_class(event_type: object) -> None:
    handlers = Handlers()
    with pytest.raises(TypeError, match="not an event class"):
        handlers.add(cast(Any, event_type), handler("h", []))
    assert len(handlers) == 0


def test_add_refuses_a_handler_that_is_not_callable() -> None:
    handlers = Handlers()
    with pytest.raises(TypeError, match="MessageEvent is not callable"):
        handlers.add(MessageEvent, cast(Any, "not a function"))
    assert len(handlers) == 0


def test_wants_tells_whether_any_handler_gets_a_class() -> None:
    handlers = Handlers()
    assert not handlers.wants(MessageEvent)
    handlers.add(UserNoticeEvent, handler("h", []))

    assert not handlers.wants(SubEvent)  # the companion of the UserNoticeEvent it gets
    assert handlers.wants(UserNoticeEvent)
    assert not handlers.wants(UserEvent)
    assert not handlers.wants(MessageEvent)


# on()


def test_on_marks_a_function_for_several_classes() -> None:
    @on(MessageEvent, WhisperEvent)
    def both(event: Event) -> None: ...

    @on(JoinEvent)
    @on(SubEvent)
    def stacked(event: Event) -> None: ...

    handlers = Handlers()
    handlers.add_function(both)
    handlers.add_function(stacked)

    assert handlers.for_type(MessageEvent) == (both,)
    assert handlers.for_type(WhisperEvent) == (both,)
    assert handlers.for_type(SubEvent) == (stacked,)
    assert handlers.for_type(JoinEvent) == (stacked,)
    assert handlers.for_type(UserNoticeEvent) == ()
    assert len(handlers) == 4


def test_on_returns_the_function_itself() -> None:
    def plain(event: Event) -> None: ...

    assert on(MessageEvent)(plain) is plain


@pytest.mark.parametrize(
    "types",
    [(), (int,), (MessageEvent, str), (message(),)],
    ids=["none", "int", "one-bad", "an-event"],
)
def test_on_refuses_no_class_or_a_class_that_is_not_an_event(types: tuple[Any, ...]) -> None:
    with pytest.raises(TypeError, match="one or more event classes"):
        on(*types)


def test_add_function_of_an_unmarked_function_adds_nothing() -> None:
    handlers = Handlers()
    handlers.add_function(handler("plain", []))
    assert len(handlers) == 0


# Subscribers


def test_add_subscriber_takes_a_handler_or_a_list_of_handlers_per_class() -> None:
    calls: list[str] = []

    class Bot(Subscriber):
        def subscribe(self) -> Mapping[type[Event], Handler | Sequence[Handler]]:
            return {
                MessageEvent: self.on_message,
                UserNoticeEvent: [self.on_notice, self.also_notice],
                JoinEvent: (self.on_join,),
            }

        def on_message(self, event: MessageEvent) -> None:
            calls.append("message")

        async def on_notice(self, event: UserNoticeEvent) -> None:
            calls.append("notice")

        def also_notice(self, event: UserNoticeEvent) -> None:
            calls.append("also")

        def on_join(self, event: JoinEvent) -> None:
            calls.append("join")

    bot = Bot()
    handlers = Handlers()
    handlers.add_subscriber(bot)

    assert handlers.for_type(MessageEvent) == (bot.on_message,)
    assert handlers.for_type(UserNoticeEvent) == (bot.on_notice, bot.also_notice)
    assert handlers.for_type(JoinEvent) == (bot.on_join,)
    assert len(handlers) == 4


def test_any_class_with_subscribe_is_a_subscriber() -> None:
    class Duck:
        def subscribe(self) -> Mapping[type[Event], Handler]:
            return {WhisperEvent: self.on_whisper}

        def on_whisper(self, event: WhisperEvent) -> None: ...

    duck = Duck()
    handlers = Handlers()
    handlers.add_subscriber(duck)
    assert handlers.for_type(WhisperEvent) == (duck.on_whisper,)


def test_the_default_subscriber_subscribes_to_nothing() -> None:
    handlers = Handlers()
    handlers.add_subscriber(Subscriber())
    assert len(handlers) == 0


def test_a_subscribe_that_returns_no_mapping_is_refused() -> None:
    class Wrong(Subscriber):
        def subscribe(self) -> Any:
            return [(MessageEvent, self.on_message)]

        def on_message(self, event: MessageEvent) -> None: ...

    handlers = Handlers()
    with pytest.raises(TypeError, match=r"Wrong\.subscribe\(\) must return a mapping"):
        handlers.add_subscriber(Wrong())
    assert len(handlers) == 0


def test_a_subscriber_handler_that_is_not_callable_is_refused() -> None:
    class Wrong(Subscriber):
        def subscribe(self) -> Any:
            return {MessageEvent: [None]}

    with pytest.raises(TypeError, match="not callable"):
        Handlers().add_subscriber(Wrong())


# load_handlers


#: The start of every module written.
HEADER = """\
from tmi_cluster.events import MessageEvent, SubEvent, WhisperEvent
from tmi_cluster.worker.handlers import Subscriber, on

CALLS = []
"""


class Modules:
    """Writes modules of unique names into a folder on ``sys.path``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.prefix = f"tmi_test_handlers_{uuid.uuid4().hex[:8]}"

    def write(self, name: str, body: str = "") -> str:
        """Write ``<prefix>_<name>`` (``a.b``: a package ``a`` and its module ``b``): HEADER,
        then ``body``; the module's name."""
        parts = f"{self.prefix}_{name}".split(".")
        folder = self.root.joinpath(*parts[:-1])
        folder.mkdir(parents=True, exist_ok=True)
        for depth in range(1, len(parts)):
            init = self.root.joinpath(*parts[:depth], "__init__.py")
            if not init.exists():
                init.write_text("")
        (folder / f"{parts[-1]}.py").write_text(HEADER + textwrap.dedent(body))
        importlib.invalidate_caches()
        return ".".join(parts)

    def forget(self) -> None:
        for name in [n for n in sys.modules if n.startswith(self.prefix)]:
            del sys.modules[name]


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Modules]:
    monkeypatch.syspath_prepend(str(tmp_path))
    written = Modules(tmp_path)
    yield written
    written.forget()


def call_all(handlers: Handlers, event: Event) -> None:
    for h in handlers.for_type(type(event)):
        h(event)


def calls_of(module_name: str) -> list[str]:
    return cast(list[str], sys.modules[module_name].CALLS)


def test_a_module_loads_its_subscribers_and_marked_functions_but_not_imported_ones(
    modules: Modules,
) -> None:
    other = modules.write(
        "pkg.other",
        """
        class Imported(Subscriber):
            def subscribe(self):
                return {MessageEvent: self.on_message}

            def on_message(self, event):
                CALLS.append("Imported")

        @on(MessageEvent)
        def imported(event):
            CALLS.append("imported")
        """,
    )
    bot = modules.write(
        "pkg.bot",
        f"""
        from {other} import Imported, imported

        class Bot(Subscriber):
            def subscribe(self):
                return {{MessageEvent: self.on_message}}

            def on_message(self, event):
                CALLS.append("Bot")

        class Notices(Subscriber):
            def subscribe(self):
                return {{SubEvent: [self.on_sub]}}

            def on_sub(self, event):
                CALLS.append("Notices")

        @on(MessageEvent, WhisperEvent)
        def counted(event):
            CALLS.append("counted")

        def not_marked(event):
            CALLS.append("not_marked")
        """,
    )

    handlers = load_handlers([bot])

    assert len(handlers) == 4
    call_all(handlers, message())
    call_all(handlers, sub())
    assert sorted(calls_of(bot)) == ["Bot", "Notices", "counted"]
    assert calls_of(other) == []


def test_module_colon_class_loads_that_class_only(modules: Modules) -> None:
    name = modules.write(
        "bot",
        """
        class Wanted(Subscriber):
            def __init__(self):
                CALLS.append("made")

            def subscribe(self):
                return {MessageEvent: self.on_message}

            def on_message(self, event):
                CALLS.append("Wanted")

        class Other(Subscriber):
            def subscribe(self):
                return {MessageEvent: self.on_message}

            def on_message(self, event):
                CALLS.append("Other")

        @on(MessageEvent)
        def function(event):
            CALLS.append("function")
        """,
    )

    handlers = load_handlers([f"{name}:Wanted"])

    call_all(handlers, message())
    assert calls_of(name) == ["made", "Wanted"]


def test_a_handler_named_twice_runs_once(modules: Modules) -> None:
    name = modules.write(
        "twice",
        """
        class Bot(Subscriber):
            def subscribe(self):
                return {MessageEvent: self.on_message}

            def on_message(self, event):
                CALLS.append("Bot")

        @on(MessageEvent)
        def function(event):
            CALLS.append("function")
        """,
    )

    handlers = load_handlers([name, name, f"{name}:Bot", f"{name}:function"])

    call_all(handlers, message())
    assert sorted(calls_of(name)) == ["Bot", "function"]


def test_module_colon_function_loads_that_function_only(modules: Modules) -> None:
    name = modules.write(
        "bot",
        """
        @on(MessageEvent)
        def wanted(event):
            CALLS.append("wanted")

        @on(MessageEvent)
        def other(event):
            CALLS.append("other")
        """,
    )

    handlers = load_handlers([f"{name}:wanted"])

    call_all(handlers, message())
    assert calls_of(name) == ["wanted"]


def test_several_paths_add_to_the_handlers_given(modules: Modules) -> None:
    name = modules.write(
        "bot",
        """
        @on(MessageEvent)
        def first(event):
            CALLS.append("first")

        @on(MessageEvent)
        def second(event):
            CALLS.append("second")
        """,
    )
    given = Handlers()

    loaded = load_handlers([f"{name}:second", f"{name}:first"], given)

    assert loaded is given
    call_all(given, message())
    assert calls_of(name) == ["second", "first"]


def test_a_module_that_raises_on_import_is_a_config_error(modules: Modules) -> None:
    name = modules.write("broken", "raise RuntimeError('no token in the environment')\n")

    with pytest.raises(ConfigError) as caught:
        load_handlers([name])

    assert f"{name!r} does not import" in str(caught.value)
    assert "RuntimeError: no token in the environment" in str(caught.value)
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_a_module_that_does_not_exist_is_a_config_error(modules: Modules) -> None:
    name = f"{modules.prefix}_missing"
    with pytest.raises(ConfigError, match=f"{name}.*does not import: ModuleNotFoundError"):
        load_handlers([name])


def test_a_missing_attribute_is_a_config_error(modules: Modules) -> None:
    name = modules.write("bot")

    with pytest.raises(ConfigError, match=f"{name} has no 'Nope'"):
        load_handlers([f"{name}:Nope"])


def test_a_module_with_nothing_to_register_is_a_config_error(modules: Modules) -> None:
    name = modules.write(
        "empty",
        """
        def not_marked(event):
            pass

        class NotASubscriber:
            pass
        """,
    )

    with pytest.raises(ConfigError, match=f"{name!r} holds no subscriber class"):
        load_handlers([name])


def test_a_subscriber_that_cannot_be_made_is_a_config_error(modules: Modules) -> None:
    name = modules.write(
        "bot",
        """
        class Bot(Subscriber):
            def __init__(self):
                raise KeyError("api_key")
        """,
    )

    for path in (name, f"{name}:Bot"):
        with pytest.raises(ConfigError) as caught:
            load_handlers([path])
        assert f"{path!r}: KeyError: 'api_key'" in str(caught.value)
        assert isinstance(caught.value.__cause__, KeyError)


def test_an_attribute_that_is_neither_subscriber_nor_marked_is_a_config_error(
    modules: Modules,
) -> None:
    name = modules.write(
        "bot",
        """
        LIMIT = 3

        def not_marked(event):
            pass
        """,
    )

    for attribute in ("LIMIT", "not_marked"):
        with pytest.raises(ConfigError, match=f"{attribute}.* is neither a class with subscribe"):
            load_handlers([f"{name}:{attribute}"])


def test_a_subscribe_that_returns_no_mapping_is_a_config_error(modules: Modules) -> None:
    name = modules.write(
        "bot",
        """
        class Bot(Subscriber):
            def subscribe(self):
                return None
        """,
    )

    with pytest.raises(ConfigError, match=r"TypeError: Bot\.subscribe\(\) must return a mapping"):
        load_handlers([name])


# Dispatcher


@run
async def test_the_events_of_a_channel_are_handled_in_order() -> None:
    seen: list[str] = []

    async def slow_then_fast(event: MessageEvent) -> None:
        await asyncio.sleep(0.01 if event.text == "0" else 0)  # the first one takes longest
        seen.append(f"async {event.text}")

    def sync(event: MessageEvent) -> None:
        seen.append(f"sync {event.text}")

    handlers = Handlers()
    handlers.add(MessageEvent, slow_then_fast)
    handlers.add(MessageEvent, sync)
    async with Dispatcher(handlers) as dispatcher:
        for n in range(10):
            dispatcher.put(message(text=str(n), n=n))
        assert await dispatcher.drain(TIMEOUT_S)

        assert seen == [f"{kind} {n}" for n in range(10) for kind in ("async", "sync")]
        assert dispatcher.put_count == dispatcher.dispatched == 10
        assert dispatcher.waiting == dispatcher.dropped == dispatcher.errors == 0


@run
async def test_a_slow_channel_does_not_delay_another() -> None:
    a_started, a_release, b_done = asyncio.Event(), asyncio.Event(), asyncio.Event()
    seen: list[str] = []

    async def handle(event: MessageEvent) -> None:
        if event.channel == "a":
            a_started.set()
            await a_release.wait()
        seen.append(f"{event.channel} {event.text}")
        if event.text == "last":
            b_done.set()

    handlers = Handlers()
    handlers.add(MessageEvent, handle)
    async with Dispatcher(handlers) as dispatcher:
        dispatcher.put(message("a", "first"))
        await wait(a_started)
        dispatcher.put(message("a", "second"))
        dispatcher.put(message("b", "one"))
        dispatcher.put(message("b", "last"))
        await wait(b_done)

        assert seen == ["b one", "b last"]  # while a's first handler still waits
        assert dispatcher.waiting == 1  # a's second
        a_release.set()
        assert await dispatcher.drain(TIMEOUT_S)
        assert seen == ["b one", "b last", "a first", "a second"]


@run
async def test_plain_functions_run_in_a_thread_and_coroutines_on_the_loop() -> None:
    loop_thread = threading.get_ident()
    threads: dict[str, int] = {}

    def plain(event: MessageEvent) -> None:
        threads["plain"] = threading.get_ident()

    async def coroutine(event: MessageEvent) -> None:
        threads["coroutine"] = threading.get_ident()

    handlers = Handlers()
    handlers.add(MessageEvent, plain)
    handlers.add(MessageEvent, coroutine)
    async with Dispatcher(handlers) as dispatcher:
        dispatcher.put(message())
        assert await dispatcher.drain(TIMEOUT_S)

    assert threads["coroutine"] == loop_thread
    assert threads["plain"] != loop_thread


@run
async def test_a_blocking_plain_function_does_not_stall_the_loop() -> None:
    loop = asyncio.get_running_loop()
    blocked, b_done = asyncio.Event(), asyncio.Event()
    release = threading.Event()

    def blocking(event: MessageEvent) -> None:
        if event.channel == "a":
            loop.call_soon_threadsafe(blocked.set)
            assert release.wait(TIMEOUT_S), "never released"
        else:
            loop.call_soon_threadsafe(b_done.set)

    handlers = Handlers()
    handlers.add(MessageEvent, blocking)
    try:
        async with Dispatcher(handlers, threads=2) as dispatcher:
            dispatcher.put(message("a"))
            await wait(blocked)
            # The loop still runs: timers fire and the other channel is handled.
            started = time.monotonic()
            await asyncio.sleep(0.01)
            assert time.monotonic() - started < 1.0
            dispatcher.put(message("b"))
            await wait(b_done)
            release.set()
            assert await dispatcher.drain(TIMEOUT_S)
            assert dispatcher.dispatched == 2
            assert dispatcher.errors == 0
    finally:
        release.set()


@run
async def test_a_callable_object_returning_a_coroutine_is_awaited() -> None:
    seen: list[str] = []

    class Handle:
        async def __call__(self, event: MessageEvent) -> None:
            seen.append(event.text)

    handlers = Handlers()
    handlers.add(MessageEvent, Handle())
    async with Dispatcher(handlers) as dispatcher:
        dispatcher.put(message(text="called"))
        assert await dispatcher.drain(TIMEOUT_S)
    assert seen == ["called"]
    assert dispatcher.errors == 0


@run
async def test_a_handler_that_raises_is_logged_and_counted_and_the_rest_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []

    async def broken_async(event: MessageEvent) -> None:
        raise ValueError(f"async broke on {event.text}")

    def broken_sync(event: MessageEvent) -> None:
        raise LookupError(f"sync broke on {event.text}")

    def fine(event: MessageEvent) -> None:
        seen.append(event.text)

    handlers = Handlers()
    handlers.add(MessageEvent, broken_async)
    handlers.add(MessageEvent, broken_sync)
    handlers.add(MessageEvent, fine)
    caplog.set_level(logging.ERROR, logger="tmi_cluster.worker.handlers")
    async with Dispatcher(handlers) as dispatcher:
        dispatcher.put(message(text="one"))
        dispatcher.put(message(text="two"))
        assert await dispatcher.drain(TIMEOUT_S)

        assert seen == ["one", "two"]
        assert dispatcher.errors == 4  # every failure counted
        assert dispatcher.dispatched == 2

    failures = [r for r in caplog.records if r.name == "tmi_cluster.worker.handlers"]
    assert len(failures) == 2  # once per handler: the second failure of each within 10 s
    assert all(r.levelno == logging.ERROR and r.exc_info for r in failures)
    first = failures[0]
    assert "broken_async" in first.getMessage()
    assert "MessageEvent in #a" in first.getMessage()
    assert first.exc_info is not None
    assert isinstance(first.exc_info[1], ValueError)
    assert "ValueError: async broke on one" in caplog.text  # the traceback
    assert "LookupError: sync broke on one" in caplog.text


@run
async def test_a_handler_failing_on_every_event_is_logged_every_10_s_with_a_count(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(handlers_module, "_now", lambda: now[0])

    async def broken(event: MessageEvent) -> None:
        raise ValueError(event.text)

    handlers = Handlers()
    handlers.add(MessageEvent, broken)
    caplog.set_level(logging.ERROR, logger="tmi_cluster.worker.handlers")
    async with Dispatcher(handlers) as dispatcher:
        for n in range(5):
            dispatcher.put(message(text=str(n), n=n))
        assert await dispatcher.drain(TIMEOUT_S)
        now[0] += handlers_module.FAILURE_LOG_EVERY_S
        dispatcher.put(message(text="later", n=9))
        assert await dispatcher.drain(TIMEOUT_S)
    logged = [r.getMessage() for r in caplog.records]
    assert dispatcher.errors == 6
    assert len(logged) == 2
    assert "more failures" not in logged[0]
    assert "(4 more failures of it not logged since the last)" in logged[1]


async def overflow(
    policy: Literal["drop_oldest", "drop_newest"], caplog: pytest.LogCaptureFixture
) -> tuple[list[str], Dispatcher]:
    """Six events in one channel of room three while the first is handled; what was handled."""
    started, release = asyncio.Event(), asyncio.Event()
    seen: list[str] = []

    async def handle(event: MessageEvent) -> None:
        started.set()
        await release.wait()
        seen.append(event.text)

    handlers = Handlers()
    handlers.add(MessageEvent, handle)
    caplog.set_level(logging.WARNING, logger="tmi_cluster.worker.handlers")
    async with Dispatcher(handlers, queue_size=3, policy=policy) as dispatcher:
        dispatcher.put(message(text="0"))
        await wait(started)
        for n in range(1, 6):
            dispatcher.put(message(text=str(n), n=n))
        assert dispatcher.waiting == 3
        assert dispatcher.dropped == 2
        assert dispatcher.put_count == 6
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, "logged once per overflow"
        assert "#a fall behind" in warnings[0]
        release.set()
        assert await dispatcher.drain(TIMEOUT_S)
    assert "caught up; 2 events dropped" in caplog.text
    return seen, dispatcher


@run
async def test_a_full_channel_drops_the_oldest(caplog: pytest.LogCaptureFixture) -> None:
    seen, dispatcher = await overflow("drop_oldest", caplog)
    assert seen == ["0", "3", "4", "5"]
    assert dispatcher.dispatched == 4


@run
async def test_a_full_channel_drops_the_newest(caplog: pytest.LogCaptureFixture) -> None:
    seen, dispatcher = await overflow("drop_newest", caplog)
    assert seen == ["0", "1", "2", "3"]
    assert dispatcher.dispatched == 4


def test_a_queue_needs_room_for_one_event() -> None:
    with pytest.raises(ValueError, match="at least one event"):
        Dispatcher(Handlers(), queue_size=0)


@run
async def test_drain_tells_whether_everything_was_handled_in_time() -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def handle(event: MessageEvent) -> None:
        started.set()
        await release.wait()

    handlers = Handlers()
    handlers.add(MessageEvent, handle)
    async with Dispatcher(handlers) as dispatcher:
        assert await dispatcher.drain(0.01), "nothing to wait for"
        dispatcher.put(message())
        dispatcher.put(message())
        await wait(started)

        assert not await dispatcher.drain(0.02)
        assert dispatcher.waiting == 1
        assert dispatcher.dispatched == 0

        release.set()
        assert await dispatcher.drain(TIMEOUT_S)
        assert dispatcher.waiting == 0
        assert dispatcher.dispatched == 2


@run
async def test_aclose_cancels_a_blocked_handler_and_is_idempotent() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def handle(event: MessageEvent) -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # never set
        except asyncio.CancelledError:
            cancelled.set()
            raise

    handlers = Handlers()
    handlers.add(MessageEvent, handle)
    dispatcher = Dispatcher(handlers)
    dispatcher.put(message())
    dispatcher.put(message())
    await wait(started)

    closing = asyncio.ensure_future(dispatcher.aclose())
    done, _ = await asyncio.wait([closing], timeout=TIMEOUT_S)  # wait() does not cancel it

    assert done, "aclose() did not return"
    assert cancelled.is_set()
    assert dispatcher.waiting == 0
    assert dispatcher.dispatched == 0
    await asyncio.wait_for(dispatcher.aclose(), TIMEOUT_S)
    dispatcher.put(message())  # ignored once closed
    assert dispatcher.put_count == 2
    assert dispatcher.waiting == 0


@run
async def test_events_that_no_handler_wants_are_not_counted() -> None:
    seen: list[Event] = []

    async def handle(event: MessageEvent) -> None:
        seen.append(event)

    handlers = Handlers()
    handlers.add(MessageEvent, handle)
    async with Dispatcher(handlers) as dispatcher:
        dispatcher.put(JoinEvent(channel="a", user="u"))
        dispatcher.put(sub())
        dispatcher.put(cheer())  # its MessageEvent is the one this handler gets
        assert dispatcher.put_count == 0
        assert dispatcher.waiting == 0
        dispatcher.put(message())
        assert dispatcher.put_count == 1
        assert await dispatcher.drain(TIMEOUT_S)
    assert seen == [message()]
    assert dispatcher.dispatched == 1


@run
async def test_a_handler_of_two_related_classes_gets_an_event_once() -> None:
    seen: list[str] = []

    @on(MessageEvent, CheerEvent)
    def count(event: MessageEvent) -> None:
        seen.append(type(event).__name__)

    handlers = Handlers()
    handlers.add_function(count)
    async with Dispatcher(handlers) as dispatcher:
        dispatcher.put(message())
        dispatcher.put(cheer())
        assert await dispatcher.drain(TIMEOUT_S)
    assert seen == ["MessageEvent", "CheerEvent"]


@run
async def test_a_cancelled_aclose_is_cancelled() -> None:
    started, cleaning, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def handle(event: MessageEvent) -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # never set
        except asyncio.CancelledError:
            cleaning.set()
            await release.wait()  # a slow clean-up
            raise

    handlers = Handlers()
    handlers.add(MessageEvent, handle)
    dispatcher = Dispatcher(handlers)
    try:
        dispatcher.put(message())
        await wait(started)
        closing = asyncio.ensure_future(dispatcher.aclose())
        await wait(cleaning)

        closing.cancel()
        done, _ = await asyncio.wait([closing], timeout=TIMEOUT_S)

        assert done
        assert closing.cancelled(), "aclose() swallowed its own cancellation"
    finally:
        release.set()
    await asyncio.wait_for(dispatcher.aclose(), TIMEOUT_S)
    assert dispatcher.waiting == 0

"""The application's event handlers inside the workers: registration and dispatch.

Two ways to register, both listed in ``handlers.modules`` (``package.module`` or
``package.module:Name``) and loaded in every worker:

- a **subscriber** class, as in the original: a class with a ``subscribe()`` method returning
  a mapping of event classes to a handler (or a list of handlers), usually its own methods.
  ``package.module:Class`` loads that class; ``package.module`` loads every :class:`Subscriber`
  subclass defined in the module. The class is made with no arguments, once per worker::

      class Bot(tmi_cluster.Subscriber):
          def subscribe(self):
              return {MessageEvent: self.on_message}

          async def on_message(self, event: MessageEvent) -> None: ...

- a single **function** decorated with :func:`on`; ``package.module`` loads every decorated
  function of the module, ``package.module:name`` just that one::

      @tmi_cluster.on(MessageEvent, CheerEvent)
      def count(event): ...

A handler of a class gets its subclasses' events too, each line once
(:func:`tmi_cluster.events.covers`): a ``UserNoticeEvent`` handler gets every sub, gift and
raid as its UserNoticeEvent, and not also as the SubEvent that comes with it; a
``MessageEvent`` handler gets a cheer's MessageEvent, not also its CheerEvent. A handler of
``SubEvent`` or ``CheerEvent`` gets those. Coroutine functions run on the worker's event
loop; plain functions run in a thread pool (``handlers.threads``), so that a slow or blocking
handler never stalls the connections.

Dispatch (:class:`Dispatcher`): events are handled in order within a channel, and channels
independently: a handler that is slow in one channel delays that channel's events only. At most
``handlers.queue_size`` events wait per channel; beyond, ``handlers.queue_full`` decides which
one is dropped (counted, logged once per overflow). A handler that raises is logged with its
traceback (at most once every :data:`FAILURE_LOG_EVERY_S` per handler, with the count of its
failures in between) and counted; the other handlers and the worker go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any, Literal, TypeVar

from tmi_cluster.config.model import HandlersSettings
from tmi_cluster.errors import ConfigError
from tmi_cluster.events import Event, covers
from tmi_cluster.tasks import cancel_and_wait, log_outcome

__all__ = ["Dispatcher", "Handler", "Handlers", "Subscriber", "load_handlers", "on"]

log = logging.getLogger(__name__)

#: A handler: a plain function or a coroutine function of one event.
Handler = Callable[[Any], Awaitable[None] | None]
_F = TypeVar("_F", bound=Callable[..., Any])
#: One handler call: the handler, and whether it is a coroutine function (run on the loop).
_Call = tuple[Handler, bool]
_MARK = "__tmi_cluster_events__"


def on(*types: type[Event]) -> Callable[[_F], _F]:
    """Mark a function as the handler of ``types`` (event classes; at least one)."""
    if not types or not all(isinstance(t, type) and issubclass(t, Event) for t in types):
        raise TypeError("on() takes one or more event classes of tmi_cluster.events")

    def mark(function: _F) -> _F:
        setattr(function, _MARK, (*getattr(function, _MARK, ()), *types))
        return function

    return mark


class Subscriber:
    """Base of subscriber classes (optional: any class with ``subscribe()`` will do)."""

    def subscribe(self) -> Mapping[type[Event], Handler | Sequence[Handler]]:
        """Event classes and their handlers. The default: none."""
        return {}


class Handlers:
    """Which handlers get which event: by class, a handler of a class getting its subclasses."""

    def __init__(self) -> None:
        # One list in the order of add(), not one per class: a handler of a base class added
        # between two of a subclass must come between them.
        self._added: list[tuple[type[Event], Handler]] = []
        self._resolved: dict[type[Event], tuple[Handler, ...]] = {}
        self._calls: dict[type[Event], tuple[_Call, ...]] = {}

    def add(self, event_type: type[Event], handler: Handler) -> None:
        """Give ``handler`` every event of ``event_type`` and its subclasses."""
        if not (isinstance(event_type, type) and issubclass(event_type, Event)):
            raise TypeError(f"{event_type!r} is not an event class of tmi_cluster.events")
        if not callable(handler):
            raise TypeError(f"the handler of {event_type.__name__} is not callable: {handler!r}")
        self._added.append((event_type, handler))
        self._resolved.clear()
        self._calls.clear()

    def add_subscriber(self, subscriber: Any) -> None:
        """Add what ``subscriber.subscribe()`` returns."""
        mapping = subscriber.subscribe()
        if not isinstance(mapping, Mapping):
            raise TypeError(
                f"{type(subscriber).__name__}.subscribe() must return a mapping of "
                "event classes to handlers"
            )
        for event_type, handlers in mapping.items():
            listed = handlers if isinstance(handlers, list | tuple) else [handlers]
            for handler in listed:
                self.add(event_type, handler)

    @classmethod
    def of(cls, handlers: Handlers | Iterable[Any]) -> Handlers:
        """``handlers`` as a registry: a registry as it is; otherwise each item registered as
        ``handlers.modules`` would register it: a function marked with :func:`on` for its event
        classes, a subscriber (an object with ``subscribe()``) for what it subscribes, any
        other callable for every event. TypeError naming an item that is none of these."""
        if isinstance(handlers, Handlers):
            return handlers
        if isinstance(handlers, str | bytes) or not isinstance(handlers, Iterable):
            raise TypeError(
                f"handlers must be a Handlers registry or a list of handlers, not {handlers!r}"
            )
        registry = cls()
        for item in handlers:
            if getattr(item, _MARK, None):
                registry.add_function(item)
            elif not isinstance(item, type) and callable(getattr(item, "subscribe", None)):
                registry.add_subscriber(item)
            elif callable(item):
                registry.add(Event, item)
            else:
                raise TypeError(f"not a handler (a function or a subscriber): {item!r}")
        return registry

    def add_function(self, function: Callable[..., Any]) -> None:
        """Add a function marked with :func:`on`."""
        for event_type in getattr(function, _MARK, ()):
            self.add(event_type, function)

    def for_type(self, event_type: type[Event]) -> tuple[Handler, ...]:
        """The handlers of an event of class ``event_type``, in the order they were added;
        each once, even when added for several of its classes (``@on(MessageEvent,
        CheerEvent)`` is called once per CheerEvent)."""
        found = self._resolved.get(event_type)
        if found is None:
            matching: list[Handler] = []
            for registered, handler in self._added:
                # ``in`` compares by equality: two bound methods of one object are equal.
                if covers(registered, event_type) and handler not in matching:
                    matching.append(handler)
            found = self._resolved[event_type] = tuple(matching)
        return found

    def calls(self, event_type: type[Event]) -> tuple[_Call, ...]:
        """:meth:`for_type`, each handler with whether it is a coroutine function."""
        calls = self._calls.get(event_type)
        if calls is None:
            calls = self._calls[event_type] = tuple(
                (handler, inspect.iscoroutinefunction(handler))
                for handler in self.for_type(event_type)
            )
        return calls

    def wants(self, event_type: type[Event]) -> bool:
        """Whether any handler gets events of ``event_type``."""
        return bool(self.for_type(event_type))

    def __len__(self) -> int:
        return len(self._added)


def _is_subscriber(value: Any) -> bool:
    return isinstance(value, type) and callable(getattr(value, "subscribe", None))


def load_handlers(paths: Iterable[str], handlers: Handlers | None = None) -> Handlers:
    """Import ``handlers.modules`` and register what they hold (see the module); ConfigError
    naming the first path that does not import, lacks the name, holds nothing to register, or
    whose subscriber cannot be made. A class or function named twice (the same path twice, or a
    module and one of its classes) is registered once."""
    if handlers is None:  # not ``or``: an empty Handlers is falsy (__len__)
        handlers = Handlers()
    registered: set[int] = set()
    for path in paths:
        module_name, _, attribute = path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # any error of the user's module is a launch failure
            raise ConfigError(
                [f"handlers.modules: {path!r} does not import: {exc.__class__.__name__}: {exc}"]
            ) from exc
        if attribute:
            if not hasattr(module, attribute):
                raise ConfigError([f"handlers.modules: {module_name} has no {attribute!r}"])
            found = [getattr(module, attribute)]
        else:
            found = _registrable(module)
        if not found:
            raise ConfigError(
                [
                    f"handlers.modules: {path!r} holds no subscriber class and no "
                    "function marked with @tmi_cluster.on"
                ]
            )
        for value in found:
            if id(value) not in registered:
                registered.add(id(value))
                _register(handlers, path, value)
    return handlers


def _registrable(module: ModuleType) -> list[Any]:
    """The subscriber classes and marked functions defined in ``module``."""
    found = []
    for value in vars(module).values():
        defined_here = getattr(value, "__module__", None) == module.__name__
        if not defined_here:
            continue
        if (
            isinstance(value, type) and issubclass(value, Subscriber) and value is not Subscriber
        ) or (callable(value) and hasattr(value, _MARK)):
            found.append(value)
    return found


def _register(handlers: Handlers, path: str, value: Any) -> None:
    try:
        if _is_subscriber(value):
            handlers.add_subscriber(value())
        elif callable(value) and hasattr(value, _MARK):
            handlers.add_function(value)
        else:
            raise TypeError(
                f"{getattr(value, '__qualname__', value)!r} is neither a class with subscribe() "
                "nor a function marked with @tmi_cluster.on"
            )
    except Exception as exc:
        raise ConfigError([f"handlers.modules: {path!r}: {exc.__class__.__name__}: {exc}"]) from exc


#: Seconds between two logged tracebacks of one failing handler (each failure is counted).
FAILURE_LOG_EVERY_S = 10.0
#: The clock of those seconds (a test sets its own).
_now = time.monotonic
#: Emptied lanes kept for reuse: a burst of events in many channels makes no new ones.
_SPARE_LANES = 256


class _Lane:
    """One channel's waiting events, and the task handling them now (None: none)."""

    __slots__ = ("channel", "events", "overflowing", "owner", "queued")

    def __init__(self, channel: str | None) -> None:
        self.channel = channel
        self.events: deque[Event] = deque()
        self.owner: asyncio.Task[None] | None = None
        self.queued = False  # in the dispatcher's ready lanes
        self.overflowing = False


class Dispatcher:
    """Hands events to the handlers: in order per channel, channels independently; see the
    module. :meth:`put` never waits. Use ``async with`` (or :meth:`aclose`).

    How, at the cost of no task per event: one *pump* task handles the channels that have
    events waiting, one after the other, calling each handler in turn. A handler that returns
    without waiting costs a call. One that waits (a coroutine that awaits, a plain function in
    its thread) is seen at the pump's first yield: that pump stays with the handler's channel
    (the handler keeps its task, so ``asyncio.current_task()``, timeouts and task groups in it
    are its own) and a new pump takes over the other channels. A slow handler therefore delays
    its own channel only.
    """

    def __init__(
        self,
        handlers: Handlers | Iterable[Handler],
        *,
        queue_size: int = 10_000,
        policy: Literal["drop_oldest", "drop_newest"] = "drop_oldest",
        threads: int = 8,
    ) -> None:
        if queue_size < 1:
            raise ValueError("a channel's queue needs room for at least one event")
        #: The registry (``handlers`` as :meth:`Handlers.of` makes it).
        self.handlers = handlers = Handlers.of(handlers)
        self._resolved_calls = handlers._calls  # see put()
        self.queue_size = queue_size
        self.policy = policy
        #: Events put, handled by every handler, dropped (a full channel queue), and handler
        #: calls that raised, since the dispatcher was made.
        self.put_count = 0
        self.dispatched = 0
        self.dropped = 0
        self.errors = 0
        self._lanes: dict[str | None, _Lane] = {}
        self._ready: deque[_Lane] = deque()  # lanes with events and no task, oldest first
        self._spare: list[_Lane] = []  # emptied lanes kept for reuse (at most _SPARE_LANES)
        self._pump: asyncio.Task[None] | None = None
        self._inside: _Lane | None = None  # the lane whose handler the pump is calling
        self._tasks: set[asyncio.Task[None]] = set()  # the pump and the lanes' own tasks
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="handler")
        self._closed = False
        self._failure_log: dict[str, tuple[float, int]] = {}  # handler -> (logged at, since)

    @classmethod
    def from_settings(cls, handlers: Handlers, options: HandlersSettings) -> Dispatcher:
        """A dispatcher as ``handlers.queue_size``, ``queue_full`` and ``threads`` describe it."""
        return cls(
            handlers,
            queue_size=options.queue_size,
            policy=options.queue_full,
            threads=options.threads,
        )

    @classmethod
    def for_cluster_events(cls, options: HandlersSettings, owner: str) -> Dispatcher:
        """The dispatcher of ``handlers.modules`` for the cluster's events of ``owner`` (a
        supervisor): when the modules do not load, none (logged once; the workers cannot start
        either, and report it)."""
        try:
            handlers = load_handlers(options.modules)
        except ConfigError as error:
            log.error(
                "%s: the cluster's events reach no handler here: %s",
                owner,
                "; ".join(error.problems),
            )
            handlers = Handlers()
        return cls.from_settings(handlers, options)

    async def __aenter__(self) -> Dispatcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def waiting(self) -> int:
        """Events waiting for the handlers, in every channel."""
        return sum(len(lane.events) for lane in self._lanes.values())

    def wants(self, event: Event) -> bool:
        """Whether some handler takes ``event``."""
        kind = type(event)
        calls = self._resolved_calls.get(kind)
        if calls is None:
            calls = self.handlers.calls(kind)
        return bool(calls)

    def put(self, event: Event) -> None:
        """Queue ``event`` for its channel's handlers (none: nothing to do). Never waits."""
        kind = type(event)
        # The registry's resolved calls, read directly on this hot path (the dict is the
        # registry's own: it empties when a handler is added, and calls() fills it again).
        calls = self._resolved_calls.get(kind)
        if calls is None:
            calls = self.handlers.calls(kind)
        if not calls or self._closed:
            return
        self.put_count += 1
        channel = event.channel
        lane = self._lanes.get(channel)
        if lane is None:
            if self._spare:
                lane = self._spare.pop()
                lane.channel, lane.overflowing = channel, False
            else:
                lane = _Lane(channel)
            self._lanes[channel] = lane
        events = lane.events
        if len(events) >= self.queue_size:
            self.dropped += 1
            if not lane.overflowing:
                lane.overflowing = True
                log.warning(
                    "the handlers of #%s fall behind: %d events wait; dropping the %s "
                    "(handlers.queue_full)",
                    event.channel,
                    len(events),
                    "oldest" if self.policy == "drop_oldest" else "newest",
                )
            if self.policy == "drop_newest":
                return
            events.popleft()
        events.append(event)
        if lane.owner is None and not lane.queued:
            lane.queued = True
            self._ready.append(lane)
            if self._pump is None:
                self._pump = self._start(self._run_pump(), "handlers")

    def _start(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        log_outcome(task, what="the handlers' dispatch", logger=log)  # a bug of ours: visible

    async def _run_pump(self) -> None:
        """Handle the ready lanes until none is ready, or until a handler waits (then this task
        stays with that lane and another pump goes on)."""
        me = asyncio.current_task()
        assert me is not None
        loop = asyncio.get_running_loop()
        ready = self._ready
        try:
            while ready and self._pump is me:
                loop.call_soon(self._check_waiting, me)  # runs at this task's next yield
                for _ in range(len(ready)):  # the lanes ready now; then the sockets' turn
                    lane = ready.popleft()
                    lane.queued = False
                    lane.owner = me
                    await self._run_lane(lane, me)
                    if self._pump is not me:
                        return  # this task stayed with a waiting handler's lane
                if ready:
                    await asyncio.sleep(0)
        finally:
            if self._pump is me:
                self._pump = None
                self._inside = None

    def _check_waiting(self, pump: asyncio.Task[None]) -> None:
        """The pump yielded: if inside a handler, it stays with that lane; a new pump goes on."""
        if self._pump is not pump or self._inside is None:
            return
        self._inside = None
        self._pump = None
        if self._ready and not self._closed:
            self._pump = self._start(self._run_pump(), "handlers")

    async def _run_lane(self, lane: _Lane, me: asyncio.Task[None]) -> None:
        """Handle a lane's events until none waits; then the lane goes (kept for reuse)."""
        events = lane.events
        calls = self._resolved_calls
        try:
            while events:
                event = events.popleft()
                kind = type(event)
                for handler, is_coroutine in calls.get(kind) or self.handlers.calls(kind):
                    if self._pump is me:
                        self._inside = lane
                    try:
                        call = handler(event) if is_coroutine else self._call_plain(handler, event)
                        await call  # type: ignore[misc]
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        self._failed(handler, event)
                    finally:
                        if self._pump is me:
                            self._inside = None
                self.dispatched += 1
                if lane.overflowing and not events:
                    self._caught_up(lane)
        finally:
            self._release(lane)

    def _release(self, lane: _Lane) -> None:
        """No task handles ``lane`` any more: when empty it goes (kept for reuse), else another
        task goes on with it (its task was cancelled)."""
        lane.owner = None
        if lane.events:
            self._requeue(lane)
        elif self._lanes.get(lane.channel) is lane:
            del self._lanes[lane.channel]
            if len(self._spare) < _SPARE_LANES:
                self._spare.append(lane)

    async def _call_plain(self, handler: Handler, event: Event) -> None:
        """A plain function in the handlers' threads (a callable object's coroutine awaited)."""
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._executor, handler, event)
        if inspect.isawaitable(result):
            await result

    def _caught_up(self, lane: _Lane) -> None:
        lane.overflowing = False
        log.warning(
            "the handlers of #%s caught up; %d events dropped so far", lane.channel, self.dropped
        )

    def _requeue(self, lane: _Lane) -> None:
        """A lane left with events (its task was cancelled): another task goes on with it."""
        if self._closed:
            return
        lane.queued = True
        self._ready.append(lane)
        if self._pump is None:
            self._pump = self._start(self._run_pump(), "handlers")

    def _failed(self, handler: Handler, event: Event) -> None:
        """A handler raised: counted; logged with its traceback at most once every
        :data:`FAILURE_LOG_EVERY_S` per handler, saying how many failed in between."""
        self.errors += 1
        name = getattr(handler, "__qualname__", repr(handler))
        now = _now()
        logged_at, quiet = self._failure_log.get(name, (-FAILURE_LOG_EVERY_S, 0))
        if now - logged_at < FAILURE_LOG_EVERY_S:
            self._failure_log[name] = (logged_at, quiet + 1)
            return
        self._failure_log[name] = (now, 0)
        log.exception(
            "handler %s failed on %s in #%s%s",
            name,
            type(event).__name__,
            event.channel,
            f" ({quiet} more failures of it not logged since the last)" if quiet else "",
        )

    async def drain(self, timeout_s: float) -> bool:
        """Wait until nothing waits (True), at most ``timeout_s`` (False)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self._lanes:
                    if not self._tasks:
                        break
                    await asyncio.wait(set(self._tasks))
                return True
        return False

    async def aclose(self) -> None:
        """Stop: what waits is dropped, handlers under way are cancelled (threads finish
        their call). Idempotent."""
        self._closed = True
        try:
            await cancel_and_wait(*self._tasks, what="the handlers' dispatch", report=False)
        finally:
            self._lanes.clear()
            self._ready.clear()
            self._executor.shutdown(wait=False, cancel_futures=True)

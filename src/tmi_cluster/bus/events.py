"""The event stream ``P events``: every chat event of the cluster, for any process to read;
and the cluster-wide "seen once" check that keeps it free of duplicates.

An entry has three fields: ``t`` (the event's class name), ``c`` (its channel, empty for none)
and ``e`` (the event, msgpack: ``msgspec`` with the class name as the tag, ``raw`` left out
unless ``handlers.stream_raw``). Readers filter on ``t`` and ``c`` without decoding ``e``.

- :class:`EventPublisher` (a worker): :meth:`~EventPublisher.put` never waits; a task writes
  what waits in batches, each batch trimmed to about ``maxlen`` entries, and every
  :data:`TRIM_EVERY_S` the entries older than ``max_age_s`` go (``XTRIM MINID``). While Redis
  is away, at most ``buffer`` events wait (the oldest dropped beyond, counted and logged).
  A batch is one script call that adds each event as its own entry. With ``dedupe_key`` (the
  second copies of ``coordinator.replicas = 2``: two processes read every channel), each
  event is added only if no publisher added it before, in the same script: ``SET NX`` of
  ``P published:{key}`` (expiring after :data:`~tmi_cluster.bus.keys.DEDUPE_S`, or
  :data:`~tmi_cluster.bus.keys.RAW_DEDUPE_S` for a key made from a raw line), then ``XADD``.
  The check and the write are one step: whichever copy's publisher comes first writes the
  event, and a process killed before it wrote anything has marked nothing, so the other copy
  writes it; the stream holds it once either way, and a channel's events keep the order in
  which both copies read them.
- :class:`EventReader` (any process): an async iterator of events, filtered by channel and
  type. Without a group it reads from its first read or :meth:`~EventReader.start` (or from
  ``since``, an entry id) and
  :attr:`~EventReader.last_id` says where it is. With a group (``XREADGROUP``): the readers of
  one group share the events, each group sees all of them from its creation, an event is
  acknowledged when the reader asks for the next one, a reader that restarts with the same
  ``consumer`` name first gets what it had read and not finished, and events left pending by a
  consumer that went away are taken over after :data:`CLAIM_IDLE_S` (and a consumer idle for
  :data:`CONSUMER_IDLE_S` with nothing pending leaves the group).
- :class:`Seen`: ``SET NX`` of each event's key with an expiry of
  :data:`~tmi_cluster.bus.keys.DEDUPE_S` (:data:`~tmi_cluster.bus.keys.RAW_DEDUPE_S` for a key
  made from a raw line), pipelined; True for the first process to see an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Union

import msgspec
import redis.asyncio
import redis.exceptions

from tmi_cluster.bus.client import block_ms, describe_client, translated
from tmi_cluster.bus.keys import DEDUPE_S, RAW_DEDUPE_S, RAW_KEY_MARK, Keys
from tmi_cluster.bus.windows import Outage
from tmi_cluster.config.model import HandlersSettings
from tmi_cluster.errors import RedisUnavailableError
from tmi_cluster.events import ALL_EVENT_TYPES, LOCAL_EVENTS, RAW_LINE_EVENTS, Event

__all__ = [
    "CLAIM_IDLE_S",
    "CONSUMER_IDLE_S",
    "TRIM_EVERY_S",
    "EventPublisher",
    "EventReader",
    "Seen",
]

log = logging.getLogger(__name__)

#: Seconds between two trims of the stream by age.
TRIM_EVERY_S = 10.0
#: Seconds after which an event read by a group's consumer and not acknowledged is taken over.
CLAIM_IDLE_S = 30.0
#: Seconds after which a group's consumer with nothing pending, idle, leaves the group.
CONSUMER_IDLE_S = 3600.0
_BATCH = 500

# KEYS[1]: the stream. ARGV[1]: its approximate length bound; ARGV[2]: a msgpack array of
# (type, channel, length of the event's bytes) triples, flat; ARGV[3]: the events' bytes, one
# after the other (Redis's cmsgpack reads no msgpack bin, hence the lengths). One XADD per
# event, inside Redis, and one XTRIM: one command of three arguments a batch instead of a
# command per event (the client's cost per command and per argument bounds a worker's rate).
# ARGV[4]: '' (every event written), or a msgpack array of the events' dedupe keys, each
# written only if ``ARGV[5] .. key`` (the prefix of Keys.published) could be set: for ARGV[6]
# seconds, ARGV[7] for a key holding ARGV[8] (a key made from a raw line). Returns how many
# were written.
_PUBLISH = """
local key, maxlen, blob = KEYS[1], ARGV[1], ARGV[3]
local items = cmsgpack.unpack(ARGV[2])
local checked = ARGV[4] ~= ''
local dedupe = {}
if checked then dedupe = cmsgpack.unpack(ARGV[4]) end
local at = 1
local written = 0
for i = 1, #items, 3 do
  local size = items[i + 2]
  local first = true
  if checked then
    local mark = dedupe[(i + 2) / 3]
    local ttl = ARGV[6]
    if string.find(mark, ARGV[8], 1, true) then ttl = ARGV[7] end
    first = redis.call('SET', ARGV[5] .. mark, '1', 'NX', 'EX', ttl)
  end
  if first then
    redis.call('XADD', key, '*', 't', items[i], 'c', items[i + 1],
               'e', string.sub(blob, at, at + size - 1))
    written = written + 1
  end
  at = at + size
end
redis.call('XTRIM', key, 'MAXLEN', '~', maxlen)
return written
"""

_ENCODE = msgspec.msgpack.Encoder()
_REPLACE = msgspec.structs.replace
_DECODE: msgspec.msgpack.Decoder[Event] = msgspec.msgpack.Decoder(Union[ALL_EVENT_TYPES])  # noqa: UP007
_NOT_STREAMED = frozenset((*RAW_LINE_EVENTS, *LOCAL_EVENTS))
#: An event waiting for the stream: its type, channel, msgpack form and dedupe key ("": none).
_Entry = tuple[str, str, bytes, str]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class EventPublisher:
    """Writes a worker's events to the stream; see the module."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: Keys,
        *,
        maxlen: int = 100_000,
        max_age_s: float = 3600.0,
        raw: bool = False,
        buffer: int = 100_000,
        outage: Outage | None = None,
        dedupe_key: Callable[[Event], str] | None = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.maxlen = maxlen
        self.max_age_s = max_age_s
        self.raw = raw
        self.buffer = buffer
        self.outage = outage or Outage()
        #: Each event's key for the check before it is written (None: no check); see the module.
        self.dedupe_key = dedupe_key
        #: Events written to the stream, dropped (the buffer full while Redis was away), and
        #: not written because another publisher had written them (with ``dedupe_key``).
        self.published = 0
        self.dropped = 0
        self.duplicates = 0
        # encoded at once: bytes wait, not event objects (less memory, nothing for the
        # garbage collector to walk while a burst waits)
        self._waiting: deque[_Entry] = deque()
        self._ready = asyncio.Event()
        self._where = describe_client(client)
        self._script = client.register_script(_PUBLISH)
        self._trimmed_at = 0.0

    @classmethod
    def from_settings(
        cls,
        client: redis.asyncio.Redis,
        keys: Keys,
        options: HandlersSettings,
        *,
        outage: Outage | None = None,
        dedupe_key: Callable[[Event], str] | None = None,
    ) -> EventPublisher:
        """A publisher as ``handlers.stream_maxlen``, ``stream_max_age`` and ``stream_raw``
        describe it (checking each event with ``dedupe_key``, when given)."""
        return cls(
            client,
            keys,
            maxlen=options.stream_maxlen,
            max_age_s=options.stream_max_age,
            raw=options.stream_raw,
            outage=outage,
            dedupe_key=dedupe_key,
        )

    def put(self, event: Event) -> None:
        """Queue ``event`` for the stream (the raw-line events never go). Never waits."""
        if type(event) in _NOT_STREAMED:
            return
        entry = self._entry(event)
        waiting = self._waiting
        if len(waiting) >= self.buffer:
            waiting.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.warning(
                    "the event stream falls behind (Redis away?): %d events dropped", self.dropped
                )
        waiting.append(entry)
        if not self._ready.is_set():
            self._ready.set()

    async def run(self, stop: asyncio.Event, *, flush_s: float = 2.0) -> None:
        """Publish until ``stop`` is set, then for at most ``flush_s`` what still waits."""
        while not stop.is_set():
            if not self._waiting:
                self._ready.clear()
                stopping = asyncio.ensure_future(stop.wait())
                ready = asyncio.ensure_future(self._ready.wait())
                try:
                    await asyncio.wait({stopping, ready}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopping.cancel()
                    ready.cancel()
                continue
            await self._publish_some()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(flush_s):
                while self._waiting:
                    await self._publish_some()

    async def _publish_some(self) -> None:
        waiting = self._waiting
        batch = [waiting.popleft() for _ in range(min(len(waiting), _BATCH))]
        try:
            await self._write(batch)
            self.outage.ended()
        except RedisUnavailableError as error:
            self.outage.began(error, "the event stream")
            waiting.extendleft(reversed(batch))  # kept, in order, for the next try
            while len(waiting) > self.buffer:
                waiting.popleft()
                self.dropped += 1
            await asyncio.sleep(0.5)

    async def publish(self, events: Sequence[Event]) -> None:
        """Write ``events`` now (one pipeline), and trim by age when it is time."""
        await self._write([self._entry(e) for e in events])

    def _entry(self, event: Event) -> _Entry:
        """An event as the stream keeps it: its type, channel and msgpack form, and its key
        for the check ("" without one)."""
        key = self.dedupe_key(event) if self.dedupe_key is not None else ""
        if event.raw and not self.raw:
            event = _REPLACE(event, raw="")
        return type(event).__name__, event.channel or "", _ENCODE.encode(event), key

    async def _write(self, entries: Sequence[_Entry]) -> None:
        """Write encoded ``entries`` (type, channel, event, key), and trim by age when it is
        time."""
        key = self.keys.events
        items = [x for kind, channel, data, _ in entries for x in (kind, channel, len(data))]
        blob = b"".join(data for _, _, data, _ in entries)
        checked = b""
        if self.dedupe_key is not None:
            checked = _ENCODE.encode([mark for _, _, _, mark in entries])
        args: list[bytes | str | int] = [
            self.maxlen,
            _ENCODE.encode(items),
            blob,
            checked,
            self.keys.published(""),
            DEDUPE_S,
            RAW_DEDUPE_S,
            RAW_KEY_MARK,
        ]
        with translated(self._where):
            written = await self._script(keys=[key], args=args)
            now = time.monotonic()
            if now - self._trimmed_at >= TRIM_EVERY_S:
                self._trimmed_at = now
                seconds, micros = await self.client.time()
                oldest_ms = int((float(seconds) + float(micros) / 1e6 - self.max_age_s) * 1000)
                await self.client.xtrim(key, minid=oldest_ms, approximate=True)
        self.published += int(written)
        self.duplicates += len(entries) - int(written)


class Seen:
    """The cluster-wide check "has any process seen this event before?"; see the module."""

    def __init__(self, client: redis.asyncio.Redis, keys: Keys, *, ttl_s: int = DEDUPE_S) -> None:
        self.client = client
        self.keys = keys
        self.ttl_s = ttl_s
        self._where = describe_client(client)

    async def first(self, dedupe_keys: Sequence[str]) -> list[bool]:
        """For each key, whether this call is the first to see it (in one pipeline)."""
        if not dedupe_keys:
            return []
        with translated(self._where):
            pipe = self.client.pipeline(transaction=False)
            for key in dedupe_keys:
                ttl = min(self.ttl_s, RAW_DEDUPE_S) if RAW_KEY_MARK in key else self.ttl_s
                pipe.set(self.keys.dedupe(key), b"1", nx=True, ex=ttl)
            answers = await pipe.execute()
        return [bool(a) for a in answers]


def default_consumer() -> str:
    """A consumer name for this process: host name and process id."""
    return f"{socket.gethostname()}-{os.getpid()}"


class EventReader:
    """Events of the stream as an async iterator; see the module. ``channels`` and ``types``
    (class names, subclasses already resolved) filter; None lets everything through. With
    ``owns_client``, :meth:`aclose` closes the client too."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: Keys,
        *,
        channels: frozenset[str] | None = None,
        types: frozenset[str] | None = None,
        group: str | None = None,
        consumer: str | None = None,
        since: str | None = None,
        block_s: float = 1.0,
        batch: int = _BATCH,
        owns_client: bool = False,
    ) -> None:
        self.client = client
        self.owns_client = owns_client
        self.keys = keys
        self.channels = channels
        self.types = types
        self.group = group
        self.consumer = consumer or default_consumer()
        self.block_s = block_s
        self.batch = batch
        #: The id of the last entry read (``$``: none yet, reading from now).
        self.last_id = since or "$"
        #: Events skipped because they did not decode (an entry of another version).
        self.undecodable = 0
        self.outage = Outage()
        self._since = since
        self._read_to = self.last_id  # where the next read without a group goes on from
        self._buffer: deque[tuple[str, Event]] = deque()
        self._to_ack: list[str] = []
        self._own = True  # a group's consumer first reads what it had read and not finished
        self._group_ready = False
        self._lost_group = False
        self._claimed_at = 0.0
        self._closed = False
        self._where = describe_client(client)

    def __aiter__(self) -> EventReader:
        return self

    async def start(self) -> EventReader:
        """Fix the reader's starting point now ("from now" is otherwise its first read) and
        make its group if it has one; itself, for ``reader = await cluster.events().start()``."""
        with translated(self._where):
            if self.group is None and self._read_to == "$":
                newest: Any = await self.client.xrevrange(self.keys.events, count=1)
                self._read_to = _text(newest[0][0]) if newest else "0-0"
        if self.group is not None and not self._group_ready:
            await self._ensure_group()
        return self

    async def __anext__(self) -> Event:
        task = asyncio.current_task()
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            if task is not None and task.cancelling():
                # redis-py may finish a blocking read it was told to cancel (the cancellation
                # swallowed, redis/redis-py#2028): the reader's own loop must not go on
                raise asyncio.CancelledError
            try:
                await self._fetch()
                self.outage.ended()
            except RedisUnavailableError as error:
                if self._closed or (task is not None and task.cancelling()):
                    raise asyncio.CancelledError from error  # a cancelled read, not an outage
                self.outage.began(error, "an event stream reader")
                await asyncio.sleep(1.0)
        entry, event = self._buffer.popleft()
        self.last_id = entry
        if self.group is not None:
            self._to_ack.append(entry)
        return event

    async def aclose(self) -> None:
        """Acknowledge what was handed out and stop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(RedisUnavailableError):
            await self._ack()
        if self.owns_client:
            await self.client.aclose()

    async def _ack(self) -> None:
        if self.group is None or not self._to_ack:
            return
        ids, self._to_ack = self._to_ack, []
        with translated(self._where):
            await self.client.xack(self.keys.events, self.group, *ids)

    async def _ensure_group(self) -> None:
        """Make the group: from ``since`` (or now) the first time; from the stream's start
        when Redis forgot it (a restart: everything in the stream came after)."""
        assert self.group is not None
        start = "0" if self._lost_group else self._since or "$"
        with translated(self._where):
            try:
                await self.client.xgroup_create(
                    self.keys.events, self.group, id=start, mkstream=True
                )
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._group_ready = True

    async def _fetch(self) -> None:
        key = self.keys.events
        if self.group is None:
            if self._read_to == "$":  # the newest id now, so that nothing from here on is missed
                with translated(self._where):
                    newest: Any = await self.client.xrevrange(key, count=1)
                self._read_to = _text(newest[0][0]) if newest else "0-0"
            with translated(self._where):
                answer: Any = await self.client.xread(
                    {key: self._read_to}, count=self.batch, block=block_ms(self.block_s)
                )
            entries = answer[0][1] if answer else []
            if entries:
                self._read_to = _text(entries[-1][0])
            self._take(entries)
            return
        await self._ack()
        if not self._group_ready:
            await self._ensure_group()
        entries = await self._claim() if not self._own else []
        if not entries:
            with translated(self._where):
                try:
                    answer = await self.client.xreadgroup(
                        self.group,
                        self.consumer,
                        {key: "0" if self._own else ">"},
                        count=self.batch,
                        block=None if self._own else block_ms(self.block_s),
                    )
                except redis.exceptions.ResponseError as exc:
                    if "NOGROUP" not in str(exc):
                        raise
                    self._group_ready = False  # Redis forgot it (a restart): make it again
                    self._lost_group = True
                    return
            entries = answer[0][1] if answer else []
            if self._own and not entries:
                self._own = False
        self._take(entries)

    async def _claim(self) -> list[Any]:
        """Entries other consumers of the group left pending for :data:`CLAIM_IDLE_S`."""
        now = time.monotonic()
        if now - self._claimed_at < CLAIM_IDLE_S / 3:
            return []
        self._claimed_at = now
        await self._forget_idle_consumers()
        with translated(self._where):
            answer: Any = await self.client.xautoclaim(
                self.keys.events,
                self.group,  # type: ignore[arg-type]
                self.consumer,
                min_idle_time=int(CLAIM_IDLE_S * 1000),
                start_id="0-0",
                count=self.batch,
            )
        return list(answer[1]) if answer and len(answer) > 1 else []

    async def _forget_idle_consumers(self) -> None:
        """Remove the group's consumers that have had nothing pending and read nothing for
        :data:`CONSUMER_IDLE_S` (readers that went away): the group does not grow for ever."""
        assert self.group is not None
        with translated(self._where):
            consumers: Any = await self.client.xinfo_consumers(self.keys.events, self.group)
            for consumer in consumers:
                name = _text(consumer["name"])
                idle_s = int(consumer["idle"]) / 1000
                if name != self.consumer and not consumer["pending"] and idle_s > CONSUMER_IDLE_S:
                    await self.client.xgroup_delconsumer(self.keys.events, self.group, name)

    def _take(self, entries: Sequence[Any]) -> None:
        channels, types = self.channels, self.types
        for entry, fields in entries:
            entry_id = _text(entry)
            if not fields:  # trimmed away while pending
                self._to_ack.append(entry_id)
                continue
            kind = fields.get(b"t", b"").decode(errors="replace")
            channel = fields.get(b"c", b"").decode(errors="replace")
            if (types is not None and kind not in types) or (
                channels is not None and channel not in channels
            ):
                if self.group is not None:
                    self._to_ack.append(entry_id)
                continue
            try:
                event = _DECODE.decode(fields.get(b"e", b""))
            except (msgspec.ValidationError, msgspec.DecodeError):
                self.undecodable += 1
                if self.group is not None:
                    self._to_ack.append(entry_id)
                continue
            self._buffer.append((entry_id, event))

"""Chat messages to send, with acknowledgement: the ``commands:send`` stream.

The flow of one send (every step survives a kill -9 of the worker between any two):

1. The application (:class:`SendClient`) appends a :class:`SendCommand` to ``P commands:send``.
   Its ``id`` is the idempotency key (random, or the caller's own): a command with an id
   that already has a result is not carried out again, it answers with that result.
2. Every worker with a Twitch identity reads the stream in the consumer group
   :data:`SEND_GROUP` as the consumer named by its process id (``XREADGROUP``); what it read
   stays pending with it until acknowledged.
3. Just before it writes the first part to Twitch, the worker marks ``P command:{id}`` with
   ``begun:{process}`` (``SET NX``): only one worker ever writes a command. A marker already
   there means that someone else began it, or that its caller gave up on it (``abandoned``).
4. After writing, one transaction records the :class:`~tmi_cluster.outcomes.SendResult` under
   ``P command:{id}``, pushes it onto the caller's reply list ``P replies:{client}`` and
   acknowledges the entry (``XACK``).
5. The caller waits on its reply list until the command's deadline plus :data:`GRACE_S`. Then
   it fences the command off (``SET NX abandoned``): if that succeeds, nothing was or will be
   written (``timed_out``); if a result is there, that is the answer; if a worker began it, the
   caller waits :data:`GRACE_S` more and then says ``timed_out`` with reason ``in_flight``.

Dead consumers: every worker looks at the group's pending entries every
:data:`CLAIM_EVERY_S`; those of a consumer whose heartbeat is gone are claimed (``XCLAIM``) and
carried out by the claimer, unless the dead one had begun them (then the answer is
``in_flight``: writing it again could send it twice). An entry delivered more than
:data:`MAX_DELIVERIES` times (a command that kills its worker each time) goes to the
dead-letter stream ``P commands:dead`` with the reason, and its caller gets ``failed``.

Nothing grows without bound: the send stream is trimmed by age (:data:`TRIM_AGE_S`, far past
any deadline), dead letters by length (:data:`DEAD_MAXLEN`), markers and reply lists expire,
and consumers that are gone with nothing pending leave the group.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec
import redis.asyncio
import redis.exceptions

from tmi_cluster.bus.client import block_ms, describe_client, translated
from tmi_cluster.bus.keys import Keys
from tmi_cluster.outcomes import IN_FLIGHT, SendRefusal, SendResult, SendStatus

__all__ = [
    "CLAIM_EVERY_S",
    "DEAD_MAXLEN",
    "GRACE_S",
    "MAX_DELIVERIES",
    "MAX_TIMEOUT_S",
    "SEND_GROUP",
    "TRIM_AGE_S",
    "Claimed",
    "DeadLetter",
    "Marker",
    "Received",
    "SendClient",
    "SendCommand",
    "SendQueue",
    "entry_time_s",
    "timed_out",
]

#: The consumer group of the workers that send.
SEND_GROUP = "senders"
#: The longest deadline a send may have, in seconds.
MAX_TIMEOUT_S = 300.0
#: Seconds a caller waits past the deadline for a result (clocks and the last round trip).
GRACE_S = 2.0
#: Seconds between two looks at the pending entries of dead consumers.
CLAIM_EVERY_S = 1.0
#: Deliveries after which a command goes to the dead-letter stream.
MAX_DELIVERIES = 3
#: Entries of the send stream older than this (seconds) are trimmed.
TRIM_AGE_S = 900.0
#: About how many dead letters are kept.
DEAD_MAXLEN = 1000
#: Seconds a command's marker (and so its result, for a retry with the same id) is kept.
MARKER_TTL_S = 3600
#: Seconds a reply list lives after its last reply (its caller is gone by then).
REPLY_TTL_S = 120

_ABANDONED = b"abandoned"


class _NoGroupError(Exception):
    """The consumer group is missing (never made, or a restarted Redis forgot it)."""


_BEGUN = b"begun:"


class SendCommand(msgspec.Struct, frozen=True, kw_only=True):
    """One message to send. ``reply`` names the caller's reply list; the deadline is the
    entry's time in the stream (Redis's clock) plus ``timeout_s``."""

    id: str
    channel: str
    text: str
    reply_to: str | None = None
    action: bool = False
    timeout_s: float = 10.0
    reply: str = ""
    #: The bot account that sends it (a login); None: the channel's sender (see
    #: :mod:`tmi_cluster.worker.senders`).
    sender: str | None = None


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A command that could not be carried out, as the dead-letter stream keeps it."""

    entry: str
    command: SendCommand
    reason: str
    process: str
    deliveries: int
    at: float


_COMMAND = msgspec.msgpack.Encoder()
_DECODE_COMMAND = msgspec.msgpack.Decoder(SendCommand)
_RESULT = msgspec.json.Encoder()
_DECODE_RESULT = msgspec.json.Decoder(SendResult)
_DECODE_DEAD = msgspec.json.Decoder(DeadLetter)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def entry_time_s(entry_id: str) -> float:
    """The Redis time (seconds) at which a stream entry was added, from its id."""
    return int(entry_id.partition("-")[0]) / 1000


@dataclass(frozen=True, slots=True)
class Received:
    """A command as a worker read it: the stream entry, its deliveries so far, and the
    command (None when the entry did not decode: a poison entry)."""

    entry: str
    command: SendCommand | None
    deliveries: int = 1

    @property
    def deadline_s(self) -> float:
        """The command's deadline on Redis's clock (seconds)."""
        timeout = self.command.timeout_s if self.command is not None else 0.0
        return entry_time_s(self.entry) + timeout


@dataclass(frozen=True, slots=True)
class Marker:
    """What ``P command:{id}`` says: nothing yet, a result, begun by a process, abandoned."""

    result: SendResult | None = None
    begun_by: str | None = None
    abandoned: bool = False

    @property
    def empty(self) -> bool:
        """Nobody began it, nobody gave up on it, no result."""
        return self.result is None and self.begun_by is None and not self.abandoned


def _marker(raw: bytes | None) -> Marker:
    if raw is None:
        return Marker()
    if raw == _ABANDONED:
        return Marker(abandoned=True)
    if raw.startswith(_BEGUN):
        return Marker(begun_by=raw[len(_BEGUN) :].decode(errors="replace"))
    try:
        return Marker(result=_DECODE_RESULT.decode(raw))
    except (msgspec.ValidationError, msgspec.DecodeError):
        return Marker(abandoned=True)  # not ours to carry out


class Claimed(NamedTuple):
    """Pending entries taken over from dead consumers, and the consumers removed."""

    entries: list[Received]
    removed: list[str]


class SendQueue:
    """A worker's side of the send stream, as consumer ``consumer`` (its process id)."""

    def __init__(self, client: redis.asyncio.Redis, keys: Keys, consumer: str) -> None:
        self.client = client
        self.keys = keys
        self.consumer = consumer
        self._where = describe_client(client)

    async def redis_time(self) -> float:
        """Redis's clock now (Unix seconds): the deadlines of commands are on it."""
        with translated(describe_client(self.client)):
            raw: Any = await self.client.time()
        return float(raw[0]) + float(raw[1]) / 1e6

    async def ensure_group(self) -> None:
        """Create the consumer group (from the stream's start) unless it exists."""
        with translated(self._where):
            try:
                await self.client.xgroup_create(
                    self.keys.send_commands, SEND_GROUP, id="0", mkstream=True
                )
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read(self, count: int, timeout_s: float, *, own: bool = False) -> list[Received]:
        """Up to ``count`` new commands, waiting at most ``timeout_s``; with ``own``, this
        consumer's pending ones instead (those an earlier life of it read). A lost group
        (Redis restarted) is created again."""
        try:
            return await self._read(count, timeout_s, own)
        except _NoGroupError:
            pass
        await self.ensure_group()
        return await self._read(count, timeout_s, own)

    async def _read(self, count: int, timeout_s: float, own: bool) -> list[Received]:
        key = self.keys.send_commands
        with translated(self._where):
            try:
                answer: Any = await self.client.xreadgroup(
                    SEND_GROUP,
                    self.consumer,
                    {key: "0" if own else ">"},
                    count=count,
                    block=None if own else block_ms(timeout_s),
                )
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    raise _NoGroupError from exc
                raise
        if not answer:
            return []
        return [_received(entry, fields) for entry, fields in answer[0][1] if fields]

    async def marker(self, command_id: str) -> Marker:
        """What the command's marker says now."""
        with translated(self._where):
            raw: Any = await self.client.get(self.keys.command(command_id))
        return _marker(raw)

    async def begin(self, command_id: str) -> Marker:
        """Mark the command begun by this consumer; the empty marker when that worked, else
        what was there (someone else began it, or its caller gave up)."""
        key = self.keys.command(command_id)
        with translated(self._where):
            pipe = self.client.pipeline(transaction=True)
            pipe.set(key, _BEGUN + self.consumer.encode(), nx=True, ex=MARKER_TTL_S)
            pipe.get(key)
            done, raw = await pipe.execute()
        return Marker() if done else _marker(raw)

    async def finish(self, received: Received, result: SendResult) -> None:
        """Record ``result``, answer the caller, acknowledge the entry: in one transaction."""
        command = received.command
        data = _RESULT.encode(result)
        with translated(self._where):
            pipe = self.client.pipeline(transaction=True)
            if command is not None:
                pipe.set(self.keys.command(command.id), data, ex=MARKER_TTL_S)
                if command.reply:
                    reply = self.keys.replies(command.reply)
                    pipe.rpush(reply, data)
                    pipe.expire(reply, REPLY_TTL_S)
            pipe.xack(self.keys.send_commands, SEND_GROUP, received.entry)
            await pipe.execute()

    async def dead_letter(self, received: Received, reason: str) -> SendResult | None:
        """Move ``received`` to the dead-letter stream with ``reason``; the caller is answered
        ``failed`` (returned; None when the entry had no command to answer)."""
        command = received.command or SendCommand(id="", channel="", text="")
        letter = DeadLetter(
            entry=received.entry,
            command=command,
            reason=reason,
            process=self.consumer,
            deliveries=received.deliveries,
            at=time.time(),
        )
        with translated(self._where):
            await self.client.xadd(
                self.keys.dead_letters,
                {"d": _RESULT.encode(letter)},
                maxlen=DEAD_MAXLEN,
                approximate=True,
            )
        if received.command is None:
            with translated(self._where):
                await self.client.xack(self.keys.send_commands, SEND_GROUP, received.entry)
            return None
        result = SendResult(
            id=command.id,
            channel=command.channel,
            status=SendStatus.REFUSED,
            reason=SendRefusal.FAILED.value,
            detail=f"{reason} (dead-lettered; see 'tmi-cluster dead-letters')",
        )
        await self.finish(received, result)
        return result

    async def claim_dead(self, count: int = 100) -> Claimed:
        """Take over the pending entries (at most ``count``) of consumers whose process has no
        heartbeat, and remove such consumers once nothing of theirs is pending."""
        key = self.keys.send_commands
        with translated(self._where):
            try:
                info: Any = await self.client.xinfo_consumers(key, SEND_GROUP)
            except redis.exceptions.ResponseError:
                return Claimed([], [])  # no group yet (or Redis forgot it): nothing pending
            others = [c for c in info if _text(c["name"]) != self.consumer]
            pipe = self.client.pipeline(transaction=False)
            for consumer in others:
                pipe.exists(self.keys.process_heartbeat(_text(consumer["name"])))
            alive = await pipe.execute() if others else []
        entries: list[Received] = []
        removed: list[str] = []
        for consumer, live in zip(others, alive, strict=True):
            name = _text(consumer["name"])
            if live:
                continue
            if int(consumer["pending"]) == 0:
                with translated(self._where):
                    await self.client.xgroup_delconsumer(key, SEND_GROUP, name)
                removed.append(name)
            elif len(entries) < count:
                entries += await self._claim_from(name, count - len(entries))
        return Claimed(entries, removed)

    async def _claim_from(self, name: str, count: int) -> list[Received]:
        """Take over up to ``count`` pending entries of consumer ``name``."""
        key = self.keys.send_commands
        with translated(self._where):
            pending: Any = await self.client.xpending_range(
                key, SEND_GROUP, min="-", max="+", count=count, consumername=name
            )
        if not pending:
            return []
        deliveries = {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
        ids: list[Any] = list(deliveries)
        with translated(self._where):
            claimed: Any = await self.client.xclaim(
                key, SEND_GROUP, self.consumer, min_idle_time=0, message_ids=ids
            )
        entries = []
        found = set()
        for entry, fields in claimed:
            entry_id = _text(entry)
            found.add(entry_id)
            if fields:
                entries.append(_received(entry, fields, deliveries[entry_id] + 1))
        gone = [i for i in ids if i not in found]  # trimmed away: nothing to carry out
        if gone:
            with translated(self._where):
                await self.client.xack(key, SEND_GROUP, *gone)
        return entries

    async def trim(self) -> None:
        """Trim the send stream of entries older than :data:`TRIM_AGE_S` (Redis's clock)."""
        with translated(self._where):
            now: Any = await self.client.time()
            oldest_ms = int((float(now[0]) - TRIM_AGE_S) * 1000)
            await self.client.xtrim(self.keys.send_commands, minid=oldest_ms, approximate=True)


def _received(entry: bytes | str, fields: dict[bytes, bytes], deliveries: int = 1) -> Received:
    try:
        command: SendCommand | None = _DECODE_COMMAND.decode(fields.get(b"c", b""))
    except (msgspec.ValidationError, msgspec.DecodeError):
        command = None
    return Received(_text(entry), command, deliveries)


class SendClient:
    """The application's side: submit commands, collect their results, fence off late ones.

    ``client_id`` names this caller's reply list (random by default, one per
    :class:`~tmi_cluster.Cluster`)."""

    def __init__(
        self, client: redis.asyncio.Redis, keys: Keys, client_id: str | None = None
    ) -> None:
        self.client = client
        self.keys = keys
        self.client_id = client_id or secrets.token_hex(8)
        self._where = describe_client(client)

    @property
    def reply_key(self) -> str:
        """This caller's reply list."""
        return self.keys.replies(self.client_id)

    async def submit(self, command: SendCommand) -> str:
        """Append ``command``; the stream entry's id."""
        with translated(self._where):
            entry: Any = await self.client.xadd(
                self.keys.send_commands, {"c": _COMMAND.encode(command)}
            )
        return _text(entry)

    async def replies(self, timeout_s: float) -> list[SendResult]:
        """Results pushed to this caller, waiting at most ``timeout_s`` for the first."""
        key = self.reply_key
        with translated(self._where):
            first: Any = await self.client.blpop([key], timeout=max(timeout_s, 0.01))
            if first is None:
                return []
            rest: Any = await self.client.lpop(key, 1000)
        raws = [first[1], *(rest or [])]
        results = []
        for raw in raws:
            try:
                results.append(_DECODE_RESULT.decode(raw))
            except (msgspec.ValidationError, msgspec.DecodeError):
                continue
        return results

    async def known(self, command_id: str) -> SendResult | None:
        """The result already recorded for ``command_id`` (a retry with the same id)."""
        with translated(self._where):
            raw: Any = await self.client.get(self.keys.command(command_id))
        return _marker(raw).result

    async def abandon(self, command_id: str) -> Marker:
        """Fence the command off unless someone began it: the empty marker when it is fenced
        off (nothing was or will be written), else what the marker says."""
        key = self.keys.command(command_id)
        with translated(self._where):
            pipe = self.client.pipeline(transaction=True)
            pipe.set(key, _ABANDONED, nx=True, ex=MARKER_TTL_S)
            pipe.get(key)
            done, raw = await pipe.execute()
        return Marker() if done else _marker(raw)

    async def dead_letters(self, count: int = 100) -> list[DeadLetter]:
        """The newest dead letters, newest first."""
        with translated(self._where):
            raw: Any = await self.client.xrevrange(self.keys.dead_letters, count=count)
        letters = []
        for _, fields in raw:
            try:
                letters.append(_DECODE_DEAD.decode(fields[b"d"]))
            except (KeyError, msgspec.ValidationError, msgspec.DecodeError):
                continue
        return letters

    async def pending(self) -> dict[str, int]:
        """Commands read and not yet acknowledged, by consumer (process id)."""
        with translated(self._where):
            try:
                info: Any = await self.client.xinfo_consumers(self.keys.send_commands, SEND_GROUP)
            except redis.exceptions.ResponseError:
                return {}
        return {_text(c["name"]): int(c["pending"]) for c in info}


def timed_out(command: SendCommand, marker: Marker) -> SendResult:
    """The result of a command nobody answered in time, from its marker."""
    if marker.result is not None:
        return marker.result
    if marker.begun_by is not None:
        return SendResult(
            id=command.id,
            channel=command.channel,
            status=SendStatus.TIMED_OUT,
            reason=IN_FLIGHT,
            detail=f"worker {marker.begun_by} began writing it and did not say whether it "
            "reached Twitch",
            process=marker.begun_by,
        )
    return SendResult(
        id=command.id,
        channel=command.channel,
        status=SendStatus.TIMED_OUT,
        detail=f"no worker sent it within {command.timeout_s:g} s; it was not sent and will not be",
    )

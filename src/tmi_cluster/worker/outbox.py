"""A worker's consumer of the send stream: each command carried out once, and answered.

:class:`Outbox` runs in every worker with a Twitch identity (:mod:`tmi_cluster.bus.commands`
documents the protocol). It reads new commands as consumer ``process id``, first those that an
earlier life of the same id left pending, and every :data:`~tmi_cluster.bus.commands.CLAIM_EVERY_S`
those of dead consumers; carries each out through the pool's sender (at most
:data:`MAX_IN_FLIGHT` at once, each in a task of its own: a channel waiting for its interval
delays no other); and answers each with a :class:`~tmi_cluster.outcomes.SendResult` that is
true to what happened:

- written (the parts written, and which worker), after the last part went to the socket;
- refused with a :class:`~tmi_cluster.outcomes.SendRefusal` when nothing was written: no
  identity, text too long, no room in the budget before the deadline (``rate_limited``), the
  sending connection not up before the deadline (``not_connected``), Twitch refusing the login
  (``unauthorized``), Twitch's API refusing or dropping the message in an EventSub channel
  (:func:`~tmi_cluster.eventsub.sending.refusal_of`: Twitch's code in the detail), or an error
  of ours (``failed``: logged with its traceback, the command
  dead-lettered);
- timed out when the deadline passed before it began (nothing written), or ``in_flight`` when a
  worker that ended had begun it (it may have reached Twitch; it is not written again).

A Redis outage is waited out: a command whose result could not be recorded stays pending and is
answered once Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from tmi_cluster.bus import Outage
from tmi_cluster.bus.commands import (
    CLAIM_EVERY_S,
    GRACE_S,
    MAX_DELIVERIES,
    Marker,
    Received,
    SendCommand,
    SendQueue,
    timed_out,
)
from tmi_cluster.channels import ChannelManager
from tmi_cluster.chat.connection import ConnectionState
from tmi_cluster.chat.pool import Pool
from tmi_cluster.chat.sender import PartlySentError
from tmi_cluster.errors import (
    ChatRefusedError,
    DeadlineError,
    LoginError,
    MessageTooLongError,
    NoIdentityError,
    RedisUnavailableError,
    UnsafeLineError,
)
from tmi_cluster.outcomes import SendRefusal, SendResult, SendStatus
from tmi_cluster.worker.asking import Batched
from tmi_cluster.worker.senders import SenderChoice

__all__ = ["MAX_IN_FLIGHT", "Outbox"]

log = logging.getLogger(__name__)

#: Commands a worker carries out at once, at most.
MAX_IN_FLIGHT = 200
_TRIM_EVERY_S = 60.0
_READ_WAIT_S = 0.5
_ANSWER_TRIES = 30
#: A command with less time left than this when a worker takes it up times out rather than
#: waits for budget (its deadline, not the budget, is what stops it).
_TOO_SHORT_S = 0.1
#: Seconds a channel manager's answer for a channel is reused (a revoke applies within it).
_AUTHORIZED_S = 2.0


class _NotOursError(Exception):
    """Someone else began the command, or its caller gave up on it: nothing is written."""

    def __init__(self, marker: Marker) -> None:
        self.marker = marker
        super().__init__("not ours")


class Outbox:
    """Carries out the send commands of the cluster in one worker; see the module."""

    def __init__(
        self,
        queue: SendQueue,
        pool: Pool,
        *,
        outage: Outage | None = None,
        restrict_to: ChannelManager | None = None,
        senders: SenderChoice | None = None,
    ) -> None:
        self.queue = queue
        self.pool = pool
        self.outage = outage or Outage()
        #: With a manager (``channel_manager.channel.restrict_messages``): only channels it
        #: authorizes are sent to; the others are refused ``unauthorized``.
        self.restrict_to = restrict_to
        self._allowed: Batched[bool] | None = None
        if restrict_to is not None:
            manager = restrict_to

            async def authorized(channels: Sequence[str]) -> dict[str, bool]:
                return dict.fromkeys(await manager.authorized(channels), True)

            self._allowed = Batched(
                authorized, missing=False, fallback=False, keep_s=_AUTHORIZED_S, what="about"
            )
        #: Which bot account sends each command that names none (None: the first).
        self.senders = senders
        #: Commands answered, by status, since the outbox started.
        self.answered: dict[str, int] = {status.value: 0 for status in SendStatus}
        #: Commands moved to the dead-letter stream, since the outbox started.
        self.dead_lettered = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._unwritten: set[str] = set()  # commands begun here whose first write has not come
        self._offset_s = 0.0  # Redis's clock minus ours
        self._claimed_at = 0.0
        self._trimmed_at = 0.0

    def _ours_unwritten(self, command_id: str, marker: Marker) -> bool:
        """A marker that says this worker began the command, in this life, and wrote nothing of
        it (a Redis error came between): it may go on with it."""
        return marker.begun_by == self.queue.consumer and command_id in self._unwritten

    @property
    def in_flight(self) -> int:
        """Commands being carried out now."""
        return len(self._tasks)

    async def run(self, stop: asyncio.Event) -> None:
        """Carry out commands until ``stop`` is set, then finish those under way (their own
        deadlines bound them). An outage of Redis is waited out."""
        own = True
        try:
            while not stop.is_set():
                try:
                    if own:
                        await self.queue.ensure_group()
                        await self._clock()
                    await self._turn(own)
                    own = False
                    self.outage.ended()
                except RedisUnavailableError as error:
                    self.outage.began(error, f"the send consumer of {self.queue.consumer}")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._allowed is not None:
                await self._allowed.aclose()
            if self.senders is not None:
                await self.senders.aclose()

    async def _turn(self, own: bool) -> None:
        now = time.monotonic()
        if now - self._claimed_at >= CLAIM_EVERY_S:
            self._claimed_at = now
            claimed = await self.queue.claim_dead()
            for name in claimed.removed:
                log.info("send consumer %s left the group (its process is gone)", name)
            if claimed.entries:
                log.warning(
                    "%s took over %d commands of workers that are gone",
                    self.queue.consumer,
                    len(claimed.entries),
                )
            for received in claimed.entries:
                self._start(received)
        if now - self._trimmed_at >= _TRIM_EVERY_S:
            self._trimmed_at = now
            await self.queue.trim()
            await self._clock()
        room = MAX_IN_FLIGHT - len(self._tasks)
        if room <= 0:
            await asyncio.wait(
                set(self._tasks), timeout=_READ_WAIT_S, return_when=asyncio.FIRST_COMPLETED
            )
            return
        for received in await self.queue.read(room, _READ_WAIT_S, own=own):
            self._start(received)

    async def _clock(self) -> None:
        """Learn the offset of Redis's clock from ours (deadlines are on Redis's clock)."""
        self._offset_s = await self.queue.redis_time() - time.time()

    def _start(self, received: Received) -> None:
        task = asyncio.create_task(self._carry_out(received), name=f"send {received.entry}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _carry_out(self, received: Received) -> None:
        """Carry out one command and answer it; never raises (an error of ours is logged,
        dead-lettered and answered ``failed``)."""
        try:
            result = await self._waiting_out_redis(received)
        except Exception as exc:  # a bug of ours: visible, the command not lost
            log.exception("%s failed on command %s", self.queue.consumer, received.entry)
            reason = f"{type(exc).__name__}: {exc}"
            await self._until_done(lambda: self._dead_letter(received, reason))
            return
        if result is not None:
            await self._until_done(lambda: self.queue.finish(received, result))
            self.answered[result.status.value] += 1

    async def _dead_letter(self, received: Received, reason: str) -> None:
        await self.queue.dead_letter(received, reason)
        self.dead_lettered += 1
        self.answered[SendStatus.REFUSED.value] += 1

    async def _until_done(self, write: Callable[[], Awaitable[None]]) -> None:
        """Write an answer, again after each Redis outage, for at most :data:`_ANSWER_TRIES`
        tries; then the caller's deadline answers for it (the marker says what happened)."""
        for _ in range(_ANSWER_TRIES):
            try:
                await write()
            except RedisUnavailableError as error:
                self.outage.began(error, f"the send consumer of {self.queue.consumer}")
                await asyncio.sleep(1.0)
            else:
                self.outage.ended()
                return
        log.error(
            "%s could not record an answer in Redis; its caller's deadline answers",
            self.queue.consumer,
        )

    async def _waiting_out_redis(self, received: Received) -> SendResult | None:
        """:meth:`_result`, tried again while Redis does not answer, until the command's
        deadline (and the callers' grace) has passed; then None: the entry stays pending and
        its caller's deadline answers for it (nothing was written: a write is the last step
        before the answer, and a command begun here is carried on here)."""
        while True:
            try:
                return await self._result(received)
            except RedisUnavailableError as error:
                self.outage.began(error, f"the send consumer of {self.queue.consumer}")
                if time.time() + self._offset_s > received.deadline_s + GRACE_S:
                    return None
                await asyncio.sleep(0.5)

    async def _result(self, received: Received) -> SendResult | None:
        command = received.command
        if command is None:
            await self._dead_letter(received, "the entry is not a send command")
            return None
        if received.deliveries > MAX_DELIVERIES:
            await self._dead_letter(
                received,
                f"read {received.deliveries} times: each worker "
                "that read it ended before it was done",
            )
            return None
        marker = await self.queue.marker(command.id)
        if not marker.empty and not self._ours_unwritten(command.id, marker):
            # answered before, begun by another, or given up: not again
            return timed_out(command, marker) if marker.result is None else marker.result
        remaining_s = received.deadline_s - (time.time() + self._offset_s)
        if remaining_s <= 0:
            return timed_out(command, Marker())
        if not await self._may_send(command.channel):
            return SendResult(
                id=command.id,
                channel=command.channel,
                status=SendStatus.REFUSED,
                reason=SendRefusal.UNAUTHORIZED.value,
                detail=f"#{command.channel} is not authorized for messages "
                "(channel_manager.channel.restrict_messages)",
            )
        return await self._say(command, remaining_s)

    async def _may_send(self, channel: str) -> bool:
        """Whether the channel manager lets messages go to ``channel``: asked at most every
        :data:`_AUTHORIZED_S` per channel, and the channels of every send that waits for an
        answer asked together, one ``authorized()`` call at a time (no call per channel);
        a manager that cannot answer refuses."""
        return True if self._allowed is None else await self._allowed.get(channel)

    async def _say(self, command: SendCommand, remaining_s: float) -> SendResult:
        """Write ``command`` within ``remaining_s``; its result, whatever happens."""

        async def begin() -> None:
            self._unwritten.add(command.id)  # from here on, a marker of ours may be there
            found = await self.queue.begin(command.id)
            if not found.empty and not self._ours_unwritten(command.id, found):
                raise _NotOursError(found)

        def result(status: SendStatus, detail: str = "", **fields: Any) -> SendResult:
            return SendResult(
                id=command.id, channel=command.channel, status=status, detail=detail, **fields
            )

        loop = asyncio.get_running_loop()
        try:
            answer = await self._written(command, remaining_s, begin, result, loop)
        except RedisUnavailableError:
            raise  # from begin() alone, before any write: the command stays ours to go on with
        except BaseException:
            self._unwritten.discard(command.id)
            raise
        self._unwritten.discard(command.id)
        return answer

    async def _written(
        self,
        command: SendCommand,
        remaining_s: float,
        begin: Callable[[], Awaitable[None]],
        result: Callable[..., SendResult],
        loop: asyncio.AbstractEventLoop,
    ) -> SendResult:
        account = command.sender
        if account is None and self.senders is not None:
            account = await self.senders.account(command.channel)
        try:
            parts = await self.pool.say(
                command.channel,
                command.text,
                reply_to=command.reply_to,
                action=command.action,
                deadline=loop.time() + remaining_s,
                begin=begin,
                account=account,
            )
        except _NotOursError as stop:
            return timed_out(command, stop.marker)
        except PartlySentError as exc:
            detail = f"{exc.sent} of {exc.total} parts written; then the connection went"
            return result(SendStatus.WRITTEN, detail, parts=exc.sent, process=self.queue.consumer)
        except DeadlineError as exc:
            if remaining_s < _TOO_SHORT_S:  # no time to do anything: not a matter of budget
                return timed_out(command, Marker())
            sender = self.pool.sender_for(account)
            up = sender.connection.state is ConnectionState.CONNECTED
            reason = SendRefusal.RATE_LIMITED if up else SendRefusal.NOT_CONNECTED
            return result(SendStatus.REFUSED, str(exc), reason=reason.value)
        except _REFUSABLE as exc:
            reason, shown = next((r, f) for kind, r, f in _REFUSALS if isinstance(exc, kind))
            # Twitch's API says its own reason (ChatRefusedError.reason)
            said = exc.reason if isinstance(exc, ChatRefusedError) else reason.value
            return result(SendStatus.REFUSED, shown.format(exc), reason=said)
        return result(SendStatus.WRITTEN, parts=parts, process=self.queue.consumer)


#: What a refused send says for each error: checked in order, the first match wins.
_REFUSALS: tuple[tuple[type[Exception], SendRefusal, str], ...] = (
    (ChatRefusedError, SendRefusal.FAILED, "{}"),  # its own reason
    (NoIdentityError, SendRefusal.NO_IDENTITY, "{}"),
    (MessageTooLongError, SendRefusal.TOO_LONG, "{}"),
    (UnsafeLineError, SendRefusal.FAILED, "invalid: {}"),
    (ValueError, SendRefusal.FAILED, "invalid: {}"),
    (LoginError, SendRefusal.UNAUTHORIZED, "Twitch refused the bot's login: {}"),
    (ConnectionError, SendRefusal.NOT_CONNECTED, "nothing was sent: {}"),  # the first part
)
_REFUSABLE = tuple(kind for kind, _, _ in _REFUSALS)

"""Sending chat messages within Twitch's rules, through one authenticated connection.

Contracts of :meth:`Sender.say`:

- Text longer than ``max_length`` characters is split (``long_text="split"``, the default), at
  a space where one is near the end of the chunk, never inside a grapheme cluster (an emoji
  with its skin tone, a flag, a letter with its accents stay whole), and every part is sent:
  never truncated silently. With ``long_text="refuse"`` such text raises
  :class:`~tmi_cluster.errors.MessageTooLongError` and nothing is sent.
- ``action=True`` sends a ``/me`` action (``\x01ACTION text\x01``); ``reply_to`` (a message id)
  makes the message a reply in a thread (tag ``reply-parent-msg-id``; on the first part only
  when the text is split).
- At least ``channel_interval_s`` (plus ``margin_s``, for the network's uneven delays) between
  two messages in one channel.
- Twitch drops a message identical to the previous one in the channel within 30 s
  (``msg_duplicate``); such a message gets an invisible tag character (U+E0000) appended, the
  usual remedy of Twitch bots, so that it is delivered.
- Every message is taken from the account's windows as Twitch counts them: in a channel where
  the account moderates (learned from USERSTATE, see :meth:`observe`), from
  ``moderator_messages`` only; elsewhere from ``messages`` and ``moderator_messages`` both.
- The text goes through :func:`~tmi_cluster.irc.serialize`: CR, LF and NUL are refused with
  :class:`~tmi_cluster.errors.UnsafeLineError` before anything of the text is sent.
- With ``channel_window`` (a factory of a window per channel, shared by every process of the
  account), the interval between two messages in a channel is kept across the cluster rather
  than in this process only; with ``last_messages``, so is the duplicate rule.
- With a ``deadline`` (the event loop's clock), :class:`~tmi_cluster.errors.DeadlineError` is
  raised when the first part cannot be written by then (nothing was written); once the first
  part is written, the rest follows whatever the time. ``begin``, when given, is awaited once,
  after the budget for the first part was taken and just before it is written: it may raise
  to stop the send with nothing written (the cluster's "only one worker writes a command").
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal, Protocol

import regex

from tmi_cluster.chat.ratelimit import DEFAULT_MARGIN_S, LocalWindow, Rate, Window
from tmi_cluster.errors import (
    ChatRefusedError,
    DeadlineError,
    MessageTooLongError,
    UnsafeLineError,
)
from tmi_cluster.events import Event, UserStateEvent
from tmi_cluster.logins import normalise_login

if TYPE_CHECKING:  # not at run time: Cluster.send checks its text without a connection
    from tmi_cluster.chat.connection import Connection
    from tmi_cluster.eventsub.sending import ApiChat, ApiTarget

__all__ = ["LastMessages", "PartlySentError", "Sender", "check_text", "split_text"]

_INVISIBLE = " \U000e0000"
_GRAPHEME = regex.compile(r"\X")
_UNSAFE = ("\r", "\n", "\0")


def split_text(text: str, max_length: int = 500) -> list[str]:
    """``text`` in parts of at most ``max_length`` characters (code points).

    A part ends at a space when one lies in its last fifth (the space is dropped), else at the
    last grapheme-cluster boundary that fits; only a single cluster longer than ``max_length``
    is cut inside.
    """
    if max_length < 1:
        raise ValueError("max_length must be at least 1")
    if len(text) <= max_length:
        return [text]
    bounds = [m.start() for m in _GRAPHEME.finditer(text)]
    starts = {*bounds, len(text)}
    parts = []
    start = 0
    while len(text) - start > max_length:
        limit = start + max_length
        cut = text.rfind(" ", limit - max_length // 5, limit + 1)
        if cut > start and cut + 1 in starts:
            parts.append(text[start:cut].rstrip(" "))
            start = cut + 1
        else:
            index = bisect.bisect_right(bounds, limit) - 1
            cut = bounds[index] if index >= 0 and bounds[index] > start else limit
            parts.append(text[start:cut])
            start = cut
        while start < len(text) and text[start] == " " and start + 1 in starts:
            start += 1
    if start < len(text) or not parts:
        parts.append(text[start:])
    return parts


def check_text(
    text: str,
    reply_to: str | None = None,
    *,
    max_length: int = 500,
    long_text: Literal["split", "refuse"] = "split",
) -> list[str]:
    """The parts ``text`` is sent in; UnsafeLineError (CR, LF or NUL in the text or
    ``reply_to``), MessageTooLongError (``long_text="refuse"``) or ValueError (a ``reply_to``
    that is no message id, an empty text) when it cannot be sent at all."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the text is empty; nothing was sent")
    for value, what in ((text, "the text"), (reply_to or "", "reply_to")):
        if any(c in value for c in _UNSAFE):
            raise UnsafeLineError(f"{what} contains CR, LF or NUL; nothing was sent")
    if reply_to is not None and (not reply_to or " " in reply_to):
        raise ValueError(f"reply_to must be a message id, got {reply_to!r}")
    room = max_length - len(_INVISIBLE)
    if len(text) > room and long_text == "refuse":
        raise MessageTooLongError(
            f"text of {len(text)} characters exceeds {room} "
            "(throttle.messages.long_text is 'refuse'); nothing was sent"
        )
    return split_text(text, room)


class LastMessages(Protocol):
    """The account's previous message in each channel, kept where every process of the account
    sees it (Twitch's duplicate rule is per account and channel, not per process)."""

    async def is_last(self, channel: str, text: str) -> bool:
        """Whether ``text`` is the account's previous message in ``channel`` (within the
        duplicate window)."""
        ...

    async def remember(self, channel: str, text: str) -> None:
        """``text`` was just written to ``channel``."""
        ...


class PartlySentError(ConnectionError):
    """The connection went after ``sent`` of ``total`` parts of a long text were written."""

    def __init__(self, sent: int, total: int, cause: BaseException) -> None:
        self.sent = sent
        self.total = total
        super().__init__(f"the connection went after {sent} of {total} parts: {cause}")


class Sender:
    """Says things in channels through ``connection`` (an authenticated one)."""

    def __init__(
        self,
        connection: Connection,
        *,
        messages: Window | None = None,
        moderator_messages: Window | None = None,
        channel_interval_s: float = 1.0,
        duplicate_window_s: float = 30.0,
        max_length: int = 500,
        long_text: Literal["split", "refuse"] = "split",
        margin_s: float = DEFAULT_MARGIN_S,
        channel_window: Callable[[str, float], Window] | None = None,
        last_messages: LastMessages | None = None,
        api: ApiChat | None = None,
    ) -> None:
        if max_length <= len(_INVISIBLE):
            raise ValueError(f"max_length must be more than {len(_INVISIBLE)}")
        self.connection = connection
        self.messages = messages or LocalWindow(Rate(20, 30.0))
        self.moderator_messages = moderator_messages or LocalWindow(Rate(100, 30.0))
        self.channel_interval_s = channel_interval_s + margin_s
        self.duplicate_window_s = duplicate_window_s
        self.max_length = max_length
        self.long_text = long_text
        self.channel_window = channel_window
        self.last_messages = last_messages
        self.moderator_in: set[str] = set()
        #: Sending through Twitch's API where a channel is read through EventSub (None: IRC).
        self.api = api
        self._last: dict[str, tuple[float, str]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def observe(self, event: Event) -> None:
        """Learn where the account moderates (feed it the connection's events)."""
        if isinstance(event, UserStateEvent) and event.channel:
            if event.is_mod:
                self.moderator_in.add(event.channel)
            else:
                self.moderator_in.discard(event.channel)

    def check(self, text: str, reply_to: str | None = None) -> list[str]:
        """The parts ``text`` is sent in (see :func:`check_text`)."""
        return check_text(text, reply_to, max_length=self.max_length, long_text=self.long_text)

    async def via(self, channel: str, *, action: bool = False) -> ApiTarget | None:
        """Where ``channel``'s messages go through the API (:attr:`api`); None: through the
        IRC connection (always for an action: the API has no ``/me``)."""
        if self.api is None or action:
            return None
        return await self.api.target(normalise_login(channel))

    async def say(
        self,
        channel: str,
        text: str,
        *,
        reply_to: str | None = None,
        action: bool = False,
        deadline: float | None = None,
        begin: Callable[[], Awaitable[None]] | None = None,
        via: ApiTarget | None = None,
    ) -> int:
        """Send ``text`` to ``channel`` within the rules; return the number of messages sent.
        ``via``: through the API to that target (:meth:`via`), else the IRC connection; the
        budgets are the same.

        Raises UnsafeLineError (CR, LF or NUL in the text or ``reply_to``) or
        MessageTooLongError (``long_text="refuse"``) before anything is sent; DeadlineError
        when the first part could not be written by ``deadline``; ChatRefusedError when Twitch's
        API refused the first part; whatever ``begin`` raises.
        """
        name = normalise_login(channel)
        parts = self.check(text, reply_to)
        try:
            async with asyncio.timeout_at(deadline):
                lock = self._locks.setdefault(name, asyncio.Lock())
                await lock.acquire()
                try:
                    await self._take(name)
                except BaseException:
                    lock.release()
                    raise
        except TimeoutError:
            raise DeadlineError(
                f"no room in the message budget of #{name} before the deadline; nothing was sent"
            ) from None
        try:
            for index, part in enumerate(parts):
                tags = {"reply-parent-msg-id": reply_to} if reply_to and index == 0 else None
                try:
                    if index:
                        await self._take(name)
                    line = await self._prepare(name, part, action)
                    if index == 0 and begin is not None:
                        await begin()  # the last step before the first write
                    if via is not None:
                        await self._write_api(via, name, line, reply_to if index == 0 else None)
                    else:
                        await self._write(name, line, tags)
                except (ConnectionError, ChatRefusedError) as exc:
                    if index == 0:
                        raise
                    raise PartlySentError(index, len(parts), exc) from exc
        finally:
            lock.release()
        return len(parts)

    async def _take(self, channel: str) -> None:
        """Wait for the channel's interval and the account's budget, and count the message."""
        if self.channel_window is not None:
            await self.channel_window(channel, self.channel_interval_s).take()
        else:
            last_at, _ = self._last.get(channel, (-1e9, ""))
            wait_s = last_at + self.channel_interval_s - time.monotonic()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
        if channel in self.moderator_in:
            await self.moderator_messages.take()
        else:  # counted by both limits at the same moment, as Twitch counts it on arrival
            await self.messages.take_with([self.moderator_messages])

    async def _prepare(self, channel: str, text: str, action: bool) -> str:
        """The message's text as written: the action wrapper, and the invisible tag character
        when it is the account's previous message in the channel within the duplicate window
        (the cluster's previous one, with ``last_messages``)."""
        if action:
            text = f"\x01ACTION {text}\x01"
        if self.last_messages is not None:
            duplicate = await self.last_messages.is_last(channel, text)
        else:
            last_at, last_text = self._last.get(channel, (-1e9, ""))
            duplicate = text == last_text and time.monotonic() - last_at < self.duplicate_window_s
        if duplicate:
            text = f"{text[:-1]}{_INVISIBLE}\x01" if action else text + _INVISIBLE
        return text

    async def _write_api(
        self, via: ApiTarget, channel: str, text: str, reply_to: str | None
    ) -> None:
        assert self.api is not None
        await self.api.send(via, text, reply_to=reply_to)
        self._last[channel] = (time.monotonic(), text)
        if self.last_messages is not None:
            await self.last_messages.remember(channel, text)

    async def _write(self, channel: str, text: str, tags: dict[str, str] | None) -> None:
        await self.connection.send("PRIVMSG", [f"#{channel}", text], tags=tags)
        self._last[channel] = (time.monotonic(), text)
        if self.last_messages is not None:
            await self.last_messages.remember(channel, text)

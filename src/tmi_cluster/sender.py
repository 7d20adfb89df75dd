"""Sending chat messages within Twitch's rules, through one authenticated connection.

Contracts of :meth:`Sender.say`:

- Text longer than ``max_length`` characters is split, at a space where one is near the end
  of the chunk, and every part is sent: never truncated silently.
- At least ``channel_interval_s`` (plus ``margin_s``, for the network's uneven delays) between
  two messages in one channel.
- Twitch drops a message identical to the previous one in the channel within 30 s
  (``msg_duplicate``); such a message gets an invisible tag character (U+E0000) appended, the
  usual remedy of Twitch bots, so that it is delivered.
- Every message is taken from the account's windows as Twitch counts them: in a channel where
  the account moderates (learned from USERSTATE, see :meth:`observe`), from
  ``moderator_messages`` only; elsewhere from ``messages`` and ``moderator_messages`` both.
- The text goes through :func:`~tmi_cluster.irc.serialize`: CR, LF and NUL are refused.
"""

from __future__ import annotations

import asyncio
import time

from tmi_cluster.connection import Connection
from tmi_cluster.events import Event, UserStateEvent
from tmi_cluster.logins import normalise_login
from tmi_cluster.ratelimit import DEFAULT_MARGIN_S, LocalWindow, Rate, Window

__all__ = ["Sender", "split_text"]

_INVISIBLE = " \U000e0000"


def split_text(text: str, max_length: int = 500) -> list[str]:
    """``text`` in parts of at most ``max_length`` characters, cut at a space when one lies in
    the last fifth of a part."""
    if max_length < 1:
        raise ValueError("max_length must be at least 1")
    parts = []
    rest = text
    while len(rest) > max_length:
        cut = rest.rfind(" ", max_length - max_length // 5, max_length + 1)
        if cut <= 0:
            cut = max_length
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest or not parts:
        parts.append(rest)
    return parts


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
        margin_s: float = DEFAULT_MARGIN_S,
    ) -> None:
        self.connection = connection
        self.messages = messages or LocalWindow(Rate(20, 30.0))
        self.moderator_messages = moderator_messages or LocalWindow(Rate(100, 30.0))
        self.channel_interval_s = channel_interval_s + margin_s
        self.duplicate_window_s = duplicate_window_s
        self.max_length = max_length
        self.moderator_in: set[str] = set()
        self._last: dict[str, tuple[float, str]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def observe(self, event: Event) -> None:
        """Learn where the account moderates (feed it the connection's events)."""
        if isinstance(event, UserStateEvent) and event.channel:
            if event.is_mod:
                self.moderator_in.add(event.channel)
            else:
                self.moderator_in.discard(event.channel)

    async def say(self, channel: str, text: str) -> int:
        """Send ``text`` to ``channel`` within the rules; return the number of messages sent."""
        name = normalise_login(channel)
        lock = self._locks.setdefault(name, asyncio.Lock())
        parts = split_text(text, self.max_length - len(_INVISIBLE))
        async with lock:
            for part in parts:
                await self._send_one(name, part)
        return len(parts)

    async def _send_one(self, channel: str, text: str) -> None:
        last_at, last_text = self._last.get(channel, (-1e9, ""))
        wait_s = last_at + self.channel_interval_s - time.monotonic()
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        now = time.monotonic()
        if text == last_text and now - last_at < self.duplicate_window_s:
            text += _INVISIBLE
        if channel in self.moderator_in:
            await self.moderator_messages.take()
        else:
            await self.messages.take()
            await self.moderator_messages.take()
        await self.connection.send("PRIVMSG", [f"#{channel}", text])
        self._last[channel] = (time.monotonic(), text)

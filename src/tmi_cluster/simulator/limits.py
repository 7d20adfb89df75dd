"""Twitch's limits as the simulator enforces them: every number a setting, Twitch's as default."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["Limits", "Window"]


@dataclass(frozen=True)
class Limits:
    """What the simulator enforces, per account across all its connections.

    ``anonymous_join_allow`` of 0 leaves anonymous logins unlimited (Twitch appears to limit
    them far less); ``ping_interval_s`` of 0 sends no server PING.
    """

    join_allow: int = 20
    join_every_s: float = 10.0
    anonymous_join_allow: int = 0
    auth_allow: int = 20
    auth_every_s: float = 10.0
    channel_cap: int = 100
    message_allow: int = 20
    moderator_message_allow: int = 100
    message_every_s: float = 30.0
    channel_interval_s: float = 1.0
    duplicate_window_s: float = 30.0
    max_message_chars: int = 500
    max_line_bytes: int = 4096
    max_send_buffer_bytes: int = 4 * 1024 * 1024
    ping_interval_s: float = 300.0


class Window:
    """A sliding-window counter: at most ``allow`` events per ``every_s`` seconds."""

    __slots__ = ("_times", "allow", "every_s")

    def __init__(self, allow: int, every_s: float) -> None:
        self.allow = allow
        self.every_s = every_s
        self._times: deque[float] = deque()

    def take(self, now: float, count: int = 1) -> bool:
        """Record ``count`` events at ``now`` if they fit in the window; False (nothing recorded)
        if they do not. ``allow`` of 0 means unlimited."""
        if self.allow <= 0:
            return True
        times = self._times
        horizon = now - self.every_s
        while times and times[0] <= horizon:
            times.popleft()
        if len(times) + count > self.allow:
            return False
        times.extend([now] * count)
        return True

    def used(self, now: float) -> int:
        """Events in the window ending at ``now``."""
        horizon = now - self.every_s
        return sum(1 for t in self._times if t > horizon)

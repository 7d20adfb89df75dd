"""Twitch's limits per account: in one process, or shared by every process through Redis.

Each limit is a *sliding window*: at most ``allow`` events in any ``every_s`` seconds. (A
token bucket would be simpler but can let a full burst plus a whole window's refill through
within one window, exceeding a limit that Twitch counts over the window.)

- :class:`LocalWindow`: one process. ``try_take(n)`` returns 0 when the events were counted,
  or how many seconds to wait before they would fit.
- :class:`tmi_cluster.bus.SharedWindow` (in the bus, which owns Redis): every process of the
  cluster, one Twitch account, the same contract.
- ``take(n)`` waits until the events fit, then counts them.

Both count each window ``margin_s`` (default :data:`DEFAULT_MARGIN_S`) longer than Twitch does:
we count an event when we send it, Twitch when it arrives, and uneven network and scheduling
delays would otherwise let Twitch see ``allow + 1`` events inside one of its windows.

Presets (:data:`NORMAL`, :data:`VERIFIED`) hold Twitch's numbers; every number is a setting
(:meth:`AccountRates.from_settings`: ``throttle.preset``, then each limit set explicitly).
:class:`AccountWindows` holds one account's four windows (in-process here; shared ones come from
:func:`tmi_cluster.bus.shared_account_windows`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tmi_cluster.config import Settings

__all__ = [
    "DEFAULT_MARGIN_S",
    "NORMAL",
    "VERIFIED",
    "AccountRates",
    "AccountWindows",
    "LocalWindow",
    "Rate",
    "WaitTally",
    "Window",
    "check_count",
    "take_waiting",
]


#: Seconds added to every window, so that delays between our count and Twitch's never make us
#: exceed a limit.
DEFAULT_MARGIN_S = 0.25


@dataclass
class WaitTally:
    """How often takes from a window had to wait, and how long in all (for the metrics); one
    tally may gather several windows' (a pool's connections, each its own JOIN budget)."""

    waits: int = 0
    waited_s: float = 0.0

    def add(self, seconds: float, *, first: bool) -> None:
        """A take sleeps ``seconds``; ``first``: its first sleep (one wait more)."""
        self.waits += first
        self.waited_s += seconds


@dataclass(frozen=True)
class Rate:
    """At most ``allow`` events in any ``every_s`` seconds."""

    allow: int
    every_s: float

    def __post_init__(self) -> None:
        if self.allow < 1 or self.every_s <= 0:
            raise ValueError(f"a rate needs allow >= 1 and every_s > 0, got {self}")


@dataclass(frozen=True)
class AccountRates:
    """The limits of one Twitch account."""

    join: Rate
    auth: Rate
    messages: Rate
    moderator_messages: Rate

    @classmethod
    def from_settings(cls, settings: Settings) -> AccountRates:
        """``throttle.preset``'s numbers, each replaced by the limit when set explicitly."""
        throttle = settings.throttle
        base = VERIFIED if throttle.preset == "verified" else NORMAL

        def pick(section: Any, key: str, preset: float) -> Any:
            return getattr(section, key) if key in section.model_fields_set else preset

        join, auth, msgs = throttle.join, throttle.auth, throttle.messages
        every = pick(msgs, "every", base.messages.every_s)
        return cls(
            join=Rate(pick(join, "allow", base.join.allow), pick(join, "every", base.join.every_s)),
            auth=Rate(pick(auth, "allow", base.auth.allow), pick(auth, "every", base.auth.every_s)),
            messages=Rate(pick(msgs, "allow", base.messages.allow), every),
            moderator_messages=Rate(
                pick(msgs, "moderator_allow", base.moderator_messages.allow), every
            ),
        )


#: Twitch's limits for a normal account today.
NORMAL = AccountRates(Rate(20, 10), Rate(20, 10), Rate(20, 30), Rate(100, 30))
#: The legacy verified-bot limits (no longer granted; kept as a preset).
VERIFIED = AccountRates(Rate(2000, 10), Rate(200, 10), Rate(7500, 30), Rate(7500, 30))


class Window(Protocol):
    """A sliding-window limit."""

    rate: Rate
    #: Its takes that waited, and how long (its own, or shared with other windows').
    tally: WaitTally

    async def try_take(self, count: int = 1) -> float:
        """Count ``count`` events now and return 0, or return the seconds to wait (nothing
        counted). ValueError if ``count`` exceeds the rate's ``allow``."""
        ...

    async def take(self, count: int = 1) -> None:
        """Wait until ``count`` events fit, then count them."""
        ...

    async def take_with(self, others: Sequence[Window], count: int = 1) -> None:
        """Wait until ``count`` events fit in this window and in each of ``others`` (windows
        of the same kind), then count them in all at the same moment: an event that two
        limits count (a message where the bot does not moderate) is never counted in one
        window long before it is sent and counted in the other."""
        ...


async def take_waiting(window: Window, count: int) -> None:
    """Wait until ``count`` events fit in ``window``, then count them (``take``'s loop); the
    waits go to its tally."""
    first = True
    while True:
        wait_s = await window.try_take(count)
        if wait_s <= 0:
            return
        window.tally.add(wait_s, first=first)
        first = False
        await asyncio.sleep(wait_s)


def check_count(rate: Rate, count: int) -> None:
    """ValueError unless 1 <= count <= rate.allow."""
    if not 1 <= count <= rate.allow:
        raise ValueError(f"cannot take {count} at once from a window of {rate.allow}")


class LocalWindow:
    """A sliding window in this process."""

    def __init__(
        self,
        rate: Rate,
        *,
        margin_s: float = DEFAULT_MARGIN_S,
        clock: Callable[[], float] | None = None,
        tally: WaitTally | None = None,
    ) -> None:
        self.rate = rate
        self.tally = tally or WaitTally()
        self.window_s = rate.every_s + margin_s
        self._clock = clock or time.monotonic
        self._times: deque[float] = deque()

    def try_take_at(self, now: float, count: int = 1) -> float:
        """:meth:`try_take` at time ``now`` (pure arithmetic, for tests)."""
        wait_s = self.wait_at(now, count)
        if wait_s <= 0:
            self._times.extend([now] * count)
        return wait_s

    def wait_at(self, now: float, count: int = 1) -> float:
        """Seconds until ``count`` events would fit at ``now`` (0: they fit); counts nothing."""
        check_count(self.rate, count)
        times = self._times
        horizon = now - self.window_s
        while times and times[0] <= horizon:
            times.popleft()
        overflow = len(times) + count - self.rate.allow
        if overflow <= 0:
            return 0.0
        # The overflow-th oldest event must leave the window first.
        return times[overflow - 1] + self.window_s - now

    async def try_take(self, count: int = 1) -> float:
        return self.try_take_at(self._clock(), count)

    async def take(self, count: int = 1) -> None:
        await take_waiting(self, count)

    async def take_with(self, others: Sequence[Window], count: int = 1) -> None:
        windows = [self, *others]
        if not all(isinstance(w, LocalWindow) for w in windows):
            raise TypeError("a LocalWindow takes together with LocalWindows only")
        local = [w for w in windows if isinstance(w, LocalWindow)]
        first = True
        while True:
            now = self._clock()
            wait_s = max(w.wait_at(now, count) for w in local)
            if wait_s <= 0:
                for window in local:
                    window._times.extend([now] * count)
                return
            self.tally.add(wait_s, first=first)
            first = False
            await asyncio.sleep(wait_s)


@dataclass(frozen=True)
class AccountWindows:
    """The four windows of one Twitch account: what a pool and a sender take from."""

    join: Window
    auth: Window
    messages: Window
    moderator_messages: Window

    @classmethod
    def local(cls, rates: AccountRates, *, margin_s: float = DEFAULT_MARGIN_S) -> AccountWindows:
        """Windows of this process only."""
        return cls(
            *(
                LocalWindow(rate, margin_s=margin_s)
                for rate in (rates.join, rates.auth, rates.messages, rates.moderator_messages)
            )
        )

"""Twitch's limits per account: in one process, or shared by every process through Redis.

Each limit is a *sliding window*: at most ``allow`` events in any ``every_s`` seconds. (A
token bucket would be simpler but can let a full burst plus a whole window's refill through
within one window, exceeding a limit that Twitch counts over the window.)

- :class:`LocalWindow`: one process. ``try_take(n)`` returns 0 when the events were counted,
  or how many seconds to wait before they would fit.
- :class:`SharedWindow`: every process of the cluster, one Twitch account: the same contract,
  decided by one atomic Lua script on Redis using Redis's own clock (hosts may disagree on
  the time; Redis does not), with keys from :class:`~tmi_cluster.keys.Keys` that expire with
  the window. Any number of processes together never exceed ``allow`` per window.
- ``take(n)`` waits until the events fit, then counts them.

Both count each window ``margin_s`` (default :data:`DEFAULT_MARGIN_S`) longer than Twitch does:
we count an event when we send it, Twitch when it arrives, and uneven network and scheduling
delays would otherwise let Twitch see ``allow + 1`` events inside one of its windows.

Presets (:data:`NORMAL`, :data:`VERIFIED`) hold Twitch's numbers; every number is a setting
(:meth:`AccountRates.from_settings`: ``throttle.preset``, then each limit set explicitly).
:class:`AccountWindows` holds one account's four windows, in-process or shared.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio

from tmi_cluster.config import Settings
from tmi_cluster.keys import Keys

__all__ = [
    "DEFAULT_MARGIN_S",
    "NORMAL",
    "VERIFIED",
    "AccountRates",
    "AccountWindows",
    "LocalWindow",
    "Rate",
    "SharedWindow",
    "Window",
]


#: Seconds added to every window, so that delays between our count and Twitch's never make us
#: exceed a limit.
DEFAULT_MARGIN_S = 0.25


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

    async def try_take(self, count: int = 1) -> float:
        """Count ``count`` events now and return 0, or return the seconds to wait (nothing
        counted). ValueError if ``count`` exceeds the rate's ``allow``."""
        ...

    async def take(self, count: int = 1) -> None:
        """Wait until ``count`` events fit, then count them."""
        ...


async def _take(window: Window, count: int) -> None:
    while True:
        wait_s = await window.try_take(count)
        if wait_s <= 0:
            return
        await asyncio.sleep(wait_s)


def _check(rate: Rate, count: int) -> None:
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
    ) -> None:
        self.rate = rate
        self.window_s = rate.every_s + margin_s
        self._clock = clock or time.monotonic
        self._times: deque[float] = deque()

    def try_take_at(self, now: float, count: int = 1) -> float:
        """:meth:`try_take` at time ``now`` (pure arithmetic, for tests)."""
        _check(self.rate, count)
        times = self._times
        horizon = now - self.window_s
        while times and times[0] <= horizon:
            times.popleft()
        overflow = len(times) + count - self.rate.allow
        if overflow <= 0:
            times.extend([now] * count)
            return 0.0
        # The overflow-th oldest event must leave the window first.
        return times[overflow - 1] + self.window_s - now

    async def try_take(self, count: int = 1) -> float:
        return self.try_take_at(self._clock(), count)

    async def take(self, count: int = 1) -> None:
        await _take(self, count)


# KEYS[1]: the window's sorted set. ARGV: allow, window in microseconds, count, a unique nonce.
# Returns {0, now} when counted, else {microseconds to wait, now}; now and the scores are
# Redis's clock (TIME), in microseconds.
_SCRIPT = """
local now_t = redis.call('TIME')
local now = tonumber(now_t[1]) * 1000000 + tonumber(now_t[2])
local allow = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local count = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[1])
local overflow = used + count - allow
if overflow <= 0 then
  for i = 1, count do
    redis.call('ZADD', KEYS[1], now, ARGV[4] .. ':' .. now .. ':' .. i)
  end
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1000)
  return {0, now}
end
local oldest = redis.call('ZRANGE', KEYS[1], overflow - 1, overflow - 1, 'WITHSCORES')
return {math.max(1, tonumber(oldest[2]) + window - now), now}
"""


class SharedWindow:
    """A sliding window shared by every process through Redis (one key per account and limit)."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        key: str,
        rate: Rate,
        *,
        margin_s: float = DEFAULT_MARGIN_S,
    ) -> None:
        self.rate = rate
        self.window_s = rate.every_s + margin_s
        self.key = key
        self._client = client
        self._script = client.register_script(_SCRIPT)
        self._member = secrets.token_hex(6)
        self._calls = itertools.count()
        #: Redis's time (microseconds) of the last counted events, for accounting and tests.
        self.last_taken_us: int | None = None

    async def try_take(self, count: int = 1) -> float:
        _check(self.rate, count)
        window_us = int(self.window_s * 1_000_000)
        nonce = f"{self._member}:{next(self._calls)}"
        wait_us, now_us = await self._script(
            keys=[self.key], args=[self.rate.allow, window_us, count, nonce]
        )
        if int(wait_us) == 0:
            self.last_taken_us = int(now_us)
            return 0.0
        return int(wait_us) / 1_000_000

    async def take(self, count: int = 1) -> None:
        await _take(self, count)


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

    @classmethod
    def shared(
        cls,
        client: redis.asyncio.Redis,
        keys: Keys,
        account: str,
        rates: AccountRates,
        *,
        margin_s: float = DEFAULT_MARGIN_S,
    ) -> AccountWindows:
        """Windows shared by every process using ``account`` (anonymous reads: any fixed name,
        such as ``justinfan``), under ``keys.ratelimit(account, bucket)``."""

        def shared(bucket: str, rate: Rate) -> SharedWindow:
            return SharedWindow(client, keys.ratelimit(account, bucket), rate, margin_s=margin_s)

        return cls(
            shared("join", rates.join),
            shared("auth", rates.auth),
            shared("messages", rates.messages),
            shared("moderator_messages", rates.moderator_messages),
        )

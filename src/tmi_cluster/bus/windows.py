"""Sliding windows shared by every process of the cluster through Redis.

The contract of :class:`~tmi_cluster.chat.ratelimit.Window`, decided by one atomic Lua script on
Redis using Redis's own clock (hosts may disagree on the time; Redis does not), with keys from
:class:`~tmi_cluster.bus.keys.Keys` that expire with the window. Any number of processes
together never exceed ``allow`` per window.

While Redis cannot be reached, :meth:`SharedWindow.try_take` raises
:class:`~tmi_cluster.errors.RedisUnavailableError`, and :meth:`SharedWindow.take` *waits*: it
retries with capped backoff (at most :data:`RETRY_CAP_S` apart), logs the outage once (through
:class:`Outage`, shared by the windows of one process) and once more when Redis is back. Waiting,
not a local share of the budget: no process knows how many others share the account while Redis
is away, so any local share could exceed Twitch's limit, and Twitch answers that with a
disconnect. What waits is only what needs the window: logins and JOINs (reconnects, new
channels) and messages; channels already joined keep reading.

A Redis that restarted has forgotten every window (the cluster's Redis keeps nothing on disk).
The windows notice it by the epoch key (``P ratelimit:epoch``, a random token that the first
caller after a start writes): a process that saw another epoch before counts nothing for one
window's length, so that what it took before the restart and what it takes after can never
add up to more than ``allow`` in one window. (A process that first calls Redis after the
restart cannot know what others took before it; in a cluster, every process meets Redis
several times a second, so the others have all seen the old epoch.)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import random
import secrets
from collections.abc import Sequence
from typing import Any

import redis.asyncio

from tmi_cluster.bus.client import describe_client, translated
from tmi_cluster.bus.keys import Keys
from tmi_cluster.chat.ratelimit import (
    DEFAULT_MARGIN_S,
    AccountRates,
    AccountWindows,
    Rate,
    WaitTally,
    Window,
    check_count,
)
from tmi_cluster.errors import RedisUnavailableError

__all__ = [
    "RETRY_CAP_S",
    "Outage",
    "SharedLastMessages",
    "SharedWindow",
    "shared_account_windows",
]

log = logging.getLogger(__name__)

#: The longest wait between two attempts while Redis is unreachable.
RETRY_CAP_S = 1.0
_RETRY_BASE_S = 0.05

# KEYS[1]: the epoch (a token naming this Redis's memory); KEYS[2..]: the windows' sorted sets.
# ARGV: count, a unique nonce, the epoch the caller last saw ('' for none), a new epoch token,
# then each window's allow and length in microseconds. Counts ``count`` events in every window
# at once when they fit in all. Returns {0, now, epoch} when counted; {-1, now, epoch} when the
# caller saw another epoch (Redis forgot everything; nothing counted); else {microseconds until
# they would fit in all, now, epoch}. Times are Redis's clock (TIME), in microseconds.
_SCRIPT = """
local now_t = redis.call('TIME')
local now = tonumber(now_t[1]) * 1000000 + tonumber(now_t[2])
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[4]
  redis.call('SET', KEYS[1], epoch)
end
if ARGV[3] ~= '' and ARGV[3] ~= epoch then
  return {-1, now, epoch}
end
local count = tonumber(ARGV[1])
local wait = 0
for k = 2, #KEYS do
  local allow = tonumber(ARGV[2 * k + 1])
  local window = tonumber(ARGV[2 * k + 2])
  redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now - window)
  local overflow = redis.call('ZCARD', KEYS[k]) + count - allow
  if overflow > 0 then
    local oldest = redis.call('ZRANGE', KEYS[k], overflow - 1, overflow - 1, 'WITHSCORES')
    wait = math.max(wait, tonumber(oldest[2]) + window - now, 1)
  end
end
if wait > 0 then
  return {wait, now, epoch}
end
for k = 2, #KEYS do
  local window = tonumber(ARGV[2 * k + 2])
  for i = 1, count do
    redis.call('ZADD', KEYS[k], now, ARGV[2] .. ':' .. now .. ':' .. i)
  end
  redis.call('PEXPIRE', KEYS[k], math.ceil(window / 1000) + 1000)
end
return {0, now, epoch}
"""


class Outage:
    """Logs a Redis outage once when it starts and once when it ends, however many callers
    meet it. ``active`` is True in between; ``outages`` counts how many began."""

    def __init__(self) -> None:
        self.active = False
        self.outages = 0
        #: The reason of the current (or last) outage.
        self.reason = ""
        self._changed = asyncio.Event()

    def began(self, error: RedisUnavailableError, what: str) -> None:
        """A call failed: log the first failure of an outage (with its reason), not the rest."""
        if not self.active:
            self.active = True
            self.outages += 1
            self.reason = str(error)
            log.warning("%s waits for Redis: %s", what, error)
            self._changed.set()

    def ended(self) -> None:
        """A call succeeded: log the end of an outage."""
        if self.active:
            self.active = False
            log.warning("Redis answers again; waiting work goes on")
            self._changed.set()

    async def wait(self, *, active: bool) -> None:
        """Wait until an outage is (``active=True``) or is not under way."""
        while self.active is not active:
            self._changed.clear()
            await self._changed.wait()


class SharedWindow:
    """A sliding window shared by every process through Redis (one key per account and limit)."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        key: str,
        rate: Rate,
        *,
        epoch_key: str,
        margin_s: float = DEFAULT_MARGIN_S,
        outage: Outage | None = None,
    ) -> None:
        self.rate = rate
        #: Its takes that waited, and how long (the metrics').
        self.tally = WaitTally()
        self.window_s = rate.every_s + margin_s
        self.key = key
        self.epoch_key = epoch_key
        #: The epoch of Redis's memory this window last saw (None: never called yet).
        self.epoch: str | None = None
        #: How many times this window found that Redis had forgotten its state.
        self.restarts_seen = 0
        self._fenced_until = 0.0
        self.outage = outage or Outage()
        self._client = client
        self._where = describe_client(client)
        self._script = client.register_script(_SCRIPT)
        self._member = secrets.token_hex(6)
        self._calls = itertools.count()
        #: Redis's time (microseconds) of the last counted events, for accounting and tests.
        self.last_taken_us: int | None = None

    async def try_take(self, count: int = 1) -> float:
        """As :meth:`Window.try_take`; RedisUnavailableError when Redis cannot be reached.
        For one window's length after Redis forgot its state (see the module), nothing is
        counted and the rest of that time is returned."""
        return await self._try_take([self], count)

    async def _try_take(self, windows: Sequence[SharedWindow], count: int) -> float:
        for window in windows:
            check_count(window.rate, count)
        loop = asyncio.get_running_loop()
        fenced_s = max(w._fenced_until for w in windows) - loop.time()
        if fenced_s > 0:
            return fenced_s
        nonce = f"{self._member}:{next(self._calls)}"
        args: list[int | str] = [count, nonce, self.epoch or "", secrets.token_hex(8)]
        for window in windows:
            args += [window.rate.allow, int(window.window_s * 1_000_000)]
        with translated(self._where):
            wait_us, now_us, raw_epoch = await self._script(
                keys=[self.epoch_key, *(w.key for w in windows)], args=args
            )
        epoch = raw_epoch.decode() if isinstance(raw_epoch, bytes) else str(raw_epoch)
        if int(wait_us) < 0:
            fence = loop.time() + max(w.window_s for w in windows)
            for window in windows:
                window.epoch = epoch
                window.restarts_seen += 1
                window._fenced_until = max(window._fenced_until, fence)
            log.warning(
                "Redis forgot the rate windows (a restart); %s counts nothing for %.2f s",
                ", ".join(w.key for w in windows),
                fence - loop.time(),
            )
            return fence - loop.time()
        for window in windows:
            window.epoch = epoch
        if int(wait_us) == 0:
            for window in windows:
                window.last_taken_us = int(now_us)
            return 0.0
        return int(wait_us) / 1_000_000

    async def take(self, count: int = 1) -> None:
        """Wait until ``count`` events fit, then count them; waits out a Redis outage."""
        await self._take([self], count)

    async def take_with(self, others: Sequence[Window], count: int = 1) -> None:
        """As :meth:`Window.take_with`, in one atomic script; ``others`` share this client."""
        shared = [w for w in others if isinstance(w, SharedWindow)]
        if len(shared) != len(others) or any(w._client is not self._client for w in shared):
            raise TypeError("a SharedWindow takes together with SharedWindows of its client")
        await self._take([self, *shared], count)

    async def _take(self, windows: Sequence[SharedWindow], count: int) -> None:
        failures = 0
        first = True
        while True:
            try:
                wait_s = await self._try_take(windows, count)
            except RedisUnavailableError as error:
                self.outage.began(error, f"rate window {self.key}")
                failures += 1
                delay = min(RETRY_CAP_S, _RETRY_BASE_S * 2 ** (failures - 1))
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
                continue
            self.outage.ended()
            failures = 0
            if wait_s <= 0:
                return
            self.tally.add(wait_s, first=first)
            first = False
            await asyncio.sleep(wait_s)


def shared_account_windows(
    client: redis.asyncio.Redis,
    keys: Keys,
    account: str,
    rates: AccountRates,
    *,
    margin_s: float = DEFAULT_MARGIN_S,
    outage: Outage | None = None,
) -> AccountWindows:
    """The four windows of ``account`` shared by every process using it (anonymous reads: any
    fixed name, such as ``justinfan``), under ``keys.ratelimit(account, bucket)``."""
    outage = outage or Outage()

    def shared(bucket: str, rate: Rate) -> SharedWindow:
        return SharedWindow(
            client,
            keys.ratelimit(account, bucket),
            rate,
            epoch_key=keys.ratelimit_epoch,
            margin_s=margin_s,
            outage=outage,
        )

    return AccountWindows(
        shared("join", rates.join),
        shared("auth", rates.auth),
        shared("messages", rates.messages),
        shared("moderator_messages", rates.moderator_messages),
    )


class SharedLastMessages:
    """The account's previous message in each channel, for Twitch's duplicate rule, shared by
    every process of the account (a digest per channel under
    ``keys.ratelimit(account, "last:<channel>")``, expiring after the duplicate window): two
    workers sending the same text to one channel within 30 s do not have the second dropped.
    A Redis error counts as "not the previous one" (at worst Twitch drops that message)."""

    def __init__(
        self, client: redis.asyncio.Redis, keys: Keys, account: str, window_s: float
    ) -> None:
        self._client = client
        self._keys = keys
        self._account = account
        self._window_ms = max(1, int(window_s * 1000))
        self._where = describe_client(client)

    def _key(self, channel: str) -> str:
        return self._keys.ratelimit(self._account, f"last:{channel}")

    @staticmethod
    def _digest(text: str) -> bytes:
        return hashlib.blake2b(text.encode(), digest_size=16).digest()

    async def is_last(self, channel: str, text: str) -> bool:
        """Whether ``text`` is the account's previous message in ``channel``."""
        try:
            with translated(self._where):
                previous: Any = await self._client.get(self._key(channel))
        except RedisUnavailableError:
            return False
        return bool(previous == self._digest(text))

    async def remember(self, channel: str, text: str) -> None:
        """``text`` was just written to ``channel``."""
        with contextlib.suppress(RedisUnavailableError), translated(self._where):
            await self._client.set(self._key(channel), self._digest(text), px=self._window_ms)

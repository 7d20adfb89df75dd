"""The coordinator's lease, with a fencing token.

One holder at a time keeps ``P coordinator:lease`` (its id, expiring after ``ttl_s`` without
renewal). Each new acquisition increments ``P coordinator:fence`` and the holder's token is
that number; a renewal keeps it. A fence that does not exist (a first start, or a Redis that
restarted and forgot it) starts at Redis's clock in milliseconds, so that a token given after a
restart is above every token given before it. A write fenced by a token (:func:`fenced`) is
carried out only if the token is still the current one, in the same atomic script, so that a
former holder that was paused past its lease (and does not know it yet) can no longer change
anything: its token is lower than the new holder's.

No well-kept Python library provides fencing tokens over Redis (locks such as redis-py's
``Lock`` or Redlock give none), so this is the one piece of coordination written here; it is
small and table-tested.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio

from tmi_cluster.bus.client import describe_client, translated
from tmi_cluster.bus.keys import Keys

__all__ = ["FENCE_CHECK", "Lease"]

# KEYS[1] lease, KEYS[2] fence counter; ARGV[1] holder, ARGV[2] ttl in ms.
# Returns the holder's token, or 0 when another holder has the lease.
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current == false then
  if redis.call('EXISTS', KEYS[2]) == 0 then
    -- a Redis that forgot everything: start above every token given before (Redis's clock)
    local now = redis.call('TIME')
    redis.call('SET', KEYS[2], tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
  end
  local token = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('SET', KEYS[1] .. ':token', token, 'PX', ARGV[2])
  return token
elseif current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[1] .. ':token', ARGV[2])
  return tonumber(redis.call('GET', KEYS[1] .. ':token') or '0')
end
return 0
"""

# KEYS[1] lease; ARGV[1] holder.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[1] .. ':token')
  return 1
end
return 0
"""

#: The first lines of a fenced script: KEYS[1] is the fence counter, ARGV[1] the token; a stale
#: token ends the script with the error ``STALE <current>`` before anything is written.
FENCE_CHECK = """
local fence = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) ~= fence then
  return redis.error_reply('STALE ' .. fence)
end
"""


class Lease:
    """The lease of ``keys`` for ``holder``: :meth:`acquire` (also renews), :meth:`release`."""

    def __init__(self, client: redis.asyncio.Redis, keys: Keys, holder: str, ttl_s: float) -> None:
        if ttl_s <= 0:
            raise ValueError(f"a lease needs ttl_s > 0, got {ttl_s}")
        self.client = client
        self.keys = keys
        self.holder = holder
        self.ttl_s = ttl_s
        #: The token of the last acquisition or renewal that succeeded (0: not held).
        self.token = 0
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._where = describe_client(client)

    async def acquire(self) -> int:
        """Take the lease, or renew it when already held; the token (0 when another holds
        it). RedisUnavailableError when Redis cannot be reached."""
        with translated(self._where):
            token: Any = await self._acquire(
                keys=[self.keys.coordinator_lease, self.keys.coordinator_fence],
                args=[self.holder, int(self.ttl_s * 1000)],
            )
        self.token = int(token)
        return self.token

    async def release(self) -> bool:
        """Give the lease up (only if still held by us); whether it was ours."""
        with translated(self._where):
            released: Any = await self._release(
                keys=[self.keys.coordinator_lease], args=[self.holder]
            )
        self.token = 0
        return bool(released)

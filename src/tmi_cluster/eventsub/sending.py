"""Sending through Twitch's API (Send Chat Message) where a channel is read through EventSub:
:class:`ApiChat`, the sender's second way out beside its IRC connection.

Contracts:

- :meth:`ApiChat.target` says whether a channel is sent to through the API, and as whom: the
  channel's broadcaster id and the bot's user id, looked up through ``lookup`` (the cluster's
  routes in Redis) and kept :data:`CACHE_S` seconds; None sends through IRC (also when the
  lookup fails: IRC is the route every channel has).
- :meth:`ApiChat.send` sends one message with the application's app token (the Chat Bot badge
  where the broadcaster granted ``channel:bot``). Twitch's refusals become
  :class:`~tmi_cluster.errors.ChatRefusedError` with the send result's reason (see
  :func:`refusal_of`): nothing was said. No answer at all is a ConnectionError (the send's
  ``not_connected``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tmi_cluster.errors import ChatRefusedError, HelixError, TmiClusterError
from tmi_cluster.eventsub.helix import Helix

__all__ = ["CACHE_S", "ApiChat", "ApiTarget", "refusal_of"]

log = logging.getLogger(__name__)

#: Seconds a channel's route is kept before it is looked up again.
CACHE_S = 2.0

#: Twitch's drop codes and the send results' refusals (others: "failed").
_DROPS = {
    "msg_ratelimit": "rate_limited",
    "user_banned": "unauthorized",
    "msg_banned": "unauthorized",
    "channel_suspended": "unauthorized",
    "msg_channel_suspended": "unauthorized",
}
#: Twitch's HTTP statuses and the send results' refusals (others: "failed").
_STATUSES = {401: "unauthorized", 403: "unauthorized", 429: "rate_limited"}


@dataclass(frozen=True, slots=True)
class ApiTarget:
    """Where a message goes through the API: the broadcaster, and the bot sending."""

    broadcaster_id: str
    sender_id: str


def refusal_of(*, drop_code: str | None = None, status: int | None = None, text: str = "") -> str:
    """The send result's refusal for Twitch's drop code or HTTP status (see the module)."""
    if drop_code is not None:
        return _DROPS.get(drop_code, "failed")
    if status == 422 and "long" in text.lower():
        return "too_long"
    return _STATUSES.get(status or 0, "failed")


class ApiChat:
    """Sends through ``helix`` to the channels ``lookup`` routes to EventSub; see the module.
    ``lookup(channel)`` answers (broadcaster id, bot id) or None."""

    def __init__(
        self,
        helix: Helix,
        lookup: Callable[[str], Awaitable[tuple[str, str] | None]],
        *,
        cache_s: float = CACHE_S,
    ) -> None:
        self.helix = helix
        self._lookup = lookup
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, ApiTarget | None]] = {}
        #: Messages sent through the API, and refused by Twitch.
        self.sent = 0
        self.refused = 0

    async def target(self, channel: str) -> ApiTarget | None:
        """Where ``channel``'s messages go through the API; None: through IRC."""
        now = time.monotonic()
        cached = self._cache.get(channel)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            found = await self._lookup(channel)
        except TmiClusterError as error:  # Redis away: IRC, which every channel has
            log.warning("the route of #%s is not known (%s): sending through IRC", channel, error)
            return None
        target = ApiTarget(*found) if found is not None and all(found) else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[channel] = (now + self.cache_s, target)
        return target

    async def send(self, target: ApiTarget, text: str, *, reply_to: str | None = None) -> str:
        """Send ``text``; Twitch's message id. ChatRefusedError when Twitch refused or dropped
        it, ConnectionError when it did not answer (nothing was said either way)."""
        try:
            sent = await self.helix.send_chat(
                target.broadcaster_id, target.sender_id, text, reply_to=reply_to
            )
        except HelixError as error:
            if error.status is None:
                raise ConnectionError(str(error)) from None
            self.refused += 1
            reason = refusal_of(status=error.status, text=error.reason)
            raise ChatRefusedError(str(error), reason=reason) from None
        if not sent.is_sent:
            self.refused += 1
            code = sent.drop_code or "unknown"
            raise ChatRefusedError(
                f"Twitch dropped the message: {code}: {sent.drop_message or 'no reason given'}",
                reason=refusal_of(drop_code=code),
            )
        self.sent += 1
        return sent.message_id

"""Sending through Twitch's API (Send Chat Message) where a channel is read through EventSub:
:class:`ApiChat`, the sender's second way out beside its IRC connection.

Contracts:

- :meth:`ApiChat.target` says whether a channel is sent to through the API, and as whom: the
  channel's broadcaster id and the bot's user id, looked up through ``lookup`` (the cluster's
  routes in Redis) and kept :data:`CACHE_S` seconds; None sends through IRC (also when the
  lookup fails: IRC is the route every channel has).
- With ``as_user`` (``tmi.transport.send_with = "user"``), every channel is sent to through
  the API with the bot's own user token (:class:`BotToken`: its grant in the store, read again
  after a 401, as the coordinator refreshes it): the broadcaster's id from the routes or looked
  up (kept), the bot's from its grant. No badge; no IRC connection needed.
- :meth:`ApiChat.send` sends one message with the application's app token (the Chat Bot badge
  where the broadcaster granted ``channel:bot``), or the bot's user token. Twitch's refusals become
  :class:`~tmi_cluster.errors.ChatRefusedError` with the send result's reason (see
  :func:`refusal_of`): nothing was said. No answer at all is a ConnectionError (the send's
  ``not_connected``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tmi_cluster.config import Settings
from tmi_cluster.errors import (
    ChatRefusedError,
    GrantKeyError,
    HelixError,
    StorageError,
    TmiClusterError,
)
from tmi_cluster.eventsub.helix import ChatSent, Helix
from tmi_cluster.grants import Grants, TokenGrant
from tmi_cluster.store import Store

__all__ = ["CACHE_S", "USER_SEND_SCOPE", "ApiChat", "ApiTarget", "BotToken", "refusal_of"]

log = logging.getLogger(__name__)

#: Seconds a channel's route is kept before it is looked up again.
CACHE_S = 2.0
#: What the bot's grant needs for it to send with its own user token.
USER_SEND_SCOPE = "user:write:chat"

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


class BotToken:
    """The bot's own user token, from its grant in ``store`` opened with ``twitch.grant_key``
    (the bot signs in on the invite screen's ``/invite/bot``); read again when asked
    ``fresh`` (after a 401: the coordinator's TokenKeeper refreshes and stores it)."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.login = settings.tmi.identity.username
        self._grants = Grants(settings.twitch.grant_key.get_secret_value())
        self._settings = settings
        self._store = store
        self._own_store = store is None
        self._grant: TokenGrant | None = None

    async def grant(self, *, fresh: bool = False) -> TokenGrant:
        """The bot's grant in clear (its user id and access token); ChatRefusedError
        ``unauthorized`` when there is none, it lacks ``user:write:chat``, or this key cannot
        open it; ConnectionError (the send's ``not_connected``) when the database is away."""
        if self._grant is None or fresh:
            if self._store is None:
                self._store = Store.from_settings(self._settings)
            try:
                sealed = await asyncio.to_thread(self._store.grants, [self.login])
            except StorageError as error:  # the database away: nothing sent, not our bug
                raise ConnectionError(f"the bot's grant could not be read: {error}") from None
            if not sealed or USER_SEND_SCOPE not in sealed[0].scopes:
                raise ChatRefusedError(
                    f"sending with the bot's user token needs its grant of {USER_SEND_SCOPE}: "
                    "sign the bot in on the invite screen (/invite/bot)",
                    reason="unauthorized",
                )
            try:
                self._grant = self._grants.open(sealed[0])
            except GrantKeyError as error:
                raise ChatRefusedError(str(error), reason="unauthorized") from None
        return self._grant

    def close(self) -> None:
        """Close the store it opened (idempotent)."""
        if self._own_store and self._store is not None:
            self._store.close()
            self._store = None


class ApiChat:
    """Sends through ``helix`` to the channels ``lookup`` routes to EventSub (or, ``as_user``,
    to every channel); see the module. ``lookup(channel)`` answers (broadcaster id, bot id) or
    None."""

    def __init__(
        self,
        helix: Helix,
        lookup: Callable[[str], Awaitable[tuple[str, str] | None]],
        *,
        cache_s: float = CACHE_S,
        as_user: BotToken | None = None,
    ) -> None:
        self.helix = helix
        self._lookup = lookup
        self.cache_s = cache_s
        self.as_user = as_user
        self._cache: dict[str, tuple[float, ApiTarget | None]] = {}
        self._user_ids: dict[str, str] = {}  # login -> Twitch user id (they do not change)
        #: Messages sent through the API, and refused by Twitch.
        self.sent = 0
        self.refused = 0

    async def aclose(self) -> None:
        """Close the HTTP clients and the store (idempotent)."""
        await self.helix.aclose()
        if self.as_user is not None:
            self.as_user.close()

    async def target(self, channel: str) -> ApiTarget | None:
        """Where ``channel``'s messages go through the API; None: through IRC."""
        now = time.monotonic()
        cached = self._cache.get(channel)
        if cached is not None and cached[0] > now:
            return cached[1]
        if self.as_user is not None:
            return await self._user_target(channel)
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

    async def _user_target(self, channel: str) -> ApiTarget:
        """Every channel, as the bot's user: its broadcaster's id looked up once (kept)."""
        assert self.as_user is not None
        bot = await self.as_user.grant()
        broadcaster = self._user_ids.get(channel)
        if broadcaster is None:
            try:
                found = await self.helix.user_ids([channel])
            except HelixError as error:
                if error.status is None:
                    raise ConnectionError(str(error)) from None
                raise ChatRefusedError(str(error), reason=refusal_of(status=error.status)) from None
            broadcaster = found.get(channel)
            if broadcaster is None:
                raise ChatRefusedError(f"Twitch knows no user {channel!r}", reason="failed")
            if len(self._user_ids) > 100_000:
                self._user_ids.clear()
            self._user_ids[channel] = broadcaster
        return ApiTarget(broadcaster, bot.user_id)

    async def send(self, target: ApiTarget, text: str, *, reply_to: str | None = None) -> str:
        """Send ``text``; Twitch's message id. ChatRefusedError when Twitch refused or dropped
        it, ConnectionError when it did not answer (nothing was said either way)."""
        try:
            sent = await self._send(target, text, reply_to)
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

    async def _send(self, target: ApiTarget, text: str, reply_to: str | None) -> ChatSent:
        """One Send Chat Message: with the app token, or the bot's user token (read again from
        the store after a 401, and tried once more)."""
        if self.as_user is None:
            return await self.helix.send_chat(
                target.broadcaster_id, target.sender_id, text, reply_to=reply_to
            )
        for fresh in (False, True):
            token = (await self.as_user.grant(fresh=fresh)).access_token
            try:
                return await self.helix.send_chat(
                    target.broadcaster_id,
                    target.sender_id,
                    text,
                    reply_to=reply_to,
                    user_token=token,
                )
            except HelixError as error:
                if error.status != 401 or fresh:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

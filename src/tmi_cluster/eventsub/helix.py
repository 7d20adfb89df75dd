"""Twitch's API for the EventSub route: the app token, conduits and their shards, chat
subscriptions, and Send Chat Message: :class:`Helix`.

Contracts:

- Every call carries the application's app access token (the client-credentials grant,
  :meth:`~tmi_cluster.oauth.TwitchOAuth.app_token`), asked for on first use and again
  :data:`RENEW_BEFORE_S` before it expires, or at once after a 401 (then the call is made once
  more).
- A refusal or no answer is a :class:`~tmi_cluster.errors.HelixError` naming the call, with
  Twitch's status and words (and, on a 429, when the budget is back); never a token.
- :meth:`subscribe` is idempotent: a subscription that exists (409) answers the existing one.
- :meth:`conduit` reuses the application's conduit (the first, as Twitch lists them) and sizes
  it, or makes one: a restart never makes a second conduit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from tmi_cluster.config import Settings
from tmi_cluster.config.model import SHARED_CHAT_TYPES
from tmi_cluster.errors import HelixError, OAuthError
from tmi_cluster.oauth import TIMEOUT_S, TwitchOAuth, twitch_reason

__all__ = ["RENEW_BEFORE_S", "ChatSent", "Conduit", "Helix", "Shard", "Subscription"]

log = logging.getLogger(__name__)

#: Seconds before its expiry an app token is renewed.
RENEW_BEFORE_S = 600.0


@dataclass(frozen=True, slots=True)
class Conduit:
    """A conduit of the application's."""

    id: str
    shard_count: int


@dataclass(frozen=True, slots=True)
class Shard:
    """A shard of a conduit: its status and its WebSocket session (None: unbound)."""

    id: str
    status: str
    session_id: str | None


@dataclass(frozen=True, slots=True)
class Subscription:
    """An EventSub subscription."""

    id: str
    type: str
    status: str
    condition: Mapping[str, str]
    conduit_id: str | None


@dataclass(frozen=True, slots=True)
class ChatSent:
    """What Twitch did with a chat message: sent (its id), or dropped with Twitch's code and
    words."""

    message_id: str
    is_sent: bool
    drop_code: str | None = None
    drop_message: str | None = None


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds until Twitch's budget is back (``Ratelimit-Reset``: an epoch second)."""
    reset = response.headers.get("ratelimit-reset", "")
    if reset.isdigit():
        return max(0.0, int(reset) - time.time())
    return None


def _subscription(data: Mapping[str, Any]) -> Subscription:
    transport = data.get("transport") or {}
    return Subscription(
        id=str(data["id"]),
        type=str(data["type"]),
        status=str(data.get("status", "")),
        condition={str(k): str(v) for k, v in (data.get("condition") or {}).items()},
        conduit_id=transport.get("conduit_id") if isinstance(transport, dict) else None,
    )


class Helix:
    """The Helix calls of the EventSub route, for the application of ``settings``
    (``twitch.*``). Use as an async context manager, or call :meth:`aclose`."""

    def __init__(
        self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.api_url = settings.twitch.api_url.rstrip("/")
        self.client_id = settings.twitch.client_id
        self._oauth = TwitchOAuth(settings, transport=transport)
        self._http = httpx.AsyncClient(timeout=TIMEOUT_S, transport=transport)
        self._token = ""
        self._expires = 0.0
        #: App tokens asked for so far (the first, then each renewal).
        self.app_tokens = 0

    async def __aenter__(self) -> Helix:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP clients (idempotent)."""
        await self._http.aclose()
        await self._oauth.aclose()

    async def _app_token(self, *, renew: bool = False) -> str:
        if renew or not self._token or time.monotonic() > self._expires - RENEW_BEFORE_S:
            try:
                tokens = await self._oauth.app_token()
            except OAuthError as exc:
                raise HelixError(str(exc), status=exc.status, reason=exc.reason) from None
            lifetime = (
                (tokens.expires_at.timestamp() - time.time()) if tokens.expires_at else 3600.0
            )
            self._token, self._expires = tokens.access_token, time.monotonic() + lifetime
            self.app_tokens += 1
        return self._token

    async def _call(
        self,
        what: str,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | list[tuple[str, str | int | float | bool | None]] | None = None,
        allowed: Sequence[int] = (),
        user_token: str | None = None,
    ) -> httpx.Response:
        """One call, the app token renewed and the call made again once after a 401; with
        ``user_token``, that user's token instead (a 401 is the caller's to refresh it)."""
        for attempt in (1, 2):
            token = user_token or await self._app_token(renew=attempt == 2)
            headers = {"Authorization": f"Bearer {token}", "Client-Id": self.client_id}
            try:
                response = await self._http.request(
                    method, f"{self.api_url}{path}", json=body, params=params, headers=headers
                )
            except httpx.HTTPError as exc:
                log.warning("%s: no answer from %s (%s)", what, self.api_url, type(exc).__name__)
                raise HelixError(f"{what}: Twitch did not answer ({type(exc).__name__})") from None
            if response.status_code == 401 and attempt == 1 and user_token is None:
                continue
            if response.status_code < 400 or response.status_code in allowed:
                return response
            reason = twitch_reason(response)
            raise HelixError(
                f"{what}: Twitch answered {response.status_code}: {reason}",
                status=response.status_code,
                reason=reason,
                retry_after_s=_retry_after(response) if response.status_code == 429 else None,
            )
        raise AssertionError("unreachable")  # pragma: no cover

    # -- conduits ---------------------------------------------------------------------------

    async def conduits(self) -> list[Conduit]:
        """The application's conduits."""
        response = await self._call("listing conduits", "GET", "/eventsub/conduits")
        return [Conduit(str(c["id"]), int(c["shard_count"])) for c in response.json()["data"]]

    async def conduit(self, shard_count: int) -> Conduit:
        """The application's conduit with ``shard_count`` shards: the existing one, resized
        when needed, or a new one."""
        existing = await self.conduits()
        if existing:
            conduit = existing[0]
            if conduit.shard_count == shard_count:
                return conduit
            response = await self._call(
                "resizing the conduit",
                "PATCH",
                "/eventsub/conduits",
                body={"id": conduit.id, "shard_count": shard_count},
            )
        else:
            response = await self._call(
                "making a conduit", "POST", "/eventsub/conduits", body={"shard_count": shard_count}
            )
        data = response.json()["data"][0]
        return Conduit(str(data["id"]), int(data["shard_count"]))

    async def bind(self, conduit_id: str, shards: Mapping[str, str]) -> dict[str, str]:
        """Bind shards (id: WebSocket session id); the shards Twitch refused, with why."""
        response = await self._call(
            "binding shards",
            "PATCH",
            "/eventsub/conduits/shards",
            body={
                "conduit_id": conduit_id,
                "shards": [
                    {"id": shard, "transport": {"method": "websocket", "session_id": session}}
                    for shard, session in shards.items()
                ],
            },
        )
        return {str(e.get("id")): str(e.get("message", "")) for e in response.json()["errors"]}

    async def shards(self, conduit_id: str) -> list[Shard]:
        """A conduit's shards."""
        response = await self._call(
            "listing shards", "GET", "/eventsub/conduits/shards", params={"conduit_id": conduit_id}
        )
        return [
            Shard(str(s["id"]), str(s["status"]), (s.get("transport") or {}).get("session_id"))
            for s in response.json()["data"]
        ]

    # -- subscriptions ----------------------------------------------------------------------

    async def subscribe(
        self, kind: str, broadcaster_id: str, bot_id: str, conduit_id: str
    ) -> Subscription:
        """Subscribe the conduit to ``kind`` (version 1) in a broadcaster's channel, reading as
        the bot; the existing subscription when there is one (409)."""
        condition = {"broadcaster_user_id": broadcaster_id}
        if kind not in SHARED_CHAT_TYPES:  # Shared Chat's conditions name no reader
            condition["user_id"] = bot_id
        body = {
            "type": kind,
            "version": "1",
            "condition": condition,
            "transport": {"method": "conduit", "conduit_id": conduit_id},
        }
        response = await self._call(
            f"subscribing to {kind}", "POST", "/eventsub/subscriptions", body=body, allowed=(409,)
        )
        if response.status_code == 409:
            existing = str(response.json().get("id", ""))
            return Subscription(existing, kind, "enabled", condition, conduit_id)
        return _subscription(response.json()["data"][0])

    async def watch_shards(self, conduit_id: str) -> Subscription:
        """Subscribe the conduit to ``conduit.shard.disabled`` for itself (Twitch tells one of
        its other shards when one is disabled); the existing subscription when there is one."""
        condition = {"client_id": self.client_id, "conduit_id": conduit_id}
        body = {
            "type": "conduit.shard.disabled",
            "version": "1",
            "condition": condition,
            "transport": {"method": "conduit", "conduit_id": conduit_id},
        }
        response = await self._call(
            "subscribing to conduit.shard.disabled",
            "POST",
            "/eventsub/subscriptions",
            body=body,
            allowed=(409,),
        )
        if response.status_code == 409:
            existing = str(response.json().get("id", ""))
            return Subscription(
                existing, "conduit.shard.disabled", "enabled", condition, conduit_id
            )
        return _subscription(response.json()["data"][0])

    async def subscriptions(self, conduit_id: str) -> list[Subscription]:
        """The conduit's subscriptions (what a restart reconciles against)."""
        response = await self._call(
            "listing subscriptions",
            "GET",
            "/eventsub/subscriptions",
            params={"conduit_id": conduit_id},
        )
        return [_subscription(item) for item in response.json()["data"]]

    async def unsubscribe(self, subscription_id: str) -> None:
        """Delete a subscription (one already gone is no error)."""
        await self._call(
            "unsubscribing",
            "DELETE",
            "/eventsub/subscriptions",
            params={"id": subscription_id},
            allowed=(404,),
        )

    # -- chat -------------------------------------------------------------------------------

    async def user_ids(self, logins: Sequence[str]) -> dict[str, str]:
        """The Twitch user ids of ``logins`` (at most 100) -> login; one unknown to Twitch is
        left out."""
        if not logins:
            return {}
        response = await self._call(
            "looking up users", "GET", "/users", params=[("login", n) for n in logins[:100]]
        )
        return {
            str(row["login"]).lower(): str(row["id"]) for row in response.json().get("data") or []
        }

    async def moderated_channels(self, user_id: str, user_token: str) -> dict[str, str]:
        """The channels user ``user_id`` moderates (login -> broadcaster id), with the user's
        own token (``user:read:moderated_channels``): Get Moderated Channels, every page."""
        found: dict[str, str] = {}
        params = {"user_id": user_id, "first": "100"}
        while True:
            response = await self._call(
                "listing the bot's moderated channels",
                "GET",
                "/moderation/channels",
                params=params,
                user_token=user_token,
            )
            page = response.json()
            for row in page.get("data") or []:
                found[str(row["broadcaster_login"]).lower()] = str(row["broadcaster_id"])
            cursor = (page.get("pagination") or {}).get("cursor")
            if not cursor:
                return found
            params = {**params, "after": str(cursor)}

    async def send_chat(
        self,
        broadcaster_id: str,
        sender_id: str,
        text: str,
        *,
        reply_to: str | None = None,
        user_token: str | None = None,
    ) -> ChatSent:
        """Send a chat message with the app token (the Chat Bot badge where the broadcaster
        granted ``channel:bot`` or the bot moderates), or with the sender's ``user_token``
        (``user:write:chat``; no badge)."""
        body: dict[str, Any] = {
            "broadcaster_id": broadcaster_id,
            "sender_id": sender_id,
            "message": text,
        }
        if reply_to:
            body["reply_parent_message_id"] = reply_to
        response = await self._call(
            "sending a chat message", "POST", "/chat/messages", body=body, user_token=user_token
        )
        data = response.json()["data"][0]
        drop = data.get("drop_reason") or {}
        return ChatSent(
            message_id=str(data.get("message_id") or ""),
            is_sent=bool(data.get("is_sent")),
            drop_code=drop.get("code") if isinstance(drop, dict) else None,
            drop_message=drop.get("message") if isinstance(drop, dict) else None,
        )

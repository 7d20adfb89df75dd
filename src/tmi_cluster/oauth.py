"""Twitch's OAuth authorization-code flow and its users endpoint, for the invite screen (and
the EventSub route that uses its grants): :class:`TwitchOAuth`.

The URLs come from the settings (``twitch.oauth_url``, ``twitch.api_url``), so the simulator
plays Twitch offline. Every failure is an :class:`OAuthError` whose text names what failed
and Twitch's own message, never a token, a code or the client secret.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx

from tmi_cluster.config import Settings
from tmi_cluster.errors import OAuthError, TmiClusterError
from tmi_cluster.logins import normalise_login

__all__ = ["OAuthError", "Tokens", "TwitchOAuth", "TwitchUser", "Validation", "twitch_reason"]

log = logging.getLogger(__name__)

#: Seconds for one request to Twitch.
TIMEOUT_S = 10.0
#: The longest message of Twitch's quoted in an error.
_MESSAGE_LENGTH = 200


@dataclass(frozen=True, slots=True)
class Tokens:
    """What a code or a refresh token is exchanged for (the tokens never shown by ``repr``)."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    scopes: tuple[str, ...]
    expires_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Validation:
    """Who a token belongs to and what it may do (``/oauth2/validate``)."""

    user_id: str
    login: str
    client_id: str
    scopes: tuple[str, ...]
    expires_in: int


@dataclass(frozen=True, slots=True)
class TwitchUser:
    """A Twitch user as the API shows them."""

    id: str
    login: str
    display_name: str


def twitch_reason(response: httpx.Response) -> str:
    """Twitch's message in an error response (its ``message`` or ``error``), short."""
    try:
        body = response.json()
    except ValueError:
        body = None
    text = ""
    if isinstance(body, dict):
        text = str(body.get("message") or body.get("error") or "")
    text = text or response.reason_phrase or "no reason given"
    return text[:_MESSAGE_LENGTH]


class TwitchOAuth:
    """The OAuth client of the bot's Twitch application (``twitch.*`` settings). Use as an
    async context manager, or call :meth:`aclose`. ``transport`` (an httpx transport) is for
    a host that routes requests its own way."""

    def __init__(
        self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        app = settings.twitch
        self.client_id = app.client_id
        self._secret = app.client_secret.get_secret_value()
        self.redirect_url = app.redirect_url
        self.scopes = tuple(app.scopes)
        self.oauth_url = app.oauth_url.rstrip("/")
        self.api_url = app.api_url.rstrip("/")
        self._http = httpx.AsyncClient(timeout=TIMEOUT_S, transport=transport)

    async def __aenter__(self) -> TwitchOAuth:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client (idempotent)."""
        await self._http.aclose()

    def authorize_url(
        self, state: str, *, force_verify: bool = True, scopes: Sequence[str] | None = None
    ) -> str:
        """Where to send the streamer's browser to sign in and grant the scopes (``scopes``,
        else ``twitch.scopes``); Twitch sends it back to ``redirect_url`` with ``code`` and
        ``state`` (or ``error``)."""
        query = {
            "client_id": self.client_id,
            "redirect_uri": self.redirect_url,
            "response_type": "code",
            "scope": " ".join(self.scopes if scopes is None else scopes),
            "state": state,
        }
        if force_verify:
            query["force_verify"] = "true"
        return f"{self.oauth_url}/authorize?{urlencode(query)}"

    async def _call(
        self,
        step: str,
        method: str,
        url: str,
        *,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        try:
            response = await self._http.request(
                method, url, data=data, headers=headers, params=params
            )
        except httpx.HTTPError as exc:
            log.warning("%s: no answer from %s (%s)", step, url, type(exc).__name__)
            raise OAuthError(f"{step}: Twitch did not answer ({type(exc).__name__})") from None
        if response.status_code >= 400:
            status = response.status_code
            reason = twitch_reason(response)
            raise OAuthError(
                f"{step}: Twitch answered {status}: {reason}", status=status, reason=reason
            )
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise OAuthError(f"{step}: Twitch's answer is not JSON") from None

    @staticmethod
    def _tokens(step: str, body: Any) -> Tokens:
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise OAuthError(f"{step}: Twitch's answer has no access token")
        scopes = body.get("scope") or []
        expires_in = body.get("expires_in")
        expires_at = (
            dt.datetime.now(dt.UTC) + dt.timedelta(seconds=expires_in)
            if isinstance(expires_in, int) and not isinstance(expires_in, bool)
            else None
        )
        return Tokens(
            access_token=body["access_token"],
            refresh_token=str(body.get("refresh_token") or ""),
            scopes=tuple(str(s) for s in scopes) if isinstance(scopes, list) else (),
            expires_at=expires_at,
        )

    async def exchange(self, code: str) -> Tokens:
        """The tokens for the authorization ``code`` the callback received."""
        body = await self._call(
            "exchanging the code",
            "POST",
            f"{self.oauth_url}/token",
            data={
                "client_id": self.client_id,
                "client_secret": self._secret,
                "code": code,
                "grant_type": "authorization_code",
                "redirect_uri": self.redirect_url,
            },
        )
        return self._tokens("exchanging the code", body)

    async def app_token(self) -> Tokens:
        """An app access token (the client-credentials grant): what EventSub's conduits and
        the Chat Bot badge's sends need. No refresh token: ask again before it expires."""
        body = await self._call(
            "getting an app token",
            "POST",
            f"{self.oauth_url}/token",
            data={
                "client_id": self.client_id,
                "client_secret": self._secret,
                "grant_type": "client_credentials",
            },
        )
        return self._tokens("getting an app token", body)

    async def refresh(self, refresh_token: str) -> Tokens:
        """New tokens for a refresh token."""
        body = await self._call(
            "refreshing a token",
            "POST",
            f"{self.oauth_url}/token",
            data={
                "client_id": self.client_id,
                "client_secret": self._secret,
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
            },
        )
        return self._tokens("refreshing a token", body)

    async def validate(self, access_token: str) -> Validation:
        """Who ``access_token`` belongs to, for which application, with which scopes."""
        body = await self._call(
            "validating the token",
            "GET",
            f"{self.oauth_url}/validate",
            headers={"Authorization": f"OAuth {access_token}"},
        )
        try:
            return Validation(
                user_id=str(body["user_id"]),
                login=normalise_login(str(body["login"])),
                client_id=str(body["client_id"]),
                scopes=tuple(str(s) for s in body.get("scopes") or []),
                expires_in=int(body.get("expires_in") or 0),
            )
        except (KeyError, TypeError, ValueError, TmiClusterError):
            raise OAuthError("validating the token: Twitch's answer lacks the user") from None

    async def user(self, access_token: str) -> TwitchUser:
        """The user ``access_token`` belongs to, as the API shows them."""
        body = await self._call(
            "reading the user",
            "GET",
            f"{self.api_url}/users",
            headers={"Authorization": f"Bearer {access_token}", "Client-Id": self.client_id},
        )
        try:
            first = body["data"][0]
            login = normalise_login(str(first["login"]))
            return TwitchUser(
                id=str(first["id"]),
                login=login,
                display_name=str(first.get("display_name") or login),
            )
        except (KeyError, IndexError, TypeError, ValueError, TmiClusterError):
            raise OAuthError("reading the user: Twitch's answer lacks the user") from None

    async def revoke(self, token: str) -> None:
        """Withdraw ``token`` at Twitch (the streamer's grant ends there too)."""
        await self._call(
            "revoking the token",
            "POST",
            f"{self.oauth_url}/revoke",
            data={"client_id": self.client_id, "token": token},
        )

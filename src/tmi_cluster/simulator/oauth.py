"""The simulator's Twitch OAuth server and users endpoint, on its control port, so that the
invite screen's whole flow runs offline and in tests.

====== ======================= ===========================================================
method path                    what (as Twitch's, in the parts the cluster uses)
====== ======================= ===========================================================
GET    /oauth2/authorize       the sign-in and consent page (a login field, Authorize, Cancel)
POST   /oauth2/authorize       the page's answer: back to ``redirect_uri`` with ``code`` and
                               ``state``, or ``error=access_denied``
POST   /oauth2/token           ``authorization_code`` and ``refresh_token`` grants
GET    /oauth2/validate        ``Authorization: OAuth <token>``: user, client, scopes
POST   /oauth2/revoke          ``client_id``, ``token``
GET    /helix/users            ``Authorization: Bearer <token>``, ``Client-Id``; ``id`` and
                               ``login`` (repeatable), else the token's user
POST   /apps                   ``{"client_id", "client_secret", "redirect_uris"}``: register
                               an application (only those redirect URIs, when given)
====== ======================= ===========================================================

Any login signs in (there are no passwords). One application is registered from the start:
client id :data:`CLIENT_ID`, secret :data:`CLIENT_SECRET`. Codes are single use and live
10 minutes; access tokens 4 hours. User ids are the ones the chat's tags carry.
"""

from __future__ import annotations

import html
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tmi_cluster.errors import InvalidChannelError
from tmi_cluster.logins import normalise_login
from tmi_cluster.simulator.conduits import RefusedError
from tmi_cluster.simulator.peers import user_id

__all__ = ["CLIENT_ID", "CLIENT_SECRET", "OAuthServer", "oauth_routes"]

#: The application every simulator knows from the start.
CLIENT_ID = "tmi-cluster-simulator"
CLIENT_SECRET = "simulator-secret"  # noqa: S105 - a fixture of the simulator, not a secret
#: Seconds a code and an access token live.
CODE_TTL_S = 600.0
TOKEN_TTL_S = 14_400


class _RefusedError(Exception):
    """A request Twitch would refuse: its status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class _Code:
    client_id: str
    redirect_uri: str
    login: str
    scopes: tuple[str, ...]
    expires: float


@dataclass(frozen=True, slots=True)
class _Token:
    client_id: str
    login: str
    scopes: tuple[str, ...]
    expires: float
    refresh_token: str


class OAuthServer:
    """The OAuth state of one simulator: applications, codes, tokens."""

    def __init__(self) -> None:
        self._apps: dict[str, str] = {CLIENT_ID: CLIENT_SECRET}
        self._redirects: dict[str, frozenset[str]] = {}
        self._codes: dict[str, _Code] = {}
        self._tokens: dict[str, _Token] = {}
        self._of_user: dict[tuple[str, str], set[str]] = {}  # (client, login) -> access tokens
        self._refresh: dict[str, str] = {}  # refresh token: its access token
        #: Called with (client id, login) when a user's last live token of a client is revoked:
        #: their authorization ends (the simulator's EventSub revokes their subscriptions).
        self.on_deauthorized: Callable[[str, str], None] | None = None

    def add_app(
        self, client_id: str, client_secret: str, redirect_uris: Iterable[str] = ()
    ) -> None:
        """Register an application (replacing its secret). With ``redirect_uris``, as on
        Twitch, only those are accepted; without, any http(s) URL (the default application)."""
        if not client_id or not client_secret:
            raise ValueError("an application needs a client id and a client secret")
        self._apps[client_id] = client_secret
        self._redirects[client_id] = frozenset(redirect_uris)

    def check_client(self, client_id: str, redirect_uri: str) -> None:
        """_RefusedError unless the application is known and the redirect URI is http(s)."""
        if client_id not in self._apps:
            raise _RefusedError(400, "invalid client")
        parts = urlsplit(redirect_uri)
        registered = self._redirects.get(client_id)
        if (
            parts.scheme not in ("http", "https")
            or not parts.netloc
            or (registered and redirect_uri not in registered)
        ):
            raise _RefusedError(400, "Parameter redirect_uri does not match registered URI")

    def issue_code(
        self, client_id: str, redirect_uri: str, login: str, scopes: tuple[str, ...]
    ) -> str:
        """A code for ``login``'s consent (single use)."""
        code = secrets.token_hex(15)
        self._codes[code] = _Code(
            client_id, redirect_uri, login, scopes, time.monotonic() + CODE_TTL_S
        )
        return code

    def _issue(self, client_id: str, login: str, scopes: tuple[str, ...]) -> dict[str, Any]:
        access, refresh = secrets.token_hex(15), secrets.token_hex(25)
        self._add(access, _Token(client_id, login, scopes, time.monotonic() + TOKEN_TTL_S, refresh))
        self._refresh[refresh] = access
        return {
            "access_token": access,
            "expires_in": TOKEN_TTL_S,
            "refresh_token": refresh,
            "scope": list(scopes),
            "token_type": "bearer",
        }

    def _client(self, form: Mapping[str, str]) -> str:
        client_id = form.get("client_id", "")
        if client_id not in self._apps:
            raise _RefusedError(400, "invalid client")
        if not secrets.compare_digest(form.get("client_secret", ""), self._apps[client_id]):
            raise _RefusedError(403, "invalid client secret")
        return client_id

    def token(self, form: Mapping[str, str]) -> dict[str, Any]:
        """``POST /oauth2/token``."""
        client_id = self._client(form)
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            code = self._codes.pop(form.get("code", ""), None)
            if code is None or code.expires < time.monotonic() or code.client_id != client_id:
                raise _RefusedError(400, "Invalid authorization code")
            if form.get("redirect_uri") != code.redirect_uri:
                raise _RefusedError(400, "Parameter redirect_uri does not match registered URI")
            return self._issue(client_id, code.login, code.scopes)
        if grant_type == "client_credentials":  # an app access token: no user, no refresh
            app = secrets.token_hex(15)
            self._add(app, _Token(client_id, "", (), time.monotonic() + TOKEN_TTL_S, ""))
            return {"access_token": app, "expires_in": TOKEN_TTL_S, "token_type": "bearer"}
        if grant_type == "refresh_token":
            access = self._refresh.pop(form.get("refresh_token", ""), None)
            old = self._remove(access) if access is not None else None
            if old is None or old.client_id != client_id:
                raise _RefusedError(400, "Invalid refresh token")
            return self._issue(client_id, old.login, old.scopes)
        raise _RefusedError(400, "missing or unsupported grant_type")

    def holder(self, token: str) -> _Token:
        """The live token ``token``; _RefusedError 401 otherwise."""
        found = self._tokens.get(token)
        if found is None or found.expires < time.monotonic():
            raise _RefusedError(401, "invalid access token")
        return found

    def validate(self, token: str) -> dict[str, Any]:
        """``GET /oauth2/validate``."""
        found = self.holder(token)
        return {
            "client_id": found.client_id,
            "login": found.login,
            "scopes": list(found.scopes),
            "user_id": user_id(found.login),
            "expires_in": max(0, int(found.expires - time.monotonic())),
        }

    def revoke(self, client_id: str, token: str) -> None:
        """``POST /oauth2/revoke``: the access token (or refresh token) and its pair."""
        access = self._refresh.get(token, token)
        found = self._tokens.get(access)
        if found is None or found.client_id != client_id:
            raise _RefusedError(400, "Invalid token")
        self._remove(access)
        self._refresh.pop(found.refresh_token, None)
        ended = found.login and not self.authorized(found.client_id, found.login, "")
        if ended and self.on_deauthorized is not None:
            self.on_deauthorized(found.client_id, found.login)

    def authorized(self, client_id: str, login: str, scope: str) -> bool:
        """Whether ``login`` holds a live token of ``client_id`` (with ``scope``, unless
        empty): their authorization of the application, as EventSub checks it."""
        now = time.monotonic()
        tokens = self._tokens
        return any(
            (t := tokens[access]).expires >= now and (not scope or scope in t.scopes)
            for access in self._of_user.get((client_id, login), ())
        )

    def _add(self, access: str, token: _Token) -> None:
        self._tokens[access] = token
        self._of_user.setdefault((token.client_id, token.login), set()).add(access)

    def _remove(self, access: str) -> _Token | None:
        token = self._tokens.pop(access, None)
        if token is not None:
            mine = self._of_user.get((token.client_id, token.login), set())
            mine.discard(access)
            if not mine:
                self._of_user.pop((token.client_id, token.login), None)
        return token

    def request_holder(self, authorization: str, client_id: str) -> tuple[_Token, str]:
        """The token of a Helix request (``Authorization: Bearer``, a user's or an app's) and
        its client id (the ``Client-Id`` header must match); RefusedError 401 otherwise."""
        scheme, _, token = authorization.partition(" ")
        found = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if found is None or found.expires < time.monotonic():
            raise RefusedError(401, "Invalid OAuth token")
        if client_id != found.client_id:
            raise RefusedError(401, "Client ID and OAuth token do not match")
        return found, found.client_id

    def app_client(self, authorization: str, client_id: str) -> str:
        """The client id of an app access token's request (``Authorization: Bearer`` and a
        ``Client-Id`` that matches it); RefusedError 401 otherwise."""
        found, client = self.request_holder(authorization, client_id)
        if found.login:
            raise RefusedError(401, "An app access token is required")
        return client

    def logins(self) -> list[str]:
        """The logins that hold a token, sorted."""
        return sorted({t.login for t in self._tokens.values()})

    def live_tokens(self, login: str) -> int:
        """How many live access tokens ``login`` has (what a test checks after a revoke)."""
        now = time.monotonic()
        return sum(1 for t in self._tokens.values() if t.login == login and t.expires >= now)


def _user(login: str) -> dict[str, Any]:
    return {
        "id": user_id(login),
        "login": login,
        "display_name": login.capitalize(),
        "type": "",
        "broadcaster_type": "",
        "description": "",
        "profile_image_url": "",
        "offline_image_url": "",
        "created_at": "2016-12-14T20:32:28Z",
    }


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the last value of each field)."""
    body = (await request.body()).decode("utf-8", "replace")
    return {key: values[-1] for key, values in parse_qs(body, keep_blank_values=True).items()}


def _bearer(request: Request, scheme: str) -> str:
    value = request.headers.get("authorization", "")
    given, _, token = value.partition(" ")
    if given.lower() not in (scheme.lower(), "bearer") or not token:
        raise _RefusedError(401, "missing authorization token")
    return token.strip()


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Simulated Twitch: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: sans-serif; max-width: 28rem; margin: 3rem auto">
<h1>Simulated Twitch</h1>
<p>The application <b>{client}</b> asks for: <b>{scopes}</b>.</p>
{error}
<form method="post" action="authorize">
{hidden}
<p><label>Sign in as <input name="login" id="login" autocomplete="off" value="{login}"></label></p>
<p><button name="decision" value="authorize" id="authorize">Authorize</button>
<button name="decision" value="cancel" id="cancel">Cancel</button></p>
</form></body></html>
"""

_FIELDS = ("client_id", "redirect_uri", "response_type", "scope", "state")


def _page(fields: Mapping[str, str], *, error: str = "", login: str = "") -> HTMLResponse:
    hidden = "\n".join(
        f'<input type="hidden" name="{name}" value="{html.escape(fields.get(name, ""))}">'
        for name in _FIELDS
    )
    body = _PAGE.format(
        client=html.escape(fields.get("client_id", "")),
        scopes=html.escape(fields.get("scope", "") or "no scope"),
        error=f'<p id="error" style="color: #b00">{html.escape(error)}</p>' if error else "",
        hidden=hidden,
        login=html.escape(login),
    )
    return HTMLResponse(body, status_code=400 if error else 200)


def _back(redirect_uri: str, params: Mapping[str, str]) -> RedirectResponse:
    joiner = "&" if urlsplit(redirect_uri).query else "?"
    return RedirectResponse(f"{redirect_uri}{joiner}{urlencode(params)}", status_code=302)


def _answering(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """A route answering Twitch's JSON error for a refused request."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except _RefusedError as refused:
            return JSONResponse(
                {"status": refused.status, "message": refused.message},
                status_code=refused.status,
            )

    return run


class _OAuthRoutes:
    """The handlers, around one :class:`OAuthServer`."""

    def __init__(self, server: OAuthServer) -> None:
        self.server = server

    async def authorize_page(self, request: Request) -> Response:
        fields = {name: request.query_params.get(name, "") for name in _FIELDS}
        self.server.check_client(fields["client_id"], fields["redirect_uri"])
        if fields["response_type"] != "code":
            raise _RefusedError(400, "response_type must be 'code'")
        return _page(fields)

    async def authorize_answer(self, request: Request) -> Response:
        fields = await _form(request)
        self.server.check_client(fields.get("client_id", ""), fields.get("redirect_uri", ""))
        back = {"state": fields.get("state", "")}
        if fields.get("decision") != "authorize":
            denied = {"error": "access_denied", "error_description": "The user denied you access"}
            return _back(fields["redirect_uri"], {**denied, **back})
        try:
            login = normalise_login(fields.get("login", ""))
        except InvalidChannelError as exc:
            return _page(fields, error=str(exc), login=fields.get("login", ""))
        scopes = tuple(s for s in fields.get("scope", "").split() if s)
        code = self.server.issue_code(fields["client_id"], fields["redirect_uri"], login, scopes)
        return _back(fields["redirect_uri"], {"code": code, "scope": " ".join(scopes), **back})

    async def token(self, request: Request) -> Response:
        return JSONResponse(self.server.token(await _form(request)))

    async def validate(self, request: Request) -> Response:
        return JSONResponse(self.server.validate(_bearer(request, "OAuth")))

    async def revoke(self, request: Request) -> Response:
        form = await _form(request)
        self.server.revoke(form.get("client_id", ""), form.get("token", ""))
        return Response(status_code=200)

    async def users(self, request: Request) -> Response:
        holder = self.server.holder(_bearer(request, "Bearer"))
        if request.headers.get("client-id") != holder.client_id:
            raise _RefusedError(401, "Client ID and OAuth token do not match")
        try:
            logins = [normalise_login(name) for name in request.query_params.getlist("login")]
        except InvalidChannelError as exc:
            raise _RefusedError(400, str(exc)) from None
        ids = set(request.query_params.getlist("id"))
        data = [_user(name) for name in logins]
        data += [_user(name) for name in self.server.logins() if user_id(name) in ids]
        if not logins and not ids:
            data = [_user(holder.login)]
        return JSONResponse({"data": data})

    async def add_app(self, request: Request) -> Response:
        try:
            data = json.loads(await request.body() or b"{}")
            if not isinstance(data, dict):
                raise TypeError("the body must be a JSON object")
            uris = data.get("redirect_uris") or []
            if not isinstance(uris, list):
                raise TypeError("redirect_uris must be a list")
            self.server.add_app(
                str(data["client_id"]), str(data["client_secret"]), [str(u) for u in uris]
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise _RefusedError(400, f"expected client_id and client_secret: {exc}") from None
        return JSONResponse({"ok": True})


def oauth_routes(server: OAuthServer) -> list[Route]:
    """The routes of the OAuth server and the users endpoint, for the control app."""
    routes = _OAuthRoutes(server)
    return [
        Route("/oauth2/authorize", _answering(routes.authorize_page), methods=["GET"]),
        Route("/oauth2/authorize", _answering(routes.authorize_answer), methods=["POST"]),
        Route("/oauth2/token", _answering(routes.token), methods=["POST"]),
        Route("/oauth2/validate", _answering(routes.validate), methods=["GET"]),
        Route("/oauth2/revoke", _answering(routes.revoke), methods=["POST"]),
        Route("/helix/users", _answering(routes.users), methods=["GET"]),
        Route("/apps", _answering(routes.add_app), methods=["POST"]),
    ]

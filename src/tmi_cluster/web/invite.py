"""The invite screen (``{path}/invite``): a streamer signs in with Twitch and authorizes the bot
for their own channel, or revokes it; the bot is in their chat within seconds.

The flow (OAuth authorization code, :class:`~tmi_cluster.oauth.TwitchOAuth`):

1. ``GET /invite``: the page. Signed out: the bot's name, in how many channels it is
   authorized, "Sign in with Twitch". Signed in: the streamer's name, whether the bot is
   authorized for their channel, "Add the bot" or "Remove the bot", "Sign out".
2. ``GET /invite/login``: a random ``state`` is put in the browser's session, and the browser
   sent to Twitch's authorize page with it.
3. ``GET /invite/callback``: Twitch sends the browser back with ``code`` and ``state``. The
   state must be the one of this browser's session, and is used up (a replayed or forged
   callback changes nothing); the code is exchanged, the token validated (our client id, the
   scopes asked for) and the user read. Their tokens stay in the (encrypted) session until
   they authorize the bot; when the bot has their grant already, it is renewed with them
   (and the old token withdrawn).
4. ``POST /invite/authorize``: the grant is stored (tokens encrypted,
   :class:`~tmi_cluster.grants.Grants`), the channel authorized through the channel manager
   (with ``reconnect``) and joined (:func:`tmi_cluster.cluster.admin.join`).
   ``POST /invite/revoke``: the channel is revoked (the coordinator parts it within a pass),
   the grant deleted, and its token withdrawn at Twitch. ``POST /invite/logout``: signed out.

Contracts:

- The session is a cookie sealed with a key derived from ``twitch.grant_key`` (Fernet:
  encrypted and authenticated), ``HttpOnly``, ``SameSite=Lax``, ``Secure`` when the redirect
  URL is https, scoped to the invite screen's path, living :data:`SESSION_MAX_AGE_S`.
- Every POST carries the session's CSRF token (a form field); one without it is refused (403)
  and changes nothing.
- With the Dummy channel manager (or a manager whose ``invite_screen`` is false) every route
  answers 409 and says why; with ``twitch.*`` not set up, 503 naming the missing settings.
- Every failure is a page that says what failed and that nothing was changed (400 for a bad
  callback, 502 when Twitch refuses or does not answer, 503 when the database does not; any
  other error, such as a channel manager of one's own that raises, 500 with the reason in the
  log only); no page and no log line holds a token, a code or a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import html
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from tmi_cluster.channels import invite_screen_off, load_manager
from tmi_cluster.cluster import admin
from tmi_cluster.config import Settings
from tmi_cluster.errors import ConfigError, NotAvailableError, StorageError
from tmi_cluster.grants import Cipher, GrantKeyError, Grants, TokenGrant
from tmi_cluster.oauth import OAuthError, TwitchOAuth, TwitchUser
from tmi_cluster.outcomes import JoinStatus
from tmi_cluster.store import Store

__all__ = ["SESSION_COOKIE", "SESSION_MAX_AGE_S", "Invite"]

log = logging.getLogger(__name__)

#: The session cookie's name and life.
SESSION_COOKIE = "tmi_cluster_invite"
SESSION_MAX_AGE_S = 3600
#: Seconds the authorize request waits for the bot to be in the chat.
JOIN_WAIT_S = 5.0
#: The largest form body read.
_MAX_FORM = 4096


class _PageError(Exception):
    """A request the invite screen answers with a page saying what went wrong."""

    def __init__(self, status: int, title: str, text: str, *, back: bool = True) -> None:
        super().__init__(text)
        self.status = status
        self.title = title
        self.text = text
        #: Whether the page links back to the invite screen (not when it is closed).
        self.back = back


@dataclass
class _Session:
    """The browser's session: a dict sealed in a cookie (``changed``: write it back)."""

    data: dict[str, Any]
    changed: bool = False

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.changed = True

    def pop(self, key: str) -> Any:
        if key in self.data:
            self.changed = True
        return self.data.pop(key, None)

    def csrf(self) -> str:
        """The session's CSRF token (made on first use)."""
        token = self.data.get("csrf")
        if not isinstance(token, str):
            token = secrets.token_urlsafe(24)
            self.set("csrf", token)
        return token


@dataclass(frozen=True)
class _Checked:
    """A token as checked with Twitch: its user and scopes."""

    user: TwitchUser
    scopes: tuple[str, ...]


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="{base}/invite.css">
<link rel="icon" href="{base}/favicon.svg" type="image/svg+xml"></head>
<body><main>
<h1>{title}</h1>
{body}
</main></body></html>
"""


class Invite:
    """The invite screen of the cluster of ``settings``: :meth:`app` is its ASGI app (mounted at
    ``/invite`` by :func:`~tmi_cluster.web.create_app`); :meth:`aclose` closes its store and
    HTTP client."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: The bot's name, mid-sentence and at a sentence's start.
        self.bot = settings.tmi.identity.username or "the bot"
        self.bot_capital = settings.tmi.identity.username or "The bot"
        self._store: Store | None = None
        self._oauth: TwitchOAuth | None = None
        self._closed: _PageError | None = None
        self._looked = False
        key = settings.twitch.grant_key.get_secret_value()
        self._sessions = Cipher.for_sessions(key) if key else None
        self._grants = Grants(key) if key else None
        self._secure = settings.twitch.redirect_url.startswith("https://")
        #: The sign-in's start on the site of the redirect URL: its session cookie is then the
        #: one the callback reads, whatever address the page was opened at.
        self._login_url = settings.twitch.redirect_url.removesuffix("callback") + "login"

    @property
    def open(self) -> bool:
        """Whether it is set up as far as the settings tell (``twitch.*`` set, a manager other
        than the Dummy one): what ``tmi-cluster dashboard`` looks at to print its address."""
        return self.settings.channel_manager.use != "dummy" and not self.settings.twitch.missing()

    @property
    def address(self) -> str:
        """Where streamers open it: the redirect URL's site and path, ``/invite/``."""
        return self.settings.twitch.redirect_url.removesuffix("callback")

    # -- plumbing ---------------------------------------------------------------------------

    def store(self) -> Store:
        """The store (opened on first use)."""
        if self._store is None:
            self._store = Store.from_settings(self.settings)
        return self._store

    def oauth(self) -> TwitchOAuth:
        """The OAuth client (made on first use)."""
        if self._oauth is None:
            self._oauth = TwitchOAuth(self.settings)
        return self._oauth

    async def aclose(self) -> None:
        """Close the store and the HTTP client (idempotent)."""
        if self._oauth is not None:
            await self._oauth.aclose()
            self._oauth = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def _why_closed(self) -> _PageError | None:
        """Why the invite screen cannot be used (None: it can), looked at once."""
        if self._looked:
            return self._closed
        closed: _PageError | None = None
        try:
            manager = load_manager(self.settings, store=self.store())
        except ConfigError as exc:
            log.error("the invite screen is off: %s", exc)
            closed = _PageError(
                503,
                "Not available",
                "The invite screen is off: its channel manager does not load.",
                back=False,
            )
        else:
            if (off := invite_screen_off(manager)) is not None:
                closed = _PageError(
                    409, "Not available", f"The invite screen is off: {off}.", back=False
                )
            elif missing := self.settings.twitch.missing():
                closed = _PageError(
                    503,
                    "Not set up",
                    "The invite screen is not set up: it needs the settings "
                    f"{', '.join(missing)} (see the web page of the docs: the invite screen).",
                    back=False,
                )
        self._closed, self._looked = closed, True
        return closed

    def _session(self, request: Request) -> _Session:
        raw = request.cookies.get(SESSION_COOKIE)
        if not raw or self._sessions is None:
            return _Session({})
        try:
            data = json.loads(self._sessions.open(raw, max_age_s=SESSION_MAX_AGE_S))
        except (GrantKeyError, ValueError):
            return _Session({}, changed=True)  # expired or not ours: replaced
        return _Session(data if isinstance(data, dict) else {}, changed=not isinstance(data, dict))

    def _save(self, request: Request, response: Response, session: _Session) -> Response:
        if not session.changed or self._sessions is None:
            return response
        path = request.scope.get("root_path", "") or "/"
        if not session.data:
            response.delete_cookie(SESSION_COOKIE, path=path)
            return response
        response.set_cookie(
            SESSION_COOKIE,
            self._sessions.seal(json.dumps(session.data)),
            max_age=SESSION_MAX_AGE_S,
            path=path,
            secure=self._secure,
            httponly=True,
            samesite="lax",
        )
        return response

    @staticmethod
    def _base(request: Request) -> str:
        return str(request.scope.get("root_path", ""))

    def _page(self, request: Request, title: str, body: str, status: int = 200) -> HTMLResponse:
        page = _PAGE.format(title=_e(title), base=_e(self._base(request)), body=body)
        return HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store"})

    def _error(self, request: Request, error: _PageError) -> HTMLResponse:
        body = f'<p class="error" id="error">{_e(error.text)}</p>'
        if error.back:
            body += f'<p><a href="{_e(self._base(request))}/">Back to the invite screen</a></p>'

        return self._page(request, error.title, body, error.status)

    def _back(self, request: Request, session: _Session, flash: str = "") -> Response:
        if flash:
            session.set("flash", flash)
        response = RedirectResponse(f"{self._base(request)}/", status_code=303)
        return self._save(request, response, session)

    def _handled(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """A route: closed → its page; a _PageError → its page; the database down → 503."""

        async def run(request: Request) -> Response:
            try:
                closed = await asyncio.to_thread(self._why_closed)
                if closed is not None:
                    return self._error(request, closed)
                return await handler(request)
            except _PageError as error:
                return self._error(request, error)
            except StorageError:
                log.warning("the invite screen cannot reach the database", exc_info=True)
                return self._error(
                    request,
                    _PageError(
                        503,
                        "Try again later",
                        "The bot's database does not answer right now; nothing was changed. "
                        "Try again in a minute.",
                    ),
                )
            except Exception:  # a channel manager of one's own, a bug: a page, the log says why
                log.exception("the invite screen failed on %s", request.url.path)
                return self._error(
                    request,
                    _PageError(
                        500,
                        "Something went wrong",
                        "The bot could not do that right now; its operator's log says why. "
                        "Try again later.",
                    ),
                )

        return run

    async def _form(self, request: Request, session: _Session) -> dict[str, str]:
        """The POST's form, once its CSRF token is the session's (else 403, nothing done)."""
        body = await request.body()
        if len(body) > _MAX_FORM:
            raise _PageError(413, "Refused", "The form is too large; nothing was changed.")
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items() if v}
        expected = session.get("csrf")
        given = form.get("csrf", "")
        if not isinstance(expected, str) or not _same(given, expected):
            raise _PageError(
                403,
                "Refused",
                "This form is not from this browser's invite screen (its CSRF token does not "
                "match, or the session expired); nothing was changed. Open the invite screen "
                "and try again.",
            )
        return form

    # -- the routes -------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        session = self._session(request)
        count = await asyncio.to_thread(self.store().authorized_count)
        flash = session.pop("flash")
        user = session.get("user")
        bot = _e(self.bot)
        parts = [
            f'<p class="lead">{_e(self.bot_capital)} is a chat bot, authorized in {count} '
            f"channel{'' if count == 1 else 's'}.</p>"
        ]
        if flash:
            parts.append(f'<p class="flash" id="flash">{_e(flash)}</p>')
        base = _e(self._base(request))
        login_url = _e(self._login_url)
        if not isinstance(user, dict):
            parts.append(
                f"<p>Sign in with your Twitch account to add {bot} to your chat, or to remove "
                "it.</p>"
                f'<p><a class="button" id="sign-in" href="{login_url}">Sign in with Twitch</a></p>'
            )
        else:
            login = str(user.get("login", ""))
            authorized = await self._authorized(login)
            csrf = f'<input type="hidden" name="csrf" value="{_e(session.csrf())}">'
            name = _e(user.get("name") or login)
            parts.append(f'<p id="user">Signed in as <b>{name}</b> (#{_e(login)}).</p>')
            if authorized:
                parts.append(
                    f'<p id="status">{_e(self.bot_capital)} is authorized for your chat.</p>'
                    f'<form method="post" action="{base}/revoke">{csrf}'
                    f'<button id="revoke" class="danger">Remove {bot} from my chat</button></form>'
                )
            elif isinstance(session.get("tokens"), dict):
                parts.append(
                    f'<p id="status">{_e(self.bot_capital)} is not in your chat.</p>'
                    f'<form method="post" action="{base}/authorize">{csrf}'
                    f'<button id="authorize">Add {bot} to my chat</button></form>'
                )
            else:  # the grant of this sign-in was used and revoked: Twitch must grant anew
                parts.append(
                    f'<p id="status">{_e(self.bot_capital)} is not in your chat.</p>'
                    f'<p><a class="button" id="sign-in" href="{login_url}">Sign in with Twitch '
                    f"again to add {bot}</a></p>"
                )
            parts.append(
                f'<form method="post" action="{base}/logout">{csrf}'
                '<button id="sign-out" class="quiet">Sign out</button></form>'
            )
        response = self._page(request, f"Invite {self.bot}", "\n".join(parts))
        return self._save(request, response, session)

    async def login(self, request: Request) -> Response:
        session = self._session(request)
        state = secrets.token_urlsafe(24)
        session.set("state", state)
        session.csrf()
        response = RedirectResponse(self.oauth().authorize_url(state), status_code=303)
        return self._save(request, response, session)

    async def callback(self, request: Request) -> Response:
        session = self._session(request)
        expected = session.pop("state")
        params = request.query_params
        try:
            user = await self._signed_in(expected, params.get("state", ""), params)
        except _PageError as error:  # the state is used up all the same
            return self._save(request, self._error(request, error), session)
        user_data, tokens = user
        session.set("user", user_data)
        session.csrf()
        store = self.store()
        stored = await asyncio.to_thread(store.grant, user_data["id"])
        if stored is not None and not await self._authorized(user_data["login"]):
            stored = None  # a grant left by a revoke elsewhere: replaced when they add the bot
        if stored is None:  # kept in the session until the streamer adds the bot
            session.set("tokens", tokens)
        else:  # the bot has their grant already: it is renewed with this sign-in's tokens
            assert self._grants is not None
            await asyncio.to_thread(store.save_grant, self._grants.seal(_grant(user_data, tokens)))
            with contextlib.suppress(GrantKeyError):  # sealed with an older key: nothing to do
                await self._withdraw(self._grants.open(stored).access_token)
        return self._back(request, session)

    async def _signed_in(
        self, expected: Any, given: str, params: Any
    ) -> tuple[dict[str, str], dict[str, Any]]:
        """The user and tokens of a callback; _PageError when it is not a sign-in of this
        browser's, or Twitch refused it."""
        nothing = "Nothing was changed."
        if not isinstance(expected, str):
            raise _PageError(
                400,
                "Sign-in failed",
                "This sign-in was not started in this browser, or it was used already (its "
                f"state is unknown here). {nothing} Sign in again from the invite screen.",
            )
        if not _same(given, expected):
            raise _PageError(
                400,
                "Sign-in failed",
                "This sign-in's state does not match the one this browser started: the link "
                f"was forged or belongs to another sign-in. {nothing}",
            )
        if params.get("error"):
            reason = params.get("error_description") or params.get("error")
            raise _PageError(
                400, "Sign-in cancelled", f"Twitch did not grant access: {reason[:200]}. {nothing}"
            )
        code = params.get("code")
        if not code:
            raise _PageError(400, "Sign-in failed", f"Twitch sent no code back. {nothing}")
        try:
            tokens = await self.oauth().exchange(code)
        except OAuthError as exc:
            log.warning("an invite sign-in failed: %s", exc)
            raise _PageError(502, "Sign-in failed", f"{exc}. {nothing}") from None
        try:
            checked = await self._checked(tokens.access_token)
        except _PageError:  # the tokens are not kept: withdrawn at Twitch
            await self._withdraw(tokens.access_token)
            raise
        expires = tokens.expires_at.isoformat() if tokens.expires_at else None
        user = checked.user
        return (
            {"id": user.id, "login": user.login, "name": user.display_name},
            {
                "access": tokens.access_token,
                "refresh": tokens.refresh_token,
                "scopes": list(checked.scopes),
                "expires_at": expires,
            },
        )

    async def _checked(self, access_token: str) -> _Checked:
        """Who ``access_token`` belongs to, checked: issued to our application, for our
        scopes, to the user the API shows; _PageError otherwise (401: Twitch does not know the
        token, 502: Twitch did not answer or answers otherwise, 400: scopes lacking)."""
        nothing = "Nothing was changed."
        oauth = self.oauth()
        try:
            validation = await oauth.validate(access_token)
            user = await oauth.user(access_token)
        except OAuthError as exc:
            log.warning("an invite sign-in failed: %s", exc)
            if exc.status == 401:
                raise _PageError(
                    401,
                    "Sign in again",
                    f"Twitch no longer accepts this sign-in's grant. {nothing} Sign in again "
                    "from the invite screen.",
                ) from None
            raise _PageError(502, "Sign-in failed", f"{exc}. {nothing}") from None
        if validation.client_id != oauth.client_id or validation.user_id != user.id:
            raise _PageError(
                502, "Sign-in failed", f"Twitch's token is not this bot's application's. {nothing}"
            )
        lacking = [scope for scope in oauth.scopes if scope not in validation.scopes]
        if lacking:
            raise _PageError(
                400,
                "Sign-in failed",
                f"Twitch granted {' '.join(validation.scopes) or 'no scope'}; the bot needs "
                f"{' '.join(lacking)} too. {nothing}",
            )
        return _Checked(user=user, scopes=validation.scopes)

    def _user(self, session: _Session) -> dict[str, str]:
        user = session.get("user")
        if not isinstance(user, dict):
            raise _PageError(
                401, "Sign in first", "Sign in with Twitch first; nothing was changed."
            )
        return {str(k): str(v) for k, v in user.items()}

    async def authorize(self, request: Request) -> Response:
        session = self._session(request)
        await self._form(request, session)
        user = self._user(session)
        tokens = session.get("tokens")
        if not isinstance(tokens, dict):
            raise _PageError(
                401,
                "Sign in again",
                "Sign in with Twitch again to add the bot (your sign-in no longer holds "
                "Twitch's grant); nothing was changed.",
            )
        assert self._grants is not None  # set up: _why_closed checked the key
        grant = _grant(user, tokens)
        checked = await self._checked(grant.access_token)  # withdrawn since: sign in again
        if checked.user.id != grant.user_id:
            raise _PageError(
                401, "Sign in again", "Sign in with Twitch again; nothing was changed."
            )
        store = self.store()
        handles = admin.Handles(store=store)
        replaced = await asyncio.to_thread(store.grant, grant.user_id)
        await asyncio.to_thread(store.save_grant, self._grants.seal(grant))
        try:
            await admin.authorize(self.settings, [grant.login], reconnect=True, handles=handles)
        except BaseException:
            with contextlib.suppress(StorageError):  # as it was: no grant without the channel
                await asyncio.to_thread(store.delete_grant, grant.user_id)
            raise
        session.pop("tokens")  # stored now
        if replaced is not None:  # another sign-in's grant (another browser): withdrawn
            with contextlib.suppress(GrantKeyError):
                old = self._grants.open(replaced).access_token
                if old != grant.access_token:
                    await self._withdraw(old)
        log.info("the invite screen: #%s authorized the bot", grant.login)
        return self._back(request, session, await self._joined(grant.login))

    async def _joined(self, login: str) -> str:
        """The join's outcome, in words for the streamer."""
        try:
            results = await admin.join(
                self.settings,
                [login],
                timeout_s=JOIN_WAIT_S,
                handles=admin.Handles(store=self.store()),
            )
        except NotAvailableError:
            return f"{self.bot_capital} is authorized: it joins your chat as soon as it runs."
        result = results[login]
        if result.status in (JoinStatus.JOINED, JoinStatus.ALREADY):
            return f"{self.bot_capital} is in your chat now."
        if result.status is JoinStatus.FAILED:
            return (
                f"{self.bot_capital} is authorized, but Twitch refused its join: {result.detail}."
            )
        return f"{self.bot_capital} is authorized and joins your chat in a moment."

    async def revoke(self, request: Request) -> Response:
        session = self._session(request)
        await self._form(request, session)
        user = self._user(session)
        store = self.store()
        sealed = await asyncio.to_thread(store.grant, user["id"])
        await admin.authorize(
            self.settings, [user["login"]], revoke=True, handles=admin.Handles(store=store)
        )
        await asyncio.to_thread(store.delete_grant, user["id"])
        withdrawn = True
        if sealed is not None:
            assert self._grants is not None
            with contextlib.suppress(GrantKeyError):
                withdrawn = await self._withdraw(self._grants.open(sealed).access_token)
        log.info("the invite screen: #%s revoked the bot", user["login"])
        if not withdrawn:
            return self._back(
                request,
                session,
                f"{self.bot_capital} left your chat, but Twitch did not answer when its access was "
                "withdrawn: remove it under Connections in your Twitch settings too.",
            )
        return self._back(
            request, session, f"{self.bot_capital} left your chat and has no access to it."
        )

    async def _withdraw(self, token: str) -> bool:
        """Withdraw a token at Twitch; whether Twitch did (a failure is logged, never the
        token; a token Twitch does not know counts as withdrawn)."""
        try:
            await self.oauth().revoke(token)
        except OAuthError as exc:
            if exc.status is not None and exc.status < 500:
                return True
            log.warning("the invite screen could not withdraw a token at Twitch: %s", exc)
            return False
        return True

    async def _authorized(self, login: str) -> bool:
        """Whether the channel manager authorizes ``login``."""
        manager = load_manager(self.settings, store=self.store())
        return login in await manager.authorized([login])

    async def logout(self, request: Request) -> Response:
        session = self._session(request)
        await self._form(request, session)
        tokens = session.get("tokens")
        if isinstance(tokens, dict):  # a grant never used: withdrawn, not left at Twitch
            await self._withdraw(str(tokens.get("access", "")))
        session.data.clear()
        session.changed = True
        return self._back(request, session)

    async def stylesheet(self, request: Request) -> Response:
        return _static("invite.css", "text/css; charset=utf-8")

    async def favicon(self, request: Request) -> Response:
        return _static("favicon.svg", "image/svg+xml")

    def app(self) -> Starlette:
        """The ASGI app of the invite screen."""
        handled = self._handled
        return Starlette(
            routes=[
                Route("/", handled(self.page), methods=["GET"]),
                Route("/invite.css", self.stylesheet, methods=["GET"]),
                Route("/favicon.svg", self.favicon, methods=["GET"]),
                Route("/login", handled(self.login), methods=["GET"]),
                Route("/callback", handled(self.callback), methods=["GET"]),
                Route("/authorize", handled(self.authorize), methods=["POST"]),
                Route("/revoke", handled(self.revoke), methods=["POST"]),
                Route("/logout", handled(self.logout), methods=["POST"]),
            ],
            middleware=(
                [Middleware(TrustedHostMiddleware, allowed_hosts=[self.settings.domain])]
                if self.settings.domain
                else []
            ),
        )


def _static(name: str, media_type: str) -> Response:
    """A file of the package's ``static`` folder."""
    body = resources.files("tmi_cluster.web").joinpath("static", name).read_bytes()
    return Response(body, media_type=media_type, headers={"Cache-Control": "no-cache"})


def _same(given: str, expected: str) -> bool:
    """Whether two secrets are equal, in constant time (any text: compared as UTF-8)."""
    return secrets.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def _grant(user: dict[str, str], tokens: dict[str, Any]) -> TokenGrant:
    """The grant of a signed-in ``user`` with the ``tokens`` of their sign-in."""
    return TokenGrant(
        user_id=user["id"],
        login=user["login"],
        scopes=tuple(tokens.get("scopes") or ()),
        access_token=str(tokens["access"]),
        refresh_token=str(tokens.get("refresh") or ""),
        expires_at=_when(tokens.get("expires_at")),
    )


def _when(value: Any) -> dt.datetime | None:
    """A time the session holds (ISO 8601), or None."""
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else None

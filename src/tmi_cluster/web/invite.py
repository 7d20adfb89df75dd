"""The invite screen (``{path}/invite``): a streamer signs in with Twitch and authorizes the bot
for their own channel, or revokes it; the bot is in their chat within seconds.

The flow (OAuth authorization code, :class:`~tmi_cluster.oauth.TwitchOAuth`):

1. ``GET /invite/``: the page. Signed out: the bot's name, in how many channels it is
   authorized, "Sign in with Twitch" (a link to the sign-in on the redirect URL's site).
   Signed in: the streamer's name, the bot's state in their chat (in it, joining, refused by
   Twitch, authorized but not in it), "Add the bot" or "Remove the bot", "Sign out".
2. ``GET /invite/login``: a random ``state`` is added to the browser's session (the newest
   few are kept: several tabs may sign in), and the browser sent to Twitch's authorize page
   with it.
   ``GET /invite/bot``: the same for the bot's own account, asking for
   :data:`~tmi_cluster.routes.BOT_SCOPES` (the EventSub route) and
   :data:`~tmi_cluster.routes.MODERATED_SCOPE` (optional: the channels the bot moderates are
   read through EventSub too); its callback stores the bot's
   grant at once, and refuses (withdrawing the grant) an account that is not the bot.
3. ``GET /invite/callback``: Twitch sends the browser back with ``code`` and ``state``. The
   state must be one this browser's session started, and is used up (a replayed or forged
   callback changes nothing); the code is exchanged, the token validated (our client id, the
   scopes asked for) and the user read; the tokens of an earlier sign-in never used are
   withdrawn. Their tokens stay in the (encrypted) session until
   they authorize the bot; when the bot has their grant already, it is renewed with them
   (and the old token withdrawn).
4. ``POST /invite/authorize``: the grant is stored (tokens encrypted,
   :class:`~tmi_cluster.grants.Grants`), the channel authorized through the channel manager
   (with ``reconnect``) and joined (:func:`tmi_cluster.cluster.admin.join`).
   ``POST /invite/revoke``: the channel is revoked (the coordinator parts it within a pass),
   the grant deleted, and its token withdrawn at Twitch. ``POST /invite/logout``: signed out.

Contracts:

- The session (:mod:`tmi_cluster.web.sessions`) is a cookie sealed with a key derived from
  ``twitch.grant_key`` (Fernet: encrypted and authenticated), ``HttpOnly``, ``SameSite=Lax``,
  ``Secure`` when the redirect URL is https, scoped to the invite screen's path, living
  :data:`SESSION_MAX_AGE_S`; a signed-out session is remembered in Redis until then, so that
  no copy of its cookie is accepted. A grant is checked with Twitch before it is stored.
- Every POST carries the session's CSRF token (a form field); one without it is refused (403)
  and changes nothing.
- With the Dummy channel manager (or a manager whose ``invite_screen`` is false) every route
  answers 409 and says why; with ``twitch.*`` not set up, 503 naming the missing settings
  (the details in a paragraph for the bot's operator).
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
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

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
from tmi_cluster.grants import GrantKeyError, Grants, TokenGrant
from tmi_cluster.oauth import OAuthError, TwitchOAuth, TwitchUser
from tmi_cluster.outcomes import JoinStatus
from tmi_cluster.routes import BOT_SCOPES, MODERATED_SCOPE
from tmi_cluster.store import SealedGrant, Store
from tmi_cluster.web.assets import asset_response
from tmi_cluster.web.sessions import SESSION_COOKIE, SESSION_MAX_AGE_S, Session, Sessions, same

__all__ = ["SESSION_COOKIE", "SESSION_MAX_AGE_S", "Invite"]

log = logging.getLogger(__name__)

#: Seconds the authorize request waits for the bot to be in the chat.
JOIN_WAIT_S = 5.0
#: The largest form body read.
_MAX_FORM = 4096
_NOTHING = "Nothing was changed."
#: The start of the ``state`` of the bot's own sign-in.
_BOT_STATE = "bot."
#: Where a streamer removes an application's access on Twitch.
_CONNECTIONS = "under Connections in your Twitch settings"


class _PageError(Exception):
    """A request the invite screen answers with a page saying what went wrong: ``text`` for
    the streamer, ``operator`` (optional) for the bot's operator."""

    def __init__(
        self, status: int, title: str, text: str, *, operator: str = "", back: bool = True
    ) -> None:
        super().__init__(text)
        self.status = status
        self.title = title
        self.text = text
        self.operator = operator
        #: Whether the page links back to the invite screen (not when it is closed).
        self.back = back


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
{refresh}<title>{title}</title>
<link rel="stylesheet" href="{base}/invite.css">
<link rel="icon" href="{base}/favicon.svg" type="image/svg+xml"></head>
<body><main>
<h1>{title}</h1>
{body}
</main></body></html>
"""


def _twitch_trouble(exc: OAuthError, *, sign_in: bool = True) -> _PageError:
    """Twitch refused or did not answer: the page for the streamer (the details are logged)."""
    log.warning("the invite screen: %s", exc)
    if exc.status is None:
        return _PageError(
            502,
            "Twitch does not answer",
            f"Twitch did not answer. {_NOTHING} Try again in a minute.",
        )
    if exc.status == 401 and not sign_in:
        return _PageError(
            401,
            "Sign in again",
            f"Twitch no longer accepts this sign-in's grant. {_NOTHING} Sign in with Twitch again.",
        )
    return _PageError(
        502,
        "Sign-in failed",
        f"Twitch refused the sign-in ({exc.status}: {exc.reason}). {_NOTHING} Sign in again.",
    )


class Invite:
    """The invite screen of the cluster of ``settings``: :meth:`app` is its ASGI app (mounted at
    ``/invite`` by :func:`~tmi_cluster.web.create_app`); :meth:`aclose` closes its store, Redis
    client and HTTP client."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        name = settings.tmi.identity.username
        #: The bot's name mid-sentence and at a sentence's start.
        self.bot = name or "the bot"
        self.bot_capital = name or "The bot"
        self._title = f"Invite {name}" if name else "Invite the bot"
        self._store: Store | None = None
        self._oauth: TwitchOAuth | None = None
        self._closed: _PageError | None = None
        self._looked = False
        key = settings.twitch.grant_key.get_secret_value()
        self._grants = Grants(key) if key else None
        self.sessions = Sessions(settings)
        #: The sign-in's start on the site of the redirect URL: its session cookie is then the
        #: one the callback reads, whatever address the page was opened at.
        self._login_url = settings.twitch.redirect_url.removesuffix("callback") + "login"

    @property
    def address(self) -> str:
        """Where streamers open it: the redirect URL's site and path, ``/invite/``."""
        return self.settings.twitch.redirect_url.removesuffix("callback")

    def closed_reason(self) -> str | None:
        """Why it is closed, for its operator (None: open): what ``tmi-cluster dashboard``
        prints instead of its address."""
        closed = self._why_closed()
        return None if closed is None else f"{closed.text} {closed.operator}".strip()

    def path_mismatch(self, mount_path: str) -> str | None:
        """A warning when the redirect URL's path is not the invite screen's callback under
        ``mount_path`` (where this server serves it): right only behind a proxy that moves
        the pages, else Twitch sends streamers to a page that does not exist."""
        path = urlsplit(self.settings.twitch.redirect_url).path
        expected = f"{mount_path}/invite/callback"
        if not path or path == expected:
            return None
        return (
            f"twitch.redirect_url's path is {path}, but this server's invite callback is "
            f"{expected}: right only behind a proxy that moves the pages"
        )

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
        """Close the store, the Redis client and the HTTP client (idempotent)."""
        await self.sessions.aclose()
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
                "The invite screen of this bot is off.",
                operator="Its channel manager does not load (see 'tmi-cluster features').",
                back=False,
            )
        else:
            if (off := invite_screen_off(manager)) is not None:
                closed = _PageError(
                    409,
                    "Not available",
                    "The invite screen of this bot is off.",
                    operator=f"The invite screen is off: {off}.",
                    back=False,
                )
            elif missing := self.settings.twitch.missing():
                closed = _PageError(
                    503,
                    "Not set up",
                    "The invite screen of this bot is not set up yet.",
                    operator=f"It needs the settings {', '.join(missing)} (docs/web.md, the "
                    "invite screen).",
                    back=False,
                )
        self._closed, self._looked = closed, True
        return closed

    @staticmethod
    def _base(request: Request) -> str:
        return str(request.scope.get("root_path", ""))

    def _page(
        self, request: Request, title: str, body: str, status: int = 200, *, refresh: bool = False
    ) -> HTMLResponse:
        page = _PAGE.format(
            title=_e(title),
            base=_e(self._base(request)),
            body=body,
            refresh='<meta http-equiv="refresh" content="3">\n' if refresh else "",
        )
        return HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store"})

    def _error(self, request: Request, error: _PageError) -> HTMLResponse:
        body = f'<p class="error" id="error">{_e(error.text)}</p>'
        if error.operator:
            body += f'<p class="operator">For the bot\'s operator: {_e(error.operator)}</p>'
        if error.back:
            body += f'<p><a href="{_e(self._base(request))}/">Back to the invite screen</a></p>'
        return self._page(request, error.title, body, error.status)

    def _back(self, request: Request, session: Session) -> Response:
        response = RedirectResponse(f"{self._base(request)}/", status_code=303)
        return self.sessions.write(request, response, session)

    def _handled(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """A route: closed → its page; a _PageError → its page; the database down → 503; any
        other error → 500, the reason in the log only."""

        async def run(request: Request) -> Response:
            try:
                closed = await asyncio.to_thread(self._why_closed)
                if closed is not None:
                    return self._error(request, closed)
                return await handler(request)
            except _PageError as error:
                return self._error(request, error)
            except StorageError as exc:
                log.warning("the invite screen cannot reach the database: %s", exc)
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

    async def _form(self, request: Request, session: Session) -> dict[str, str]:
        """The POST's form, once its CSRF token is the session's (else 403, nothing done)."""
        body = await request.body()
        if len(body) > _MAX_FORM:
            raise _PageError(413, "Refused", f"The form is too large. {_NOTHING}")
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items() if v}
        expected = session.get("csrf")
        if not isinstance(expected, str) or not same(form.get("csrf", ""), expected):
            raise _PageError(
                403,
                "Refused",
                "This form is not from this browser's invite screen (its CSRF token does not "
                f"match, or the session ended). {_NOTHING} Open the invite screen and try again.",
            )
        return form

    # -- the routes -------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        session = await self.sessions.read(request)
        count = await asyncio.to_thread(self.store().authorized_count)
        flash = session.pop("flash")
        user = session.get("user")
        channels = f"{count} channel{'' if count == 1 else 's'}"
        name = self.settings.tmi.identity.username
        lead = (
            f"{_e(name)} is a chat bot, invited to {channels}."
            if name
            else f"This chat bot is invited to {channels}."
        )
        parts = [f'<p class="lead">{lead}</p>']
        if isinstance(flash, dict):
            kind = "flash warning" if flash.get("warning") else "flash"
            parts.append(f'<p class="{kind}" id="flash">{_e(flash.get("text", ""))}</p>')
        refresh = False
        if not isinstance(user, dict):
            parts.append(
                f"<p>Sign in with your Twitch account to add {_e(self.bot)} to your chat, or to "
                "remove it.</p>"
                f'<p><a class="button" id="sign-in" href="{_e(self._login_url)}">Sign in with '
                "Twitch</a></p>"
            )
        else:
            body, refresh = await self._signed_in_html(request, session, user)
            parts.append(body)
        response = self._page(request, self._title, "\n".join(parts), refresh=refresh)
        return self.sessions.write(request, response, session)

    async def _signed_in_html(
        self, request: Request, session: Session, user: dict[str, Any]
    ) -> tuple[str, bool]:
        """The signed-in part of the page, and whether it refreshes itself (joining)."""
        login = str(user.get("login", ""))
        bot, Bot = _e(self.bot), _e(self.bot_capital)  # noqa: N806 - the name at a start
        base = _e(self._base(request))
        csrf = f'<input type="hidden" name="csrf" value="{_e(session.csrf())}">'
        parts = [
            f'<p id="user">Signed in as <b>{_e(user.get("name") or login)}</b> '
            f"(twitch.tv/{_e(login)}).</p>"
        ]
        add = (
            f'<form method="post" action="{base}/authorize">{csrf}'
            f'<button id="authorize">Add {bot} to my chat</button></form>'
        )
        remove = (
            f'<form method="post" action="{base}/revoke">{csrf}'
            f'<button id="revoke" class="danger">Remove {bot} from my chat</button></form>'
        )
        refresh = False
        if await self._authorized(login):
            if isinstance(session.get("tokens"), dict):  # authorized without a grant of theirs
                grant = (
                    f'<form method="post" action="{base}/authorize">{csrf}'
                    f'<button id="grant">Let {bot} answer with its Chat Bot badge</button></form>'
                )
                parts.append(
                    f'<p id="grant-note">{Bot} was added to your chat without your grant: it '
                    f"reads it the old way. Grant it to let it use Twitch's chat API.</p>{grant}"
                )
            state, failure = await self._channel_state(login)
            if state in ("joined", "moving"):
                parts.append(f'<p id="status">{Bot} is in your chat.</p>{remove}')
            elif state in ("joining", "wanted"):
                parts.append(f'<p id="status">{Bot} is joining your chat…</p>{remove}')
                refresh = True
            elif state == "failed":
                why = _e(failure or "Twitch refused it")
                parts.append(
                    f'<p id="status">{Bot} could not join your chat ({why}); it tries again by '
                    f"itself unless Twitch said never.</p>{remove}"
                )
            else:  # authorized, not wanted (parted by the operator): it can be added again
                parts.append(
                    f'<p id="status">{Bot} may join your chat, but is not in it now.</p>'
                    f"{add}{remove}"
                )
        elif isinstance(session.get("tokens"), dict):
            parts.append(f'<p id="status">{Bot} is not in your chat.</p>{add}')
        else:  # the grant of this sign-in was used and revoked: Twitch must grant anew
            parts.append(
                f'<p id="status">{Bot} is not in your chat.</p>'
                f'<p><a class="button" id="sign-in" href="{_e(self._login_url)}">Sign in with '
                f"Twitch again to add {bot}</a></p>"
            )
        parts.append(
            f'<form method="post" action="{base}/logout">{csrf}'
            '<button id="sign-out" class="quiet">Sign out</button></form>'
        )
        return "\n".join(parts), refresh

    async def _channel_state(self, login: str) -> tuple[str, str | None]:
        """The channel's state as ``tmi-cluster channels`` shows it, and its last failure."""
        rows, _ = await admin.channel_table(
            self.settings, [login], handles=admin.Handles(store=self.store())
        )
        if not rows:
            return "parted", None
        row = rows[0]
        return row.state, row.failure.reason if row.failure is not None else None

    async def login(self, request: Request) -> Response:
        session = await self.sessions.read(request)
        state = session.start_sign_in()
        response = RedirectResponse(self.oauth().authorize_url(state), status_code=303)
        return self.sessions.write(request, response, session)

    async def bot_login(self, request: Request) -> Response:
        """The bot's own sign-in: its account grants :data:`~tmi_cluster.routes.BOT_SCOPES`
        (the EventSub route reads and sends as it)."""
        if not self.settings.tmi.identity.username:
            raise _PageError(
                409,
                "No bot to sign in",
                f"tmi.identity.username is not set: the cluster has no bot account. {_NOTHING}",
            )
        session = await self.sessions.read(request)
        state = session.start_sign_in(prefix=_BOT_STATE)
        # and the moderated channels: those the bot moderates are read through EventSub too
        url = self.oauth().authorize_url(state, scopes=(*BOT_SCOPES, MODERATED_SCOPE))
        return self.sessions.write(request, RedirectResponse(url, status_code=303), session)

    async def callback(self, request: Request) -> Response:
        session = await self.sessions.read(request)
        params = request.query_params
        if str(params.get("state", "")).startswith(_BOT_STATE):
            return await self._bot_callback(request, session, params)
        try:
            user, tokens = await self._signed_in(session, params)
        except _PageError as error:  # the state is used up all the same
            return self.sessions.write(request, self._error(request, error), session)
        earlier = session.get("tokens")
        if isinstance(earlier, dict) and earlier.get("access") != tokens["access"]:
            await self._withdraw(str(earlier.get("access", "")))  # an unused sign-in's grant
            session.pop("tokens")
        session.set("user", user)
        session.csrf()
        store = self.store()
        stored = await asyncio.to_thread(store.grant, user["id"])
        if stored is not None and not await self._authorized(user["login"]):
            stored = None  # a grant left by a revoke elsewhere: replaced when they add the bot
        if stored is None:  # kept in the session until the streamer adds the bot
            session.set("tokens", tokens)
        else:  # the bot has their grant already: it is renewed with this sign-in's tokens
            assert self._grants is not None
            await asyncio.to_thread(store.save_grant, self._grants.seal(_grant(user, tokens)))
            await self._withdraw_stored(stored)
        return self._back(request, session)

    async def _bot_callback(self, request: Request, session: Session, params: Any) -> Response:
        """The bot signed in: its grant stored at once (no "Add" step), or a page saying why
        not (another account signed in: its grant withdrawn)."""
        try:
            user, tokens = await self._signed_in(session, params, needed=BOT_SCOPES)
        except _PageError as error:
            return self.sessions.write(request, self._error(request, error), session)
        if user["login"] != self.settings.tmi.identity.username:
            await self._withdraw(str(tokens["access"]))
            other = _PageError(
                403,
                "Not the bot",
                f"You signed in as {user['login']}, not as the bot ({self.bot}). Sign out of "
                f"Twitch and sign in as {self.bot}. {_NOTHING}",
            )
            return self.sessions.write(request, self._error(request, other), session)
        store = self.store()
        stored = await asyncio.to_thread(store.grant, user["id"])
        assert self._grants is not None
        await asyncio.to_thread(store.save_grant, self._grants.seal(_grant(user, tokens)))
        if stored is not None:
            await self._withdraw_stored(stored, keep=str(tokens["access"]))
        log.info("the invite screen: the bot %s granted %s", user["login"], " ".join(BOT_SCOPES))
        session.flash(
            f"{self.bot_capital} is signed in: channels whose broadcaster adds it here are read "
            "through EventSub and answered with the Chat Bot badge."
        )
        return self._back(request, session)

    async def _signed_in(
        self, session: Session, params: Any, *, needed: Sequence[str] | None = None
    ) -> tuple[dict[str, str], dict[str, Any]]:
        """The user and tokens of a callback; _PageError when it is not a sign-in this browser
        started, or Twitch refused it."""
        started = session.finish_sign_in(params.get("state", ""))
        if started is None:
            raise _PageError(
                400,
                "Sign-in failed",
                "This sign-in was not started in this browser, or it was used already. "
                f"{_NOTHING} Sign in again from the invite screen.",
            )
        if not started:
            raise _PageError(
                400,
                "Sign-in failed",
                "This sign-in does not match one this browser started: the link was forged, "
                f"or it belongs to an older sign-in. {_NOTHING} Sign in again from the invite "
                "screen.",
            )
        if params.get("error"):
            reason = params.get("error_description") or params.get("error")
            raise _PageError(
                400, "Sign-in cancelled", f"Twitch did not grant access: {reason[:200]}. {_NOTHING}"
            )
        code = params.get("code")
        if not code:
            raise _PageError(400, "Sign-in failed", f"Twitch sent no code back. {_NOTHING}")
        try:
            tokens = await self.oauth().exchange(code)
        except OAuthError as exc:
            raise _twitch_trouble(exc) from None
        try:
            checked = await self._checked(tokens.access_token, needed=needed)
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

    async def _checked(
        self, access_token: str, *, sign_in: bool = True, needed: Sequence[str] | None = None
    ) -> _Checked:
        """Who ``access_token`` belongs to, checked: issued to our application, for our
        scopes (``needed``, else ``twitch.scopes``), to the user the API shows; _PageError
        otherwise."""
        oauth = self.oauth()
        try:
            validation = await oauth.validate(access_token)
            user = await oauth.user(access_token)
        except OAuthError as exc:
            raise _twitch_trouble(exc, sign_in=sign_in) from None
        if validation.client_id != oauth.client_id or validation.user_id != user.id:
            log.warning("the invite screen: a token of another application, or another user")
            raise _PageError(
                502, "Sign-in failed", f"Twitch's answer is not for this bot. {_NOTHING}"
            )
        wanted = oauth.scopes if needed is None else needed
        lacking = [scope for scope in wanted if scope not in validation.scopes]
        if lacking:
            raise _PageError(
                400,
                "Sign-in failed",
                f"Twitch granted {' '.join(validation.scopes) or 'no scope'}; the bot needs "
                f"{' '.join(lacking)} too. {_NOTHING}",
            )
        return _Checked(user=user, scopes=validation.scopes)

    @staticmethod
    def _user(session: Session) -> dict[str, str]:
        user = session.get("user")
        if not isinstance(user, dict):
            raise _PageError(401, "Sign in first", f"Sign in with Twitch first. {_NOTHING}")
        return {str(k): str(v) for k, v in user.items()}

    async def authorize(self, request: Request) -> Response:
        session = await self.sessions.read(request)
        await self._form(request, session)
        user = self._user(session)
        tokens = session.get("tokens")
        if not isinstance(tokens, dict):
            if await self._authorized(user["login"]):  # parted meanwhile: wanted again
                session.flash(await self._joined(user["login"]))
                return self._back(request, session)
            raise _PageError(
                401,
                "Sign in again",
                "Sign in with Twitch again to add the bot (your sign-in no longer holds "
                f"Twitch's grant). {_NOTHING}",
            )
        assert self._grants is not None  # set up: _why_closed checked the key
        grant = _grant(user, tokens)
        checked = await self._checked(grant.access_token, sign_in=False)  # withdrawn since?
        if checked.user.id != grant.user_id:
            raise _PageError(401, "Sign in again", f"Sign in with Twitch again. {_NOTHING}")
        store = self.store()
        replaced = await asyncio.to_thread(store.grant, grant.user_id)
        await asyncio.to_thread(store.save_grant, self._grants.seal(grant))
        try:
            await admin.authorize(
                self.settings, [grant.login], reconnect=True, handles=admin.Handles(store=store)
            )
        except BaseException:
            with contextlib.suppress(StorageError):  # as it was: no grant without the channel
                await asyncio.to_thread(store.delete_grant, grant.user_id)
            raise
        session.pop("tokens")  # stored now
        if replaced is not None:  # another sign-in's grant (another browser): withdrawn
            await self._withdraw_stored(replaced, keep=grant.access_token)
        log.info("the invite screen: #%s authorized the bot", grant.login)
        session.flash(await self._joined(grant.login))
        return self._back(request, session)

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
            return (
                f"{self.bot_capital} may join your chat now, and joins it as soon as it can "
                "(it cannot be reached right now)."
            )
        result = results[login]
        if result.status in (JoinStatus.JOINED, JoinStatus.ALREADY):
            return f"{self.bot_capital} is in your chat now."
        if result.status is JoinStatus.FAILED:
            return f"{self.bot_capital} may join your chat, but Twitch refused it: {result.detail}."
        return f"{self.bot_capital} may join your chat now, and joins it in a moment."

    async def revoke(self, request: Request) -> Response:
        session = await self.sessions.read(request)
        await self._form(request, session)
        user = self._user(session)
        store = self.store()
        sealed = await asyncio.to_thread(store.grant, user["id"])
        await admin.authorize(
            self.settings, [user["login"]], revoke=True, handles=admin.Handles(store=store)
        )
        await asyncio.to_thread(store.delete_grant, user["id"])
        withdrawn = sealed is None or await self._withdraw_stored(sealed)
        log.info("the invite screen: #%s revoked the bot", user["login"])
        if not withdrawn:
            session.flash(
                f"{self.bot_capital} left your chat, but its access could not be withdrawn at "
                f"Twitch: remove it {_CONNECTIONS} too.",
                warning=True,
            )
        else:
            session.flash(f"{self.bot_capital} left your chat and has no access to it.")
        return self._back(request, session)

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

    async def _withdraw_stored(self, sealed: SealedGrant, *, keep: str = "") -> bool:
        """Withdraw a stored grant's token at Twitch (not ``keep``); False when Twitch did not
        answer, or the grant cannot be read (sealed with another ``twitch.grant_key``: logged
        for the operator)."""
        assert self._grants is not None
        try:
            token = self._grants.open(sealed).access_token
        except GrantKeyError:
            log.warning(
                "the grant of #%s cannot be read with this twitch.grant_key (sealed with "
                "another one): its token cannot be withdrawn at Twitch",
                sealed.login,
            )
            return False
        return token == keep or await self._withdraw(token)

    async def _authorized(self, login: str) -> bool:
        """Whether the channel manager authorizes ``login``."""
        manager = load_manager(self.settings, store=self.store())
        return login in await manager.authorized([login])

    async def logout(self, request: Request) -> Response:
        session = await self.sessions.read(request)
        await self._form(request, session)
        tokens = session.get("tokens")
        withdrawn = True
        if isinstance(tokens, dict):  # a grant never used: withdrawn, not left at Twitch
            withdrawn = await self._withdraw(str(tokens.get("access", "")))
        await self.sessions.end(session)
        if not withdrawn:
            session.flash(
                "Signed out, but this sign-in's access could not be withdrawn at Twitch: "
                f"remove it {_CONNECTIONS}.",
                warning=True,
            )
        return self._back(request, session)

    async def stylesheet(self, request: Request) -> Response:
        return asset_response("invite.css", "text/css; charset=utf-8")

    async def favicon(self, request: Request) -> Response:
        return asset_response("favicon.svg", "image/svg+xml")

    def app(self) -> Starlette:
        """The ASGI app of the invite screen."""
        handled = self._handled
        return Starlette(
            routes=[
                Route("/", handled(self.page), methods=["GET"]),
                Route("/invite.css", self.stylesheet, methods=["GET"]),
                Route("/favicon.svg", self.favicon, methods=["GET"]),
                Route("/login", handled(self.login), methods=["GET"]),
                Route("/bot", handled(self.bot_login), methods=["GET"]),
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

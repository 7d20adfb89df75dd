"""Who may see the web pages: HTTP Basic (``web.username`` and ``web.password``), a bearer token
(``web.token``), or the host application's own ``authorize(request)`` when it mounts the app.

Contracts:

- Everything but the health check needs credentials, unless ``web.public`` is set on purpose.
- With no password, no token and no ``authorize`` given, a random password is made when the app
  is built (:attr:`Credentials.generated`): the caller shows it once (``tmi-cluster dashboard``
  prints it), as Jupyter does with its token. It is never logged.
- Secrets are compared in constant time; a refusal is ``401`` with a JSON body naming what was
  missing, never echoing what was sent, and ``WWW-Authenticate: Basic`` when a password can be
  given (a browser asks for the user name and password; not with the host's check alone).
"""

from __future__ import annotations

import base64
import binascii
import inspect
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from tmi_cluster.config import Settings

__all__ = ["Authorize", "Credentials", "RequireCredentials"]

#: The host application's check of a request (sync or async): True lets it through.
Authorize = Callable[[Request], bool | Awaitable[bool]]

_REALM = 'Basic realm="tmi-cluster", charset="UTF-8"'


@dataclass(frozen=True, repr=False)
class Credentials:
    """What a request must show (``repr`` shows no secret)."""

    username: str
    password: str
    token: str
    public: bool
    authorize: Authorize | None = None
    #: The password was made for this run (none was configured).
    generated: bool = False

    def __repr__(self) -> str:
        return (
            f"Credentials(username={self.username!r}, password=***, token=***, "
            f"public={self.public}, generated={self.generated})"
        )

    @classmethod
    def from_settings(cls, settings: Settings, authorize: Authorize | None = None) -> Credentials:
        """The credentials of ``settings`` (a random password when none is set; see the
        module)."""
        web = settings.web
        password = web.password.get_secret_value()
        token = web.token.get_secret_value()
        generated = not (password or token or web.public or authorize is not None)
        if generated:
            password = secrets.token_urlsafe(18)
        return cls(
            username=web.username,
            password=password,
            token=token,
            public=web.public,
            authorize=authorize,
            generated=generated,
        )

    async def allows(self, request: Request) -> bool:
        """Whether ``request`` shows valid credentials (always, when public)."""
        if self.public:
            return True
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        scheme = scheme.lower()
        if scheme == "basic" and self.password and self._basic(value.strip()):
            return True
        if scheme == "bearer" and self.token and _same(value.strip(), self.token):
            return True
        if self.authorize is not None:
            answer = self.authorize(request)
            if inspect.isawaitable(answer):
                answer = await answer
            return answer is True
        return False

    def _basic(self, value: str) -> bool:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        username, colon, password = decoded.partition(":")
        # both compared, whatever the first says: no timing tells which was wrong
        user_ok = _same(username, self.username)
        password_ok = _same(password, self.password)
        return bool(colon) and user_ok and password_ok


def _same(given: str, expected: str) -> bool:
    return secrets.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


class RequireCredentials:
    """ASGI middleware: HTTP requests to ``app`` need :class:`Credentials`; others (the
    lifespan) pass."""

    def __init__(self, app: ASGIApp, credentials: Credentials) -> None:
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or await self.credentials.allows(Request(scope)):
            await self.app(scope, receive, send)
            return
        # a browser asks for a user name and password only where a password can be given
        challenge = {"WWW-Authenticate": _REALM} if self.credentials.password else {}
        response = JSONResponse(
            {
                "error": "credentials required: HTTP Basic (web.username, web.password) or a "
                "bearer token (web.token)"
            },
            status_code=401,
            headers=challenge,
        )
        await response(scope, receive, send)

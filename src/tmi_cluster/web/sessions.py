"""The invite screen's browser sessions: a small dict sealed in a cookie (Fernet, with a key
derived from ``twitch.grant_key``: encrypted and authenticated, so the browser can neither read
nor change it), and signed-out sessions remembered in Redis until they would have expired, so
that a copy of a signed-out cookie is refused on every host.

What a session holds (:class:`Session`): its id (``sid``), the CSRF token of its forms, the
sign-ins it started and not finished (their OAuth ``state``, the newest few), the signed-in
streamer, the tokens of a sign-in not used yet, and one message for the next page.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tmi_cluster.bus import AsyncRedis, Keys, close_client, connect_async
from tmi_cluster.bus.streams import end_session, session_ended
from tmi_cluster.config import Settings
from tmi_cluster.errors import TmiClusterError
from tmi_cluster.grants import Cipher, GrantKeyError

__all__ = ["MAX_PENDING", "SESSION_COOKIE", "SESSION_MAX_AGE_S", "Session", "Sessions"]

log = logging.getLogger(__name__)

#: The session cookie's name and life.
SESSION_COOKIE = "tmi_cluster_invite"
SESSION_MAX_AGE_S = 3600
#: Sign-ins a session keeps pending at once (several tabs), the newest.
MAX_PENDING = 5


@dataclass
class Session:
    """One browser's session (``changed``: its cookie is written back)."""

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

    def clear(self) -> None:
        self.data.clear()
        self.changed = True

    def csrf(self) -> str:
        """The session's CSRF token (made on first use, with the session's id)."""
        token = self.data.get("csrf")
        if not isinstance(token, str):
            token = secrets.token_urlsafe(24)
            self.set("csrf", token)
            self.set("sid", secrets.token_urlsafe(16))
        return token

    def start_sign_in(self, prefix: str = "") -> str:
        """A new sign-in's ``state`` (``prefix`` + a random token), kept with the newest
        :data:`MAX_PENDING` pending ones."""
        state = prefix + secrets.token_urlsafe(24)
        pending = [s for s in self.data.get("states") or [] if isinstance(s, str)]
        self.set("states", [*pending, state][-MAX_PENDING:])
        self.csrf()
        return state

    def finish_sign_in(self, given: str) -> bool | None:
        """Use up the pending sign-in of state ``given``: True when it was one, False when
        others are pending but not it, None when none is."""
        pending = [s for s in self.data.get("states") or [] if isinstance(s, str)]
        if not pending:
            return None
        found = [s for s in pending if same(given, s)]
        if not found:
            return False
        self.set("states", [s for s in pending if s not in found])
        return True

    def flash(self, text: str, *, warning: bool = False) -> None:
        """A message for the next page (a warning is shown as one)."""
        self.set("flash", {"text": text, "warning": warning})


def same(given: str, expected: str) -> bool:
    """Whether two secrets are equal, in constant time (any text: compared as UTF-8)."""
    return secrets.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


class Sessions:
    """Reading and writing the sessions of one invite screen; :meth:`aclose` closes its Redis
    client."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        key = settings.twitch.grant_key.get_secret_value()
        self._cipher = Cipher.for_sessions(key) if key else None
        self._secure = settings.twitch.redirect_url.startswith("https://")
        self._keys = Keys.from_settings(settings)
        self._redis: AsyncRedis | None = None

    def _client(self) -> AsyncRedis:
        if self._redis is None:
            self._redis = connect_async(self.settings, name="tmi-cluster:invite")
        return self._redis

    async def aclose(self) -> None:
        """Close the Redis client (idempotent)."""
        if self._redis is not None:
            await close_client(self._redis)
            self._redis = None

    async def read(self, request: Request) -> Session:
        """The request's session: empty when it has none, when its cookie is not ours or
        expired, or when it was signed out."""
        raw = request.cookies.get(SESSION_COOKIE)
        if not raw or self._cipher is None:
            return Session({})
        try:
            data = json.loads(self._cipher.open(raw, max_age_s=SESSION_MAX_AGE_S))
        except (GrantKeyError, ValueError):
            return Session({}, changed=True)  # expired or not ours: replaced
        if not isinstance(data, dict):
            return Session({}, changed=True)
        sid = data.get("sid")
        if isinstance(sid, str) and await self._ended(sid):
            return Session({}, changed=True)  # a copy of a signed-out session
        return Session(data)

    async def _ended(self, sid: str) -> bool:
        try:
            return await session_ended(self._client(), self._keys, sid)
        except TmiClusterError as exc:  # Redis down: the cookie's own age still bounds it
            log.warning("the invite screen cannot check a session's sign-out: %s", exc)
            return False

    async def end(self, session: Session) -> None:
        """Sign ``session`` out for good: its copies are refused until they would expire."""
        sid = session.get("sid")
        if isinstance(sid, str):
            try:
                await end_session(self._client(), self._keys, sid, SESSION_MAX_AGE_S)
            except TmiClusterError as exc:
                log.warning("the invite screen cannot record a sign-out: %s", exc)
        session.clear()

    def write(self, request: Request, response: Response, session: Session) -> Response:
        """``response`` with the session's cookie set (or deleted), when it changed."""
        if not session.changed or self._cipher is None:
            return response
        path = request.scope.get("root_path", "") or "/"
        if not session.data:
            response.delete_cookie(SESSION_COOKIE, path=path)
            return response
        response.set_cookie(
            SESSION_COOKIE,
            self._cipher.seal(json.dumps(session.data)),
            max_age=SESSION_MAX_AGE_S,
            path=path,
            secure=self._secure,
            httponly=True,
            samesite="lax",
        )
        return response

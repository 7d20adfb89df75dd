"""The stored grants' user tokens, kept valid: :class:`TokenKeeper`.

Twitch asks every application to validate the user tokens it keeps once an hour, and to stop
using those it no longer accepts. The coordinator's EventSub route runs a keeper step with each
of its own (:mod:`tmi_cluster.coordinator.eventsub`):

- each grant is checked once per :data:`VALIDATE_S`, spread over that time (a step takes its
  share, at least one), the oldest first: its access token validated (``/oauth2/validate``);
- a token Twitch refuses (401), or one that expires within :data:`REFRESH_BEFORE_S`, is
  refreshed with its refresh token and stored again, sealed;
- a grant whose refresh token Twitch refuses too has ended (the user disconnected the
  application, or changed their password): it is deleted and reported, and its channel goes
  back to the route it still has (IRC);
- Twitch not answering ends the step (the rest waits for the next); a grant sealed with
  another ``twitch.grant_key`` is skipped and shown in :attr:`TokenKeeper.problem`.

No token is ever logged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
from collections.abc import Sequence

from tmi_cluster.config import Settings
from tmi_cluster.errors import GrantKeyError, OAuthError, StorageError
from tmi_cluster.grants import Grants, TokenGrant
from tmi_cluster.oauth import TwitchOAuth
from tmi_cluster.store import SealedGrant, Store

__all__ = ["REFRESH_BEFORE_S", "VALIDATE_S", "TokenKeeper"]

log = logging.getLogger(__name__)

#: Seconds between two validations of one grant (Twitch: hourly).
VALIDATE_S = 3600.0
#: Seconds before its expiry a user token is refreshed.
REFRESH_BEFORE_S = 600.0


class TokenKeeper:
    """Keeps the grants of ``store`` valid, for the application of ``settings``; see the
    module."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        every_s: float = VALIDATE_S,
        step_s: float = 2.0,
        oauth: TwitchOAuth | None = None,
    ) -> None:
        self.store = store
        self.every_s = every_s
        self.step_s = step_s
        self.grants = Grants(settings.twitch.grant_key.get_secret_value())
        self.oauth = oauth if oauth is not None else TwitchOAuth(settings)
        self._checked: dict[str, float] = {}
        #: Counts since start: validations, refreshes, grants ended.
        self.validated = 0
        self.refreshed = 0
        self.ended = 0
        self._trouble: str | None = None  # Twitch not answering, the database
        self._unreadable: dict[str, str] = {}  # user id -> login: sealed with another key

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.oauth.aclose()

    async def step(self, grants: Sequence[SealedGrant]) -> set[str]:
        """Check this step's share of ``grants``; the user ids whose grant ended (deleted).
        :attr:`problem` says what went wrong in the last step that checked any (None: all
        well)."""
        now = time.monotonic()
        known = {g.user_id for g in grants}
        self._checked = {u: t for u, t in self._checked.items() if u in known}
        due = sorted(
            (g for g in grants if now - self._checked.get(g.user_id, -math.inf) >= self.every_s),
            key=lambda g: self._checked.get(g.user_id, -math.inf),
        )
        share = max(1, math.ceil(len(grants) * self.step_s / self.every_s))
        ended: set[str] = set()
        self._unreadable = {u: n for u, n in self._unreadable.items() if u in known}
        for sealed in due[:share]:
            try:
                if not await self._keep(sealed):
                    ended.add(sealed.user_id)
            except OAuthError as error:  # Twitch does not answer: the rest waits
                self._trouble = f"Twitch did not answer a token check: {error}"
                break
            except StorageError as error:
                self._trouble = f"a grant could not be stored: {error}"
                break
            self._trouble = None
            self._checked[sealed.user_id] = time.monotonic()
        return ended

    @property
    def problem(self) -> str | None:
        """What is wrong now (Twitch not answering, grants sealed with another key), or None."""
        if self._trouble is not None:
            return self._trouble
        if self._unreadable:
            logins = ", ".join(sorted(self._unreadable.values())[:5])
            return (
                f"{len(self._unreadable)} grants cannot be read with this twitch.grant_key "
                f"(sealed with another one; not checked): {logins}"
            )
        return None

    async def _keep(self, sealed: SealedGrant) -> bool:
        """Validate (or refresh) one grant; False when it ended (and was deleted).
        OAuthError when Twitch did not answer."""
        try:
            grant = self.grants.open(sealed)
        except GrantKeyError:
            self._unreadable[sealed.user_id] = sealed.login
            return True
        self._unreadable.pop(sealed.user_id, None)
        expires = grant.expires_at
        soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=REFRESH_BEFORE_S)
        if expires is None or expires > soon:
            try:
                await self.oauth.validate(grant.access_token)
                self.validated += 1
                return True
            except OAuthError as error:
                if error.status != 401:
                    raise _unanswered(error) from None
        return await self._refresh(grant)

    async def _refresh(self, grant: TokenGrant) -> bool:
        try:
            tokens = await self.oauth.refresh(grant.refresh_token)
        except OAuthError as error:
            if error.status is None or error.status >= 500:
                raise
            log.info(
                "the grant of %s has ended (Twitch refused its refresh: %s): deleted",
                grant.login,
                error.reason or error.status,
            )
            await asyncio.to_thread(self.store.delete_grant, grant.user_id)
            self.ended += 1
            return False
        renewed = TokenGrant(
            user_id=grant.user_id,
            login=grant.login,
            scopes=tokens.scopes or grant.scopes,
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token or grant.refresh_token,
            expires_at=tokens.expires_at,
        )
        await asyncio.to_thread(self.store.save_grant, self.grants.seal(renewed))
        self.refreshed += 1
        log.info("the token of %s was refreshed", grant.login)
        return True


def _unanswered(error: OAuthError) -> OAuthError:
    """A validation that failed otherwise than 401: Twitch's trouble, not the grant's."""
    return OAuthError(f"validating a token: {error}", status=None, reason=error.reason)

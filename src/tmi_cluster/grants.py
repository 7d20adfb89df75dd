"""Sealing what streamers grant on the invite screen: their OAuth tokens are encrypted before
they reach the database (:class:`~tmi_cluster.store.SealedGrant`), and the invite screen's
session cookie is encrypted too, each with its own key derived from ``twitch.grant_key``.

Encryption is ``cryptography``'s Fernet (AES-128-CBC and HMAC-SHA256, with a timestamp); the
keys come from ``twitch.grant_key`` through HKDF-SHA256, one ``info`` per use, so that a
session cookie can never be read as a token or the other way round. The same key on every
host reads every grant; another key reads none (:class:`GrantKeyError`, naming the setting).
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass, field

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tmi_cluster.errors import ConfigError, GrantKeyError
from tmi_cluster.store import SealedGrant

__all__ = ["Cipher", "GrantKeyError", "Grants", "TokenGrant"]

_GRANTS = b"tmi-cluster grants v1"
_SESSION = b"tmi-cluster invite session v1"


class Cipher:
    """Fernet with a key derived from a secret for one purpose (``info``)."""

    def __init__(self, secret: str, info: bytes) -> None:
        if not secret:
            raise ConfigError(["twitch.grant_key is empty: it encrypts the invite screen's grants"])
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
            secret.encode()
        )
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    @classmethod
    def for_grants(cls, secret: str) -> Cipher:
        """The cipher of the stored tokens."""
        return cls(secret, _GRANTS)

    @classmethod
    def for_sessions(cls, secret: str) -> Cipher:
        """The cipher of the invite screen's session cookie."""
        return cls(secret, _SESSION)

    def seal(self, text: str) -> str:
        """``text`` encrypted and authenticated (URL-safe ASCII)."""
        return self._fernet.encrypt(text.encode()).decode("ascii")

    def open(self, sealed: str, *, max_age_s: float | None = None) -> str:
        """What :meth:`seal` sealed; GrantKeyError when this key did not seal it, it was
        changed, or (with ``max_age_s``) it is older than that."""
        try:
            ttl = None if max_age_s is None else max(1, int(max_age_s))
            return self._fernet.decrypt(sealed.encode("ascii"), ttl=ttl).decode()
        except (InvalidToken, UnicodeError, ValueError):
            raise GrantKeyError(
                "a sealed value cannot be opened: it was sealed with another twitch.grant_key, "
                "changed, or it expired"
            ) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenGrant:
    """What one streamer granted: their Twitch user, the scopes and the tokens in clear
    (never shown by ``repr``; only ever held in memory)."""

    user_id: str
    login: str
    scopes: tuple[str, ...]
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: dt.datetime | None = None


class Grants:
    """Seals :class:`TokenGrant` for the store and opens what it returns."""

    def __init__(self, secret: str) -> None:
        self._cipher = Cipher.for_grants(secret)

    def seal(self, grant: TokenGrant) -> SealedGrant:
        """``grant`` with its tokens encrypted, as the store keeps it."""
        return SealedGrant(
            user_id=grant.user_id,
            login=grant.login,
            scopes=grant.scopes,
            access_token=self._cipher.seal(grant.access_token),
            refresh_token=self._cipher.seal(grant.refresh_token),
            expires_at=grant.expires_at,
        )

    def open(self, sealed: SealedGrant) -> TokenGrant:
        """The grant with its tokens in clear; GrantKeyError when the key cannot open them."""
        return TokenGrant(
            user_id=sealed.user_id,
            login=sealed.login,
            scopes=sealed.scopes,
            access_token=self._cipher.open(sealed.access_token),
            refresh_token=self._cipher.open(sealed.refresh_token),
            expires_at=sealed.expires_at,
        )

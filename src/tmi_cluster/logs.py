"""Logging setup, with every secret of the settings redacted from every record.

:func:`configure_logging` installs one stderr handler whose :class:`RedactingFilter` replaces the
OAuth token, the web token and URL passwords with ``***``, and any ``oauth:...`` text, whatever
logger the record came from. Code still never logs a secret on purpose; this is the safety net.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from tmi_cluster.config import Settings

__all__ = ["RedactingFilter", "configure_logging", "secrets_of"]

_OAUTH = re.compile(r"oauth:[A-Za-z0-9_\-]+")
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^:/@\s]*:)[^@\s]+@")


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value in ``settings`` (empty ones left out, and those shorter than six
    characters: masking every occurrence of a two-letter password would garble every line)."""
    found = [
        settings.tmi.identity.token,
        settings.web.token.get_secret_value(),
        settings.web.password.get_secret_value(),
        settings.twitch.client_secret.get_secret_value(),
        settings.twitch.grant_key.get_secret_value(),
        *(account.token for account in settings.tmi.identities),
    ]
    for url in (settings.redis.url, settings.database.url):
        try:
            found.append(urlsplit(url).password or "")
        except ValueError:
            continue
    return [value for value in found if len(value) >= 6]


class RedactingFilter(logging.Filter):
    """Replace secrets in a record's message (and exception text) with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        """``text`` with every known secret, ``oauth:`` token and URL password masked."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        text = _OAUTH.sub("oauth:***", text)
        return _URL_PASSWORD.sub(r"\1***@", text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


def configure_logging(
    settings: Settings, *, handler: logging.Handler | None = None
) -> logging.Handler:
    """Log ``tmi_cluster`` records at ``log.level`` through one redacting handler; return it."""
    target = handler or logging.StreamHandler()
    target.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    target.addFilter(RedactingFilter(secrets_of(settings)))
    logger = logging.getLogger("tmi_cluster")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(target)
    logger.setLevel(settings.log.level.upper())
    logger.propagate = False
    return target

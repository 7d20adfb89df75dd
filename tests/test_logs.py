"""Secrets never reach a log line, whichever logger wrote it."""

from __future__ import annotations

import io
import logging

from tmi_cluster.config import Settings
from tmi_cluster.logs import configure_logging, secrets_of


def _settings() -> Settings:
    return Settings.model_validate(
        {
            "tmi": {"identity": {"username": "bot", "password": "oauth:t0ps3cret"}},
            "web": {"token": "w3bt0ken", "password": "w3bp4ss"},
            "twitch": {"client_secret": "cl13nts3cret", "grant_key": "gr4ntk3y" * 5},
            "redis": {"url": "redis://:r3dispw@127.0.0.1:6379/0"},
            "database": {"url": "postgresql://u:dbpw99@h/db"},
        }
    )


def test_secrets_of_lists_every_secret() -> None:
    assert sorted(secrets_of(_settings())) == [
        "cl13nts3cret",
        "dbpw99",
        "gr4ntk3y" * 5,
        "r3dispw",
        "t0ps3cret",
        "w3bp4ss",
        "w3bt0ken",
    ]


def test_records_are_redacted() -> None:
    stream = io.StringIO()
    settings = _settings()
    handler = configure_logging(settings, handler=logging.StreamHandler(stream))
    log = logging.getLogger("tmi_cluster.test")
    try:
        log.info("token %s and %s", settings.tmi.identity.token, "w3bt0ken")
        log.warning("sent PASS oauth:someothertoken1 to the server")
        log.error("cannot reach redis://:anypassword@host:1/0")
        try:
            raise RuntimeError("failed with dbpw99")
        except RuntimeError:
            log.exception("boom")
    finally:
        logging.getLogger("tmi_cluster").removeHandler(handler)
    text = stream.getvalue()
    for secret in ("t0ps3cret", "w3bt0ken", "someothertoken1", "anypassword", "dbpw99"):
        assert secret not in text
    assert "token *** and ***" in text
    assert "PASS oauth:***" in text
    assert "redis://:***@host:1/0" in text
    assert "RuntimeError: failed with ***" in text

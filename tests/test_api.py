"""The public API is small, sorted, and changes only on purpose."""

from __future__ import annotations

import tmi_cluster
from tmi_cluster import errors

PUBLIC = [
    "ConfigError",
    "EmbeddedRedisError",
    "InvalidChannelError",
    "MigrationError",
    "NotAvailableError",
    "RedisUnavailableError",
    "Settings",
    "StorageError",
    "TmiClusterError",
    "__version__",
    "load_settings",
]


def test_public_api_is_pinned() -> None:
    assert tmi_cluster.__all__ == PUBLIC
    assert sorted(tmi_cluster.__all__) == tmi_cluster.__all__
    for name in PUBLIC:
        assert hasattr(tmi_cluster, name)


def test_every_error_has_one_root() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.TmiClusterError)
    assert issubclass(errors.MigrationError, errors.StorageError)
    assert issubclass(errors.InvalidChannelError, ValueError)


def test_config_error_lists_problems() -> None:
    error = errors.ConfigError(["a: x", "b: y"])
    assert error.problems == ["a: x", "b: y"]
    assert str(error) == "a: x\nb: y"


def test_irc_api_is_pinned() -> None:
    from tmi_cluster import irc  # noqa: PLC0415

    assert irc.__all__ == [
        "Message",
        "escape_tag_value",
        "parse",
        "serialize",
        "split_source",
        "unescape_tag_value",
    ]


def test_events_api_lists_every_event_type() -> None:
    from tmi_cluster import events  # noqa: PLC0415

    assert len(set(events.__all__)) == len(events.__all__)  # ruff (RUF022) keeps it sorted
    names = {cls.__name__ for cls in events.ALL_EVENT_TYPES}
    assert names <= set(events.__all__)
    assert len(events.ALL_EVENT_TYPES) == 44
    for name in (
        "ALL_EVENT_TYPES",
        "MALFORMED",
        "Emote",
        "Event",
        "from_json",
        "from_message",
        "to_json",
        "UserEvent",
        "ModeEvent",
    ):
        assert name in events.__all__

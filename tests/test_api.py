"""The public API is small, sorted, and changes only on purpose."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import tmi_cluster
from tmi_cluster import errors

PUBLIC = [
    "ChannelJoin",
    "ChannelManager",
    "ChatRefusedError",
    "Cluster",
    "ConfigError",
    "Connection",
    "ConnectionOptions",
    "ConnectionState",
    "DeadlineError",
    "Dispatcher",
    "EmbeddedRedisError",
    "EventReader",
    "EventSubError",
    "Grant",
    "GrantKeyError",
    "Handlers",
    "HelixError",
    "InvalidChannelError",
    "JoinOutcome",
    "JoinResult",
    "JoinStatus",
    "LoginError",
    "MessageTooLongError",
    "MigrationError",
    "NoIdentityError",
    "NotAvailableError",
    "OAuthError",
    "ParseError",
    "Pool",
    "PoolState",
    "RedisUnavailableError",
    "SendRefusal",
    "SendResult",
    "SendStatus",
    "Settings",
    "StaleLeaseError",
    "StorageError",
    "Subscriber",
    "SyncCluster",
    "TmiClusterError",
    "UnknownEventTypeError",
    "UnsafeLineError",
    "Worker",
    "WorkerState",
    "__version__",
    "build_pool",
    "load_settings",
    "on",
]


def test_public_api_is_pinned() -> None:
    assert tmi_cluster.__all__ == PUBLIC
    assert sorted(tmi_cluster.__all__) == tmi_cluster.__all__
    for name in PUBLIC:
        assert hasattr(tmi_cluster, name)
    assert set(errors.__all__) <= set(PUBLIC)  # every error of ours can be caught by name
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = tmi_cluster.nothing


def test_the_public_modules_are_pinned() -> None:
    from tmi_cluster import simulator  # noqa: PLC0415

    assert simulator.__all__ == [
        "AccountStats",
        "ChatSimulator",
        "ConnectionInfo",
        "Delivery",
        "Limits",
        "Violation",
    ]
    from tmi_cluster import web  # noqa: PLC0415

    assert web.__all__ == [
        "Authorize",
        "ClusterView",
        "Credentials",
        "Snapshot",
        "create_app",
        "mount_path",
        "serve",
        "site",
    ]


def test_the_docs_import_only_the_public_api() -> None:
    public = {
        "tmi_cluster",
        "tmi_cluster.events",
        "tmi_cluster.irc",
        "tmi_cluster.simulator",
        "tmi_cluster.web",
    }
    docs = Path(__file__).parent.parent / "docs"
    for page in [*docs.glob("*.md"), docs.parent / "README.md"]:
        for module in re.findall(
            r"^\s*(?:from|import) (tmi_cluster[\w.]*)", page.read_text(), re.MULTILINE
        ):
            assert module in public, f"{page.name} imports the internal module {module}"


def test_the_users_pages_name_only_the_public_api() -> None:
    """Beyond imports: a name the user pages show (``tmi_cluster.x.y``) is public, but for the
    commands they run (``python -m``); architecture.md and benchmarks.md describe the inside."""
    public = {"events", "irc", "simulator", "web"}
    docs = Path(__file__).parent.parent / "docs"
    pages = [p for p in docs.glob("*.md") if p.name not in ("architecture.md", "benchmarks.md")]
    for page in [*pages, docs.parent / "README.md"]:
        text = re.sub(r"python -m tmi_cluster\.\w+", "", page.read_text())
        for module, _ in re.findall(r"\btmi_cluster\.([a-z_]+)((?:\.\w+)*)", text):
            assert module in public or module in tmi_cluster.__all__, (
                f"{page.name} names tmi_cluster.{module}, which is internal"
            )


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
    assert len(events.ALL_EVENT_TYPES) == 57  # the raw-line and the cluster's events included
    for name in (
        "ALL_EVENT_TYPES",
        "Emote",
        "Event",
        "from_json",
        "from_message",
        "to_json",
        "UserEvent",
        "ModeEvent",
    ):
        assert name in events.__all__

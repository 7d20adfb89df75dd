"""The key layout: every key under the prefix, none shared by two purposes."""

from __future__ import annotations

from tmi_cluster.bus import Keys
from tmi_cluster.config import Settings


def test_every_key_is_under_the_prefix_and_distinct() -> None:
    keys = Keys.from_settings(Settings(prefix="bot:"))
    names = [
        keys.supervisor_heartbeat("s1"),
        keys.process_heartbeat("s1"),
        keys.coordinator_lease,
        keys.assignment,
        keys.process_commands("s1"),
        keys.supervisor_commands("s1"),
        keys.send_commands,
        keys.events,
        keys.ratelimit("bot", "join"),
        keys.dedupe("MessageEvent:1"),
        keys.lock("purge"),
    ]
    assert all(name.startswith("bot:") for name in names)
    assert len(set(names)) == len(names)


def test_expiries_follow_the_stale_settings() -> None:
    keys = Keys.from_settings(Settings.model_validate({"process": {"stale": 7.0}}))
    assert keys.process_ttl_s == 7.0
    assert keys.supervisor_ttl_s == Settings().supervisor.stale


def test_scan_pattern_escapes_glob_characters() -> None:
    assert Keys.from_settings(Settings(prefix="a*b[1]:")).pattern == r"a\*b\[1]:*"

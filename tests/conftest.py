"""Shared fixtures: real Redis, real PostgreSQL, real SQLite, each test isolated.

- Redis: the server on 127.0.0.1:6379 when it answers, else (not in CI) a private embedded one
  for the session. Each test gets its own key prefix, and its keys are deleted afterwards.
- PostgreSQL: ``$TMI_CLUSTER_TEST_DATABASE_URL``. Each test gets its own schema, dropped
  afterwards. Required when ``$CI`` is set (a failure, not a skip); skipped elsewhere when unset.
- SQLite: a file in the test's temporary folder.
- Processes: every process a test starts carries the test's harness tag in its environment
  (:mod:`tmi_cluster.harness`); whatever still runs 10 s after the test is killed, and the test
  fails: no test leaves a supervisor or a worker behind, even when it fails.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
import redis

from tmi_cluster.config import Settings, load_settings
from tmi_cluster.embedded import EmbeddedRedis
from tmi_cluster.harness import TAG_VARIABLE, ProcessHarness

IN_CI = bool(os.environ.get("CI"))
LOCAL_REDIS = ("127.0.0.1", 6379)


def _reachable(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(autouse=True)
def no_process_left_behind(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[None]:
    """Tag what the test starts; reap it after the test (see the module's docstring)."""
    harness = ProcessHarness(grace_s=10.0)
    monkeypatch.setenv(TAG_VARIABLE, harness.tag)
    yield
    killed = harness.reap()
    failed = getattr(request.node, "failed_call", False)
    if killed and not failed:
        pytest.fail(f"the test left processes running; the harness killed them: {killed}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Note a failed test body, so that its leftovers are reaped without a second failure."""
    report = yield
    if report.when == "call" and report.failed:
        item.failed_call = True  # type: ignore[attr-defined]
    return report


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a Redis server for the whole session."""
    if _reachable(LOCAL_REDIS):
        yield "redis://127.0.0.1:6379/0"
        return
    if IN_CI:
        pytest.fail("Redis is not reachable on 127.0.0.1:6379 and CI is set")
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture
def redis_prefix(redis_server: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted after the test."""
    prefix = f"test-{secrets.token_hex(6)}:"
    yield prefix
    client = redis.Redis.from_url(redis_server)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_client(redis_server: str) -> Iterator[redis.Redis]:
    """A synchronous client on the session's Redis server."""
    client = redis.Redis.from_url(redis_server)
    yield client
    client.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database file of this test's own."""
    return f"sqlite:///{tmp_path / 'tmi-cluster.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped after the test."""
    base = os.environ.get("TMI_CLUSTER_TEST_DATABASE_URL", "")
    if not base:
        if IN_CI:
            pytest.fail("TMI_CLUSTER_TEST_DATABASE_URL is not set and CI is set")
        pytest.skip("TMI_CLUSTER_TEST_DATABASE_URL is not set")
    plain = base.replace("postgresql+psycopg://", "postgresql://")
    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in base else "?"
    yield f"{base}{separator}options={quote(f'-csearch_path={schema}')}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test runs once on SQLite and once on PostgreSQL."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Build settings from a TOML text and variables, with no ambient TMI_CLUSTER_* leaking in."""

    def make(toml: str | None = None, env: dict[str, str] | None = None, **_: Any) -> Settings:
        config = None
        if toml is not None:
            config = tmp_path / "tmi-cluster.toml"
            config.write_text(toml, encoding="utf-8")
        return load_settings(config, environ=env or {}, cwd=tmp_path)

    return make
